"""Reward-model training: Bradley–Terry / squared error, per-example weights, a registry of methods."""

from cartrm.training.config import TrainConfig
from cartrm.training.methods import METHODS, TrainingMethod, get_method, register
from cartrm.training.trainer import TrainResult, train

__all__ = ["METHODS", "TrainConfig", "TrainResult", "TrainingMethod", "get_method", "register", "train"]
