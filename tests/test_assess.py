"""Phase 2 end to end on the planted tiny GPT-2 of the discovery tests."""

import json

import numpy as np
import pytest

from cartrm.circuits.discover import DiscoveryConfig, discover
from cartrm.data import parse_tail_spec
from cartrm.data.tail import TailSplit
from cartrm.errors import CartError
from cartrm.models import RewardModel
from cartrm.vulnerability.assess import AssessConfig, assess
from cartrm.vulnerability.result import VulnerabilityReport
from tests.helpers import planted_data, planted_model


@pytest.fixture(scope="module")
def setting():
    data = planted_data()
    tail = parse_tail_spec("label:is_tail").fit_transform(data)
    model = planted_model()
    circuits = discover(model, data, tail, DiscoveryConfig(top_k=8, patch_pairs=0, seed=0), progress=False)
    return model, data, tail, circuits


def test_assessment_scores_every_circuit_by_eq_9(setting):
    model, data, tail, circuits = setting
    config = AssessConfig(sensitivity_examples=16, weights=(0.5, 0.3, 0.2))
    report = assess(model, data, tail, circuits, config, progress=False)
    assert len(report.circuits) == min(len(circuits.circuits), config.max_circuits)
    for c in report.circuits:
        assert 0 <= c.consistency <= 1 and 0 <= c.coverage <= 1 and 0 <= c.sensitivity_normalised <= 1
        expected = 0.5 * (1 - c.consistency) + 0.3 * c.sensitivity_normalised + 0.2 * (1 - c.coverage)
        assert c.vuln == pytest.approx(expected)
        assert c.sensitivity_exact >= c.sensitivity_first_order * 0.9  # PGD starts at the first-order optimum
    ranked = sorted(report.circuits, key=lambda c: c.rank)
    assert [c.vuln for c in ranked] == sorted((c.vuln for c in ranked), reverse=True)
    assert report.targets == [c.id for c in ranked[: len(report.targets)]]
    assert report.bound.n_tail == 60 and report.bound.l_head > 0 and report.bound.divergence > 0


def test_planted_tail_circuit_fires_on_every_tail_input(setting):
    model, data, tail, circuits = setting
    report = assess(model, data, tail, circuits, AssessConfig(sensitivity_examples=8), progress=False)
    planted = next(c for c in circuits.circuits if any(m.layer == 0 and m.index == 7 for m in c.members))
    record = next(r for r in report.circuits if r.id == planted.id)
    assert record.coverage == 1.0  # every tail response has the tail token; head never does (eq. 8)


def test_user_groups_and_report_round_trip(setting, tmp_path):
    model, data, tail, circuits = setting
    report = assess(
        model, data, tail, circuits, AssessConfig(sensitivity_examples=8, groups_column="is_tail"), progress=False
    )
    assert report.n_groups == 1  # all tail pairs share one group value
    report.save(tmp_path / "v.json")
    assert VulnerabilityReport.load(tmp_path / "v.json") == report
    assert json.loads((tmp_path / "v.json").read_text())["schema_version"] == 1


def test_circuits_from_another_model_are_refused(setting):
    _, data, tail, circuits = setting
    with pytest.raises(CartError, match="another model"):
        assess(RewardModel.load("tiny-gpt2", seed=5), data, tail, circuits, progress=False)


def test_linf_ball_gives_larger_first_order_sensitivity_than_l2_for_the_same_radius(setting):
    model, data, tail, circuits = setting
    l2 = assess(model, data, tail, circuits, AssessConfig(sensitivity_examples=8, norm="l2"), progress=False)
    linf = assess(model, data, tail, circuits, AssessConfig(sensitivity_examples=8, norm="linf"), progress=False)
    # ε differs (L∞ uses the max-abs norm of the head activations), so compare first-order per unit radius:
    for a, b in zip(l2.circuits, linf.circuits):
        assert b.sensitivity_first_order / b.eps >= a.sensitivity_first_order / a.eps - 1e-9  # ‖g‖₁ ≥ ‖g‖₂
    assert np.isfinite(l2.sensitivity_agreement["ratio_median"])


def test_assessment_reads_the_discovery_activation_cache_and_gives_the_same_report(setting, tmp_path, monkeypatch):
    import sys

    assessment = sys.modules[
        "cartrm.vulnerability.assess"
    ]  # the package re-exports the function under the module's name
    model, data, tail, _ = setting
    cache = tmp_path / "acts"
    circuits = discover(
        model, data, tail, DiscoveryConfig(top_k=8, patch_pairs=0, seed=0), progress=False, cache_dir=cache
    )
    config = AssessConfig(sensitivity_examples=8)
    without = assess(model, data, tail, circuits, config, progress=False)
    passes = []
    original = assessment.pooled_batches
    monkeypatch.setattr(assessment, "pooled_batches", lambda *a, **k: passes.append(1) or original(*a, **k))
    with_cache = assess(model, data, tail, circuits, config, progress=False, cache_dir=cache)
    assert passes == []  # the circuit activations came from the cache
    assert with_cache.model_dump() == without.model_dump()

    other = data.select(np.arange(len(data))[::-1])  # same size, other order: the cache must not match
    assess(model, other, TailSplit(tail.mask[::-1], "reversed"), circuits, config, progress=False, cache_dir=cache)
    assert passes == [1]
