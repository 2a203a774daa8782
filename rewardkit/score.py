"""Scoring new completions with a trained reward model.

Rows with ``completion`` get a ``reward``; rows with ``a``/``b`` (or ``chosen``/``rejected``) get
``reward_a``, ``reward_b`` and ``p_a_beats_b`` = σ(r_a − r_b) (eq. 2). When the checkpoint recorded
held-out reward statistics, ``reward_normalized`` = (r − mean) / std is added beside the raw value.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rewardkit.batching import Encoder
from rewardkit.data.readers import DataError, RecordError, parse_messages, parse_record, strip_prompt
from rewardkit.data.record import Message
from rewardkit.evaluate import score_token_ids
from rewardkit.model import RewardModel


def parse_score_row(row: Any, location: str) -> tuple[list[Message], list[list[Message]]]:
    """(prompt, completions) for a single completion or a pair."""
    if not isinstance(row, dict):
        raise DataError(f"{location}: expected a JSON object")
    try:
        if "completion" in row:
            prompt = parse_messages(row.get("prompt", ""), "prompt", "user") if row.get("prompt") else []
            completion = strip_prompt(parse_messages(row["completion"], "completion", "assistant"), prompt)
            return prompt, [completion]
        if "a" in row and "b" in row:
            row = {**{k: v for k, v in row.items() if k not in ("a", "b")}, "chosen": row["a"], "rejected": row["b"]}
        if row.get("chosen") is not None and row.get("chosen") == row.get("rejected"):
            completion = parse_messages(row["chosen"], "chosen", "assistant")
            prompt = parse_messages(row["prompt"], "prompt", "user") if row.get("prompt") else []
            return prompt, [completion, completion]
        ex = parse_record(row, location)
        return ex.prompt, ex.completions
    except RecordError as e:
        raise DataError(f"{location}: {e} Rows need 'completion' (plus optional 'prompt'), or 'a' and 'b'.") from None


def score_rows(model: RewardModel, encoder: Encoder, rows: list[dict[str, Any]], metadata: dict[str, Any],
               locations: list[str] | None = None, **kw: Any) -> list[dict[str, Any]]:
    locations = locations or [f"row {i}" for i in range(len(rows))]
    parsed = [parse_score_row(row, loc) for row, loc in zip(rows, locations)]
    flat = [(prompt, c) for prompt, completions in parsed for c in completions]
    rewards = score_token_ids(model, encoder.encode_many(flat), encoder.tokenizer.pad_token_id, **kw)
    mean, std = metadata.get("reward_mean"), metadata.get("reward_std")
    norm = (lambda r: (r - mean) / std) if mean is not None and std else None
    out, i = [], 0
    for row, (_, completions) in zip(rows, parsed):
        r = rewards[i:i + len(completions)].tolist()
        i += len(completions)
        res = dict(row)
        if len(r) == 1:
            res["reward"] = r[0]
            if norm:
                res["reward_normalized"] = norm(r[0])
        else:
            res["reward_a"], res["reward_b"] = r
            res["p_a_beats_b"] = 1.0 / (1.0 + math.exp(-(r[0] - r[1])))
            if norm:
                res["reward_a_normalized"], res["reward_b_normalized"] = norm(r[0]), norm(r[1])
        out.append(res)
    return out


def read_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    rows, locations = [], []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise DataError(f"{path}:{lineno}: not a valid UTF-8 JSON line ({e}); fix the line") from None
            locations.append(f"{path}:{lineno}")
    return rows, locations
