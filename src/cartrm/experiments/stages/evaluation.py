"""Evaluation on the test split: each method's report, its per-pair scores, and per test pair whether the scores
order it as labelled (and as the gold rule does): the input of the paired comparisons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cartrm.datasets import conflict_pairs
from cartrm.evaluation import EvaluationReport, evaluate_scores
from cartrm.evaluation.metrics import gold_margin_of, pairwise_correct
from cartrm.experiments.stages.context import SCORING_VERSION, SeedContext, logged
from cartrm.io import write_json_atomic
from cartrm.runs import stage_key
from cartrm.runs.stage import Stage

BREAKDOWN_COLUMNS = ("rule_set", "domain")
CONFLICT_GROUP = "conflict_pair"  # the breakdown of benchmark test pairs by whether they are conflict pairs


class HeldOutPairs(NamedTuple):
    """What reading per-pair test scores needs: the tail mask, the gold margins (None without a gold reward) and,
    on the benchmark, the conflict pairs (tail pairs only the tail's own rules order right; else None)."""

    is_tail: np.ndarray
    gold_margin: np.ndarray | None
    conflict: np.ndarray | None = None


def evaluated(ctx: SeedContext, method: str, model: Any) -> tuple[EvaluationReport, dict[str, np.ndarray]]:
    """The test report and per-pair correctness (label and gold) for the paired comparisons."""
    layout = ctx.layout
    key = stage_key(Stage.key_of(layout.model(method)), "eval", SCORING_VERSION)
    stage = Stage(layout.eval(method), key, outputs=("metrics.json", "scores.json"))
    if not stage.done():
        stage.begin()
        test = ctx.splits["test"]
        with logged(f"seed {ctx.seed}: evaluating {method} on {len(test)} test pairs"):
            chosen, rejected = model.score_pairs(test, progress=ctx.progress)
        save_evaluation(ctx, method, chosen, rejected)
        stage.finish()
    return saved_evaluation(ctx, method)


def save_evaluation(ctx: SeedContext, method: str, chosen: np.ndarray, rejected: np.ndarray) -> None:
    """Write ``method``'s test report (``metrics.json``) and per-pair scores (``scores.json``)."""
    test = ctx.splits["test"]
    groups = {c: test.column(c) for c in BREAKDOWN_COLUMNS if test.has_column(c)}
    conflict = test_pairs(ctx).conflict
    if conflict is not None:
        groups[CONFLICT_GROUP] = ["yes" if c else "no" for c in conflict]
    report = evaluate_scores(
        chosen,
        rejected,
        tail=ctx.tails["test"],
        groups=groups,
        gold_margin=gold_margin_of(test),
        model=method,
        data=test.source,
        tail_by=ctx.config.tail_by,
        seed=ctx.seed,
    )
    report.save(ctx.layout.metrics(method))
    write_json_atomic(ctx.layout.scores(method), {"chosen": chosen.tolist(), "rejected": rejected.tolist()})


def saved_evaluation(ctx: SeedContext, method: str) -> tuple[EvaluationReport, dict[str, np.ndarray]]:
    """``method``'s saved test report and per-pair correctness."""
    layout = ctx.layout
    return EvaluationReport.load(layout.metrics(method)), correctness(layout.scores(method), *test_pairs(ctx))


def test_pairs(ctx: SeedContext) -> HeldOutPairs:
    """The test split's tail mask, gold margins and conflict pairs."""
    test = ctx.splits["test"]
    conflict = conflict_pairs(test) if ctx.config.uses_benchmark else None
    return HeldOutPairs(ctx.tails["test"].mask, gold_margin_of(test), conflict)


def save_test_pairs(ctx: SeedContext) -> None:
    """Write what reading the per-pair scores needs beside the seed's data, so a finished run is read without
    regenerating its data (:mod:`cartrm.experiments.reader`)."""
    pairs = test_pairs(ctx)
    write_json_atomic(
        ctx.layout.test_pairs,
        {name: None if value is None else value.tolist() for name, value in pairs._asdict().items()},
    )


def correctness(
    scores_file: Path, tail: np.ndarray, gold: np.ndarray | None, conflict: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per test pair, whether the saved scores order it as labelled (``head_accuracy``, ``tail_accuracy``) and,
    where a gold reward exists, as the gold rule does (``head_gold_accuracy``, ``tail_gold_accuracy`` and, with
    conflict pairs, ``conflict_gold_accuracy``)."""
    scores = json.loads(Path(scores_file).read_text())
    chosen, rejected = np.array(scores["chosen"]), np.array(scores["rejected"])
    correct = pairwise_correct(chosen, rejected)
    out = {"head_accuracy": correct[~tail], "tail_accuracy": correct[tail]}
    if gold is not None:
        gold_correct = pairwise_correct(np.sign(gold) * (chosen - rejected), np.zeros(len(gold)))
        out |= {"head_gold_accuracy": gold_correct[~tail], "tail_gold_accuracy": gold_correct[tail]}
        if conflict is not None and conflict.any():
            out["conflict_gold_accuracy"] = gold_correct[conflict]
    return out


def tail_margin(ctx: SeedContext, method: str) -> float:
    """``method``'s mean |reward margin| over the test split's tail pairs: the reward scale that a circuit's
    patch effect is read against."""
    scores = json.loads(ctx.layout.scores(method).read_text())
    margins = np.abs(np.array(scores["chosen"]) - np.array(scores["rejected"]))
    return float(margins[ctx.tails["test"].mask].mean())
