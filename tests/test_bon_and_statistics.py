"""Best-of-n curves and paired statistics on cases with known answers."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from cartrm.errors import CartError
from cartrm.evaluation.bon import best_of_n_curve, best_of_n_weights, expected_best_of_n, kl_best_of_n
from cartrm.evaluation.statistics import hierarchical_bootstrap, summarise_seeds


def test_kl_of_best_of_n():
    assert kl_best_of_n(1) == 0.0
    assert kl_best_of_n(256) == pytest.approx(math.log(256) - 255 / 256)


def test_best_of_n_estimator_matches_enumerating_every_subset():
    rng = np.random.default_rng(0)
    proxy, gold = rng.normal(size=(1, 8)), rng.normal(size=(1, 8))
    for n in (1, 3, 8):
        subsets = list(itertools.combinations(range(8), n))
        brute = np.mean([gold[0, max(s, key=lambda i: proxy[0, i])] for s in subsets])
        assert expected_best_of_n(proxy, gold, n)[1][0] == pytest.approx(brute)
    assert best_of_n_weights(8, 3).sum() == pytest.approx(1.0)


def test_a_proxy_equal_to_gold_never_falls():
    gold = np.random.default_rng(1).normal(size=(50, 256))
    curve = best_of_n_curve(gold.copy(), gold)
    assert np.all(np.diff(curve.gold) > 0)
    assert curve.peak_n == 256 and curve.gap_at_max_n == pytest.approx(0.0, abs=1e-12)


def test_a_proxy_rewarding_a_gold_penalised_feature_falls():
    rng = np.random.default_rng(2)
    quality, hack = rng.normal(size=(50, 256)), rng.normal(size=(50, 256))
    gold, proxy = quality - hack, quality + 2 * hack  # the proxy likes what gold penalises
    curve = best_of_n_curve(proxy, gold)
    assert curve.gold[-1] < curve.gold[0]
    assert curve.peak_n < 256
    assert np.all(np.diff(curve.proxy) > 0) and curve.gap_at_max_n > 1


def test_best_of_n_rejects_bad_shapes():
    with pytest.raises(CartError):
        best_of_n_curve(np.zeros((2, 4)), np.zeros((2, 5)))


def paired(a, b):
    return hierarchical_bootstrap([a], [b])


def test_one_seed_is_the_paired_bootstrap_on_known_cases():
    same = np.r_[np.ones(50), np.zeros(50)]
    tie = paired(same, same)
    assert tie.difference == 0 and tie.p_value == 1.0  # every resample ties: mid-p gives 1
    # 30 items where a is right and b wrong, 10 the other way, 60 agreeing: McNemar's exact p ≈ 0.002
    a = np.r_[np.ones(30), np.zeros(10), np.ones(30), np.zeros(30)]
    b = np.r_[np.zeros(30), np.ones(10), np.ones(30), np.zeros(30)]
    better = paired(a, b)
    assert better.difference == pytest.approx(0.2)
    assert better.ci_low > 0.05 and better.ci_high < 0.35
    assert better.p_value < 0.01
    assert stats.binomtest(10, 40).pvalue < 0.01
    close = paired(np.r_[np.ones(22), np.zeros(18)], np.r_[np.zeros(22), np.ones(18)])
    assert close.p_value > 0.3


def seeds_with_differences(means, n=200, seed=0):
    """Per seed, correctness vectors of a and b whose mean difference is exactly ``mean`` (shuffled)."""
    rng = np.random.default_rng(seed)
    a_by_seed, b_by_seed = [], []
    for mean in means:
        wins = int(round(n * (0.3 + mean / 2)))
        losses = int(round(n * (0.3 - mean / 2)))
        a = np.r_[np.ones(wins), np.zeros(losses), np.ones(n - wins - losses)]
        b = np.r_[np.zeros(wins), np.ones(losses), np.ones(n - wins - losses)]
        order = rng.permutation(n)
        a_by_seed.append(a[order])
        b_by_seed.append(b[order])
    return a_by_seed, b_by_seed


def test_seeds_that_disagree_widen_the_interval_beyond_pooled_pairs():
    a, b = seeds_with_differences([0.2, 0.0, -0.2, 0.1, -0.1])
    hierarchical = hierarchical_bootstrap(a, b)
    pooled = hierarchical_bootstrap([np.concatenate(a)], [np.concatenate(b)])
    assert hierarchical.difference == pytest.approx(pooled.difference) == pytest.approx(0.0)
    assert hierarchical.per_seed == pytest.approx([0.2, 0.0, -0.2, 0.1, -0.1])
    assert hierarchical.ci_high - hierarchical.ci_low > 1.5 * (pooled.ci_high - pooled.ci_low)
    agreeing_a, agreeing_b = seeds_with_differences([0.0] * 5)
    agreeing = hierarchical_bootstrap(agreeing_a, agreeing_b)
    assert agreeing.ci_high - agreeing.ci_low < hierarchical.ci_high - hierarchical.ci_low


def test_hierarchical_interval_matches_the_analytic_one_when_pairs_do_not_vary_within_a_seed():
    """Each seed's difference is the same on all its pairs, so only the seeds vary: the bootstrap of the mean
    over S seeds has standard error σ/√S (σ the population SD of the seed differences)."""
    rng = np.random.default_rng(3)
    seed_differences = rng.normal(0.05, 0.04, size=400)
    a = [np.full(10, d) for d in seed_differences]
    b = [np.zeros(10) for _ in seed_differences]
    result = hierarchical_bootstrap(a, b, n_resamples=20_000)
    half_width = 1.96 * seed_differences.std() / np.sqrt(len(seed_differences))
    assert result.difference == pytest.approx(seed_differences.mean())
    assert result.ci_low == pytest.approx(seed_differences.mean() - half_width, abs=0.1 * half_width)
    assert result.ci_high == pytest.approx(seed_differences.mean() + half_width, abs=0.1 * half_width)
    assert result.p_value < 0.001


def test_hierarchical_bootstrap_rejects_mismatched_inputs():
    with pytest.raises(CartError):
        hierarchical_bootstrap([np.ones(5)], [np.ones(4)])
    with pytest.raises(CartError):
        hierarchical_bootstrap([np.ones(5), np.ones(5)], [np.ones(5)])


def test_seed_summary_is_a_t_interval():
    summary = summarise_seeds([0.70, 0.72, 0.74])
    half_width = stats.t.ppf(0.975, 2) * np.std([0.70, 0.72, 0.74], ddof=1) / math.sqrt(3)
    assert summary.mean == pytest.approx(0.72)
    assert summary.ci_high - summary.mean == pytest.approx(half_width)
    assert summarise_seeds([0.5]).ci_low == 0.5


class GoldReader:
    """A stand-in reward model scoring benchmark text by its gold reward read back from the text, plus a
    bonus for a feature the gold reward penalises."""

    def __init__(self, hack: float = 0.0):
        self.hack = hack

    def score(self, prompts, responses, batch_size=64, progress=False):
        from cartrm.datasets.longtail import DOMAIN_BY_NAME, features_from_text, gold_reward

        scores = []
        for prompt, response in zip(prompts, responses):
            domain = next(d.name for d in DOMAIN_BY_NAME.values() if any(t in prompt for t in d.topics))
            features = features_from_text(response, domain)
            scores.append(gold_reward(features, domain) + self.hack * features["off_topic"])
        return np.array(scores)


def test_benchmark_best_of_n_separates_an_honest_proxy_from_a_hacked_one():
    from cartrm.datasets import BenchmarkConfig
    from cartrm.datasets.longtail.best_of_n import best_of_n_by_group, candidate_pool

    pool = candidate_pool(
        BenchmarkConfig(n_train=0, n_validation=0, n_test_head=20, n_test_tail=20), n_head=6, n_tail=6, n_candidates=64
    )
    assert pool.gold.shape == (12, 64) and pool.is_tail.sum() == 6
    honest = best_of_n_by_group(GoldReader(), pool)
    assert set(honest) == {"head", "tail"}
    for curve in honest.values():
        assert np.all(np.diff(curve.gold) >= -1e-9) and curve.peak_n == 64
    hacked = best_of_n_by_group(GoldReader(hack=10.0), pool)["tail"]
    assert hacked.gold[-1] < honest["tail"].gold[-1] - 1
    assert hacked.gap_at_max_n > honest["tail"].gap_at_max_n + 1


def test_verdict_notes_that_several_comparisons_are_not_adjusted_for_multiple_testing():
    from types import SimpleNamespace

    from cartrm.report.aggregate import _notes
    from cartrm.report.results import Comparison

    comparison = paired(np.ones(10), np.zeros(10))
    config, seeds = SimpleNamespace(uses_benchmark=True), [SimpleNamespace(seed=s, concentration=None) for s in (0, 1)]

    def comparisons(*baselines):
        return [
            Comparison(method="cart", baseline=b, metric=m, paired=comparison)
            for b in baselines
            for m in ("tail_accuracy", "head_accuracy")
        ]

    assert _notes(config, seeds, comparisons("bt"), None) == []
    [note] = _notes(config, seeds, comparisons("bt", "reweight", "hidden-reg"), None)
    assert "reads 1 comparison(s)" in note and "holds 6 tests" in note and "about 0.3 of them" in note


def test_circuit_effects_are_read_against_the_baselines_tail_margin():
    from cartrm.circuits.result import CircuitRecord, Circuits
    from cartrm.report.aggregate import _circuit_effect
    from cartrm.report.results import SeedStability, Stability

    def record(id_, effect):
        return CircuitRecord(
            id=id_,
            members=[],
            coherence=0,
            tail_delta=0,
            tail_effect_size=0,
            divergence=0,
            decomposition_weight=0,
            patch_effect=effect,
        )

    circuits = Circuits.model_construct(circuits=[record("c0", 0.02), record("c1", None), record("c2", 0.5)])
    assert circuits.effect_share(["c0", "c1", "c2"], margin=2.0) == {"c0": 0.01, "c2": 0.25}  # c1 was not patched
    assert circuits.effect_share(["c0"], margin=2.0) == {"c0": 0.01}
    assert circuits.effect_share(["c0"], margin=0.0) == {}

    def seed(s, share):
        return SeedStability(
            seed=s,
            top_k=4,
            baseline_vs_cart_jaccard=0.5,
            targets=list(share),
            vuln_before={},
            vuln_after={},
            effect_share=share,
        )

    def stability(*seeds):
        return Stability(top_k=4, across_seeds_neuron_jaccard=None, across_seeds_circuit_jaccard=None, per_seed=seeds)

    [note] = _circuit_effect(stability(seed(0, {"c0": 0.01, "c2": 0.25}), seed(1, {"c1": 0.03})))
    assert "by 1.0–25.0% (median 3.0%)" in note and "(3 targets over 2 seed(s))" in note
    assert _circuit_effect(None) == [] and _circuit_effect(stability(seed(0, {}))) == []


def test_the_verdict_reads_each_cart_method_against_its_compute_matched_control():
    from cartrm.report.aggregate import matched_control, verdict
    from cartrm.report.results import Comparison

    assert matched_control("cart", ["bt", "reweight"]) == "bt"
    assert matched_control("cart", ["bt", "bt-continued", "reweight"]) == "bt-continued"
    assert matched_control("cart-ensemble", ["bt", "ensemble-mean"]) == "ensemble-mean"
    assert matched_control("reweight-continued", ["bt", "bt-continued"]) == "bt-continued"
    assert matched_control("reweight", ["bt", "bt-continued"]) == "bt"
    better, same = paired(np.ones(10), np.zeros(10)), paired(np.ones(10), np.ones(10))
    comparisons = [
        Comparison(method="cart", baseline=baseline, metric=metric, paired=better if baseline == "bt" else same)
        for baseline in ("bt", "bt-continued")
        for metric in ("tail_accuracy", "head_accuracy")
    ]
    [line] = verdict(comparisons)
    assert line.startswith("cart does not significantly change tail accuracy over bt-continued")


def test_minimum_detectable_effect_on_a_known_case():
    from cartrm.evaluation.statistics import minimum_detectable_effect, per_seed_sd

    sd = per_seed_sd(training_sd=0.01, discordance=0.12, n_pairs=600)
    assert sd == pytest.approx(math.sqrt(1e-4 + 2e-4))
    # t(0.975, 4) = 2.776445, t(0.8, 4) = 0.940965: (2.776445 + 0.940965) * sqrt(3e-4) / sqrt(5)
    assert minimum_detectable_effect(sd, 5) == pytest.approx(0.0287950, rel=1e-5)
    assert minimum_detectable_effect(sd, 20) < minimum_detectable_effect(sd, 5)
    with pytest.raises(CartError, match="at least 2 seeds"):
        minimum_detectable_effect(sd, 1)


def test_the_report_states_the_smallest_effect_its_seeds_could_find():
    from cartrm.report.aggregate import _power
    from cartrm.report.results import Comparison

    rng = np.random.default_rng(0)
    a = [rng.random(200) < p for p in (0.80, 0.85, 0.90)]
    b = [rng.random(200) < 0.8 for _ in range(3)]
    comparison = hierarchical_bootstrap(a, b)
    lines = _power(
        [
            Comparison(method="cart", baseline=baseline, metric=metric, paired=comparison)
            for baseline in ("bt", "bt-continued")
            for metric in ("tail_accuracy", "head_accuracy")
        ]
    )
    [line] = lines  # the tail metric against the matched control only
    spread = np.std(comparison.per_seed, ddof=1)
    expected = (stats.t.ppf(0.975, 2) + stats.t.ppf(0.8, 2)) * spread / math.sqrt(3)
    assert line.startswith("cart − bt-continued, tail accuracy per seed:")
    assert f"{100 * expected:.1f} points" in line
