"""The terms of the CART objective (eq. 12, 13) on captured activations, and per-term gradient norms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class TargetCircuit:
    """A circuit of C_v as the regulariser reads it: per site, the local indices of its members."""

    id: str
    members: np.ndarray
    by_site: dict[str, np.ndarray]


def progressive_weight(step: int, eta: float, w_max: float) -> float:
    """eq. 13: ``w_t = min(w_max, η·t)`` with ``t = step + 1`` (the optimizer step being taken)."""
    return min(w_max, eta * (step + 1))


def circuit_activation(pooled: dict[str, torch.Tensor], target: TargetCircuit) -> torch.Tensor:
    """a_c(x) per row: the mean of the circuit members' pooled activations."""
    parts = [pooled[name][:, torch.as_tensor(local)] for name, local in target.by_site.items()]
    return torch.cat(parts, dim=1).mean(dim=1)


def circuit_variance(pooled: dict[str, torch.Tensor], targets: list[TargetCircuit], rows: torch.Tensor) -> torch.Tensor:
    """eq. 12 without λ: Σ_c Var over ``rows`` of a_c(x), the mean of the members' pooled activations."""
    total = next(iter(pooled.values())).new_zeros(())
    if int(rows.sum()) < 2:
        return total
    for target in targets:
        total = total + circuit_activation(pooled, target)[rows].var(unbiased=False)
    return total


def circuit_invariance(pooled: dict[str, torch.Tensor], targets: list[TargetCircuit]) -> torch.Tensor:
    """eq. 12, invariance form, without λ: Σ_c mean over text pairs of (a_c(x̃) − a_c(x))², the rows holding
    edited texts x̃ first and their originals x, in the same order, second."""
    total = next(iter(pooled.values())).new_zeros(())
    for target in targets:
        edited, original = circuit_activation(pooled, target).chunk(2)
        total = total + ((edited - original) ** 2).mean()
    return total


def grad_norms(module: Any, terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """The L2 norm of each term's gradient over the trainable parameters (the graph is kept for backward)."""
    parameters = [p for p in module.parameters() if p.requires_grad]
    norms = {}
    for name, term in terms.items():
        grads = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
        norms[name] = float(torch.sqrt(sum(((g.float() ** 2).sum() for g in grads if g is not None), torch.zeros(()))))
    return norms
