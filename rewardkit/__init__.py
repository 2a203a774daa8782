"""rewardkit: train, evaluate and serve reward models for RLHF.

Pipeline: data → batching → model (prefix sharing) → inference → losses → training → evaluation → judges →
scoring and serving. The names below are loaded on first use (PEP 562), so ``import rewardkit`` — and any
submodule, e.g. the server — costs only what it uses: training, accelerate and peft load when ``train`` is asked
for, not before.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

# name → the module that defines it
_EXPORTS = {
    "Encoder": "rewardkit.batching",
    "load_checkpoint": "rewardkit.checkpoint", "save_checkpoint": "rewardkit.checkpoint",
    "EvalConfig": "rewardkit.config", "ScoreConfig": "rewardkit.config", "TrainConfig": "rewardkit.config",
    "DataError": "rewardkit.errors", "UserError": "rewardkit.errors",
    "PreferenceExample": "rewardkit.data.record", "read_preferences": "rewardkit.data.readers",
    "VerifierExample": "rewardkit.data.steps", "read_verifier_examples": "rewardkit.data.steps",
    "EvalVerifierConfig": "rewardkit.config", "LabelStepsConfig": "rewardkit.config",
    "run_verifier_eval": "rewardkit.verifiers", "label_steps": "rewardkit.shepherd",
    "metrics_from_rewards": "rewardkit.evaluate", "run_evaluation": "rewardkit.evaluate",
    "Group": "rewardkit.inference.scoring", "RewardModelScorer": "rewardkit.inference.scoring",
    "Scorer": "rewardkit.inference.scoring", "ScoreResult": "rewardkit.inference.scoring",
    "score": "rewardkit.inference.scoring", "load_scorer": "rewardkit.inference.factory",
    **{name: "rewardkit.losses" for name in (
        "balanced_pairwise_loss", "bradley_terry_loss", "bradley_terry_loss_softplus", "label_smoothed_loss",
        "margin_loss", "plackett_luce_loss", "pointwise_bce_loss", "record_loss", "reward_centering", "reward_l2",
        "step_bce_loss")},
    "RewardModel": "rewardkit.model", "load_reward_model": "rewardkit.model",
    "write_report": "rewardkit.report",
    "group_rewards": "rewardkit.sharing",
    "train": "rewardkit.train",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rewardkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


class _Package(types.ModuleType):
    """``rewardkit.train`` is the function, as it always was, even after the submodule of the same name is
    imported (the import system binds a submodule onto its package; that binding is not kept for the names
    exported here). The module itself stays in ``sys.modules`` (``from rewardkit.train import ...``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
