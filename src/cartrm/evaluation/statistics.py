"""Comparisons with uncertainty: two methods on the same test pairs with the seed as the unit (hierarchical
bootstrap), and intervals over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

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
    n_seeds: int = 1
    per_seed: list[float] = []  # the difference in each seed (hierarchical comparisons)


def hierarchical_bootstrap(
    a_by_seed: Sequence[np.ndarray],
    b_by_seed: Sequence[np.ndarray],
    n_resamples: int = N_PAIRED_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedComparison:
    """``a − b`` with the seed as the unit: the mean over seeds of each seed's mean difference, and a two-stage
    bootstrap — resample seeds with replacement, then the pairs within each drawn seed — so the interval holds
    training variance across seeds as well as sampling variance of the test pairs. With one seed it is the
    plain paired bootstrap over items (each item's two scores kept together).

    The two-sided p-value uses the mid-p rule: twice the smaller of ``P(T < 0) + P(T = 0)/2`` and
    ``P(T > 0) + P(T = 0)/2`` over the resampled differences ``T``.
    """
    pairs = [(np.asarray(a, np.float64), np.asarray(b, np.float64)) for a, b in zip(a_by_seed, b_by_seed)]
    if not pairs or len(a_by_seed) != len(b_by_seed) or any(a.shape != b.shape or a.ndim != 1 for a, b in pairs):
        raise CartError("a hierarchical comparison needs, for every seed, two equal-length score vectors")
    differences = [a - b for a, b in pairs]
    if any(len(d) < 2 for d in differences):
        raise CartError("a hierarchical comparison needs ≥ 2 items in every seed")
    rng = np.random.default_rng(seed)
    n_seeds = len(differences)
    drawn = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    means = _pair_resample_means(differences, drawn, rng).mean(axis=1)
    per_seed = [float(d.mean()) for d in differences]
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    ties = (means == 0).mean() / 2
    p_value = 2 * min((means < 0).mean() + ties, (means > 0).mean() + ties)
    return PairedComparison(
        n=sum(len(d) for d in differences),
        difference=float(np.mean(per_seed)),
        ci_low=float(low),
        ci_high=float(high),
        p_value=float(min(1.0, p_value)),
        n_seeds=n_seeds,
        per_seed=per_seed,
    )


def _pair_resample_means(differences: Sequence[np.ndarray], drawn: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For every (resample, slot) holding seed ``drawn[r, j]``: the mean of a fresh pair-level resample of that
    seed's differences (a seed drawn twice in one replicate gets two different ones). A resample of n items is a
    multinomial draw of how often each distinct value appears: exact, and cheap for accuracy differences."""
    out = np.empty(drawn.shape)
    for s, d in enumerate(differences):
        where = drawn == s
        values, counts = np.unique(d, return_counts=True)
        out[where] = rng.multinomial(len(d), counts / len(d), size=int(where.sum())) @ values / len(d)
    return out


class SeedSummary(BaseModel):
    """Mean over seeds with a Student-t 95% interval (zero width for one seed, unless ``interval`` is ``pairs``: one
    seed's bootstrap interval over its test pairs, which leaves out how training varies between seeds)."""

    model_config = ConfigDict(extra="forbid")

    n_seeds: int
    mean: float
    ci_low: float
    ci_high: float
    values: list[float]
    interval: Literal["seeds", "pairs"] = "seeds"


def summarise_seeds(values: Sequence[float], confidence: float = 0.95) -> SeedSummary:
    """The mean of per-seed ``values`` with its Student-t interval at ``confidence`` (zero width below 2 seeds)."""
    values = [float(v) for v in values]
    if not values:
        raise CartError("no values to summarise")
    mean = float(np.mean(values))
    if len(values) < 2 or np.std(values) == 0:
        return SeedSummary(n_seeds=len(values), mean=mean, ci_low=mean, ci_high=mean, values=values)
    low, high = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=stats.sem(values))
    return SeedSummary(n_seeds=len(values), mean=mean, ci_low=float(low), ci_high=float(high), values=values)


def per_seed_sd(training_sd: float, discordance: float, n_pairs: int) -> float:
    """The spread of one seed's paired difference in accuracy: the part training adds (``training_sd``, how much
    the difference moves between training runs) and the part the ``n_pairs`` test pairs add, whose per-pair
    difference is ±1 on the share ``discordance`` of pairs the two models disagree on (variance ≈ d)."""
    return float(np.sqrt(training_sd**2 + discordance / n_pairs))


def minimum_detectable_effect(seed_sd: float, n_seeds: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference that a comparison over ``n_seeds`` seeds (the unit; per-seed differences
    with spread ``seed_sd``) finds at two-sided level ``alpha`` with probability ``power``:
    (t_{S−1, 1−α/2} + t_{S−1, power}) · seed_sd / √S."""
    if n_seeds < 2:
        raise CartError("a power calculation over seeds needs at least 2 seeds")
    df = n_seeds - 1
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * seed_sd / np.sqrt(n_seeds))
