"""CART's ablation options as named strategies, each chosen once when the method is made:

- ``circuit_reg_form`` (eq. 12 on the batch's own pass): ``pooled`` or ``within_sides`` (:data:`CIRCUIT_FORMS`);
  ``invariance`` runs on L_aug's pass instead (:func:`~.objective.circuit_invariance`);
- ``aug_scaling`` (how L_aug enters the loss): ``separate_mean`` or ``batch_share`` (:data:`AUG_SCALINGS`);
- ``tail_sampling`` (how batches get their k tail pairs): ``swap`` or ``add`` (:data:`TAIL_SAMPLERS`).

The augmentation selection (``aug_selection``: circuits or random) is the ``selection`` of
:func:`cartrm.training.augment.augment_tail_pairs`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from cartrm.training.methods.base import Draw
from cartrm.training.methods.cart.objective import TargetCircuit, circuit_variance
from cartrm.training.sampling import TailAddingSampler, TailAwareSampler

CircuitForm = Callable[[dict[str, torch.Tensor], list[TargetCircuit], torch.Tensor, bool], torch.Tensor]
AugScaling = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
TailSampler = Callable[[np.ndarray, int, int, int, "np.ndarray | None"], Draw]


def pooled(pooled: dict[str, torch.Tensor], targets: list[TargetCircuit], is_tail: torch.Tensor, scored: bool):
    """eq. 12 as written: the variance over the batch's tail texts, chosen and rejected together (for pairs,
    chosen stacked over rejected)."""
    if scored:
        return circuit_variance(pooled, targets, is_tail)
    return circuit_variance(pooled, targets, torch.cat([is_tail, is_tail]))


def within_sides(pooled: dict[str, torch.Tensor], targets: list[TargetCircuit], is_tail: torch.Tensor, scored: bool):
    """eq. 12 as the mean of each side's variance over the tail texts (the chosen–rejected gap left out)."""
    if scored:
        return circuit_variance(pooled, targets, is_tail)
    none = torch.zeros_like(is_tail)
    chosen = circuit_variance(pooled, targets, torch.cat([is_tail, none]))
    rejected = circuit_variance(pooled, targets, torch.cat([none, is_tail]))
    return (chosen + rejected) / 2


CIRCUIT_FORMS: dict[str, CircuitForm] = {"pooled": pooled, "within_sides": within_sides}


def separate_mean(losses: torch.Tensor, normaliser: torch.Tensor, tail_weight: float) -> torch.Tensor:
    """L_aug (eq. 11) before ``aug_weight`` as its own mean over the batch's augmented pairs."""
    return losses.mean()


def batch_share(losses: torch.Tensor, normaliser: torch.Tensor, tail_weight: float) -> torch.Tensor:
    """Each augmented pair weighted like a tail pair of the batch: w_t over the batch's base weight B."""
    return tail_weight * losses.sum() / normaliser.to(losses.device)


AUG_SCALINGS: dict[str, AugScaling] = {"separate_mean": separate_mean, "batch_share": batch_share}


def swap(tail_mask: np.ndarray, batch_size: int, k: int, seed: int, lengths: np.ndarray | None) -> Draw:
    """k tail pairs per batch, swapped in for head pairs of batches short of them."""
    return Draw(TailAwareSampler(tail_mask, batch_size, k, seed, lengths=lengths), batch_size)


def add(tail_mask: np.ndarray, batch_size: int, k: int, seed: int, lengths: np.ndarray | None) -> Draw:
    """k tail pairs added on top of each of bt's own batches (batches of ``batch_size + k``)."""
    return Draw(TailAddingSampler(tail_mask, batch_size, k, seed, lengths=lengths), batch_size + k)


TAIL_SAMPLERS: dict[str, TailSampler] = {"swap": swap, "add": add}
