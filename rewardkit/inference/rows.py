"""Rows of JSON in, rewards out: what ``rewardkit score`` / ``rerank`` read and write, and what ``serve`` parses.

Row shapes (one JSON object per line; every other field is passed through):

* ``{"prompt", "completion"}`` → ``reward``;
* ``{"prompt", "a", "b"}`` (or ``chosen``/``rejected``) → ``reward_a``, ``reward_b``, ``p_a_beats_b`` =
  σ(r_a − r_b) (eq. 2). The two are truncated together, exactly as ``eval`` truncates a pair;
* ``{"prompt", "completions": [...]}`` → ``rewards`` (one prompt, K ≥ 1 candidates; what ``rerank`` reads);
* ``{"text"}`` → ``reward`` of an already-rendered conversation, scored as given (``Group.texts``);
  an optional ``prompt_text`` marks its prompt.

An aspect model (``rewardkit.heads``) adds ``aspects`` to each row: the mixing weights used and every aspect's
rewards. A row's optional ``aspect_weights`` object (``{"helpful": 1, "harmless": 0}``) steers that row.

Prompts and completions are text or chat messages. When the checkpoint recorded held-out reward
statistics, ``*_normalized`` = (r − mean) / std is added beside each raw value; when it did not, no
normalised value is written and the command says so once. Truncated rows carry ``truncated``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from rewardkit.data.readers import parse_messages, parse_record, strip_prompt
from rewardkit.errors import DataError, RecordError
from rewardkit.inference.scoring import Group, Scorer, ScoreResult, score
from rewardkit.losses import sigmoid

ROW_HINT = ("Rows need 'completion', 'completions' or 'a' and 'b' (each with an optional 'prompt'), or an "
            "already-rendered 'text'.")


def parse_score_row(row: Any, location: str, hint: str = ROW_HINT) -> Group:
    """The group a row asks to score (see the module docstring for the shapes); ``hint`` ends an error."""
    if not isinstance(row, dict):
        raise DataError(f"{location}: expected a JSON object, got {type(row).__name__}")
    weights = row.get("aspect_weights")
    if weights is not None and not (isinstance(weights, dict) and weights):
        raise DataError(f"{location}: 'aspect_weights' must be an object such as {{\"helpful\": 1, \"harmless\": 0}}")
    group = _parse_group(row, location, hint)
    return dataclasses.replace(group, aspect_weights=weights) if weights is not None else group


def _parse_group(row: dict, location: str, hint: str) -> Group:
    try:
        prompt = parse_messages(row["prompt"], "prompt", "user") if row.get("prompt") else []
        if "text" in row:
            if not isinstance(row["text"], str) or not row["text"]:
                raise RecordError("bad text", "'text' must be a non-empty string (a rendered conversation).")
            prompt_text = row.get("prompt_text")
            if prompt_text is not None and not isinstance(prompt_text, str):
                raise RecordError("bad prompt_text", "'prompt_text' must be a string.")
            return Group(texts=[row["text"]], prompt_text=prompt_text, source=location)
        if "completion" in row:
            return Group(prompt=prompt, completions=[_completion(row["completion"], "completion", prompt)],
                         source=location)
        if "completions" in row:
            values = row["completions"]
            if not isinstance(values, list) or not values:
                raise RecordError("bad completions", "'completions' must be a non-empty list of candidates.")
            return Group(prompt=prompt, completions=[_completion(c, f"completions[{i}]", prompt)
                                                     for i, c in enumerate(values)], source=location)
        if "a" in row and "b" in row:
            row = {**{k: v for k, v in row.items() if k not in ("a", "b")}, "chosen": row["a"], "rejected": row["b"]}
        if row.get("chosen") is not None and row.get("chosen") == row.get("rejected"):
            completion = _completion(row["chosen"], "chosen", prompt)
            return Group(prompt=prompt, completions=[completion, completion], source=location)
        ex = parse_record(row, location)
        return Group(prompt=ex.prompt, completions=ex.completions, source=location)
    except RecordError as e:
        raise DataError(f"{location}: {e} {hint}".strip()) from None


def _completion(value: Any, name: str, prompt: list) -> list:
    if isinstance(value, str) and not value:
        raise RecordError("empty completion", f"'{name}' is empty.")
    return strip_prompt(parse_messages(value, name, "assistant"), prompt)


def normaliser(info: dict[str, Any]):
    """(r − mean) / std from a scorer's recorded statistics, or None when it has none."""
    mean, std = info.get("reward_mean"), info.get("reward_std")
    return (lambda r: (r - mean) / std) if mean is not None and std else None


def reward_value(v: float) -> float | None:
    """A reward as JSON: a float, or None where a judge gave no verdict (NaN)."""
    return None if math.isnan(v) else float(v)


def score_rows(scorer: Scorer, rows: list[dict[str, Any]], locations: list[str] | None = None
               ) -> tuple[list[dict[str, Any]], ScoreResult]:
    """Each row with its rewards added (module docstring), and the scoring call's result."""
    locations = locations or [f"row {i}" for i in range(len(rows))]
    groups = [parse_score_row(row, loc) for row, loc in zip(rows, locations)]
    result = score(scorer, groups)
    norm = normaliser(scorer.describe())
    out = []
    for k, (row, r) in enumerate(zip(rows, result.rewards)):
        res = dict(row)
        values = [reward_value(v) for v in r]
        if "completions" in row:
            res["rewards"] = values
            if norm:
                res["rewards_normalized"] = [None if v is None else norm(v) for v in values]
        elif len(values) == 1:
            res["reward"] = values[0]
            if norm and values[0] is not None:
                res["reward_normalized"] = norm(values[0])
        else:
            res["reward_a"], res["reward_b"] = values
            res["p_a_beats_b"] = None if None in values else sigmoid(values[0] - values[1])
            if norm and None not in values:
                res["reward_a_normalized"], res["reward_b_normalized"] = norm(values[0]), norm(values[1])
        t = result.truncation[k]
        if t.prompt_truncated or t.completion_truncated:
            res["truncated"] = {"prompt": t.prompt_truncated, "completion": t.completion_truncated}
        if result.details is not None:
            res["judge"] = jsonable(result.details[k])
        if result.aspects is not None:
            res["aspects"] = result.aspects[k]
        out.append(res)
    return out, result


def ranking(rewards: list[float | None]) -> list[int]:
    """Candidate indices best first; equal rewards keep input order, undecided (None) go last."""
    return sorted(range(len(rewards)), key=lambda i: (rewards[i] is None, -(rewards[i] or 0.0), i))


def rerank_rows(scorer: Scorer, rows: list[dict[str, Any]], locations: list[str] | None = None
                ) -> tuple[list[dict[str, Any]], ScoreResult]:
    """Best-of-N: each ``{"prompt", "completions"}`` row gets ``rewards`` (as ``score``), ``ranking`` (indices,
    best first), ``best_index`` and ``best`` (the winning candidate as given)."""
    locations = locations or [f"row {i}" for i in range(len(rows))]
    for row, loc in zip(rows, locations):
        if not isinstance(row, dict) or not isinstance(row.get("completions"), list):
            raise DataError(f"{loc}: rerank needs rows {{\"prompt\": ..., \"completions\": [candidate, ...]}}")
    scored, result = score_rows(scorer, rows, locations)
    for row in scored:
        order = ranking(row["rewards"])
        row["ranking"] = order
        row["best_index"] = order[0]
        row["best"] = row["completions"][order[0]]
    return scored, result


def jsonable(value: Any) -> Any:
    """A judge's details as JSON: NaN → null, numpy scalars → Python, sampled reply texts left out."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return jsonable(value.item())
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items() if k != "replies"}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def read_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    rows, locations = [], []
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; pass an existing JSONL file with --input") from None
    with f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise DataError(f"{path}:{lineno}: not a valid UTF-8 JSON line ({e}); fix the line") from None
            locations.append(f"{path}:{lineno}")
    return rows, locations
