"""Checkpoints: a standard Hugging Face sequence-classification folder plus ``rewardkit.json``.

``AutoModelForSequenceClassification.from_pretrained(folder)`` loads it and scores the same
rewards as rewardkit (the saved tokenizer's pad id differs from eos, so transformers' own pooling
finds the same last real token); ``rewardkit.json`` records the pooling rule, template, max length,
the tokenizer's padding side and the held-out reward statistics used to normalise scores.

**Padding side.** The saved tokenizer pads on the **right** (``padding_side`` in its config and
``tokenizer_padding_side`` in ``rewardkit.json``), which is what makes plain transformers agree with
rewardkit: transformers numbers positions 0, 1, … along the padded row unless given ``position_ids``,
so a left-padded sequence is scored with its positions shifted by its padding. For rotary models
(Llama, SmolLM2, Qwen, Mistral) the shift cancels up to rounding, since attention sees only relative
offsets; for learned absolute positions (GPT-2, OPT) it changes the reward. A user who pads on the
left must pass ``position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)`` (rewardkit does this
itself, so its rewards do not depend on the side). Tested for both sides on Llama and GPT-2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rewardkit.batching import Encoder
from rewardkit.errors import UserError
from rewardkit.lora import (
    ADAPTER_DIR,
    LoraAdapter,
    is_adapter_folder,
    load_adapter_model,
    merged_state_dict,
    save_adapter,
)
from rewardkit.model import RewardModel, fit_max_length, load_reward_model, load_tokenizer
from rewardkit.pooling import POOLING_RULE

METADATA_FILE = "rewardkit.json"


def save_checkpoint(folder: str | Path, model: RewardModel, tokenizer: PreTrainedTokenizerBase, encoder: Encoder,
                    *, state: dict[str, torch.Tensor] | None = None, lora_adapter: LoraAdapter | None = None,
                    lora_save: str = "merged", length_head: bool = False, aspect_gate: tuple[int, float] | None = None,
                    **metadata: Any) -> Path:
    """The model, its tokenizer and ``rewardkit.json``. A LoRA model is saved merged, with its adapter in
    ``lora-adapter/`` (or the adapter alone with ``lora_save="adapter"``); a model with ODIN's length head
    (``length_head``) is saved as its quality head, the length head beside it (``rewardkit.heads``). ``state``:
    the whole weights when the module holds only a shard of them (``rewardkit.run.full_state_dict``).
    ``aspect_gate`` = (A, γ): an aspect model trained with gate scale γ; its gate rows are saved as γ·W_g
    (``rewardkit.heads.scale_gate``), so the checkpoint's logits are the gate's."""
    if state is not None and (lora_adapter is not None or length_head):
        raise ValueError("a gathered state is saved as is: LoRA and ODIN checkpoints are built from the module")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.hf.config.pad_token_id = tokenizer.pad_token_id
    if lora_adapter is not None and lora_save == "adapter":
        save_adapter(lora_adapter, folder)
    else:
        if lora_adapter is not None:
            state = merged_state_dict(model)
        if aspect_gate is not None:
            from rewardkit.heads import scale_gate

            state = scale_gate(state if state is not None else model.hf.state_dict(), *aspect_gate)
        if length_head:
            from safetensors.torch import save_file

            from rewardkit.heads import LENGTH_HEAD_FILE, split_length_head

            state, length = split_length_head(state if state is not None else model.hf.state_dict())
            save_file(length, folder / LENGTH_HEAD_FILE)
            model.hf.config.num_labels = 1  # the saved model is the quality head alone
        try:
            model.hf.save_pretrained(folder, state_dict=state)
        finally:
            if length_head:
                model.hf.config.num_labels = 2
        if lora_adapter is not None:
            save_adapter(lora_adapter, folder / ADAPTER_DIR)
    # The saved tokenizer pads on the right, so `tokenizer(texts, padding=True)` in plain transformers gives the
    # same rewards as rewardkit for every architecture (module docstring: left padding shifts positions).
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        tokenizer.save_pretrained(folder)
    finally:
        tokenizer.padding_side = side
    meta = {"pooling": POOLING_RULE, "template": encoder.template, "max_length": encoder.max_length,
            "pad_token_id": tokenizer.pad_token_id, "tokenizer_padding_side": "right", **metadata}
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2))
    return folder


CHECKPOINTS = "checkpoints"  # a run's periodic checkpoints: <run>/checkpoints/step-NNNNNN/
STATE_FILE = "trainer_state.pt"  # what makes a checkpoint folder complete and resumable (rewardkit.run)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (``checkpoints/step-N`` with its trainer state), or None."""
    complete = sorted(p for p in (Path(run_dir) / CHECKPOINTS).glob("step-*") if (p / STATE_FILE).is_file())
    return complete[-1] if complete else None


def check_finished_run(folder: str | Path, metadata_file: str = METADATA_FILE) -> None:
    """A rewardkit run folder (it has ``train_config.json``) without its metadata file is a run that did not
    finish (killed, failed, or still training): loading it as a bare backbone would silently use default
    template and max length, so it is an error that says what to do."""
    path = Path(folder).expanduser()
    other = "rewardkit_judge.json" if metadata_file == METADATA_FILE else METADATA_FILE
    if path.is_dir() and (path / other).is_file() and not (path / metadata_file).is_file():
        from rewardkit.model import ModelLoadError

        kind = "GenRM (a judge)" if other == "rewardkit_judge.json" else "classifier reward model"
        raise ModelLoadError(f"{folder} is a {kind} run ({other}), not this kind of model; "
                             + ("rewardkit eval/score/rerank/serve use it as a judge by itself" if other ==
                                "rewardkit_judge.json" else "load it without --judge"))
    if path.is_dir() and (path / "train_config.json").is_file() and not (path / metadata_file).is_file():
        from rewardkit.model import ModelLoadError

        last = latest_checkpoint(path)
        raise ModelLoadError(f"{folder} is a rewardkit run that did not finish (no {metadata_file}): "
                             + (f"resume it with --resume auto, or load its last checkpoint {last}" if last else
                                "it wrote no checkpoint (--save-every N writes them); train it again"))


def read_metadata(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / METADATA_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def load_checkpoint(name_or_path: str, max_length: int | None = None, template: str | None = None,
                    dtype: str = "float32") -> tuple[RewardModel, Encoder, dict[str, Any]]:
    """Load a rewardkit checkpoint (or a bare backbone) with the encoder it was trained with; an adapter-only
    LoRA checkpoint is loaded onto its base model (``base_model`` in ``rewardkit.json``) and merged.

    ``dtype``: the backbone's weights (``rewardkit.model.DTYPES``); the score head is kept in fp32 whatever it is
    (``rewardkit.blocks.head_scores``: rewards are read through small differences)."""
    check_finished_run(name_or_path)
    meta = read_metadata(name_or_path) if Path(name_or_path).is_dir() else {}
    if meta and meta.get("pooling", POOLING_RULE) != POOLING_RULE:
        raise UserError(f"{name_or_path}: pooling rule {meta['pooling']!r} is not supported by this rewardkit")
    labels = 2 * len(meta["aspects"]["names"]) if meta.get("aspects") else 1  # rewardkit.heads: A rewards + A gates
    if is_adapter_folder(name_or_path):
        if not meta.get("base_model"):
            raise UserError(f"{name_or_path}: a LoRA adapter without a recorded base model ('base_model' in "
                            f"{METADATA_FILE}); load it with peft onto its base model")
        base, tok = load_reward_model(meta["base_model"], tokenizer=load_tokenizer(str(name_or_path)),
                                      num_labels=labels, dtype=dtype)
        model = load_adapter_model(name_or_path, base)
    else:
        model, tok = load_reward_model(name_or_path, num_labels=labels, dtype=dtype)
    model.hf.score.float()
    length = fit_max_length(model.hf, max_length or meta.get("max_length", 1024), explicit=max_length is not None,
                            name=name_or_path)
    encoder = Encoder(tok, max_length=length, template=template or meta.get("template", "auto"))
    return model, encoder, meta
