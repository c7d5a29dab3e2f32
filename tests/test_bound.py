import math

import numpy as np
import pytest

from cartrm.vulnerability import (
    BoundTerms,
    bound_terms,
    bradley_terry_loss,
    circuit_divergence,
    complexity_term,
    mean_divergence,
    trend_test,
)


def test_divergence_near_zero_for_same_distribution():
    rng = np.random.default_rng(0)
    assert circuit_divergence(rng.normal(size=20_000), rng.normal(size=20_000)) < 0.03


def test_divergence_of_shifted_gaussian_is_shift_over_std_and_scale_free():
    rng = np.random.default_rng(1)
    tail, head = 2.0 + 3.0 * rng.normal(size=20_000), 3.0 * rng.normal(size=20_000)
    div = circuit_divergence(tail, head)
    assert div == pytest.approx(2.0 / 3.0, abs=0.03)
    assert circuit_divergence(100 * tail, 100 * head) == pytest.approx(div)


def test_divergence_of_constant_activations():
    assert circuit_divergence(np.full(5, 2.0), np.full(7, 2.0)) == 0.0
    assert circuit_divergence(np.full(5, 1.0), np.full(5, 2.0)) == pytest.approx(2.0)  # W1 1 / pooled std 0.5


def test_mean_divergence():
    rng = np.random.default_rng(2)
    pairs = [(rng.normal(size=500) + shift, rng.normal(size=500)) for shift in (0.0, 1.0, 2.0)]
    assert mean_divergence(pairs) == pytest.approx(np.mean([circuit_divergence(t, h) for t, h in pairs]))
    assert mean_divergence([]) == 0.0


def test_bradley_terry_loss_closed_forms_and_stability():
    assert bradley_terry_loss(np.zeros(4)) == pytest.approx(math.log(2))
    assert bradley_terry_loss(np.array([30.0])) == pytest.approx(math.exp(-30.0), rel=1e-9)
    assert bradley_terry_loss(np.array([-1000.0])) == pytest.approx(1000.0)
    assert bradley_terry_loss(np.array([1.0, -1.0])) == pytest.approx(
        -(math.log(1 / (1 + math.exp(-1))) + math.log(1 / (1 + math.exp(1)))) / 2
    )


def test_complexity_and_rhs():
    assert complexity_term(4, 100, delta=0.05) == pytest.approx(math.sqrt(4 * math.log(20) / 100))
    terms = bound_terms(np.zeros(10), np.full(30, -1.0), n_circuits=4, divergence=0.5, delta=0.05, n_tail=100)
    assert terms.n_tail == 100
    assert terms.complexity == pytest.approx(math.sqrt(4 * math.log(20) / 100))
    assert terms.l_head == pytest.approx(math.log(2))
    assert terms.l_tail == pytest.approx(math.log1p(math.e))
    assert terms.rhs(C=2.0, beta=3.0) == pytest.approx(terms.l_head + 2.0 * terms.complexity + 1.5)
    assert terms.gap == pytest.approx(terms.l_tail - terms.l_head)
    assert bound_terms(np.zeros(3), np.zeros(25), n_circuits=1, divergence=0.0).n_tail == 25
    with pytest.raises(ValueError):
        complexity_term(4, 100, delta=1.0)


def test_bound_holds_is_rhs_comparison():
    terms = BoundTerms(l_head=0.3, l_tail=0.9, n_circuits=2, n_tail=50, divergence=0.4, complexity=0.2)
    assert not terms.holds(C=1.0, beta=0.5)  # rhs 0.3 + 0.2 + 0.2 = 0.7 < 0.9
    assert terms.holds(C=1.0, beta=1.5)  # rhs 0.3 + 0.2 + 0.6 = 1.1


def test_trend_test_detects_planted_monotone_relation():
    n_tail = np.array([50, 100, 200, 400, 800, 1600, 3200])
    complexities = np.sqrt(3 * math.log(20) / n_tail)
    gaps = 0.5 * complexities**2 + 0.01
    divergences = np.array([0.3, 0.1, 0.7, 0.2, 0.5, 0.6, 0.4])
    result = trend_test(gaps, complexities, divergences)
    assert result.spearman_complexity == pytest.approx(1.0)
    assert result.p_complexity < 0.01
    assert result.spearman_divergence < 0.5
    assert result.p_divergence > 0.05
    assert math.isnan(trend_test(gaps, complexities, np.ones(7)).spearman_divergence)
    assert trend_test(-gaps, complexities, divergences).p_complexity > 0.9
