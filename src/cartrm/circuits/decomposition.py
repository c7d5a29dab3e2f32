"""Circuit decomposition of the reward (eq. 1): ``R(x) = Σ_i w_i a_i(x) + ε(x)``, fit by ridge regression.

The weights are in the units of the raw activations (no standardisation), so ``w_i`` reads directly as
reward per unit of circuit activation; ``alpha`` therefore acts on that raw scale. The in-sample R² is the
share of reward variance the circuits explain on the data; the cross-validated R² (shuffled K-fold) is the
honest one when circuits are many against examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_val_score


@dataclass(frozen=True)
class Decomposition:
    """Ridge fit of eq. 1: ``weights`` (C,), ``intercept``, in-sample ``r2``, mean K-fold ``cv_r2`` (or None)."""

    weights: np.ndarray
    intercept: float
    r2: float
    cv_r2: float | None


def decompose_reward(
    circuit_acts: np.ndarray,
    rewards: np.ndarray,
    alpha: float = 1.0,
    cv_folds: int | None = 5,
    seed: int = 0,
) -> Decomposition:
    """Fit eq. 1 on ``circuit_acts`` (N, C) and ``rewards`` (N,); ``cv_folds=None`` skips cross-validation."""
    x = np.asarray(circuit_acts, dtype=np.float64)
    y = np.asarray(rewards, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"need circuit_acts (N, C) and rewards (N,), got {x.shape} and {y.shape}")
    model = Ridge(alpha=alpha).fit(x, y)  # eq. 1
    cv_r2 = None
    if cv_folds:
        folds = KFold(n_splits=cv_folds, shuffle=True, random_state=seed)
        cv_r2 = float(cross_val_score(Ridge(alpha=alpha), x, y, cv=folds, scoring="r2").mean())
    return Decomposition(
        weights=model.coef_.copy(),
        intercept=float(model.intercept_),
        r2=float(model.score(x, y)),
        cv_r2=cv_r2,
    )
