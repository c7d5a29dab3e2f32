import numpy as np
import pytest

from cartrm.circuits import (
    HEAD,
    TAIL,
    CorrelationAccumulator,
    GroupMoments,
    JointHistogram,
    binned_mutual_information,
    coherence,
    gaussian_mutual_information,
)

N = 20_000


def gaussian_pair(rho: float, n: int = N, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal([5.0, -3.0], [[1.0, rho], [rho, 1.0]], size=n)


def closed_form(rho: float) -> float:
    return -0.5 * np.log(1 - rho**2)


def estimators(acts: np.ndarray, is_tail: np.ndarray, bins: int = 8, width: float = 3.0, batch: int = 4096):
    """Two streamed passes, as in discovery: moments first, then histogram and correlation."""
    moments = GroupMoments(acts.shape[1])
    for start in range(0, len(acts), batch):
        moments.update(acts[start : start + batch], is_tail[start : start + batch])
    hist = JointHistogram.from_moments(moments, bins=bins, width=width)
    corr = CorrelationAccumulator.from_moments(moments)
    for start in range(0, len(acts), batch):
        hist.update(acts[start : start + batch], is_tail[start : start + batch])
        corr.update(acts[start : start + batch], is_tail[start : start + batch])
    return hist, corr


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_gaussian_estimator_matches_the_closed_form(rho):
    acts = gaussian_pair(rho) + 1e6  # a large offset must not spoil the streamed correlation
    _, corr = estimators(acts, np.ones(N, dtype=bool))
    assert corr.correlation(TAIL)[0, 1] == pytest.approx(rho, abs=0.02)
    mi = gaussian_mutual_information(corr.correlation(TAIL))
    assert mi[0, 1] == pytest.approx(closed_form(rho), abs=0.02)


# Binned plug-in MI with the default 8 equal-width bins over mean ± 3 sd, N = 20k. Measured over seeds 0–4:
# error ≈ +0.000 (ρ = 0), −0.015…−0.020 (ρ = 0.5), −0.16…−0.17 (ρ = 0.9, true MI 0.83). Binning can
# only lose information, and at ρ = 0.9 eight bins of 0.75 sd lose ~20 %: hence a one-sided band there.
@pytest.mark.parametrize(("rho", "low", "high"), [(0.0, -0.01, 0.01), (0.5, -0.04, 0.01), (0.9, -0.22, -0.10)])
def test_binned_estimator_matches_the_closed_form_within_the_binning_loss(rho, low, high):
    hist, _ = estimators(gaussian_pair(rho, seed=1), np.ones(N, dtype=bool))
    error = binned_mutual_information(hist, TAIL)[0, 1] - closed_form(rho)
    assert low <= error <= high


def test_finer_bins_shrink_the_binning_loss():
    hist, _ = estimators(gaussian_pair(0.9, seed=2), np.ones(N, dtype=bool), bins=16, width=3.5)
    assert binned_mutual_information(hist, TAIL)[0, 1] == pytest.approx(closed_form(0.9), abs=0.1)


def test_miller_madow_removes_the_plug_in_bias_of_independent_features():
    rng = np.random.default_rng(3)
    acts = rng.normal(size=(500, 2))
    hist, _ = estimators(acts, np.ones(500, dtype=bool))
    corrected = binned_mutual_information(hist, TAIL)[0, 1]
    joint = hist.pair_counts(TAIL)[0, 1] / 500
    px, py = joint.sum(1), joint.sum(0)
    nonzero = joint > 0
    plug_in = (joint[nonzero] * np.log(joint[nonzero] / np.outer(px, py)[nonzero])).sum()
    assert plug_in > 0.03  # (bins−1)²/(2N) ≈ 0.049 of pure bias
    assert abs(corrected) < plug_in / 3


def test_diagonal_is_the_corrected_marginal_entropy():
    rng = np.random.default_rng(4)
    acts = rng.normal(size=(1000, 3))
    hist, _ = estimators(acts, np.ones(1000, dtype=bool))
    mi = binned_mutual_information(hist, TAIL)
    counts = np.diagonal(hist.counts[TAIL]).reshape(3, 8)[0]
    p = counts[counts > 0] / 1000
    assert mi[0, 0] == pytest.approx(-(p * np.log(p)).sum() + (len(p) - 1) / 2000, rel=1e-12)
    np.testing.assert_allclose(mi, mi.T, atol=1e-12)


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(5)
    acts = rng.normal(size=(3000, 5)) @ rng.normal(size=(5, 5))
    is_tail = rng.random(3000) < 0.4
    streamed_hist, streamed_corr = estimators(acts, is_tail, batch=128)
    one_hist, one_corr = estimators(acts, is_tail, batch=3000)
    np.testing.assert_array_equal(streamed_hist.counts, one_hist.counts)
    for group in (HEAD, TAIL):
        np.testing.assert_allclose(streamed_corr.correlation(group), one_corr.correlation(group), atol=1e-12)
        np.testing.assert_allclose(one_corr.correlation(group), np.corrcoef(acts[is_tail == group].T), atol=1e-12)
    assert one_hist.count(TAIL) == is_tail.sum() and one_hist.count(HEAD) == (~is_tail).sum()


def test_histogram_counts_every_pair_and_clips_outliers_into_the_end_bins():
    hist = JointHistogram(np.array([[0.0, 1.0, 2.0], [0.0, 10.0, 20.0]]))
    acts = np.array([[-5.0, 5.0], [1.5, 25.0], [0.5, 15.0], [9.0, -1.0]])
    hist.update(acts, np.array([True, True, True, False]))
    joint = hist.pair_counts(TAIL)[0, 1]
    np.testing.assert_array_equal(joint, [[1, 1], [0, 1]])  # (bin of feature 0, bin of feature 1)
    np.testing.assert_array_equal(hist.pair_counts(HEAD)[0, 1], [[0, 0], [1, 0]])
    np.testing.assert_array_equal(hist.pair_counts(TAIL)[1, 0], joint.T)


def test_coherence_is_positive_only_for_tail_specific_dependence():
    rng = np.random.default_rng(6)
    n = 8000
    is_tail = rng.random(n) < 0.5
    shared, always = rng.normal(size=n), rng.normal(size=n)
    noise = rng.normal(size=(n, 4))
    acts = np.column_stack(
        [
            noise[:, 0] + np.where(is_tail, 2 * shared, 0),  # 0 and 1: correlated in tail only
            noise[:, 1] + np.where(is_tail, 2 * shared, 0),
            noise[:, 2] + 2 * always,  # 2 and 3: equally correlated in both groups
            noise[:, 3] + 2 * always,
        ]
    )
    hist, corr = estimators(acts, is_tail)
    binned = coherence(binned_mutual_information(hist, TAIL), binned_mutual_information(hist, HEAD))
    gaussian = coherence(
        gaussian_mutual_information(corr.correlation(TAIL)), gaussian_mutual_information(corr.correlation(HEAD))
    )
    for coh in (binned, gaussian):
        assert coh[0, 1] > 0.3
        assert abs(coh[2, 3]) < 0.05
        assert abs(coh[0, 2]) < 0.05


def test_inputs_are_validated():
    with pytest.raises(ValueError, match="non-decreasing"):
        JointHistogram(np.array([[0.0, 2.0, 1.0]]))
    with pytest.raises(ValueError, match="no examples"):
        binned_mutual_information(JointHistogram(np.array([[0.0, 1.0, 2.0]])), HEAD)
    with pytest.raises(ValueError, match="square"):
        coherence(np.zeros((2, 2)), np.zeros((3, 3)))
    assert np.isfinite(gaussian_mutual_information(np.eye(2))).all()
