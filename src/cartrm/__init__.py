"""cartrm: Circuit-Aware Reward Training for long-tail robust reward models.

The main entry points, one per step of the method (each is the function the matching ``cart`` command calls)::

    import cartrm
    data = cartrm.make_longtail_dataset(cartrm.BenchmarkConfig(n_train=300))
    model = cartrm.load_reward_model("minilm")
    cartrm.train(model, data.split("train"), cartrm.TrainConfig(), "runs/rm")

They are imported on first use, so ``import cartrm`` stays fast and the phases keep their one-way imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "BenchmarkConfig": "cartrm.datasets",
    "make_longtail_dataset": "cartrm.datasets",
    "load_preferences": "cartrm.data",
    "parse_tail_spec": "cartrm.data",
    "TailSplit": "cartrm.data.tail",
    "RewardModel": "cartrm.models",
    "load_reward_model": "cartrm.models",
    "DiscoveryConfig": "cartrm.circuits.discover",
    "discover": "cartrm.circuits.discover",
    "AssessConfig": "cartrm.vulnerability.assess",
    "assess": "cartrm.vulnerability.assess",
    "TrainConfig": "cartrm.training",
    "train": "cartrm.training",
    "evaluate": "cartrm.evaluation",
    "RunConfig": "cartrm.experiments.run_config",
    "run": "cartrm.experiments.pipeline",
}
_RENAMED = {"run": "run_experiment"}

__all__ = [
    "AssessConfig",
    "BenchmarkConfig",
    "DiscoveryConfig",
    "RewardModel",
    "RunConfig",
    "TailSplit",
    "TrainConfig",
    "assess",
    "discover",
    "evaluate",
    "load_preferences",
    "load_reward_model",
    "make_longtail_dataset",
    "parse_tail_spec",
    "run",
    "train",
]

if TYPE_CHECKING:
    from cartrm.circuits.discover import DiscoveryConfig, discover
    from cartrm.data import load_preferences, parse_tail_spec
    from cartrm.data.tail import TailSplit
    from cartrm.datasets import BenchmarkConfig, make_longtail_dataset
    from cartrm.evaluation import evaluate
    from cartrm.experiments.pipeline import run_experiment as run
    from cartrm.experiments.run_config import RunConfig
    from cartrm.models import RewardModel, load_reward_model
    from cartrm.training import TrainConfig, train
    from cartrm.vulnerability.assess import AssessConfig, assess


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cartrm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
