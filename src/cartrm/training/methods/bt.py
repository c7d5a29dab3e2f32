"""``bt``: plain Bradley–Terry (squared error on scored data), the baseline every other method is read against."""

from __future__ import annotations

from typing import Any

import torch

from cartrm.models.reward_model import reward_forward
from cartrm.training.batches import TrainBatch
from cartrm.training.methods.base import (
    BatchPlan,
    TrainingMethod,
    pairwise_losses,
    register,
    reward_centring,
    weighted_mean,
)


@register
class BradleyTerry(TrainingMethod):
    """``-log σ(R(x_c) - R(x_r) - m)`` per pair (``m`` the optional margin), weighted; squared error for pointwise data.

    With ``center_rewards_coefficient`` the mean of ``(R_c + R_r)^2`` is added, as in TRL's RewardTrainer.
    """

    name = "bt"

    def batch_plan(self, device_type: str) -> BatchPlan:
        """The loss is a sum over examples, so a batch may run as several forward passes."""
        return BatchPlan(max_tokens=self.config.batch_tokens(device_type), weigh=self.example_weights)

    def smoothing(self) -> float:
        return 0.0

    def loss(self, module: Any, batch: TrainBatch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rewards = reward_forward(module, batch)
        return self.preference_loss(rewards, batch)

    def preference_loss(self, rewards: torch.Tensor, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        weights = self.example_weights(batch).to(rewards.device)
        normaliser = batch.normaliser.to(rewards.device) if batch.normaliser is not None else None
        if batch.score is not None:
            loss = weighted_mean((rewards - batch.score.to(rewards.device)) ** 2, weights, normaliser)
            return loss, {"loss": loss.item()}
        assert batch.margin is not None
        losses, logits = pairwise_losses(rewards, batch.margin, self.smoothing())
        loss = weighted_mean(losses, weights, normaliser)
        loss = loss + reward_centring(rewards, batch, self.config.center_rewards_coefficient)
        return loss, {"loss": loss.item(), "accuracy": (logits > 0).float().mean().item()}
