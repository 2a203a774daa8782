"""The one factory for scorers: whatever ``--model`` names, the scorer that ``eval``, ``score``, ``rerank`` and
``serve`` (and the Python API) use.

* a trained GenRM run (``rewardkit_judge.json``) or any causal LM with ``--judge``: a
  :class:`rewardkit.judges.JudgeScorer`;
* a rewardkit run folder, a Hugging Face reward model or a backbone: a classifier
  :class:`rewardkit.inference.RewardModelScorer` (``load_classifier_scorer``).

It lives above ``rewardkit.judges`` (which builds on the scoring path), which is why it is a module of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rewardkit.config import JudgeOptions
from rewardkit.errors import UserError
from rewardkit.inference.scoring import Scorer, load_classifier_scorer, resolve_device
from rewardkit.precision import precision_for


def is_judge_checkpoint(model: str) -> bool:
    """True for a trained GenRM folder (it carries ``rewardkit_judge.json``)."""
    from rewardkit.judges.judge import JUDGE_METADATA_FILE

    return (Path(model).expanduser() / JUDGE_METADATA_FILE).is_file()


def load_judge_scorer(model: str, jc: JudgeOptions, *, seed: int = 42, max_batch_tokens: int | None = None,
                      max_length: int | None = None, progress: bool = False, device: str = "auto",
                      precision: str = "auto") -> Any:
    """A ``JudgeScorer`` from the judge flags (``rewardkit.config.JudgeOptions``), its weights in the
    precision ``precision`` means on ``device`` (``rewardkit.precision``)."""
    from rewardkit.judges.judge import JudgeScorer, load_judge
    from rewardkit.judges.templates import _UNSET

    chosen = precision_for(precision, resolve_device(device), training=False)
    system = _UNSET if jc.judge_system_prompt is None else jc.judge_system_prompt
    judge = load_judge(model, kind=jc.judge, template=jc.judge_template, system_prompt=system,
                       max_length=jc.judge_max_length or max_length, device=device, dtype=chosen.weights_dtype)
    return JudgeScorer(judge, mode=jc.judge_mode, order=jc.judge_order, samples=jc.judge_samples,
                       temperature=jc.judge_temperature, max_new_tokens=jc.judge_max_new_tokens, seed=seed,
                       max_batch_tokens=max_batch_tokens or 16384, progress=progress, precision=chosen)


def say_precision(scorer: Scorer, command: str) -> None:
    """The precision line a command prints once (to stderr), when the scorer knows how it was loaded."""
    import sys

    chosen = getattr(scorer, "precision", None)
    if chosen is not None:
        print(f"rewardkit {command}: {chosen.line()}", file=sys.stderr, flush=True)


def load_scorer(model: str, judge: JudgeOptions | None = None, *, max_length: int | None = None,
                template: str | None = None, max_batch_tokens: int | None = None, max_batch_size: int = 64,
                padding_side: str = "right", seed: int = 42, progress: bool = False, prefix_sharing: bool = True,
                complete_turn: bool = True, device: str = "auto", aspect_weights: str | None = None,
                precision: str = "auto", route: str = "auto", aggregate: str | None = None,
                step_marker: str | None = None) -> Scorer:
    """The scorer ``model`` (and the judge flags ``judge``, if any) name: a judge / trained GenRM, or a classifier
    reward model — a process reward model scores steps and aggregates them (see the module docstring)."""
    judge = judge or JudgeOptions()
    if judge.judge or (model and is_judge_checkpoint(model)):
        if aspect_weights:
            raise UserError("--aspect-weights mixes the heads of an aspect reward model; a judge has none")
        return load_judge_scorer(model, judge, seed=seed, max_batch_tokens=max_batch_tokens, max_length=max_length,
                                 progress=progress, device=device, precision=precision)
    scorer = load_classifier_scorer(model, max_length=max_length, template=template, max_batch_tokens=max_batch_tokens,
                                    max_batch_size=max_batch_size, padding_side=padding_side, seed=seed,
                                    progress=progress, prefix_sharing=prefix_sharing, device=device,
                                    aspect_weights=aspect_weights, precision=precision, route=route,
                                    aggregate=aggregate, step_marker=step_marker)
    scorer.complete_turn = complete_turn
    return scorer
