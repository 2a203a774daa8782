"""Checkpoints: a standard Hugging Face sequence-classification folder plus ``rewardkit.json``.

``AutoModelForSequenceClassification.from_pretrained(folder)`` loads it and scores the same
rewards as rewardkit (the saved tokenizer's pad id differs from eos, so transformers' own pooling
finds the same last real token); ``rewardkit.json`` records the pooling rule, template, max length
and the held-out reward statistics used to normalise scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from rewardkit.batching import Encoder
from rewardkit.model import RewardModel, load_reward_model
from rewardkit.pooling import POOLING_RULE

METADATA_FILE = "rewardkit.json"


def save_checkpoint(folder: str | Path, model: RewardModel, tokenizer: PreTrainedTokenizerBase, encoder: Encoder,
                    **metadata: Any) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.hf.config.pad_token_id = tokenizer.pad_token_id
    model.hf.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    meta = {"pooling": POOLING_RULE, "template": encoder.template, "max_length": encoder.max_length,
            "pad_token_id": tokenizer.pad_token_id, **metadata}
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2))
    return folder


def read_metadata(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / METADATA_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def load_checkpoint(name_or_path: str, max_length: int | None = None, template: str | None = None
                    ) -> tuple[RewardModel, Encoder, dict[str, Any]]:
    """Load a rewardkit checkpoint (or a bare backbone) with the encoder it was trained with."""
    meta = read_metadata(name_or_path) if Path(name_or_path).is_dir() else {}
    if meta and meta.get("pooling", POOLING_RULE) != POOLING_RULE:
        raise ValueError(f"{name_or_path}: pooling rule {meta['pooling']!r} is not supported by this rewardkit")
    model, tok = load_reward_model(name_or_path)
    encoder = Encoder(tok, max_length=max_length or meta.get("max_length", 1024),
                      template=template or meta.get("template", "auto"))
    return model, encoder, meta
