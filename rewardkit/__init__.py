"""rewardkit: train, evaluate and serve reward models for RLHF.

Pipeline: data → batching → model (prefix sharing) → inference → losses → training → evaluation → judges →
scoring and serving.
"""

from rewardkit.batching import Encoder
from rewardkit.checkpoint import load_checkpoint, save_checkpoint
from rewardkit.config import EvalConfig, ScoreConfig, TrainConfig
from rewardkit.data import DataError, PreferenceExample, read_preferences
from rewardkit.evaluate import metrics_from_rewards, run_evaluation
from rewardkit.inference import Group, RewardModelScorer, Scorer, ScoreResult, load_scorer, score
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
from rewardkit.sharing import group_rewards
from rewardkit.train import train

__version__ = "0.1.0"
__all__ = [
    "DataError", "Encoder", "EvalConfig", "Group", "PreferenceExample", "RewardModel", "RewardModelScorer", "ScoreConfig",
    "ScoreResult", "Scorer", "TrainConfig",
    "balanced_pairwise_loss", "bradley_terry_loss", "bradley_terry_loss_softplus", "group_rewards",
    "label_smoothed_loss", "load_checkpoint", "load_reward_model", "load_scorer", "margin_loss",
    "metrics_from_rewards", "plackett_luce_loss", "read_preferences", "record_loss", "reward_centering", "reward_l2",
    "run_evaluation", "save_checkpoint", "score", "train", "write_report",
]
