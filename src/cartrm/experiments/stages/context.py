"""What every stage of one seed reads: the run's settings, the seed, its data and where its outputs go."""

from __future__ import annotations

import logging
import resource
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cartrm.data.tail import TailSplit
from cartrm.evaluation.metrics import accuracy_scorer
from cartrm.experiments.run_config import RunConfig
from cartrm.experiments.seed_data import SeedData
from cartrm.runs.layout import RunLayout, SeedLayout
from cartrm.training import TrainConfig

log = logging.getLogger("cartrm.run")
SCORING_VERSION = 2  # in the keys of stages that score saved models; 2: at their trained max length (1: up to 512)


@dataclass
class SeedContext:
    config: RunConfig
    seed: int
    progress: bool
    data: SeedData

    @property
    def layout(self) -> SeedLayout:
        return RunLayout(self.config.directory).seed(self.seed)

    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def splits(self) -> dict[str, Any]:
        return self.data.splits

    @property
    def tails(self) -> dict[str, TailSplit]:
        return self.data.tails

    @property
    def train_config(self) -> TrainConfig:
        return self.config.train.model_copy(update={"seed": self.seed})

    def validation_scorer(self) -> Any:
        return accuracy_scorer(self.splits["validation"], self.tails["validation"].mask)


@contextmanager
def logged(stage: str) -> Iterator[None]:
    """Log a stage's start and, when it succeeds, its wall time and the process's peak resident memory so far
    (run.log then shows where a run spends its time and memory)."""
    log.info(stage)
    started = time.time()
    yield
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = f", GPU {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if torch.cuda.is_initialized() else ""
    log.info("%s: done in %.0f s (peak memory so far %.0f MiB%s)", stage, time.time() - started, peak_mb, gpu)


@contextmanager
def activation_cache(folder: Path) -> Iterator[Path]:
    """A scratch activation cache under ``folder`` shared by discovery and assessment of one model (one model
    pass instead of three), removed when the stage ends."""
    cache = folder / ".activations"
    try:
        yield cache
    finally:
        shutil.rmtree(cache, ignore_errors=True)
