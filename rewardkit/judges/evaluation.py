"""Evaluating a judge: ``rewardkit eval --judge pairwise|pointwise|verifier`` (or a GenRM run folder).

``run_judge_eval`` does what ``rewardkit eval`` does for a classifier, with a judge as the reward model, and adds
what only judges have (flip rate, verdict mass, single-order metrics, wall time per pair). ``score``, ``rerank``
and ``serve`` need nothing judge-specific: ``rewardkit.inference.factory.load_scorer`` gives them a judge scorer.

    rewardkit eval  --model smollm2-135m --judge pairwise --data FILE [--flags]
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rewardkit.config import EvalConfig, JudgeOptions, to_dict
from rewardkit.errors import UserError


def run_judge_eval(cfg: EvalConfig, jc: JudgeOptions | None = None) -> dict[str, Any]:
    """``rewardkit eval`` with a judge: the same metrics, files and report as for a classifier RM, plus what
    only judges have (flip rate, verdict mass, single-order metrics, wall time per pair) under ``judge_metrics``."""
    from rewardkit.data import read_preferences
    from rewardkit.evaluate import emit_eval, run_evaluation
    from rewardkit.inference import score
    from rewardkit.inference.factory import load_judge_scorer, say_precision
    from rewardkit.judges.judge import judge_metrics
    from rewardkit.rewardbench import load_section_map

    jc = jc or cfg
    if not cfg.model or not cfg.data:
        raise UserError("eval needs --model and --data")
    section_map = load_section_map(cfg.sections) if cfg.sections else None
    scorer = load_judge_scorer(cfg.model, jc, seed=cfg.seed, max_batch_tokens=cfg.max_batch_tokens,
                          max_length=cfg.max_length, progress=True, device=cfg.device, precision=cfg.precision)
    say_precision(scorer, "eval")
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
    emit_eval(cfg, result, examples, rewards)
    return result
