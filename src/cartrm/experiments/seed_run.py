"""One seed of ``cart run``: its stages in order (data → bt → the baseline's circuits, when a method uses them →
every other method → evaluation → best-of-n → ablations → circuit stability), and what they produced."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cartrm.circuits.concentration import Concentration
from cartrm.evaluation import EvaluationReport
from cartrm.evaluation.bon import BoNCurve
from cartrm.experiments.run_config import RunConfig
from cartrm.experiments.seed_data import SeedData
from cartrm.experiments.stages import (
    ablation,
    anchor,
    best_of_n,
    concentration,
    evaluation,
    shortcut,
    stability,
    training,
)
from cartrm.experiments.stages.context import SeedContext
from cartrm.report.results import SeedStability
from cartrm.training import registry

log = logging.getLogger("cartrm.run")


@dataclass
class SeedOutcome:
    """What one seed produced, for the aggregation: per method its test report, per-pair correctness on each
    metric (for paired comparisons), best-of-n curves per prompt group and training time."""

    seed: int
    reports: dict[str, EvaluationReport] = field(default_factory=dict)
    correct: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    bon: dict[str, dict[str, BoNCurve]] = field(default_factory=dict)
    train_seconds: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    tuning: dict[str, dict[str, Any]] = field(default_factory=dict)
    augmentation: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    stability: SeedStability | None = None
    tail_margin: float | None = None  # bt's mean |reward margin| on the test split's tail pairs
    concentration: Concentration | None = None  # bt's concentration diagnostic (when the run asks for it)
    shortcut: dict[str, float] = field(default_factory=dict)  # per method: the planted shortcut's reward gain


class SeedRun(SeedContext):
    """The stages of one seed under ``RUN/seed-<s>/``; the data are prepared (and checked) on construction."""

    def __init__(self, config: RunConfig, seed: int, progress: bool) -> None:
        super().__init__(config, seed, progress, SeedData.prepare(config, seed, progress))
        if not config.uses_benchmark:
            counts = (f"{k} {len(v)} pairs ({int(self.tails[k].mask.sum())} tail)" for k, v in self.splits.items())
            log.info("seed %d: %s", seed, ", ".join(counts))

    def run(self) -> SeedOutcome:
        config, layout = self.config, self.layout
        if config.uses_benchmark:
            self.data.benchmark.save(layout.benchmark)
        evaluation.save_test_pairs(self)
        outcome = SeedOutcome(self.seed)
        for method in config.methods:
            model, outcome.train_seconds[method] = training.trained(self, method)
            outcome.curves[method] = self.learning_curve_of(method)
            if method in config.tune:
                outcome.tuning[method] = json.loads(layout.tuning(method).read_text())
            if registry.design(method).uses_circuits and config.uses_benchmark:
                outcome.augmentation[method] = self.augmentation_audit(method)
            outcome.reports[method], outcome.correct[method] = evaluation.evaluated(self, method, model)
            self._shortcut(outcome, method, model)
            if config.uses_benchmark and config.bon_prompts:
                outcome.bon[method] = best_of_n.best_of_n(self, method, model)
        for label, overrides in config.ablated_methods.items():
            model, outcome.train_seconds[label] = ablation.ablated(self, label, overrides)
            if config.uses_benchmark:
                outcome.augmentation[label] = self.augmentation_audit(label)
            outcome.reports[label], outcome.correct[label] = evaluation.evaluated(self, label, model)
            self._shortcut(outcome, label, model)
        for name in config.anchors:
            outcome.reports[name], outcome.correct[name], outcome.train_seconds[name] = anchor.anchored(self, name)
        if ablation.CART in config.methods and layout.vulnerability.exists():
            outcome.stability = stability.stability(self)
        if registry.BASELINE in config.methods:
            outcome.tail_margin = evaluation.tail_margin(self, registry.BASELINE)
            outcome.concentration = concentration.concentrated(self)
        return outcome

    def _shortcut(self, outcome: SeedOutcome, method: str, model: Any) -> None:
        gain = shortcut.shortcut_gain(self, method, model)
        if gain is not None:
            outcome.shortcut[method] = gain

    def test_correctness(self, method: str) -> dict[str, np.ndarray]:
        """Per test pair, whether ``method``'s saved test scores order it as labelled and as the gold rule does."""
        return evaluation.correctness(self.layout.scores(method), *evaluation.test_pairs(self))

    def augmentation_audit(self, method: str) -> dict[str, dict[str, float]]:
        """Per transform, the kept augmentations' gold agreement recomputed from their edited text and the share
        that carry another domain's words (``datasets.longtail.augmentation_audit``); {} without any."""
        from cartrm.datasets.longtail import augmentation_audit

        folder = self.layout.model(method)
        if self.layout.tuning(method).exists():  # the tested model's augmentations, not every variant's
            folder = self.layout.variant(method, json.loads(self.layout.tuning(method).read_text())["chosen"])
        kept = [
            json.loads(line)
            for path in sorted(folder.rglob("augmented.jsonl"))
            for line in path.read_text().splitlines()
            if line.strip()
        ]
        domains = self.splits["train"].column("domain")
        return augmentation_audit(
            [(a["transform"], a["prompt"], a["chosen"], a["rejected"]) for a in kept],
            [domains[a["source"]] for a in kept],
        )

    def learning_curve_of(self, method: str) -> list[dict[str, float]]:
        """The validation scores a single model recorded while training (empty without ``train.eval_steps``)."""
        path = self.layout.train_result(method)
        return json.loads(path.read_text()).get("curve", []) if path.exists() else []
