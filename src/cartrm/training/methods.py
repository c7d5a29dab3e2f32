"""Training methods: each turns a batch into a loss. New methods register under a name.

A method sees the (possibly DDP-wrapped) model module and a batch built by the trainer, so a method that
needs hooks, hidden states or extra forward passes can do them here without touching the training loop.
Batches carry ``weight`` per pair, ``is_tail`` per pair, and ``margin`` (pairs) or ``score`` (pointwise).

Baselines for CART (SPEC, section "What it works means"): ``bt`` (plain Bradley–Terry), ``label-smoothing``,
``reweight`` (tail importance weights) and ``hidden-reg`` (hidden-state regularisation after GRM).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from cartrm.circuits.result import Circuits
from cartrm.errors import CartError
from cartrm.models.reward_model import reward_forward
from cartrm.training.batches import BatchBuilder
from cartrm.training.config import TrainConfig
from cartrm.training.registry import Design, register_design
from cartrm.vulnerability.result import VulnerabilityReport

METHODS: dict[str, type[TrainingMethod]] = {}
ANCHOR_BATCH = 32


def register(cls: type[TrainingMethod]) -> type[TrainingMethod]:
    METHODS[cls.name] = cls
    register_design(cls.name, cls.design)
    return cls


def get_method(name: str, config: TrainConfig) -> TrainingMethod:
    if name not in METHODS:
        raise CartError(f"unknown training method '{name}'; available: {', '.join(sorted(METHODS))}")
    return METHODS[name](config)


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


class TrainingMethod:
    """Base class. ``setup`` runs once before training (e.g. circuit discovery); ``loss`` runs per batch.

    ``state``/``restore`` carry whatever the method changes during training across a checkpoint/resume.
    """

    name: ClassVar[str]
    design: ClassVar[Design] = Design()  # its place in an experiment (cartrm.training.registry)
    needs_tail: ClassVar[bool] = False
    splittable: ClassVar[bool] = False  # the loss is a sum over examples, so a batch may run as several forward passes
    keeps_tail_together: ClassVar[bool] = (
        False  # when split, the batch's tail rows share one pass (a term over them all)
    )

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    @property
    def min_tail_per_batch(self) -> int:
        return 0

    @property
    def adds_tail_pairs(self) -> bool:
        """True: ``min_tail_per_batch`` tail pairs are added on top of each batch (head coverage stays bt's);
        False: they replace head pairs of batches short of them."""
        return False

    def setup(self, reward_model: Any, dataset: Any, context: TrainingContext) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None

    def example_weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["weight"]

    def passes(self, chunks: list[dict[str, torch.Tensor]], step: int) -> list[dict[str, torch.Tensor]]:
        """The forward passes of one batch, each back-propagated before the next runs; a method may add passes whose
        losses add to the batch's (CART's L_aug). The last pass is one of ``chunks`` (it synchronises gradients)."""
        return chunks

    def loss(self, module: Any, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


def pairwise_losses(
    rewards: torch.Tensor, batch: dict[str, torch.Tensor], smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair ``-log σ(R_c − R_r − m)`` (with label smoothing ε: ``(1−ε)·that + ε·(−log σ(−z))``) and the
    logits ``z``; ``rewards`` stacks chosen over rejected."""
    chosen, rejected = rewards.chunk(2)
    logits = chosen - rejected - batch["margin"].to(rewards.device)
    losses = -F.logsigmoid(logits)
    if smoothing:
        losses = (1 - smoothing) * losses + smoothing * -F.logsigmoid(-logits)
    return losses, logits


def weighted_mean(values: torch.Tensor, weights: torch.Tensor, normaliser: torch.Tensor | None = None) -> torch.Tensor:
    return (weights * values).sum() / (weights.sum() if normaliser is None else normaliser)


def batch_count(batch: dict[str, torch.Tensor]) -> int:
    """Examples in the whole batch when ``batch`` is one of its forward passes (see ``BatchBuilder.chunks``)."""
    return int(batch["count"]) if "count" in batch else len(batch["weight"])


def reward_centring(rewards: torch.Tensor, batch: dict[str, torch.Tensor], coefficient: float | None) -> torch.Tensor:
    """TRL's reward-centring term ``coefficient · mean((R_c + R_r)^2)`` over the whole batch's pairs (0 when off)."""
    if not coefficient:
        return rewards.new_zeros(())
    chosen, rejected = rewards.chunk(2)
    return coefficient * ((chosen + rejected) ** 2).sum() / batch_count(batch)


@register
class BradleyTerry(TrainingMethod):
    """``-log σ(R(x_c) - R(x_r) - m)`` per pair (``m`` the optional margin), weighted; squared error for pointwise data.

    With ``center_rewards_coefficient`` the mean of ``(R_c + R_r)^2`` is added, as in TRL's RewardTrainer.
    """

    name = "bt"
    splittable = True

    def smoothing(self) -> float:
        return 0.0

    def loss(self, module: Any, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rewards = reward_forward(module, batch)
        return self.preference_loss(rewards, batch)

    def preference_loss(
        self, rewards: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        weights = self.example_weights(batch).to(rewards.device)
        normaliser = batch["normaliser"].to(rewards.device) if "normaliser" in batch else None
        if "score" in batch:
            loss = weighted_mean((rewards - batch["score"].to(rewards.device)) ** 2, weights, normaliser)
            return loss, {"loss": loss.item()}
        losses, logits = pairwise_losses(rewards, batch, self.smoothing())
        loss = weighted_mean(losses, weights, normaliser)
        loss = loss + reward_centring(rewards, batch, self.config.center_rewards_coefficient)
        return loss, {"loss": loss.item(), "accuracy": (logits > 0).float().mean().item()}


@register
class LabelSmoothing(BradleyTerry):
    """Bradley–Terry with label smoothing ε (``TrainConfig.label_smoothing``): the target preference is 1 − ε."""

    name = "label-smoothing"

    def smoothing(self) -> float:
        return self.config.label_smoothing


@register
class TailReweight(BradleyTerry):
    """Importance weights: tail pairs weigh ``tail_weight`` (default ``N_head / N_tail``, so head and tail
    contribute equally), head pairs 1; the loss is the weighted mean."""

    name = "reweight"
    needs_tail = True

    def setup(self, reward_model: Any, dataset: Any, context: TrainingContext) -> None:
        n_tail = int(context.tail_mask.sum())
        if n_tail == 0 or n_tail == len(context.tail_mask):
            raise CartError("reweight needs both head and tail examples in the training data")
        self.tail_weight = self.config.tail_weight or (len(context.tail_mask) - n_tail) / n_tail

    def example_weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["weight"] * torch.where(batch["is_tail"], self.tail_weight, 1.0)


@register
class HiddenStateRegularisation(BradleyTerry):
    """Bradley–Terry plus ``hidden_reg_weight · mean_j (h_j(x) − h⁰_j(x))²``, the drift of the mean-pooled
    final-layer hidden state from the initial model's.

    In the spirit of GRM (Yang et al. 2024), which regularises a reward model's hidden states so they keep
    the base model's abilities (there via a language-modelling loss through the frozen LM head). Encoder
    reward models such as MiniLM have no LM head, so the hidden states are anchored directly; h⁰ is computed
    once for every training text with the model as it is before training.
    """

    name = "hidden-reg"

    def setup(self, reward_model: Any, dataset: Any, context: TrainingContext) -> None:
        builder = BatchBuilder(reward_model, dataset, max_length=context.max_length)
        self.n, self.pairwise = len(dataset), builder.pairwise
        self.anchor = torch.zeros(self.n * (2 if self.pairwise else 1), reward_model.model.config.hidden_size)
        with reward_model.eval_mode(), torch.inference_mode():
            for start in range(0, self.n, ANCHOR_BATCH):
                batch = builder(list(range(start, min(start + ANCHOR_BATCH, self.n))))
                self.anchor[self._rows(batch)] = _pooled_hidden(reward_model.model, batch)[1].float().cpu()

    def _rows(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rows = batch["index"]
        return torch.cat([rows, rows + self.n]) if self.pairwise else rows

    def loss(self, module: Any, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rewards, hidden = _pooled_hidden(module, batch)
        loss, logs = self.preference_loss(rewards, batch)
        squared = (hidden - self.anchor[self._rows(batch).cpu()].to(hidden.device, hidden.dtype)) ** 2
        drift = squared.sum() / (batch_count(batch) * squared.shape[0] / len(batch["weight"]) * squared.shape[1])
        logs["hidden_drift"] = squared.mean().item()
        return loss + self.config.hidden_reg_weight * drift, logs


def _pooled_hidden(module: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards (B,) and the final hidden state mean-pooled over attended tokens (B, d), from one forward."""
    device = next(module.parameters()).device
    mask = batch["attention_mask"].to(device)
    output = module(input_ids=batch["input_ids"].to(device), attention_mask=mask, output_hidden_states=True)
    weights = mask.unsqueeze(-1).to(output.hidden_states[-1].dtype)
    pooled = (output.hidden_states[-1] * weights).sum(1) / weights.sum(1)
    return output.logits.squeeze(-1), pooled
