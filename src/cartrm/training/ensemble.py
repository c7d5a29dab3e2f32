"""Circuit-aware ensembling, the weights (eq. 15): α on the probability simplex, fit on held-out tail data by
minimising the pairwise loss of ``Σ_k α_k R_k`` (or squared error for pointwise data), and the split of the
vulnerable circuits ``C_v`` among the members (:func:`split_targets`). The ensemble as a reward model is
:class:`cartrm.models.ensemble.EnsembleRewardModel`; training its members is
:func:`cartrm.experiments.ensemble.train_ensemble`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from cartrm.errors import CartError

# --- eq. 15: weights on the simplex -------------------------------------------------------------------------


def fit_simplex_weights(chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """α on the simplex minimising the mean of ``−log σ(Σ_k α_k (r_c^k − r_r^k))`` over the N pairs (eq. 15).

    ``chosen`` and ``rejected`` are (K, N): member k's rewards of pair n's chosen and rejected response.
    """
    chosen, rejected = _member_matrix(chosen, "chosen"), _member_matrix(rejected, "rejected")
    if chosen.shape != rejected.shape:
        raise CartError(f"chosen {chosen.shape} and rejected {rejected.shape} rewards differ in shape")
    margins = chosen - rejected
    return _minimise_on_simplex(
        lambda a: ensemble_pairwise_loss(a, margins), lambda a: _pairwise_gradient(a, margins), len(margins)
    )


def fit_simplex_weights_pointwise(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """α on the simplex minimising the mean squared error of ``Σ_k α_k s_k(x)`` against ``targets`` (eq. 15)."""
    scores = _member_matrix(scores, "scores")
    targets = np.asarray(targets, dtype=np.float64)
    if targets.shape != scores.shape[1:]:
        raise CartError(f"{scores.shape[1]} scores per member but targets of shape {targets.shape}")
    if not np.isfinite(targets).all():
        raise CartError("targets contain NaN or infinite values")
    return _minimise_on_simplex(
        lambda a: ensemble_squared_loss(a, scores, targets),
        lambda a: 2.0 * scores @ (a @ scores - targets) / len(targets),
        len(scores),
    )


def _member_matrix(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise CartError(f"{name} must be a non-empty (members, examples) array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise CartError(f"{name} contain NaN or infinite values")
    return values


def ensemble_pairwise_loss(alpha: np.ndarray, margins: np.ndarray) -> float:
    """eq. 15 on pairs: the mean ``−log σ(Σ_k α_k (R_k(chosen) − R_k(rejected)))``; ``margins`` is (members, pairs)."""
    return float(np.logaddexp(0.0, -(alpha @ margins)).mean())


def _pairwise_gradient(alpha: np.ndarray, margins: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return -(margins @ expit(-(alpha @ margins))) / margins.shape[1]


def ensemble_squared_loss(alpha: np.ndarray, scores: np.ndarray, targets: np.ndarray) -> float:
    """eq. 15 on scored data: the mean squared error of ``Σ_k α_k R_k``; ``scores`` is (members, examples)."""
    return float(np.mean((alpha @ scores - targets) ** 2))


def _minimise_on_simplex(objective: Callable, gradient: Callable, k: int) -> np.ndarray:
    """SLSQP from the uniform point with bounds ``[0, 1]`` and ``Σ α = 1``; both objectives are convex, so a
    local minimum is global. The answer is projected onto the simplex to remove the solver's last rounding."""
    from scipy.optimize import minimize

    result = minimize(
        objective,
        np.full(k, 1.0 / k),
        jac=gradient,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * k,
        constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1.0, "jac": lambda a: np.ones_like(a)}],
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    return _project_to_simplex(result.x)


def _project_to_simplex(values: np.ndarray) -> np.ndarray:
    """The Euclidean projection onto ``{α ≥ 0, Σ α = 1}`` (Duchi et al. 2008)."""
    values = np.asarray(values, dtype=np.float64)
    ordered = np.sort(values)[::-1]
    cumulative = np.cumsum(ordered) - 1.0
    last = np.flatnonzero(ordered - cumulative / np.arange(1, len(values) + 1) > 0)[-1]
    alpha = np.maximum(values - cumulative[last] / (last + 1), 0.0)
    return alpha / alpha.sum()


# --- targets ----------------------------------------------------------------------------------------------------


def split_targets(target_ids: Sequence[str], k: int) -> list[tuple[str, ...]]:
    """Give member i the targets ``target_ids[i::k]`` (round-robin), so members regularise different slices of
    ``C_v`` and together cover all of it. With fewer targets than members, member i targets
    ``target_ids[i mod len(target_ids)]``: every member gets one, some share it (they still differ in seed)."""
    if k < 1:
        raise CartError(f"cannot split targets among {k} members")
    if not target_ids:
        raise CartError("no target circuits to split among the ensemble members")
    if len(target_ids) < k:
        return [(target_ids[i % len(target_ids)],) for i in range(k)]
    return [tuple(target_ids[i::k]) for i in range(k)]
