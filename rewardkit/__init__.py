"""rewardkit: train, evaluate and serve reward models for RLHF.

Pipeline: data → batching → model (prefix sharing) → losses → training → evaluation → judges → scoring.
"""

from rewardkit.batching import Encoder
from rewardkit.checkpoint import load_checkpoint, save_checkpoint
from rewardkit.config import EvalConfig, ScoreConfig, TrainConfig
from rewardkit.data import DataError, PreferenceExample, read_preferences
from rewardkit.evaluate import evaluate, metrics_from_rewards, run_evaluation
from rewardkit.losses import (
    balanced_pairwise_loss,
    bradley_terry_loss,
    bradley_terry_loss_softplus,
    label_smoothed_loss,
    margin_loss,
    plackett_luce_loss,
    record_loss,
    reward_centering,
    reward_l2,
)
from rewardkit.model import RewardModel, load_reward_model
from rewardkit.report import write_report
from rewardkit.scorers import Scorer, load_scorer
from rewardkit.sharing import group_rewards
from rewardkit.train import train

__version__ = "0.1.0"
__all__ = [
    "DataError", "Encoder", "EvalConfig", "PreferenceExample", "RewardModel", "ScoreConfig", "Scorer", "TrainConfig",
    "balanced_pairwise_loss", "bradley_terry_loss", "bradley_terry_loss_softplus", "evaluate", "group_rewards",
    "label_smoothed_loss", "load_checkpoint", "load_reward_model", "load_scorer", "margin_loss",
    "metrics_from_rewards", "plackett_luce_loss", "read_preferences", "record_loss", "reward_centering", "reward_l2",
    "run_evaluation", "save_checkpoint", "train", "write_report",
]
