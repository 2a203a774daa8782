"""LoRA for reward models (Hu et al. 2021, arXiv 2106.09685), through ``peft``, with the score head kept.

The field's best-known LoRA reward-model failure is a score head that is trained but not saved: the
adapter file holds the low-rank matrices, and the freshly initialised head of the base model comes
back at load time. Here the head is a peft ``modules_to_save`` module (peft's own convention for
``SEQ_CLS``), so it is trained in full and saved with the adapter, and it is also in the merged
checkpoint.

Why peft's layers are injected into the transformers model in place, and not used through the
``PeftModel`` wrapper: ``RewardModel.hf`` stays the same ``*ForSequenceClassification`` object, so the
prefix-shared, packed forward (``rewardkit.sharing``) and the padded one run unchanged, and stay exact —
a LoRA linear layer is still a linear layer called through the same attention code. The wrapper is kept
beside the model (:class:`LoraAdapter`) only to save and load peft's adapter format.

Saving (``--lora-save``):

* ``merged`` (default): W + (α/r)·B·A is computed out of place for every adapted layer and written as a
  plain sequence-classification checkpoint, which ``AutoModelForSequenceClassification`` loads with the
  same rewards (no peft needed). The adapter is written beside it in ``lora-adapter/`` (a subfolder, so
  transformers does not mistake the merged folder for an adapter folder).
* ``adapter``: only the adapter + head in peft's format (``adapter_config.json``,
  ``adapter_model.safetensors``) plus tokenizer and ``rewardkit.json``; ``rewardkit`` loads it onto
  its base model (recorded as ``base_model``), and so does ``PeftModel.from_pretrained``.

Periodic checkpoints always hold the adapter, which is what ``--resume`` loads (the frozen base weights
come from the base model, unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rewardkit.errors import UserError
from rewardkit.model import RewardModel

ADAPTER_DIR = "lora-adapter"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SAVE_MODES = ("merged", "adapter")


@dataclass
class LoraAdapter:
    """The peft wrapper of a reward model whose layers carry LoRA adapters (kept for peft's file format)."""

    peft_model: Any


def apply_lora(model: RewardModel, r: int, alpha: float, dropout: float, target_modules: str) -> LoraAdapter:
    """Inject LoRA adapters of rank ``r`` into ``model.hf`` in place and train only them and the score head.

    ``target_modules``: peft's ``"all-linear"`` (every linear layer of the blocks, not the head) or a
    comma-separated list of module names (e.g. ``"q_proj,v_proj"``)."""
    from peft import LoraConfig, get_peft_model

    targets: Any = target_modules if target_modules == "all-linear" else [
        t.strip() for t in target_modules.split(",") if t.strip()]
    if not targets:
        raise UserError("--lora-target-modules names no module; use 'all-linear' or e.g. 'q_proj,v_proj'")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="SEQ_CLS")
    try:
        peft_model = get_peft_model(model.hf, config)
    except ValueError as e:  # peft: target modules not found in the model
        raise UserError(f"LoRA: {e}") from None
    if peft_model.base_model.model is not model.hf:  # the layers must live in model.hf for the shared path
        raise RuntimeError("peft did not inject its layers in place")
    return LoraAdapter(peft_model)


def _is_lora_layer(module: torch.nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return isinstance(module, LoraLayer)


def merged_state_dict(model: RewardModel) -> dict[str, torch.Tensor]:
    """The plain model's state dict with every adapter merged (W + ΔW, out of place: training state untouched)
    and the trained score head under its usual name."""
    hf = model.hf
    state = hf.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".lora_" in key or ".original_module." in key:
            continue
        key = key.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")
        out[key] = value
    for name, module in hf.named_modules():
        if _is_lora_layer(module):
            for adapter in module.active_adapters:
                base = module.get_base_layer().weight
                out[f"{name}.weight"] = (base + module.get_delta_weight(adapter)).detach().clone()
    return {k: v.detach().contiguous() for k, v in out.items()}


def save_adapter(adapter: LoraAdapter, folder: Path) -> None:
    """peft's adapter files (LoRA matrices + the score head as ``modules_to_save``)."""
    adapter.peft_model.save_pretrained(folder)


def load_adapter_weights(adapter: LoraAdapter, folder: Path) -> None:
    """Load saved adapter weights (and head) into the injected model, in place (``--resume``)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = folder / ADAPTER_WEIGHTS
    if not path.is_file():
        raise UserError(f"checkpoint {folder.parent} has no LoRA adapter ({ADAPTER_DIR}/{ADAPTER_WEIGHTS}); "
                        "it was not written by a LoRA run with the same settings")
    result = set_peft_model_state_dict(adapter.peft_model, load_file(path))
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k or "modules_to_save" in k]
    if unexpected:
        raise UserError(f"LoRA adapter {folder} does not match the model: unexpected {unexpected[:5]}")


def is_adapter_folder(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file() and not (Path(folder) / "config.json").is_file()


def load_adapter_model(folder: str | Path, base: RewardModel) -> RewardModel:
    """A reward model from an adapter-only checkpoint: the base model with the adapter (and head) merged in."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(base.hf, str(folder))
    return RewardModel(peft_model.merge_and_unload())
