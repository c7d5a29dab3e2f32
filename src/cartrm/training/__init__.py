"""Reward-model training: Bradley–Terry / squared error, per-example weights, a registry of methods (the baselines
and CART). The configs load at once; the trainer and the methods (which need torch) on first use, so the ``cart``
command starts fast."""

import importlib
from typing import TYPE_CHECKING, Any

from cartrm.training.config import CartConfig, MethodSettings, TrainConfig

_LAZY = {
    "METHODS": "cartrm.training.methods",
    "TrainingMethod": "cartrm.training.methods",
    "get_method": "cartrm.training.methods",
    "register": "cartrm.training.methods",
    "TrainResult": "cartrm.training.trainer",
    "train": "cartrm.training.trainer",
}

__all__ = [
    "METHODS",
    "CartConfig",
    "MethodSettings",
    "TrainConfig",
    "TrainResult",
    "TrainingMethod",
    "get_method",
    "register",
    "train",
]

if TYPE_CHECKING:
    from cartrm.training.methods import METHODS, TrainingMethod, get_method, register
    from cartrm.training.trainer import TrainResult, train


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'cartrm.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
