"""Comparing circuits: how far one circuit's tail activations sit from its head activations, and how much two
sets of tail neurons overlap (used by discovery, the bound of eq. 4-5, ensembles and the run report)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np
from scipy.stats import wasserstein_distance

from cartrm.circuits.result import Circuits
from cartrm.errors import CartError


def finite_vector(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or not len(values):
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return values


def _pooled_std(a: np.ndarray, b: np.ndarray) -> float:
    dof = len(a) + len(b) - 2
    squares = ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()
    return math.sqrt(squares / dof) if dof > 0 else 0.0


def circuit_divergence(a_tail: np.ndarray, a_head: np.ndarray) -> float:
    """``W₁(a_tail, a_head) / pooled within-group std`` for one circuit's activations.

    Where both groups are constant (within-group std 0) the std of the pooled sample is used instead, so two
    different constants still diverge; if every activation is equal the divergence is 0.
    """
    a_tail, a_head = finite_vector(a_tail, "a_tail"), finite_vector(a_head, "a_head")
    distance = wasserstein_distance(a_tail, a_head)
    scale = _pooled_std(a_tail, a_head) or float(np.concatenate([a_tail, a_head]).std())
    return distance / scale if scale > 0 else 0.0


def circuit_overlap(neuron_sets: Sequence[set[int]]) -> float:
    """Mean pairwise Jaccard index ``|A ∩ B| / |A ∪ B|`` of the members' neuron sets (two empty sets count 1).

    Complementarity is ``1 − overlap``.
    """
    if len(neuron_sets) < 2:
        raise CartError(f"circuit overlap needs at least two neuron sets, got {len(neuron_sets)}")
    return float(
        np.mean([len(a & b) / len(a | b) if a | b else 1.0 for a, b in combinations(map(set, neuron_sets), 2)])
    )


def top_tail_neurons(circuits: Circuits, k: int) -> set[int]:
    """Global feature ids of the ``k`` neurons with the largest |tail-vs-head effect size|."""
    if k < 1:
        raise CartError(f"top_tail_neurons needs k >= 1, got {k}")
    ranked = sorted(circuits.neurons, key=lambda n: (-abs(n.effect_size), n.feature))
    return {n.feature for n in ranked[:k]}
