"""Reward models: any Hugging Face model with a scalar head."""

from cartrm.models.builtin import BUILTIN_NAMES, minilm_path
from cartrm.models.reward_model import EncodedTexts, RewardModel, reward_forward

__all__ = ["BUILTIN_NAMES", "EncodedTexts", "RewardModel", "minilm_path", "reward_forward"]
