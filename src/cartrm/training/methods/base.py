"""What a training method is: a loss over a batch, plus what it needs before the first step (the tail mask,
circuits, its start model via setup), how it wants its batches drawn (:meth:`TrainingMethod.sampler`) and split
into forward passes (:meth:`TrainingMethod.batch_plan`, :meth:`TrainingMethod.passes`). The trainer asks these
and knows no method by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from cartrm.circuits.result import Circuits
from cartrm.errors import CartError
from cartrm.training.batches import AugmentedBatch, TrainBatch, Weigh
from cartrm.training.config import TrainConfig
from cartrm.training.registry import Design, register_design
from cartrm.training.sampling import EpochShuffleSampler
from cartrm.training.settings import MethodSettings, register_settings
from cartrm.vulnerability.result import VulnerabilityReport

Pass = TrainBatch | AugmentedBatch  # one forward pass of a batch


@dataclass(frozen=True)
class TrainingContext:
    """What the trainer knows before the first step: the tail mask over the training rows, the number of
    optimizer steps, where the run writes, and the analysis inputs a method may use (CART's circuits and their
    vulnerability report)."""

    tail_mask: np.ndarray
    total_steps: int
    output_dir: Path
    progress: bool = True
    max_length: int | None = None  # the token limit of the training texts
    circuits: Circuits | None = None
    vulnerability: VulnerabilityReport | None = None


@dataclass(frozen=True)
class Draw:
    """How a method's batches are drawn: the sampler of dataset rows and the DataLoader's batch size."""

    sampler: Sampler[int]
    batch_size: int


@dataclass(frozen=True)
class BatchPlan:
    """How a batch becomes forward passes: at most ``max_tokens`` padded tokens each (None: one pass), the
    normaliser from ``weigh``, and with ``tail_together`` the tail rows in one pass (a term over them all)."""

    max_tokens: int | None
    weigh: Weigh | None = None
    tail_together: bool = False


class TrainingMethod:
    """Base class. ``setup`` runs once before training (e.g. circuit discovery); ``loss`` runs per pass.

    ``state``/``restore`` carry whatever the method changes during training across a checkpoint/resume.
    """

    name: ClassVar[str]
    design: ClassVar[Design] = Design()  # its place in an experiment (cartrm.training.registry)
    Settings: ClassVar[type[MethodSettings]] = MethodSettings  # its own knobs (cartrm.training.settings)
    settings_owner: ClassVar[str]  # the method whose config entry holds them (set by register)
    needs_tail: ClassVar[bool] = False
    hooks_activations: ClassVar[bool] = False  # its loss reads or patches activations through forward hooks

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.settings = config.settings_of(self.settings_owner)

    def sampler(self, tail_mask: np.ndarray, batch_size: int, seed: int, lengths: np.ndarray | None) -> Draw:
        """The order of the training rows (``tail_mask`` covers them all): a fresh shuffle per epoch."""
        return Draw(EpochShuffleSampler(len(tail_mask), seed, lengths=lengths, batch_size=batch_size), batch_size)

    def batch_plan(self, device_type: str) -> BatchPlan:
        """One forward pass per batch (a method whose loss is a sum over examples may split batches)."""
        return BatchPlan(max_tokens=None, weigh=self.example_weights)

    def setup(self, reward_model: Any, dataset: Any, context: TrainingContext) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None

    def example_weights(self, batch: TrainBatch) -> torch.Tensor:
        return batch.weight

    def passes(self, chunks: list[TrainBatch], step: int) -> list[Pass]:
        """The forward passes of one batch, each back-propagated before the next runs; a method may add passes whose
        losses add to the batch's (CART's L_aug). The last pass is one of ``chunks`` (it synchronises gradients)."""
        return list(chunks)

    def loss(self, module: Any, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


def pairwise_losses(
    rewards: torch.Tensor, margin: torch.Tensor, smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair ``-log σ(R_c − R_r − m)`` (with label smoothing ε: ``(1−ε)·that + ε·(−log σ(−z))``) and the
    logits ``z``; ``rewards`` stacks chosen over rejected."""
    chosen, rejected = rewards.chunk(2)
    logits = chosen - rejected - margin.to(rewards.device)
    losses = -F.logsigmoid(logits)
    if smoothing:
        losses = (1 - smoothing) * losses + smoothing * -F.logsigmoid(-logits)
    return losses, logits


def weighted_mean(values: torch.Tensor, weights: torch.Tensor, normaliser: torch.Tensor | None = None) -> torch.Tensor:
    return (weights * values).sum() / (weights.sum() if normaliser is None else normaliser)


def reward_centring(rewards: torch.Tensor, batch: TrainBatch, coefficient: float | None) -> torch.Tensor:
    """TRL's reward-centring term ``coefficient · mean((R_c + R_r)^2)`` over the whole batch's pairs (0 when off)."""
    if not coefficient:
        return rewards.new_zeros(())
    chosen, rejected = rewards.chunk(2)
    return coefficient * ((chosen + rejected) ** 2).sum() / batch.examples()


METHODS: dict[str, type[TrainingMethod]] = {}


def register(cls: type[TrainingMethod]) -> type[TrainingMethod]:
    """Make ``cls`` a training method under ``cls.name`` with its design and settings (a class decorator)."""
    METHODS[cls.name] = cls
    register_design(cls.name, cls.design)
    cls.settings_owner = register_settings(cls.name, cls.Settings)
    return cls


def get_method(name: str, config: TrainConfig) -> TrainingMethod:
    if name not in METHODS:
        raise CartError(f"unknown training method '{name}'; available: {', '.join(sorted(METHODS))}")
    return METHODS[name](config)
