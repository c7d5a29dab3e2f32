"""Reward-model training: Bradley–Terry / squared error, per-example weights, a registry of methods (the baselines
and CART, which registers itself when this package is imported)."""

from cartrm.training import cart as _cart  # noqa: F401  (registers "cart")
from cartrm.training.config import TrainConfig
from cartrm.training.methods import METHODS, TrainingMethod, get_method, register
from cartrm.training.trainer import TrainResult, train

__all__ = ["METHODS", "TrainConfig", "TrainResult", "TrainingMethod", "get_method", "register", "train"]
