"""Training methods: each turns a batch into a loss. New methods register under a name.

A method sees the (possibly DDP-wrapped) model module and a batch built by the trainer, so a method that
needs hooks, hidden states or extra forward passes can do them here without touching the training loop.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from cartrm.errors import CartError
from cartrm.models.reward_model import reward_forward
from cartrm.training.config import TrainConfig

METHODS: dict[str, type[TrainingMethod]] = {}


def register(cls: type[TrainingMethod]) -> type[TrainingMethod]:
    METHODS[cls.name] = cls
    return cls


def get_method(name: str, config: TrainConfig) -> TrainingMethod:
    if name not in METHODS:
        raise CartError(f"unknown training method '{name}'; available: {', '.join(sorted(METHODS))}")
    return METHODS[name](config)


class TrainingMethod:
    """Base class. ``setup`` runs once before training (e.g. circuit discovery); ``loss`` runs per batch."""

    name: ClassVar[str]

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def setup(self, reward_model: Any, dataset: Any) -> None:
        return None

    def loss(self, module: Any, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


@register
class BradleyTerry(TrainingMethod):
    """``-log σ(R(x_c) - R(x_r) - m)`` per pair (``m`` the optional margin), weighted; squared error for pointwise data.

    With ``center_rewards_coefficient`` the mean of ``(R_c + R_r)^2`` is added, as in TRL's RewardTrainer.
    """

    name = "bt"

    def loss(self, module: Any, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rewards = reward_forward(module, batch)
        weights = batch["weight"].to(rewards.device)
        if "score" in batch:
            per_example = (rewards - batch["score"].to(rewards.device)) ** 2
            loss = (weights * per_example).sum() / weights.sum()
            return loss, {"loss": loss.item()}
        chosen, rejected = rewards.chunk(2)
        logits = chosen - rejected - batch["margin"].to(rewards.device)
        loss = (weights * -F.logsigmoid(logits)).sum() / weights.sum()
        if self.config.center_rewards_coefficient:
            loss = loss + self.config.center_rewards_coefficient * ((chosen + rejected) ** 2).mean()
        return loss, {"loss": loss.item(), "accuracy": (logits > 0).float().mean().item()}
