"""Command-line glue for judges, ready to be wired into ``rewardkit eval`` / ``rewardkit score``.

``JudgeConfig`` holds the judge flags (to be merged into ``EvalConfig`` and ``ScoreConfig``);
``run_judge_eval`` and ``run_judge_score`` do what ``rewardkit eval`` / ``score`` do, with a judge as
the reward model:

    rewardkit eval  --model smollm2-135m --judge pairwise --data FILE [--flags]
    rewardkit score --model smollm2-135m --judge verifier --input FILE.jsonl
    rewardkit train-genrm [TrainConfig flags] [--judge-template ...]
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, field
from pathlib import Path
from typing import Any

import numpy as np

from rewardkit.config import EvalConfig, JudgeOptions, ScoreConfig, to_dict
from rewardkit.data.record import PreferenceExample


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


JudgeConfig = JudgeOptions  # the judge flags of `rewardkit eval` / `score` (rewardkit.config)


def is_judge_checkpoint(model: str) -> bool:
    """True for a trained GenRM folder (it carries ``rewardkit_judge.json``)."""
    from rewardkit.judges.judge import JUDGE_METADATA_FILE

    return (Path(model).expanduser() / JUDGE_METADATA_FILE).is_file()


def build_scorer(model: str, jc: JudgeConfig, *, seed: int = 42, max_batch_tokens: int = 16384,
                 max_length: int | None = None, progress: bool = False):
    """A ``JudgeScorer`` from the flags."""
    from rewardkit.judges.judge import JudgeScorer, load_judge
    from rewardkit.judges.templates import _UNSET

    system = _UNSET if jc.judge_system_prompt is None else jc.judge_system_prompt
    judge = load_judge(model, kind=jc.judge, template=jc.judge_template, system_prompt=system,
                       max_length=jc.judge_max_length or max_length)
    return JudgeScorer(judge, mode=jc.judge_mode, order=jc.judge_order, samples=jc.judge_samples,
                       temperature=jc.judge_temperature, max_new_tokens=jc.judge_max_new_tokens, seed=seed,
                       max_batch_tokens=max_batch_tokens, progress=progress)


def run_judge_eval(cfg: EvalConfig, jc: JudgeOptions | None = None) -> dict[str, Any]:
    """``rewardkit eval`` with a judge: the same metrics, files and report as for a classifier RM, plus what
    only judges have (flip rate, verdict mass, single-order metrics, wall time per pair) under ``judge_metrics``."""
    from rewardkit.data import read_preferences
    from rewardkit.evaluate import run_evaluation
    from rewardkit.judges.judge import judge_metrics
    from rewardkit.rewardbench import load_section_map

    jc = jc or cfg
    if not cfg.model or not cfg.data:
        raise ValueError("eval needs --model and --data")
    section_map = load_section_map(cfg.sections) if cfg.sections else None
    scorer = build_scorer(cfg.model, jc, seed=cfg.seed, max_batch_tokens=cfg.max_batch_tokens,
                          max_length=cfg.max_length, progress=True)
    examples, report = read_preferences(cfg.data, skip_bad=cfg.skip_bad_records, split=cfg.split)
    print(report.summary(), file=sys.stderr)
    started = time.time()
    raw = scorer.score_examples(examples)
    wall = time.time() - started
    # A completion with no verdict (sampling: no valid vote) makes its example a tie: counted wrong, never guessed.
    rewards = [np.zeros_like(r) if np.isnan(r).any() else r for r in raw]
    result, _ = run_evaluation(scorer, examples, rewards=rewards, section_map=section_map,
                               tie_threshold=cfg.tie_threshold, calibration_bins=cfg.calibration_bins,
                               bootstrap_samples=cfg.bootstrap_samples, seed=cfg.seed)
    result = {**result, "judge_metrics": judge_metrics(scorer, examples, raw, wall), "data": report.to_dict(),
              "truncation": asdict(scorer.judge.truncation), "eval_config": to_dict(cfg)}
    print(scorer.judge.truncation.summary(), file=sys.stderr)
    from rewardkit.cli import emit_eval

    emit_eval(cfg, result, examples, rewards)
    return result


def score_rows_with_judge(scorer: Any, rows: list[dict[str, Any]], locations: list[str]) -> list[dict[str, Any]]:
    """``rewardkit score`` rows with a judge: ``reward`` (one completion) or ``reward_a``/``reward_b`` and
    ``p_a_beats_b`` = σ(r_a − r_b); plus what the judge said (``judge``). No verdict → null rewards."""
    from rewardkit.score import parse_score_row

    examples = []
    for row, loc in zip(rows, locations):
        prompt, completions = parse_score_row(row, loc)
        examples.append(PreferenceExample(prompt=prompt, completions=completions,
                                          ranking=list(range(len(completions))), source=loc))
    rewards = scorer.score_examples(examples)
    out = []
    for row, r, detail in zip(rows, rewards, scorer.details):
        res = dict(row)
        values = [None if math.isnan(v) else float(v) for v in r]
        if len(values) == 1:
            res["reward"] = values[0]
        else:
            res["reward_a"], res["reward_b"] = values[0], values[1]
            res["p_a_beats_b"] = None if None in values[:2] else 1.0 / (1.0 + math.exp(-(values[0] - values[1])))
        res["judge"] = _jsonable(detail)
        out.append(res)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k != "replies"}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def run_judge_score(cfg: ScoreConfig, jc: JudgeOptions | None = None) -> None:
    from rewardkit.score import read_jsonl

    if not cfg.model or not cfg.input:
        raise ValueError("score needs --model and --input")
    scorer = build_scorer(cfg.model, jc or cfg, max_batch_tokens=cfg.max_batch_tokens)
    rows, locations = read_jsonl(cfg.input)
    scored = score_rows_with_judge(scorer, rows, locations)
    out = open(cfg.output, "w") if cfg.output else sys.stdout
    for row in scored:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    if cfg.output:
        out.close()
