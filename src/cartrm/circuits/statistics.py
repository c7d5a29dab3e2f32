"""Streaming per-feature head/tail statistics and the differential-activation tests of circuit discovery (§3.3).

Activations arrive in batches ``(acts (B, D), is_tail (B,))``; :class:`GroupMoments` keeps, per group
(head = 0, tail = 1) and per feature, the count, mean, sum of squared deviations (M2), mean of ``|a|``, min and
max, so memory is O(D) whatever the number of examples. Batches and accumulators are combined with the
pairwise update of Chan, Golub & LeVeque (1979), which stays accurate when the mean is large against the
spread (no ``E[a²] − E[a]²`` cancellation).

A feature that is constant within a group (min = max, e.g. a dead ReLU neuron) is reported with exactly that
value as its mean and exactly zero variance, so rounding residue cannot turn it into a spurious "effect".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import false_discovery_control, ttest_ind_from_stats

HEAD = 0
TAIL = 1
PERMUTATION_CHUNK_ELEMENTS = 4_000_000


def validate_batch(acts: np.ndarray, is_tail: np.ndarray, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Check one streamed batch and return it as ``(float64 (B, D), bool (B,))``."""
    acts = np.asarray(acts, dtype=np.float64)
    is_tail = np.asarray(is_tail)
    if acts.ndim != 2 or acts.shape[1] != n_features:
        raise ValueError(f"acts must have shape (B, {n_features}), got {acts.shape}")
    if is_tail.shape != (acts.shape[0],) or is_tail.dtype != np.bool_:
        raise ValueError(f"is_tail must be boolean of shape ({acts.shape[0]},), got {is_tail.dtype} {is_tail.shape}")
    if not np.isfinite(acts).all():
        raise ValueError("acts contain NaN or infinite values")
    return acts, is_tail


def check_group(group: int) -> int:
    if group not in (HEAD, TAIL):
        raise ValueError(f"group must be 0 (head) or 1 (tail), got {group!r}")
    return int(group)


class GroupMoments:
    """Streaming per-group, per-feature moments of pooled activations (float64)."""

    def __init__(self, n_features: int) -> None:
        self.n_features = int(n_features)
        shape = (2, self.n_features)
        self._count = np.zeros(2, dtype=np.int64)
        self._mean = np.zeros(shape)
        self._m2 = np.zeros(shape)
        self._mean_abs = np.zeros(shape)
        self._min = np.full(shape, np.inf)
        self._max = np.full(shape, -np.inf)

    @classmethod
    def from_batch(cls, acts: np.ndarray, is_tail: np.ndarray) -> GroupMoments:
        return cls._from_valid_batch(*validate_batch(acts, is_tail, np.shape(acts)[-1]))

    @classmethod
    def _from_valid_batch(cls, acts: np.ndarray, is_tail: np.ndarray) -> GroupMoments:
        moments = cls(acts.shape[1])
        for group, rows in ((HEAD, acts[~is_tail]), (TAIL, acts[is_tail])):
            if len(rows):
                moments._count[group] = len(rows)
                moments._mean[group] = rows.mean(axis=0)
                moments._m2[group] = ((rows - moments._mean[group]) ** 2).sum(axis=0)
                moments._mean_abs[group] = np.abs(rows).mean(axis=0)
                moments._min[group] = rows.min(axis=0)
                moments._max[group] = rows.max(axis=0)
        return moments

    def update(self, acts: np.ndarray, is_tail: np.ndarray) -> None:
        self.merge(GroupMoments._from_valid_batch(*validate_batch(acts, is_tail, self.n_features)))

    def merge(self, other: GroupMoments) -> None:
        """Fold ``other`` into ``self`` (Chan et al. parallel combination, per group)."""
        if other.n_features != self.n_features:
            raise ValueError(f"cannot merge moments of {other.n_features} features into {self.n_features}")
        n_a, n_b = self._count[:, None].astype(np.float64), other._count[:, None].astype(np.float64)
        n = n_a + n_b
        share_b = np.divide(n_b, n, out=np.zeros_like(n), where=n > 0)
        delta = other._mean - self._mean
        self._mean = self._mean + delta * share_b
        self._m2 = self._m2 + other._m2 + delta**2 * n_a * share_b
        self._mean_abs = self._mean_abs + (other._mean_abs - self._mean_abs) * share_b
        self._min = np.minimum(self._min, other._min)
        self._max = np.maximum(self._max, other._max)
        self._count = self._count + other._count

    def subset(self, indices: np.ndarray) -> GroupMoments:
        """The moments of the features ``indices`` only (e.g. the selected candidates)."""
        indices = np.asarray(indices, dtype=np.int64)
        part = GroupMoments(len(indices))
        part._count = self._count.copy()
        for name in ("_mean", "_m2", "_mean_abs", "_min", "_max"):
            setattr(part, name, getattr(self, name)[:, indices].copy())
        return part

    def count(self, group: int) -> int:
        return int(self._count[check_group(group)])

    def _constant(self, group: int) -> np.ndarray:
        return self._min[group] == self._max[group]

    def mean(self, group: int) -> np.ndarray:
        group = check_group(group)
        return np.where(self._constant(group), self._min[group], self._mean[group])

    def var(self, group: int) -> np.ndarray:
        """Unbiased (ddof = 1) variance; NaN with fewer than two examples in the group."""
        group = check_group(group)
        n = self._count[group]
        if n < 2:
            return np.full(self.n_features, np.nan)
        return np.where(self._constant(group), 0.0, self._m2[group] / (n - 1))

    def mean_abs(self, group: int) -> np.ndarray:
        return self._mean_abs[check_group(group)].copy()

    @property
    def n_total(self) -> int:
        return int(self._count.sum())

    @property
    def mean_all(self) -> np.ndarray:
        n = self._count[:, None]
        return (self._mean * n).sum(axis=0) / max(self.n_total, 1)

    @property
    def std_all(self) -> np.ndarray:
        """Unbiased standard deviation over head and tail together."""
        if self.n_total < 2:
            return np.full(self.n_features, np.nan)
        between = (self._count[:, None] * (self._mean - self.mean_all) ** 2).sum(axis=0)
        var = (self._m2.sum(axis=0) + between) / (self.n_total - 1)
        return np.where(self.min == self.max, 0.0, np.sqrt(var))

    @property
    def min(self) -> np.ndarray:
        return self._min.min(axis=0)

    @property
    def max(self) -> np.ndarray:
        return self._max.max(axis=0)


@dataclass(frozen=True)
class DifferentialResult:
    """Per-feature tail-vs-head differences; every array has shape (D,)."""

    delta: np.ndarray
    effect_size: np.ndarray
    tau_score: np.ndarray
    p_value: np.ndarray
    q_value: np.ndarray
    n_head: int
    n_tail: int


def hedges_g(moments: GroupMoments) -> np.ndarray:
    """Hedges' g of tail vs head: ``J · Δ / s_pooled`` with ``J = 1 − 3 / (4(n_t + n_h) − 9)``.

    The pooled SD weighs each group's unbiased variance by its degrees of freedom; ``J`` removes the upward
    bias of Cohen's d in small samples. Zero pooled SD gives 0 when the means are equal and ±inf (perfect
    separation) when they differ.
    """
    n_h, n_t = moments.count(HEAD), moments.count(TAIL)
    pooled_var = ((n_t - 1) * moments.var(TAIL) + (n_h - 1) * moments.var(HEAD)) / (n_t + n_h - 2)
    delta = moments.mean(TAIL) - moments.mean(HEAD)
    correction = 1.0 - 3.0 / (4.0 * (n_t + n_h) - 9.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = delta / np.sqrt(pooled_var)
    return np.where(pooled_var > 0, correction * d, np.where(delta == 0, 0.0, d))


def welch_p_values(moments: GroupMoments) -> np.ndarray:
    """Two-sided Welch t-test p-values from the moments.

    Where both groups are constant the test is undefined: p = 1 if their values are equal, 0 if they differ.
    """
    sd_t, sd_h = np.sqrt(moments.var(TAIL)), np.sqrt(moments.var(HEAD))
    mean_t, mean_h = moments.mean(TAIL), moments.mean(HEAD)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = ttest_ind_from_stats(
            mean_t, sd_t, moments.count(TAIL), mean_h, sd_h, moments.count(HEAD), equal_var=False
        ).pvalue
    degenerate = (sd_t == 0) & (sd_h == 0)
    return np.where(degenerate, np.where(mean_t == mean_h, 1.0, 0.0), p)


def differential_activation(moments: GroupMoments) -> DifferentialResult:
    """Differential activation Δ_j, Hedges' g, the τ-score of eq. 3, Welch p-values and BH q-values."""
    n_h, n_t = moments.count(HEAD), moments.count(TAIL)
    if min(n_h, n_t) < 2:
        raise ValueError(f"need at least two head and two tail examples, got {n_h} head and {n_t} tail")
    p_value = welch_p_values(moments)
    return DifferentialResult(
        delta=moments.mean(TAIL) - moments.mean(HEAD),
        effect_size=hedges_g(moments),
        tau_score=moments.mean_abs(TAIL) - moments.mean_abs(HEAD),  # eq. 3
        p_value=p_value,
        q_value=false_discovery_control(p_value, method="bh"),
        n_head=n_h,
        n_tail=n_t,
    )


def tau_specialised(result: DifferentialResult, tau: float | None = None, quantile: float = 0.95) -> np.ndarray:
    """Mask of τ-specialised features, ``E_tail|a| − E_head|a| > τ`` (eq. 3); τ defaults to a score quantile."""
    if tau is None:
        tau = float(np.quantile(result.tau_score, quantile))
    return result.tau_score > tau


def select_candidates(result: DifferentialResult, top_k: int, fdr: float = 0.05) -> np.ndarray:
    """Indices of the ``top_k`` features with largest |effect size| among those with q ≤ ``fdr`` (largest first)."""
    significant = np.flatnonzero(result.q_value <= fdr)
    order = np.argsort(-np.abs(result.effect_size[significant]), kind="stable")
    return significant[order][:top_k]


def permutation_p_values(
    acts: np.ndarray, is_tail: np.ndarray, n_permutations: int = 1000, seed: int = 0
) -> np.ndarray:
    """Two-sided permutation p-values of ``mean_tail − mean_head`` for each column of ``acts`` (N, K).

    Meant for the few candidate columns (held in memory). Permuted labellings are drawn in chunks of rows
    and scored for all columns at once by one matrix product; ``p = (1 + #{|T_perm| ≥ |T_obs|}) / (1 + P)``.
    """
    acts, is_tail = validate_batch(acts, is_tail, np.shape(acts)[-1])
    n_t = int(is_tail.sum())
    n_h = len(is_tail) - n_t
    if min(n_t, n_h) < 1:
        raise ValueError("permutation test needs at least one head and one tail example")
    centred = acts - acts.mean(axis=0)
    scale = 1.0 / n_t + 1.0 / n_h  # with centred columns, mean_t − mean_h = (sum over tail) · scale

    def statistic(labels: np.ndarray) -> np.ndarray:
        return np.abs(labels.astype(np.float64) @ centred) * scale

    observed = statistic(is_tail[None, :])[0]
    threshold = observed * (1.0 - 1e-9)  # a permutation tying the observed value up to rounding counts
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_permutations, PERMUTATION_CHUNK_ELEMENTS // len(is_tail)))
    exceed = np.zeros(acts.shape[1], dtype=np.int64)
    for start in range(0, n_permutations, chunk):
        rows = min(chunk, n_permutations - start)
        labels = rng.permuted(np.broadcast_to(is_tail, (rows, len(is_tail))), axis=1)
        exceed += (statistic(labels) >= threshold).sum(axis=0)
    return (1.0 + exceed) / (1.0 + n_permutations)
