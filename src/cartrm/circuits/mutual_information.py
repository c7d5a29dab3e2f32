"""Streaming mutual information among candidate features, per group, and the coherence of §3.3.

Coherence is ``Coh(N_i, N_j) = I(N_i; N_j | tail) − I(N_i; N_j | head)``. Two estimators of I:

- binned plug-in with the Miller–Madow correction, from joint histograms (:class:`JointHistogram`). The
  bins of a feature are the same for head and tail (built from the pooled moments), so the two groups'
  estimates are comparable and their difference is not an artefact of different binnings;
- Gaussian, ``I = −½ log(1 − ρ²)`` from the Pearson correlation (:class:`CorrelationAccumulator`), exact for
  jointly Gaussian features and blind to non-linear dependence.

Both accumulate in O(K²·bins²) / O(K²) memory, independent of the number of examples.
"""

from __future__ import annotations

import numpy as np
from scipy.special import xlogy

from cartrm.circuits.statistics import GroupMoments, check_group, validate_batch

MAX_ABS_RHO = 1.0 - 1e-12


class JointHistogram:
    """Joint counts of every pair of K features, for head (0) and tail (1) separately.

    ``edges`` is (K, bins + 1), non-decreasing per row; values outside ``[edges[k, 0], edges[k, -1]]`` fall into
    the end bins. All pairs are counted at once: a batch becomes a one-hot matrix ``O`` (B, K·bins) and the
    counts grow by ``Oᵀ O``, whose (k, l) block of size bins × bins is the joint histogram of features k and l
    (the diagonal blocks hold the marginals). Memory is 2·(K·bins)² counts.
    """

    def __init__(self, edges: np.ndarray) -> None:
        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 2 or edges.shape[1] < 2:
            raise ValueError(f"edges must have shape (K, bins + 1) with bins >= 1, got {edges.shape}")
        if not np.isfinite(edges).all() or (np.diff(edges, axis=1) < 0).any():
            raise ValueError("edges must be finite and non-decreasing along each row")
        self.edges = edges
        self.n_features, self.bins = edges.shape[0], edges.shape[1] - 1
        width = self.n_features * self.bins
        self.counts = np.zeros((2, width, width), dtype=np.int64)
        self._count = np.zeros(2, dtype=np.int64)

    @classmethod
    def from_moments(cls, moments: GroupMoments, bins: int = 8, width: float = 3.0) -> JointHistogram:
        """Equal-width bins over ``mean ± width·std`` of each feature (head and tail pooled)."""
        centre, spread = moments.mean_all, width * moments.std_all
        return cls(np.linspace(centre - spread, centre + spread, bins + 1, axis=1))

    def bin_indices(self, acts: np.ndarray) -> np.ndarray:
        """Bin of every value, (B, K) in ``0 … bins − 1``, out-of-range values clipped into the end bins."""
        return (acts[:, :, None] >= self.edges[None, :, 1:-1]).sum(axis=2)

    def update(self, acts: np.ndarray, is_tail: np.ndarray) -> None:
        acts, is_tail = validate_batch(acts, is_tail, self.n_features)
        columns = self.bin_indices(acts) + self.bins * np.arange(self.n_features)
        one_hot = np.zeros((len(acts), self.n_features * self.bins))
        np.put_along_axis(one_hot, columns, 1.0, axis=1)
        for group, rows in ((0, ~is_tail), (1, is_tail)):
            block = one_hot[rows]
            self._count[group] += len(block)
            self.counts[group] += np.rint(block.T @ block).astype(np.int64)

    def count(self, group: int) -> int:
        return int(self._count[check_group(group)])

    def pair_counts(self, group: int) -> np.ndarray:
        """The joint counts as (K, K, bins, bins): ``[k, l, a, b]`` = #(feature k in bin a, feature l in bin b)."""
        k, b = self.n_features, self.bins
        return self.counts[check_group(group)].reshape(k, b, k, b).transpose(0, 2, 1, 3)


def _entropy_and_support(probabilities: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Plug-in entropy (nats) and number of non-empty cells over ``axes``."""
    return -xlogy(probabilities, probabilities).sum(axis=axes), (probabilities > 0).sum(axis=axes)


def binned_mutual_information(hist: JointHistogram, group: int) -> np.ndarray:
    """(K, K) plug-in mutual information in nats with the Miller–Madow bias correction.

    ``I = H_x + H_y − H_xy − (m_xy − m_x − m_y + 1) / (2N)`` with m the non-empty cells: the Miller–Madow
    correction ``(m − 1)/(2N)`` applied to each of the three entropies. It can come out slightly negative for
    independent features (it is not clipped: clipping would bias differences such as the coherence upwards).
    On the diagonal the joint histogram of a feature with itself is diagonal, so the same formula gives the
    feature's Miller–Madow-corrected marginal entropy.
    """
    n = hist.count(group)
    if n == 0:
        raise ValueError(f"no examples of group {group} in the histogram")
    joint = hist.pair_counts(group) / n
    h_xy, m_xy = _entropy_and_support(joint, (2, 3))
    marginal = np.diagonal(hist.counts[group]).reshape(hist.n_features, hist.bins) / n
    h_x, m_x = _entropy_and_support(marginal, (1,))
    plug_in = h_x[:, None] + h_x[None, :] - h_xy
    return plug_in - (m_xy - m_x[:, None] - m_x[None, :] + 1) / (2.0 * n)


class CorrelationAccumulator:
    """Streaming per-group Pearson correlation among K features.

    Sums and cross-products are taken of ``a − reference`` in float64, with the reference (e.g. the pooled
    mean from a first pass) fixed at construction, so the covariance ``E[xxᵀ] − E[x]E[x]ᵀ`` does not cancel
    catastrophically when activations sit far from zero.
    """

    def __init__(self, reference: np.ndarray) -> None:
        self.reference = np.asarray(reference, dtype=np.float64).ravel()
        k = len(self.reference)
        self.n_features = k
        self._count = np.zeros(2, dtype=np.int64)
        self._sum = np.zeros((2, k))
        self._cross = np.zeros((2, k, k))

    @classmethod
    def from_moments(cls, moments: GroupMoments) -> CorrelationAccumulator:
        return cls(moments.mean_all)

    def update(self, acts: np.ndarray, is_tail: np.ndarray) -> None:
        acts, is_tail = validate_batch(acts, is_tail, self.n_features)
        centred = acts - self.reference
        for group, rows in ((0, centred[~is_tail]), (1, centred[is_tail])):
            self._count[group] += len(rows)
            self._sum[group] += rows.sum(axis=0)
            self._cross[group] += rows.T @ rows

    def count(self, group: int) -> int:
        return int(self._count[check_group(group)])

    def correlation(self, group: int) -> np.ndarray:
        """(K, K) Pearson correlation; rows/columns of a constant feature are 0 off the diagonal, 1 on it."""
        n = self.count(group)
        if n < 2:
            raise ValueError(f"need at least two examples of group {group}, got {n}")
        mean = self._sum[group] / n
        cov = self._cross[group] / n - np.outer(mean, mean)
        sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        scale = np.outer(sd, sd)
        rho = np.divide(cov, scale, out=np.zeros_like(cov), where=scale > 0)
        np.fill_diagonal(rho, 1.0)
        return np.clip(rho, -1.0, 1.0)


def gaussian_mutual_information(rho: np.ndarray) -> np.ndarray:
    """``I = −½ log(1 − ρ²)`` in nats, |ρ| clipped below 1 (the diagonal is large but finite, ≈ 13 nats)."""
    rho = np.clip(np.asarray(rho, dtype=np.float64), -MAX_ABS_RHO, MAX_ABS_RHO)
    return -0.5 * np.log1p(-(rho**2))


def coherence(mi_tail: np.ndarray, mi_head: np.ndarray) -> np.ndarray:
    """``Coh(N_i, N_j) = I(N_i; N_j | tail) − I(N_i; N_j | head)`` (§3.3)."""
    mi_tail, mi_head = np.asarray(mi_tail), np.asarray(mi_head)
    if mi_tail.shape != mi_head.shape or mi_tail.ndim != 2 or mi_tail.shape[0] != mi_tail.shape[1]:
        raise ValueError(f"need two square matrices of one shape, got {mi_tail.shape} and {mi_head.shape}")
    return mi_tail - mi_head
