"""Reward models: any Hugging Face model with a scalar head, and weighted ensembles of them (eq. 14)."""

from cartrm.models.builtin import BUILTIN_NAMES, minilm_path
from cartrm.models.ensemble import EnsembleRewardModel, is_ensemble_folder, load_reward_model
from cartrm.models.reward_model import EncodedTexts, RewardModel, reward_forward

__all__ = [
    "BUILTIN_NAMES",
    "EncodedTexts",
    "EnsembleRewardModel",
    "RewardModel",
    "is_ensemble_folder",
    "load_reward_model",
    "minilm_path",
    "reward_forward",
]
