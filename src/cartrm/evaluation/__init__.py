"""Evaluation: head/tail pairwise accuracy with intervals, calibration and gold agreement."""

from cartrm.evaluation.metrics import (
    EvaluationReport,
    GroupMetrics,
    bootstrap_interval,
    evaluate,
    evaluate_scores,
    expected_calibration_error,
    group_metrics,
)

__all__ = [
    "EvaluationReport",
    "GroupMetrics",
    "bootstrap_interval",
    "evaluate",
    "evaluate_scores",
    "expected_calibration_error",
    "group_metrics",
]
