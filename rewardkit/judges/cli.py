"""Command-line glue for judges, ready to be wired into ``rewardkit eval`` / ``rewardkit score``.

``JudgeConfig`` holds the judge flags (to be merged into ``EvalConfig`` and ``ScoreConfig``);
``run_judge_eval`` does what ``rewardkit eval`` does, with a judge as the reward model (``score``,
``rerank`` and ``serve`` need nothing judge-specific: ``load_any_scorer`` gives them a judge scorer):

    rewardkit eval  --model smollm2-135m --judge pairwise --data FILE [--flags]
    rewardkit score --model smollm2-135m --judge verifier --input FILE.jsonl
    rewardkit train-genrm [TrainConfig flags] [--judge-template ...]
"""

from __future__ import annotations

import sys
import time
from dataclasses import field
from pathlib import Path
from typing import Any

from rewardkit.config import EvalConfig, JudgeOptions, to_dict
from rewardkit.errors import UserError


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


JudgeConfig = JudgeOptions  # the judge flags of `rewardkit eval` / `score` (rewardkit.config)


def is_judge_checkpoint(model: str) -> bool:
    """True for a trained GenRM folder (it carries ``rewardkit_judge.json``)."""
    from rewardkit.judges.judge import JUDGE_METADATA_FILE

    return (Path(model).expanduser() / JUDGE_METADATA_FILE).is_file()


def build_scorer(model: str, jc: JudgeConfig, *, seed: int = 42, max_batch_tokens: int | None = None,
                 max_length: int | None = None, progress: bool = False, device: str = "auto"):
    """A ``JudgeScorer`` from the flags."""
    from rewardkit.judges.judge import JudgeScorer, load_judge
    from rewardkit.judges.templates import _UNSET

    system = _UNSET if jc.judge_system_prompt is None else jc.judge_system_prompt
    judge = load_judge(model, kind=jc.judge, template=jc.judge_template, system_prompt=system,
                       max_length=jc.judge_max_length or max_length, device=device)
    return JudgeScorer(judge, mode=jc.judge_mode, order=jc.judge_order, samples=jc.judge_samples,
                       temperature=jc.judge_temperature, max_new_tokens=jc.judge_max_new_tokens, seed=seed,
                       max_batch_tokens=max_batch_tokens or 16384, progress=progress)


def run_judge_eval(cfg: EvalConfig, jc: JudgeOptions | None = None) -> dict[str, Any]:
    """``rewardkit eval`` with a judge: the same metrics, files and report as for a classifier RM, plus what
    only judges have (flip rate, verdict mass, single-order metrics, wall time per pair) under ``judge_metrics``."""
    from rewardkit.data import read_preferences
    from rewardkit.evaluate import run_evaluation
    from rewardkit.inference import score
    from rewardkit.judges.judge import judge_metrics
    from rewardkit.rewardbench import load_section_map

    jc = jc or cfg
    if not cfg.model or not cfg.data:
        raise UserError("eval needs --model and --data")
    section_map = load_section_map(cfg.sections) if cfg.sections else None
    scorer = build_scorer(cfg.model, jc, seed=cfg.seed, max_batch_tokens=cfg.max_batch_tokens,
                          max_length=cfg.max_length, progress=True, device=cfg.device)
    examples, report = read_preferences(cfg.data, skip_bad=cfg.skip_bad_records, split=cfg.split)
    print(report.summary(), file=sys.stderr)
    started = time.time()
    scored = score(scorer, examples)
    wall = time.time() - started
    result, rewards = run_evaluation(scorer, examples, scored=scored, section_map=section_map,
                                     tie_threshold=cfg.tie_threshold, calibration_bins=cfg.calibration_bins,
                                     bootstrap_samples=cfg.bootstrap_samples, seed=cfg.seed)
    result = {**result, "judge_metrics": judge_metrics(scorer, examples, scored, wall), "data": report.to_dict(),
              "eval_config": to_dict(cfg)}
    truncation = scored.truncation_total()
    print(f"{truncation.prompt_truncated + truncation.completion_truncated} of {truncation.sequences} judge prompts "
          f"truncated to max_length ({truncation.prompt_truncated} conversation cut from the left, "
          f"{truncation.completion_truncated} with a response cut at the end)", file=sys.stderr)
    from rewardkit.cli import emit_eval

    emit_eval(cfg, result, examples, rewards)
    return result


def load_any_scorer(model: str, jc: JudgeOptions, *, max_length: int | None = None, template: str | None = None,
                    max_batch_tokens: int | None = None, seed: int = 42, progress: bool = False,
                    prefix_sharing: bool = True, complete_turn: bool = True, device: str = "auto",
                    aspect_weights: str | None = None):
    """The scorer ``--model`` (and the judge flags) name: a judge / trained GenRM, or a classifier reward model
    (``rewardkit.inference.load_scorer``). What ``score``, ``rerank`` and ``serve`` load."""
    if jc.judge or is_judge_checkpoint(model):
        if aspect_weights:
            raise UserError("--aspect-weights mixes the heads of an aspect reward model; a judge has none")
        return build_scorer(model, jc, seed=seed, max_batch_tokens=max_batch_tokens, max_length=max_length,
                            progress=progress, device=device)
    from rewardkit.inference import load_scorer

    scorer = load_scorer(model, max_length=max_length, template=template, max_batch_tokens=max_batch_tokens,
                         seed=seed, progress=progress, prefix_sharing=prefix_sharing, device=device,
                         aspect_weights=aspect_weights)
    scorer.complete_turn = complete_turn
    return scorer
