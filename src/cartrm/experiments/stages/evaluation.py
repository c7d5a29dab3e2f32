"""Evaluation on the test split: each method's report, its per-pair scores, and per test pair whether the scores
order it as labelled (and as the gold rule does): the input of the paired comparisons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cartrm.evaluation import EvaluationReport, evaluate_scores
from cartrm.evaluation.metrics import gold_margin_of, pairwise_correct
from cartrm.experiments.stages.context import SCORING_VERSION, SeedContext, logged
from cartrm.io import write_json_atomic
from cartrm.runs import stage_key
from cartrm.runs.stage import Stage

BREAKDOWN_COLUMNS = ("rule_set", "domain")


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
        groups = {c: test.column(c) for c in BREAKDOWN_COLUMNS if test.has_column(c)}
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
        report.save(layout.metrics(method))
        write_json_atomic(layout.scores(method), {"chosen": chosen.tolist(), "rejected": rejected.tolist()})
        stage.finish()
    return EvaluationReport.load(layout.metrics(method)), correctness(layout.scores(method), *test_pairs(ctx))


def test_pairs(ctx: SeedContext) -> tuple[np.ndarray, np.ndarray | None]:
    """The test split's tail mask and gold margins (None without a gold reward)."""
    return ctx.tails["test"].mask, gold_margin_of(ctx.splits["test"])


def save_test_pairs(ctx: SeedContext) -> None:
    """Write what reading the per-pair scores needs beside the seed's data, so a finished run is read without
    regenerating its data (:mod:`cartrm.experiments.reader`)."""
    tail, gold = test_pairs(ctx)
    write_json_atomic(
        ctx.layout.test_pairs, {"is_tail": tail.tolist(), "gold_margin": None if gold is None else gold.tolist()}
    )


def correctness(scores_file: Path, tail: np.ndarray, gold: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per test pair, whether the saved scores order it as labelled (``head_accuracy``, ``tail_accuracy``) and,
    where a gold reward exists, as the gold rule does (``head_gold_accuracy``, ``tail_gold_accuracy``)."""
    scores = json.loads(Path(scores_file).read_text())
    chosen, rejected = np.array(scores["chosen"]), np.array(scores["rejected"])
    correct = pairwise_correct(chosen, rejected)
    out = {"head_accuracy": correct[~tail], "tail_accuracy": correct[tail]}
    if gold is not None:
        gold_correct = pairwise_correct(np.sign(gold) * (chosen - rejected), np.zeros(len(gold)))
        out |= {"head_gold_accuracy": gold_correct[~tail], "tail_gold_accuracy": gold_correct[tail]}
    return out


def tail_margin(ctx: SeedContext, method: str) -> float:
    """``method``'s mean |reward margin| over the test split's tail pairs: the reward scale that a circuit's
    patch effect is read against."""
    scores = json.loads(ctx.layout.scores(method).read_text())
    margins = np.abs(np.array(scores["chosen"]) - np.array(scores["rejected"]))
    return float(margins[ctx.tails["test"].mask].mean())
