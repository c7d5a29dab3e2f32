"""The CART method: setup, the passes of a batch, and the loss of each pass (eq. 11-13, 16)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cartrm.capture.hooks import ActivationCapture, drop_features, pooling_mask
from cartrm.circuits.result import Circuits
from cartrm.data.dataset import PreferenceDataset
from cartrm.errors import CartError
from cartrm.models.reward_model import reward_forward
from cartrm.training.batches import AugmentedBatch, TrainBatch
from cartrm.training.config import CartConfig, TrainConfig
from cartrm.training.methods.base import (
    BatchPlan,
    Draw,
    Pass,
    TrainingContext,
    pairwise_losses,
    register,
    reward_centring,
)
from cartrm.training.methods.bt import BradleyTerry
from cartrm.training.methods.cart.augmentation import read_augmented
from cartrm.training.methods.cart.objective import circuit_invariance, grad_norms, progressive_weight
from cartrm.training.methods.cart.targets import Targets
from cartrm.training.methods.cart.variants import AUG_SCALINGS, CIRCUIT_FORMS, TAIL_SAMPLERS
from cartrm.training.registry import Design


@register
class CircuitAwareTraining(Targets, BradleyTerry):
    name = "cart"
    design = Design(start="bt-when-warm", uses_circuits=True, challenger=True, data_control="tail-upsample")
    Settings = CartConfig
    settings: CartConfig
    needs_tail = True
    hooks_activations = True  # eq. 12's circuit activations and circuit dropout

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        cart = self.settings
        self.circuit_form = CIRCUIT_FORMS.get(cart.circuit_reg_form) if cart.circuit_reg else None
        self.with_sources = cart.circuit_reg and cart.circuit_reg_form == "invariance"
        self.aug_scaling = AUG_SCALINGS[cart.aug_scaling]
        self.tail_sampler = TAIL_SAMPLERS[cart.tail_sampling]

    def sampler(self, tail_mask: np.ndarray, batch_size: int, seed: int, lengths: np.ndarray | None) -> Draw:
        """k = ``min_tail_per_batch`` tail pairs in every batch (eq. 12 needs tail texts in each), drawn by the
        ``tail_sampling`` strategy; with k = 0, bt's order."""
        k = self.settings.min_tail_per_batch
        if not k:
            return super().sampler(tail_mask, batch_size, seed, lengths)
        return self.tail_sampler(tail_mask, batch_size, k, seed, lengths)

    def batch_plan(self, device_type: str) -> BatchPlan:
        """Split like bt, but eq. 12 is a variance over the batch's tail texts: they share one forward pass."""
        plan = super().batch_plan(device_type)
        return BatchPlan(max_tokens=plan.max_tokens, weigh=plan.weigh, tail_together=True)

    def setup(self, reward_model: Any, dataset: Any, context: TrainingContext) -> None:
        cart = self.settings
        if cart.augmentation and not isinstance(dataset, PreferenceDataset):
            raise CartError("CART augmentation needs preference pairs; use --no-aug for scored (pointwise) data")
        if cart.targets_from == "decisive" and not isinstance(dataset, PreferenceDataset):
            raise CartError("the decisive circuit is found on preference pairs; use --targets-from circuits here")
        self.reward_model, self.dataset, self.context = reward_model, dataset, context
        self.eta = cart.progressive_eta or cart.w_max / (cart.progressive_ramp * context.total_steps)
        self.targets = []
        self.augmented = []
        self.artifacts = None
        self._last_step = -1
        self._aug_grad_norms: dict[str, float] = {}
        if context.circuits is not None:
            self._choose_targets(context.circuits, context.vulnerability, step=0)
            self.next_discovery = cart.rediscover_every or None
        else:
            self.next_discovery = cart.warmup_steps or max(1, round(0.1 * context.total_steps))

    def state(self) -> dict[str, Any]:
        return {"next_discovery": self.next_discovery, "artifacts": self.artifacts}

    def restore(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.next_discovery = state["next_discovery"]
        if state["artifacts"] and state["artifacts"] != self.artifacts:
            folder = Path(state["artifacts"])
            circuits = Circuits.load(folder / "circuits.json")
            targets, features = self._targets_of(circuits, json.loads((folder / "targets.json").read_text()))
            self._use(circuits, targets, features, read_augmented(folder / "augmented.jsonl"), folder)

    def passes(self, chunks: list[TrainBatch], step: int) -> list[Pass]:
        """The batch's passes, after L_aug's own pass when its tail pairs have augmentations (its gradient adds to
        the rest; a pass of its own keeps the two sets of activations from being held at once)."""
        if step != self._last_step:
            self._last_step = step
            if self.next_discovery is not None and step >= self.next_discovery:
                self._discover(step)
        first = chunks[0]
        normaliser = first.normaliser if first.normaliser is not None else first.weight.sum()
        augmented = self._augmentation_batch(torch.cat([chunk.index[chunk.is_tail] for chunk in chunks]), normaliser)
        return ([augmented] if augmented else []) + list(chunks)

    def loss(self, module: Any, batch: Pass, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        cart = self.settings
        measure = bool(cart.grad_norm_every) and (step + 1) % cart.grad_norm_every == 0
        if isinstance(batch, AugmentedBatch):
            return self._augmentation_loss(module, batch, step, measure)
        tail_rows = bool(batch.is_tail.any())
        dropout = self._circuit_dropout(batch, step) if cart.circuit_dropout and self.targets and tail_rows else {}
        regularise = self.circuit_form is not None and bool(self.targets) and tail_rows
        if regularise or dropout:
            with ActivationCapture(
                _unwrap(module), self.sites, self.pooling, keep_grad=True, interventions=dropout
            ) as capture:
                capture.set_mask(pooling_mask(batch))
                rewards = reward_forward(module, batch)
        else:
            rewards = reward_forward(module, batch)
        variance = (
            self._circuit_term(capture.pooled, batch.is_tail.to(rewards.device), batch.scored) if regularise else None
        )
        loss, logs = self.preference_loss(rewards, batch, step)
        terms = {"preference": loss}
        if variance is not None:
            terms["circuit"] = cart.circuit_reg_weight * variance
            loss = loss + terms["circuit"]
            logs["circuit_var"] = variance.item()
        if measure and tail_rows:
            logs |= self._gradient_shares(module, terms)
        logs["loss"] = loss.item()
        return loss, logs

    def _circuit_term(self, pooled: dict[str, torch.Tensor], is_tail: torch.Tensor, scored: bool) -> torch.Tensor:
        """eq. 12 over the batch's tail texts, in the ``circuit_reg_form`` chosen when the method was made."""
        assert self.circuit_form is not None
        return self.circuit_form(pooled, self.targets, is_tail, scored)

    def _gradient_shares(self, module: Any, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        """Each term's gradient norm (this pass; L_aug's from its own pass of the same step) and its share of
        their sum: how much of an update each term drives."""
        norms = grad_norms(module, terms)
        norms |= self._aug_grad_norms
        self._aug_grad_norms = {}
        total = sum(norms.values()) or 1.0
        return {f"grad_norm/{k}": v for k, v in norms.items()} | {
            f"grad_share/{k}": v / total for k, v in norms.items()
        }

    def _circuit_dropout(self, batch: TrainBatch, step: int) -> dict[str, Any]:
        """Interventions zeroing each target circuit's neurons in the forward pass of a tail pair's two texts,
        per (pair, circuit) with probability ``circuit_dropout`` (seeded by the run's seed and the step)."""
        is_tail = batch.is_tail.bool()
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        drop = torch.rand(len(is_tail), len(self.targets), generator=generator) < self.settings.circuit_dropout
        drop = drop & is_tail.cpu().unsqueeze(1)
        drop = torch.cat([drop, drop])  # chosen stacked over rejected: a pair's two texts lose the same circuits
        interventions = {}
        for site in self.sites:
            parts = [(i, t.by_site[site.name]) for i, t in enumerate(self.targets) if site.name in t.by_site]
            indices = torch.as_tensor(np.concatenate([local for _, local in parts]))
            keep = torch.cat([(~drop[:, [i]]).expand(-1, len(local)) for i, local in parts], dim=1)
            interventions[site.name] = drop_features(indices, keep)
        return interventions

    def _augmentation_loss(
        self, module: Any, batch: AugmentedBatch, step: int, measure: bool
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """eq. 11: the Bradley–Terry loss on the kept augmentations of the batch's tail pairs; with the invariance
        form of eq. 12 their source pairs ride along and λ Σ_c mean (a_c(x̃) − a_c(x))² is added."""
        cart = self.settings
        if not batch.with_sources:
            losses, _ = pairwise_losses(reward_forward(module, batch), batch.margin)
            aug_loss = cart.aug_weight * self._augmentation_share(losses, batch, step)
            if measure:
                self._aug_grad_norms = grad_norms(module, {"aug": aug_loss})
            return aug_loss, {"aug_loss": losses.mean().item(), "loss": aug_loss.item()}
        with ActivationCapture(_unwrap(module), self.sites, self.pooling, keep_grad=True) as capture:
            capture.set_mask(pooling_mask(batch))
            rewards = reward_forward(module, batch)
        edited = rewards[: len(rewards) // 2]  # augmented chosen, augmented rejected; then their sources' texts
        losses, _ = pairwise_losses(edited, batch.margin)
        penalty = circuit_invariance(capture.pooled, self.targets)
        terms = {
            "aug": cart.aug_weight * self._augmentation_share(losses, batch, step),
            "circuit": cart.circuit_reg_weight * penalty,
        }
        if measure:
            self._aug_grad_norms = grad_norms(module, terms)
        loss = terms["aug"] + terms["circuit"]
        logs = {"aug_loss": losses.mean().item(), "circuit_invariance": penalty.item()}
        return loss, logs | {"loss": loss.item()}

    def _augmentation_share(self, losses: torch.Tensor, batch: AugmentedBatch, step: int) -> torch.Tensor:
        """L_aug before ``aug_weight``, scaled by the ``aug_scaling`` strategy."""
        return self.aug_scaling(losses, batch.normaliser, self._tail_weight(step))

    def _tail_weight(self, step: int) -> float:
        """eq. 13's w_t (1 without the progressive curriculum)."""
        cart = self.settings
        return progressive_weight(step, self.eta, cart.w_max) if cart.progressive else 1.0

    def preference_loss(
        self, rewards: torch.Tensor, batch: TrainBatch, step: int = 0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """L_head + L_prog: tail pairs weighted by eq. 13, normalised by the base weights (plus TRL's reward
        centring when ``center_rewards_coefficient`` is set, as for every method)."""
        base = batch.weight.to(rewards.device)
        normaliser = batch.normaliser.to(rewards.device) if batch.normaliser is not None else base.sum()
        tail_weight = self._tail_weight(step)
        weights = base * torch.where(batch.is_tail.to(rewards.device), tail_weight, 1.0)
        if batch.score is not None:
            loss = (weights * (rewards - batch.score.to(rewards.device)) ** 2).sum() / normaliser
            return loss, {"tail_weight": tail_weight}
        assert batch.margin is not None
        losses, logits = pairwise_losses(rewards, batch.margin)
        loss = (weights * losses).sum() / normaliser
        loss = loss + reward_centring(rewards, batch, self.config.center_rewards_coefficient)
        return loss, {"accuracy": (logits > 0).float().mean().item(), "tail_weight": tail_weight}


def _unwrap(module: Any) -> Any:
    """The model inside a DDP wrapper (hooks go on the real modules)."""
    return getattr(module, "module", module)
