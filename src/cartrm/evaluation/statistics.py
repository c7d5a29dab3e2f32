"""Comparisons with uncertainty: paired bootstrap of two methods on the same test pairs, and intervals over seeds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import stats

from cartrm.errors import CartError

N_PAIRED_RESAMPLES = 10_000


class PairedComparison(BaseModel):
    """Mean of ``a − b`` over the same items, its percentile bootstrap 95% interval and a two-sided p-value."""

    model_config = ConfigDict(extra="forbid")

    n: int
    difference: float
    ci_low: float
    ci_high: float
    p_value: float


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_resamples: int = N_PAIRED_RESAMPLES, seed: int = 0
) -> PairedComparison:
    """Resample items (keeping each item's pair of scores together).

    The two-sided p-value inverts the percentile interval: twice the smaller share of resampled mean
    differences on either side of zero (``(count + 1) / (resamples + 1)`` each), so p < 0.05 exactly when
    the 95% interval excludes zero (up to the ±1 correction).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise CartError(
            f"a paired comparison needs two equal-length score vectors of ≥ 2 items, got {a.shape} and {b.shape}"
        )
    differences = a - b
    observed = float(differences.mean())
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), size=(n_resamples, len(differences)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    below, above = ((means <= 0).sum() + 1) / (n_resamples + 1), ((means >= 0).sum() + 1) / (n_resamples + 1)
    p_value = float(2 * min(below, above))
    return PairedComparison(
        n=len(a), difference=observed, ci_low=float(low), ci_high=float(high), p_value=min(1.0, p_value)
    )


class SeedSummary(BaseModel):
    """Mean over seeds with a Student-t 95% interval (zero width for one seed)."""

    model_config = ConfigDict(extra="forbid")

    n_seeds: int
    mean: float
    ci_low: float
    ci_high: float
    values: list[float]


def summarise_seeds(values: Sequence[float]) -> SeedSummary:
    values = [float(v) for v in values]
    if not values:
        raise CartError("no values to summarise")
    mean = float(np.mean(values))
    if len(values) < 2 or np.std(values) == 0:
        return SeedSummary(n_seeds=len(values), mean=mean, ci_low=mean, ci_high=mean, values=values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    return SeedSummary(n_seeds=len(values), mean=mean, ci_low=float(low), ci_high=float(high), values=values)
