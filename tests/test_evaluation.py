import numpy as np
import pytest

from cartrm.data import TailSplit
from cartrm.evaluation import (
    EvaluationReport,
    bootstrap_interval,
    evaluate,
    evaluate_scores,
    expected_calibration_error,
    group_metrics,
)
from cartrm.models import RewardModel
from tests.helpers import planted_pairs


def test_accuracy_counts_ties_as_half_and_the_interval_covers_it():
    chosen = np.array([1.0, 2.0, 0.0, 5.0])
    rejected = np.array([0.0, 3.0, 0.0, 1.0])
    metrics = group_metrics(chosen, rejected)
    assert metrics.accuracy == pytest.approx(2.5 / 4)
    assert metrics.n == 4
    assert metrics.ci_low <= metrics.accuracy <= metrics.ci_high
    assert metrics.mean_margin == pytest.approx((1 - 1 + 0 + 4) / 4)


def test_bootstrap_interval_matches_the_binomial_width():
    rng = np.random.default_rng(0)
    values = (rng.random(2000) < 0.7).astype(float)
    low, high = bootstrap_interval(values)
    expected_half_width = 1.96 * np.sqrt(0.7 * 0.3 / 2000)
    assert (high - low) / 2 == pytest.approx(expected_half_width, rel=0.15)
    assert bootstrap_interval(np.ones(10)) == (1.0, 1.0)


def test_calibration_error_is_small_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, 50_000)
    p = 1 / (1 + np.exp(-logits))
    # the label agrees with the model's call with probability max(p, 1-p): a calibrated model
    agrees = rng.random(logits.size) < np.maximum(p, 1 - p)
    margins = np.where(agrees, np.abs(logits), -np.abs(logits))
    assert expected_calibration_error(margins) < 0.01
    overconfident = np.where(rng.random(logits.size) < 0.6, 10.0, -10.0)
    assert expected_calibration_error(overconfident) == pytest.approx(0.4, abs=0.02)


def test_report_splits_head_tail_groups_and_gold():
    chosen = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    rejected = np.zeros(6) + 0.5
    tail = TailSplit(mask=np.array([False, False, False, True, True, True]), description="planted")
    gold = np.array([1.0, 1.0, -1.0, 1.0, -1.0, -1.0])
    report = evaluate_scores(chosen, rejected, tail=tail, groups={"domain": list("aabbcc")}, gold_margin=gold)
    assert report.head.accuracy == 1.0 and report.tail.accuracy == 0.0
    assert report.head.gold_accuracy == pytest.approx(2 / 3) and report.tail.gold_accuracy == pytest.approx(2 / 3)
    assert report.head.label_gold_agreement == pytest.approx(2 / 3)
    assert report.by["domain"]["b"].n == 2 and report.by["domain"]["b"].accuracy == 0.5
    assert report.tail_description == "planted"


def test_evaluate_scores_a_model_and_round_trips(tmp_path):
    data = planted_pairs(20)
    report = evaluate(RewardModel.load("tiny-bert"), data, by=["group"])
    assert report.overall.n == 20 and set(report.by["group"]) == {"0", "1", "2"}
    report.save(tmp_path / "metrics.json")
    assert EvaluationReport.load(tmp_path / "metrics.json") == report
