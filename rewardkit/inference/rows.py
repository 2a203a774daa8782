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
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from rewardkit.data.readers import (
    _check_assistant_reply,
    _nonempty,
    parse_messages,
    parse_record,
    strip_prompt,
)
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
    if weights is not None:
        group = dataclasses.replace(group, aspect_weights=weights)
    if row.get("steps") is not None:  # process reward models: each completion's steps, given explicitly
        group = dataclasses.replace(group, steps=_steps(row["steps"], len(group), location))
    return group


def _steps(value: Any, completions: int, location: str) -> list[list[str]]:
    if (not isinstance(value, list) or len(value) != completions
            or not all(isinstance(s, list) and s and all(isinstance(t, str) and t.strip() for t in s) for s in value)):
        raise DataError(f"{location}: 'steps' must hold one non-empty list of non-empty step strings per completion "
                        f"({completions} here)")
    return value


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
    """A candidate reply, refused as the data readers refuse one: empty (no messages, or only whitespace) or not
    opening with the assistant's turn (a reward read after a user turn is not a reward for a reply)."""
    completion = strip_prompt(parse_messages(value, name, "assistant"), prompt)
    if not completion or not _nonempty(completion):
        raise RecordError("empty completion", f"'{name}' is empty.")
    _check_assistant_reply(completion, f"'{name}'")
    return completion


def normaliser(info: dict[str, Any], steered: bool = False):
    """(r − mean) / std from a scorer's recorded statistics, or None when it has none.

    An aspect model's statistics were measured on its gate's mixture: rewards mixed with other weights (the
    scorer's ``aspect_weights``, or ``steered`` — a row's or request's own) have another distribution, so they get
    no normalised value rather than a wrong one."""
    mean, std = info.get("reward_mean"), info.get("reward_std")
    if steered or info.get("aspect_weights", "gate") != "gate":
        return None
    return (lambda r: (r - mean) / std) if mean is not None and std else None


def normalization_note(info: dict[str, Any], steered: bool = False) -> str:
    """What ``normaliser`` does for these statistics, in words (the servers' ``normalization`` field)."""
    mean, std = info.get("reward_mean"), info.get("reward_std")
    if mean is None or not std:
        return "none: this model records no reward statistics (mean/std), so rewards are not normalised"
    if steered or info.get("aspect_weights", "gate") != "gate":
        return ("none: the aspect weights are steered, and the checkpoint's reward statistics describe its gate's "
                "mixture, not this one")
    return f"(r - {mean:.6g}) / {std:.6g}: the checkpoint's reward statistics ({info.get('reward_stats_source', 'recorded')})"


def reward_value(v: float) -> float | None:
    """A reward as JSON: a float, or None where a judge gave no verdict (NaN)."""
    return None if math.isnan(v) else float(v)


def score_rows(scorer: Scorer, rows: list[dict[str, Any]], locations: list[str] | None = None
               ) -> tuple[list[dict[str, Any]], ScoreResult]:
    """Each row with its rewards added (module docstring), and the scoring call's result."""
    locations = locations or [f"row {i}" for i in range(len(rows))]
    groups = [parse_score_row(row, loc) for row, loc in zip(rows, locations)]
    result = score(scorer, groups)
    info = scorer.describe()
    out = []
    for k, (row, r) in enumerate(zip(rows, result.rewards)):
        res = dict(row)
        values = [reward_value(v) for v in r]
        norm = normaliser(info, steered=row.get("aspect_weights") is not None)

        def normed(vs: list[float | None], norm: Any = norm) -> list[float | None]:
            return [None if v is None else norm(v) for v in vs]

        if "completions" in row:
            res["rewards"] = values
            if norm:
                res["rewards_normalized"] = normed(values)
        elif _text_list(row.get("chosen")) and _text_list(row.get("rejected")):
            # best-of-N rows (RewardBench 2): several chosen and rejected replies to one prompt, K = their number
            c = len(row["chosen"])
            res["rewards_chosen"], res["rewards_rejected"] = values[:c], values[c:]
            if norm:
                res["rewards_chosen_normalized"], res["rewards_rejected_normalized"] = normed(values[:c]), normed(values[c:])
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
        if result.step_rewards is not None:  # a process reward model: P(step right) per step, per completion
            steps = [[reward_value(v) for v in per] for per in result.step_rewards[k]]
            res["step_rewards" if "completions" in row or len(steps) != 1 else "step_reward"] = (
                steps if "completions" in row or len(steps) != 1 else steps[0])
            res["aggregate"] = getattr(scorer, "aggregate", None)
        out.append(res)
    return out, result


def _text_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def ranking(rewards: list[float | None]) -> list[int]:
    """Candidate indices best first; equal rewards keep input order, undecided (None) go last."""
    return sorted(range(len(rewards)), key=lambda i: (rewards[i] is None, -(rewards[i] or 0.0), i))


def check_rerank_row(row: Any, location: str) -> None:
    if not isinstance(row, dict) or not isinstance(row.get("completions"), list):
        raise DataError(f"{location}: rerank needs rows {{\"prompt\": ..., \"completions\": [candidate, ...]}}")


def rerank_rows(scorer: Scorer, rows: list[dict[str, Any]], locations: list[str] | None = None
                ) -> tuple[list[dict[str, Any]], ScoreResult]:
    """Best-of-N: each ``{"prompt", "completions"}`` row gets ``rewards`` (as ``score``), ``ranking`` (indices,
    best first), ``best_index`` and ``best`` (the winning candidate as given)."""
    locations = locations or [f"row {i}" for i in range(len(rows))]
    for row, loc in zip(rows, locations):
        check_rerank_row(row, loc)
    scored, result = score_rows(scorer, rows, locations)
    for row in scored:
        order = ranking(row["rewards"])
        row["ranking"] = order
        row["best_index"] = order[0]
        row["best"] = row["completions"][order[0]]
    return scored, result


STREAM_CHUNK_ROWS = 512  # rows scored per call when streaming a file: memory stays bounded by one chunk


def score_stream(scorer: Scorer, rows: Iterable[tuple[dict[str, Any], str]], *, rerank: bool = False,
                 chunk_rows: int = STREAM_CHUNK_ROWS) -> Iterator[tuple[list[dict[str, Any]], ScoreResult]]:
    """``score_rows`` (or ``rerank_rows``) over (row, location) pairs read lazily, ``chunk_rows`` at a time: each
    chunk's scored rows are yielded before the next chunk is read, so a file of any size is scored in the memory of
    one chunk, and the first rows come out while the rest are still unread. A row's rewards do not depend on the
    chunk it falls in (the scoring path gives the same rewards in any batching)."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be positive")
    it = iter(rows)
    while chunk := list(islice(it, chunk_rows)):
        batch, locations = [r for r, _ in chunk], [loc for _, loc in chunk]
        yield (rerank_rows if rerank else score_rows)(scorer, batch, locations)


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


def iter_jsonl(path: str | Path) -> Iterator[tuple[Any, str]]:
    """(parsed JSON line, "path:line") for each non-blank line of ``path``, read one line at a time."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; pass an existing JSONL file with --input") from None
    with f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise DataError(f"{path}:{lineno}: not a valid UTF-8 JSON line ({e}); fix the line") from None
            yield row, f"{path}:{lineno}"


def read_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    rows, locations = [], []
    for row, location in iter_jsonl(path):
        rows.append(row)
        locations.append(location)
    return rows, locations
