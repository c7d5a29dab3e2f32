"""Pairwise evaluation of a reward model: accuracy with bootstrap intervals, margins, calibration, gold agreement.

A pair is correct when ``R(chosen) > R(rejected)`` (a tie counts one half). Calibration is the expected
calibration error of ``p = σ(R_c − R_r)`` read as the model's confidence in its own pairwise call:
confidence ``max(p, 1−p)`` against whether the call is right, in 10 equal-width bins. Where the data carries
``gold_chosen``/``gold_rejected`` (the embedded benchmark does), ``gold_accuracy`` is agreement with the gold
preference and ``label_gold_agreement`` the annotators' own agreement with it (the noise ceiling).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from cartrm.data.tail import TailSplit
from cartrm.io import Artifact

N_BOOTSTRAP = 1000
CALIBRATION_BINS = 10
METRICS_SCHEMA_VERSION = 1


class GroupMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    mean_margin: float
    ece: float
    gold_accuracy: float | None = None
    gold_ci_low: float | None = None
    gold_ci_high: float | None = None
    label_gold_agreement: float | None = None


class EvaluationReport(Artifact):
    """What ``cart evaluate`` writes to ``metrics.json``."""

    kind = "metrics"
    schema_version: int = METRICS_SCHEMA_VERSION
    model: str
    data: str
    tail_by: str | None = None
    tail_description: str | None = None
    overall: GroupMetrics
    head: GroupMetrics | None = None
    tail: GroupMetrics | None = None
    by: dict[str, dict[str, GroupMetrics]] = {}


def pairwise_correct(chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    return (chosen > rejected).astype(np.float64) + 0.5 * (chosen == rejected)


def bootstrap_interval(values: np.ndarray, seed: int = 0, n_resamples: int = N_BOOTSTRAP) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean (scipy); a constant sample gives a zero-width interval."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or np.all(values == values[0]):
        mean = float(values.mean()) if len(values) else float("nan")
        return mean, mean
    result = bootstrap(
        (values,), np.mean, n_resamples=n_resamples, method="percentile", random_state=seed, vectorized=True
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def expected_calibration_error(margins: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    p = 1.0 / (1.0 + np.exp(-margins))
    confidence = np.maximum(p, 1.0 - p)
    correct = (margins > 0).astype(np.float64)
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def gold_correct(margins: np.ndarray, gold_margin: np.ndarray) -> np.ndarray:
    """Per pair, agreement of the reward margin's sign with the gold preference (a tie on either side: ½)."""
    sign = np.sign(gold_margin)
    return np.where(sign == 0, 0.5, (np.sign(margins) == sign) + 0.5 * (margins == 0))


def accuracy_scorer(dataset: Any, tail_mask: np.ndarray, batch_size: int = 64) -> Callable[[Any], dict[str, float]]:
    """Scores for a learning curve (``train(..., evaluate=)``): head and tail accuracy of a reward model on fixed
    pairs, and gold accuracy where the data carries gold rewards. Scoring only, no intervals."""
    tail = np.asarray(tail_mask, dtype=bool)
    gold = gold_margin_of(dataset)

    def score(reward_model: Any) -> dict[str, float]:
        chosen, rejected = reward_model.score_pairs(dataset, batch_size=batch_size)
        scores = {}
        for group, rows in (("head", ~tail), ("tail", tail)):
            if rows.any():
                scores[f"{group}_accuracy"] = float(pairwise_correct(chosen[rows], rejected[rows]).mean())
                if gold is not None:
                    scores[f"{group}_gold_accuracy"] = float(gold_correct((chosen - rejected)[rows], gold[rows]).mean())
        return scores

    return score


def group_metrics(
    chosen: np.ndarray, rejected: np.ndarray, gold_margin: np.ndarray | None = None, seed: int = 0
) -> GroupMetrics:
    """Metrics of one group of pairs; ``gold_margin`` is ``gold_chosen − gold_rejected`` where known."""
    correct = pairwise_correct(chosen, rejected)
    low, high = bootstrap_interval(correct, seed)
    margins = chosen - rejected
    metrics: dict[str, Any] = {
        "n": len(correct),
        "accuracy": float(correct.mean()),
        "ci_low": low,
        "ci_high": high,
        "mean_margin": float(margins.mean()),
        "ece": expected_calibration_error(margins),
    }
    if gold_margin is not None:
        agrees = gold_correct(margins, gold_margin)
        gold_low, gold_high = bootstrap_interval(agrees, seed)
        metrics |= {
            "gold_accuracy": float(agrees.mean()),
            "gold_ci_low": gold_low,
            "gold_ci_high": gold_high,
            "label_gold_agreement": float(np.mean(gold_margin > 0) + 0.5 * np.mean(gold_margin == 0)),
        }
    return GroupMetrics(**metrics)


def evaluate_scores(
    chosen: np.ndarray,
    rejected: np.ndarray,
    *,
    tail: TailSplit | None = None,
    groups: dict[str, Sequence[Any]] | None = None,
    gold_margin: np.ndarray | None = None,
    model: str = "",
    data: str = "",
    tail_by: str | None = None,
    seed: int = 0,
) -> EvaluationReport:
    """Build the report from precomputed rewards (so several models/methods can share the scoring code)."""

    def subset(mask: np.ndarray) -> GroupMetrics:
        return group_metrics(chosen[mask], rejected[mask], None if gold_margin is None else gold_margin[mask], seed)

    everything = np.ones(len(chosen), dtype=bool)
    report = EvaluationReport(model=model, data=data, tail_by=tail_by, overall=subset(everything))
    if tail is not None:
        report.tail_description = tail.description
        report.head, report.tail = subset(~tail.mask), subset(tail.mask)
    for column, values in (groups or {}).items():
        labels = np.array([str(v) for v in values])
        report.by[column] = {value: subset(labels == value) for value in sorted(set(labels))}
    return report


def gold_margin_of(dataset: Any) -> np.ndarray | None:
    if dataset.has_column("gold_chosen") and dataset.has_column("gold_rejected"):
        return dataset.numeric_column("gold_chosen") - dataset.numeric_column("gold_rejected")
    return None


def evaluate(
    reward_model: Any,
    dataset: Any,
    *,
    tail: TailSplit | None = None,
    by: Sequence[str] = (),
    tail_by: str | None = None,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> EvaluationReport:
    """Score every pair with ``reward_model`` and compute the report; ``dataset`` may also be a
    ``datasets.Dataset`` (or anything :func:`cartrm.data.load_preferences` reads)."""
    from cartrm.data import PreferenceDataset, load_preferences

    if not isinstance(dataset, PreferenceDataset):
        dataset = load_preferences(dataset)
    chosen, rejected = reward_model.score_pairs(dataset, batch_size=batch_size, progress=progress)
    return evaluate_scores(
        chosen,
        rejected,
        tail=tail,
        groups={c: dataset.column(c) for c in by},
        gold_margin=gold_margin_of(dataset),
        model=reward_model.name,
        data=dataset.source,
        tail_by=tail_by,
        seed=seed,
    )
