"""Training methods, one room each: every module of this package (a baseline) or subpackage (CART) defines a
method class and registers it with :func:`register`; importing the package imports them all, so a new baseline is
one new file here.

A method sees the (possibly DDP-wrapped) model module and a :class:`~cartrm.training.batches.TrainBatch`, so a
method that needs hooks, hidden states or extra forward passes does them in its own ``loss`` without touching the
training loop.
"""

import importlib
import pkgutil

from cartrm.training.methods.base import (
    METHODS,
    BatchPlan,
    Draw,
    TrainingContext,
    TrainingMethod,
    get_method,
    pairwise_losses,
    register,
    reward_centring,
    weighted_mean,
)
from cartrm.training.methods.bt import BradleyTerry

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "METHODS",
    "BatchPlan",
    "BradleyTerry",
    "Draw",
    "TrainingContext",
    "TrainingMethod",
    "get_method",
    "pairwise_losses",
    "register",
    "reward_centring",
    "weighted_mean",
]
