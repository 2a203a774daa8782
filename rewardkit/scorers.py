"""One interface for every reward source that evaluation uses.

A :class:`Scorer` turns preference examples into one reward per completion. Evaluation
(``rewardkit.evaluate.run_evaluation``) only ever calls this interface, so a rewardkit checkpoint,
a plain Hugging Face sequence-classification reward model, an untrained backbone, and (later)
generative judges are evaluated by the same code and reported in the same JSON.

:func:`load_scorer` builds a :class:`RewardModelScorer` from what users type as ``--model``:

* a rewardkit run folder (``rewardkit.json`` present): its template, max length, pooling rule and
  reward statistics are reused;
* any Hugging Face ``*ForSequenceClassification`` reward model folder or hub id with one label
  (no ``rewardkit.json``): its own config, weights and tokenizer; the reward is read at the last
  real token found from the attention mask (``rewardkit.pooling``), never by searching for the pad
  id; template ``auto`` (the tokenizer's chat template if it has one);
* a backbone without a score head (e.g. ``smollm2-135m``): a new head initialised from ``seed`` —
  the untrained baseline, reproducible and recorded as such.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rewardkit.batching import Encoder
from rewardkit.data.record import PreferenceExample
from rewardkit.evaluate import score_examples
from rewardkit.model import ModelLoadError, RewardModel, resolve_backbone
from rewardkit.pooling import POOLING_RULE


@runtime_checkable
class Scorer(Protocol):
    """Anything that gives a reward to each completion of each example."""

    name: str

    def score_examples(self, examples: list[PreferenceExample]) -> list[np.ndarray]:
        """Per example, a float array aligned with ``example.completions`` (higher = better)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the results file (what was scored, how, with which seed).
        ``reward_mean`` / ``reward_std``, when present, enable calibration of normalised rewards."""
        ...


@dataclass
class RewardModelScorer:
    """A classifier reward model r_θ(x, y) (eq. 1–2) with the encoder that renders its inputs."""

    model: RewardModel
    encoder: Encoder
    name: str
    kind: str  # "rewardkit-checkpoint", "hf-sequence-classification" or "backbone (untrained head)"
    metadata: dict[str, Any] = field(default_factory=dict)
    head_seed: int | None = None  # seed of a newly initialised head (untrained backbones only)
    max_batch_tokens: int = 16384
    max_batch_size: int = 64
    padding_side: str = "right"
    progress: bool = False
    prefix_sharing: bool = True

    def score_examples(self, examples: list[PreferenceExample]) -> list[np.ndarray]:
        return score_examples(self.model, self.encoder, examples, max_batch_tokens=self.max_batch_tokens,
                              max_batch_size=self.max_batch_size, padding_side=self.padding_side,
                              progress=self.progress, prefix_sharing=self.prefix_sharing)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "reward_model", "name": self.name, "kind": self.kind, "pooling": POOLING_RULE,
            "template": self.encoder.template, "max_length": self.encoder.max_length,
            "pad_token_id": self.encoder.tokenizer.pad_token_id,
            "max_batch_tokens": self.max_batch_tokens, "padding_side": self.padding_side,
            "prefix_sharing": self.prefix_sharing,
            "truncation": self.encoder.stats.to_dict(),
        }
        if self.head_seed is not None:
            out["head_init_seed"] = self.head_seed
        for key in ("reward_mean", "reward_std", "reward_stats_source", "base_model"):
            if self.metadata.get(key) is not None:
                out[key] = self.metadata[key]
        return out


def model_kind(name_or_path: str) -> str:
    """How ``name_or_path`` will be scored: a rewardkit checkpoint, a trained HF reward model, or a
    backbone that gets a new head. Raises for classifiers with more than one label."""
    path = Path(name_or_path)
    if path.is_dir() and (path / "rewardkit.json").exists():
        return "rewardkit-checkpoint"
    source = resolve_backbone(name_or_path)
    config_file = Path(source) / "config.json"
    if config_file.exists():
        config = json.loads(config_file.read_text())
    else:  # a hub id: ask transformers (offline it reads the local cache)
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(source).to_dict()
        except OSError as e:
            raise ModelLoadError(f"could not load the config of '{name_or_path}': {e}") from e
    architectures = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        labels = len(config.get("id2label") or {}) or config.get("num_labels", 1)
        if labels != 1:
            raise ModelLoadError(f"{name_or_path} is a sequence classifier with {labels} labels; a reward model "
                                 "has one scalar output (num_labels=1)")
        return "hf-sequence-classification"
    return "backbone (untrained head)"


def load_scorer(spec: str, *, max_length: int | None = None, template: str | None = None,
                max_batch_tokens: int = 16384, max_batch_size: int = 64, padding_side: str = "right",
                seed: int = 42, progress: bool = False, prefix_sharing: bool = True) -> Scorer:
    """A scorer for ``spec``: a rewardkit run folder, a Hugging Face reward model (folder or hub id),
    a ``.gguf`` file or a built-in backbone name (untrained head initialised from ``seed``)."""
    from accelerate.utils import set_seed

    from rewardkit.checkpoint import load_checkpoint

    if not spec:
        raise ValueError("no model given: pass a rewardkit run folder, a Hugging Face reward model or a backbone")
    kind = model_kind(spec)
    # Seeded before loading so an untrained head matches `rewardkit train --seed` and is the same every run.
    set_seed(seed)
    model, encoder, meta = load_checkpoint(spec, max_length, template)
    return RewardModelScorer(model, encoder, name=spec, kind=kind, metadata=meta,
                             head_seed=seed if kind.startswith("backbone") else None,
                             max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
                             padding_side=padding_side, progress=progress, prefix_sharing=prefix_sharing)
