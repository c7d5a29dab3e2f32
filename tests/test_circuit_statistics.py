import itertools
import math

import numpy as np
import pytest
from scipy.stats import false_discovery_control, ttest_ind

from cartrm.circuits import (
    HEAD,
    TAIL,
    GroupMoments,
    decompose_reward,
    differential_activation,
    permutation_p_values,
    select_candidates,
    tau_specialised,
)


def stream(moments: GroupMoments, acts: np.ndarray, is_tail: np.ndarray, sizes: list[int]) -> None:
    """Feed ``acts`` in consecutive batches of the given sizes (the last takes the rest)."""
    starts = np.cumsum([0, *sizes])
    for start, stop in zip(starts, [*starts[1:], len(acts)]):
        moments.update(acts[start:stop], is_tail[start:stop])


def labelled_data(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scales = np.array([1.0, 0.1, 10.0, 1e-3])
    return rng.normal(size=(n, 4)) * scales + 1e8, rng.random(n) < 0.3


def exact_mean(rows: np.ndarray) -> np.ndarray:
    return np.array([math.fsum(column) / len(column) for column in rows.T])


def assert_moments_match(moments: GroupMoments, acts: np.ndarray, is_tail: np.ndarray) -> None:
    """Means within a few ulps of the exactly rounded mean (1 ulp of 1e8 is 1.5e-8), the rest against numpy."""
    for group, rows in ((HEAD, acts[~is_tail]), (TAIL, acts[is_tail])):
        assert moments.count(group) == len(rows)
        np.testing.assert_allclose(moments.mean(group), exact_mean(rows), rtol=3e-15, atol=0)
        np.testing.assert_allclose(moments.var(group), rows.var(axis=0, ddof=1), rtol=1e-6)
        np.testing.assert_allclose(moments.mean_abs(group), np.abs(rows).mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(moments.mean_all, exact_mean(acts), rtol=3e-15, atol=0)
    np.testing.assert_allclose(moments.std_all, acts.std(axis=0, ddof=1), rtol=1e-6)
    np.testing.assert_array_equal(moments.min, acts.min(axis=0))
    np.testing.assert_array_equal(moments.max, acts.max(axis=0))


def test_streamed_moments_stay_exact_with_a_large_offset():
    acts, is_tail = labelled_data()
    moments = GroupMoments(4)
    stream(moments, acts, is_tail, [1, 7, 0, 500, 3, 1200])  # includes a one-row and an empty batch
    assert_moments_match(moments, acts, is_tail)
    # the naive E[a²] − E[a]² cancels catastrophically here: the test data really is hard
    naive = (acts**2).mean(axis=0) - acts.mean(axis=0) ** 2
    assert abs(naive[3] - acts[:, 3].var()) > 1e3 * acts[:, 3].var()


def test_merging_two_accumulators_equals_one_over_all_data():
    acts, is_tail = labelled_data(seed=1)
    first, second = GroupMoments(4), GroupMoments(4)
    stream(first, acts[:1000], is_tail[:1000], [300, 300])
    stream(second, acts[1000:], is_tail[1000:], [999])
    first.merge(second)
    assert_moments_match(first, acts, is_tail)
    first.merge(GroupMoments(4))  # merging an empty accumulator changes nothing
    assert_moments_match(first, acts, is_tail)


def test_batches_are_validated():
    moments = GroupMoments(3)
    with pytest.raises(ValueError, match="shape"):
        moments.update(np.zeros((4, 2)), np.zeros(4, dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        moments.update(np.zeros((4, 3)), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="NaN"):
        moments.update(np.full((4, 3), np.nan), np.zeros(4, dtype=bool))
    with pytest.raises(ValueError, match="group"):
        moments.mean(2)


def test_differential_statistics_match_scipy_on_the_raw_data():
    rng = np.random.default_rng(2)
    n, d = 1200, 30
    is_tail = rng.random(n) < 0.25
    acts = rng.normal(size=(n, d))
    acts[is_tail, 0] += 0.5
    acts[is_tail, 1] -= 0.3
    acts[is_tail, 2] *= 3.0  # same mean, larger spread in tail
    moments = GroupMoments(d)
    stream(moments, acts, is_tail, [100, 400])
    result = differential_activation(moments)

    tail, head = acts[is_tail], acts[~is_tail]
    np.testing.assert_allclose(result.delta, tail.mean(0) - head.mean(0), atol=1e-12)
    np.testing.assert_allclose(result.p_value, ttest_ind(tail, head, equal_var=False).pvalue, rtol=1e-8)
    np.testing.assert_allclose(result.q_value, false_discovery_control(result.p_value), rtol=1e-12)
    np.testing.assert_allclose(result.tau_score, np.abs(tail).mean(0) - np.abs(head).mean(0), atol=1e-12)
    assert (result.n_head, result.n_tail) == (len(head), len(tail))
    assert result.effect_size[0] == pytest.approx(0.5, abs=0.15)  # standard error ≈ 0.07
    assert result.effect_size[1] == pytest.approx(-0.3, abs=0.15)
    assert result.q_value[0] < 1e-6 and result.q_value[1] < 1e-3
    # eq. 3 sees the wider tail distribution that the difference of means misses
    assert abs(result.delta[2]) < 0.2 and result.tau_score[2] > 1.0
    assert tau_specialised(result, tau=1.0).tolist() == [False, False, True] + [False] * (d - 3)


def test_hedges_g_applies_the_small_sample_correction():
    head = np.array([[1.0], [2.0], [4.0], [3.0]])
    tail = np.array([[4.0], [6.0], [5.0]])
    moments = GroupMoments.from_batch(np.vstack([head, tail]), np.array([False] * 4 + [True] * 3))
    pooled_sd = np.sqrt((3 * head.var(ddof=1) + 2 * tail.var(ddof=1)) / 5)
    cohen_d = (tail.mean() - head.mean()) / pooled_sd
    correction = 1 - 3 / (4 * 7 - 9)
    assert differential_activation(moments).effect_size[0] == pytest.approx(correction * cohen_d, rel=1e-12)


def test_constant_features_give_no_spurious_effect():
    is_tail = np.array([False, True] * 50)
    acts = np.column_stack([np.zeros(100), np.full(100, 0.1), is_tail.astype(float), np.arange(100.0)])
    moments = GroupMoments(4)
    stream(moments, acts, is_tail, [7, 13, 29])
    result = differential_activation(moments)
    assert moments.var(TAIL)[:3].tolist() == [0.0, 0.0, 0.0]
    assert result.effect_size[:2].tolist() == [0.0, 0.0]
    assert result.p_value[:2].tolist() == [1.0, 1.0]
    assert result.effect_size[2] == np.inf and result.p_value[2] == 0.0  # constant per group, perfectly separated
    assert np.isfinite(result.effect_size[3]) and 0 < result.p_value[3] < 1


def test_differential_activation_needs_both_groups():
    moments = GroupMoments.from_batch(np.ones((5, 2)), np.zeros(5, dtype=bool))
    with pytest.raises(ValueError, match="two head and two tail"):
        differential_activation(moments)


def test_tau_threshold_defaults_to_a_quantile_of_the_score():
    rng = np.random.default_rng(3)
    is_tail = rng.random(4000) < 0.5
    acts = rng.normal(size=(4000, 100))
    acts[is_tail, :5] *= 4.0
    result = differential_activation(GroupMoments.from_batch(acts, is_tail))
    assert np.flatnonzero(tau_specialised(result)).tolist() == [0, 1, 2, 3, 4]  # top 5 % of 100 features
    assert tau_specialised(result, quantile=0.5).sum() == 50


def test_candidates_are_significant_and_ordered_by_absolute_effect():
    rng = np.random.default_rng(4)
    is_tail = rng.random(2000) < 0.3
    acts = rng.normal(size=(2000, 50))
    shifts = {7: 0.4, 3: -0.8, 20: 1.2, 41: 0.6}
    for column, shift in shifts.items():
        acts[is_tail, column] += shift
    result = differential_activation(GroupMoments.from_batch(acts, is_tail))
    assert select_candidates(result, top_k=50).tolist() == [20, 3, 41, 7]
    assert select_candidates(result, top_k=2).tolist() == [20, 3]
    assert len(select_candidates(result, top_k=50, fdr=1.0)) == 50


def test_permutation_p_value_of_a_planted_shift_is_the_minimum():
    rng = np.random.default_rng(7)
    is_tail = rng.random(300) < 0.4
    acts = rng.normal(size=(300, 2))
    acts[is_tail, 0] += 2.0
    p = permutation_p_values(acts, is_tail, n_permutations=499, seed=0)
    assert p[0] == pytest.approx(1 / 500)
    # the null column: close to the t-test's p (0.42 here) within the Monte Carlo error (sd ≈ 0.022)
    assert p[1] == pytest.approx(ttest_ind(acts[is_tail, 1], acts[~is_tail, 1]).pvalue, abs=0.07)
    np.testing.assert_array_equal(p, permutation_p_values(acts, is_tail, n_permutations=499, seed=0))


def test_permutation_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(6)
    is_tail = rng.random(200) < 0.3
    acts = rng.normal(size=(200, 200)) + 1e6  # the offset must not matter
    p = permutation_p_values(acts, is_tail, n_permutations=999, seed=1)
    # 200 null columns: #(p < 0.05) ~ Binomial(200, 0.05), mean 10, sd ≈ 3.1; allow ±3 sd
    assert 1 <= (p < 0.05).sum() <= 19
    assert 0.4 < p.mean() < 0.6


def test_permutation_p_value_converges_to_the_exact_enumeration():
    acts = np.array([[0.1], [0.5], [0.4], [1.3], [0.9], [1.1], [0.2], [0.8]])
    is_tail = np.array([False, False, False, True, True, False, False, True])
    observed = abs(acts[is_tail].mean() - acts[~is_tail].mean())
    extreme = 0
    for tail_rows in itertools.combinations(range(8), 3):
        mask = np.isin(np.arange(8), tail_rows)
        extreme += abs(acts[mask].mean() - acts[~mask].mean()) >= observed - 1e-12
    exact = extreme / 56
    p = permutation_p_values(acts, is_tail, n_permutations=20000, seed=2)[0]
    assert 0.05 < exact < 0.2  # the known answer is neither trivial nor the minimum
    assert p == pytest.approx(exact, abs=0.01)


def test_decomposition_recovers_a_planted_linear_reward():
    rng = np.random.default_rng(8)
    acts = rng.normal(size=(1000, 4)) * [1.0, 2.0, 0.5, 3.0] + 10.0
    weights = np.array([0.7, -1.2, 2.0, 0.0])
    rewards = acts @ weights + 3.0 + rng.normal(scale=0.01, size=1000)
    fit = decompose_reward(acts, rewards, alpha=1e-3)
    np.testing.assert_allclose(fit.weights, weights, atol=0.01)
    assert fit.intercept == pytest.approx(3.0, abs=0.2)
    assert fit.r2 > 0.999 and fit.cv_r2 > 0.999


def test_decomposition_of_a_noise_reward_explains_nothing():
    rng = np.random.default_rng(9)
    fit = decompose_reward(rng.normal(size=(500, 5)), rng.normal(size=500))
    assert 0 <= fit.r2 < 0.03  # in-sample R² of pure noise ≈ C / N = 0.01
    assert fit.cv_r2 <= 0.05
    assert decompose_reward(rng.normal(size=(50, 2)), rng.normal(size=50), cv_folds=None).cv_r2 is None
