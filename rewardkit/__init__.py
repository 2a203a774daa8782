"""rewardkit: train, evaluate and serve reward models for RLHF.

Pipeline: data → batching → model → losses → training → evaluation → scoring.
"""

from rewardkit.batching import Encoder
from rewardkit.checkpoint import load_checkpoint, save_checkpoint
from rewardkit.config import EvalConfig, ScoreConfig, TrainConfig
from rewardkit.data import DataError, PreferenceExample, read_preferences
from rewardkit.evaluate import evaluate
from rewardkit.losses import bradley_terry_loss, bradley_terry_loss_softplus, margin_loss
from rewardkit.model import RewardModel, load_reward_model
from rewardkit.train import train

__version__ = "0.1.0"
__all__ = [
    "DataError", "Encoder", "EvalConfig", "PreferenceExample", "RewardModel", "ScoreConfig", "TrainConfig",
    "bradley_terry_loss", "bradley_terry_loss_softplus", "evaluate", "load_checkpoint", "load_reward_model",
    "margin_loss", "read_preferences", "save_checkpoint", "train",
]
