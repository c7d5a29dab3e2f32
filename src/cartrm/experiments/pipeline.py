"""``cart run``: the whole experiment, per seed, with every intermediate artifact kept.

Stages (per seed): data → baseline ``bt`` → discovery + assessment of the baseline's tail circuits (when a
CART method runs) → every other method → evaluation on the test split → best-of-n (where a gold reward and
a sampler exist: the embedded benchmark) → circuit stability before/after CART. Then ``results.json``
(means over seeds with 95% intervals, paired comparisons) and ``report.html``.

Layout of ``runs/<name>/``: ``config.yaml`` (``cart run --config`` reproduces the run), ``versions.json``,
``run.log``, ``results.json``, ``report.html``, ``plots/`` and, per seed, ``seed-<s>/``: ``data/``
(the data used), ``models/<method>/`` (plain HF folders; ensembles hold ``members/`` and ``ensemble/``),
``analysis/`` (baseline ``circuits.json``, ``vulnerability.json`` and their plots), ``eval/<method>/``
(``metrics.json``, ``scores.json``), ``bon/<method>/curves.json`` and ``stability/``.

Every stage folder gets a ``.stage.json`` holding a digest of everything the stage depends on; a stage
whose digest matches is skipped, so an interrupted run resumes at the first unfinished stage and a changed
setting reruns exactly what it affects.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import resource
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cartrm.circuits.compare import circuit_overlap, top_tail_neurons
from cartrm.circuits.discover import DiscoveryConfig, balanced_subset, discover
from cartrm.circuits.result import Circuits
from cartrm.data import load_preferences
from cartrm.data.tail import Embedder, LabelTail, TailSplit, memoised, parse_tail_spec
from cartrm.datasets import BenchmarkConfig, make_longtail_dataset
from cartrm.datasets.longtail import augmentation_audit
from cartrm.errors import CartError
from cartrm.evaluation import EvaluationReport, evaluate_scores
from cartrm.evaluation.bon import BoNCurve
from cartrm.evaluation.metrics import accuracy_scorer, gold_margin_of
from cartrm.experiments.ensemble import EnsembleConfig, member_train_config, train_ensemble
from cartrm.io import read_yaml_mapping, versions, write_json_atomic, write_text_atomic
from cartrm.models import EnsembleRewardModel, RewardModel
from cartrm.report.aggregate import CONTROLS, READ_AGAINST_BT_CONTINUED, WARM_STARTED, aggregate, matched_control
from cartrm.report.html import write_report
from cartrm.report.results import RunResults, SeedStability
from cartrm.runs import lock_folder, stage_key
from cartrm.training import METHODS, TrainConfig, get_method, train
from cartrm.training.config import CartConfig
from cartrm.vulnerability.assess import AssessConfig, assess
from cartrm.vulnerability.result import VulnerabilityReport

BENCHMARK_TAIL_SPEC = "label:is_tail"
BREAKDOWN_COLUMNS = ("rule_set", "domain")
ENSEMBLES = {"ensemble-mean": ("bt", "uniform"), "cart-ensemble": ("cart", "fit")}
ALL_METHODS = ("bt", "label-smoothing", "reweight", "hidden-reg", "ensemble-mean", "cart", "cart-ensemble")
QUICK_METHODS = ("bt", "cart")
STANDARD_METHODS = ("bt", "bt-continued", "cart")  # add reweight,ensemble-mean with --methods (docs/results.md)
STANDARD_TRAIN_PAIRS, STANDARD_BT_STEPS, STANDARD_CONTINUE_STEPS = 1600, 100, 50  # docs/results.md: sizing
CIRCUIT_METHODS = ("cart", "cart-ensemble")
STAGE_MARKER = ".stage.json"
SCORING_VERSION = 2  # in the keys of stages that score saved models; 2: at their trained max length (1: up to 512)
ABLATION_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
SPLITS = ("train", "validation", "test")
log = logging.getLogger("cartrm.run")


class UserSplit(BaseModel):
    """How a user's data without its own train/test split is split, per seed: head and tail pairs separately
    (stratified), so the tail's share is the same in every split, and the tail test set raised to
    ``min_tail_test`` pairs where the data allow (at most half of the tail pairs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    validation_share: float = Field(0.1, ge=0, lt=1, description="share of head and of tail pairs for validation")
    test_share: float = Field(0.1, gt=0, lt=1, description="share of head and of tail pairs for the test split")
    min_tail_test: int = Field(
        100, ge=0, description="tail test pairs to reach at least, taking at most half of the tail pairs"
    )


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "default"
    out_root: Path = Path("runs")
    model: str = "minilm"
    seeds: tuple[int, ...] = Field((0,), min_length=1)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    data: str | None = Field(None, description="the user's preference file instead of the embedded benchmark")
    tail_by: str = BENCHMARK_TAIL_SPEC
    user_split: UserSplit = Field(default_factory=UserSplit)
    train: TrainConfig = Field(default_factory=TrainConfig)
    methods: tuple[str, ...] = QUICK_METHODS
    discovery: DiscoveryConfig = Field(default_factory=lambda: DiscoveryConfig(patch_pairs=16, max_validated=5))
    assessment: AssessConfig = Field(default_factory=AssessConfig)
    analysis_pairs: int = Field(
        400, ge=16, description="training pairs (up to half tail) used for discovery and assessment"
    )
    ensemble_members: int = Field(3, ge=2)
    bon_prompts: int = Field(16, ge=0, description="best-of-n test prompts per group (head, tail); 0 skips best-of-n")
    bon_candidates: int = Field(256, ge=2, description="responses drawn per best-of-n prompt (largest n)")
    stability_top_k: int = Field(64, ge=1, description="top tail neurons compared across seeds and before/after CART")
    continue_steps: int = Field(
        0,
        ge=0,
        description="warm start: cart continues from the seed's trained bt model for this many optimizer steps "
        "(a fresh optimizer), and bt-continued, its compute-matched control, runs the same steps on the same data "
        "with the Bradley–Terry loss; 0: cart trains from the base model",
    )

    tune: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict,
        description="fair tuning: per method, a grid of TrainConfig overrides (a nested 'cart:' allowed); each "
        "variant is trained and scored on the validation split, every tuned method gets the same number of "
        "variants (the budget), and only the selected one is tested (see tune_head_tolerance)",
    )
    tune_head_tolerance: float = Field(
        0.01,
        ge=0,
        description="the selected variant has the best validation tail accuracy (gold where known) among those "
        "whose head accuracy is within this of the compute-matched control's",
    )

    ablations: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="CART with one component changed: per name, TrainConfig overrides (a nested 'cart:' allowed) "
        "applied on top of cart's settings (the selected variant's when cart is tuned); 'warm_start: false' trains "
        "from the base model for bt's steps plus continue_steps instead. Each runs as the method cart-NAME from "
        "cart's start and data, is scored on the test split (no best-of-n) and compared with cart",
    )

    @model_validator(mode="before")
    @classmethod
    def _add_matched_control(cls, values: Any) -> Any:
        """A warm-started cart (or reweight-continued) brings its compute-matched control, as a circuit method
        brings bt."""
        if isinstance(values, dict) and values.get("continue_steps"):
            methods = list(values.get("methods", QUICK_METHODS))
            warm = [m for m in methods if m in READ_AGAINST_BT_CONTINUED]
            if warm and "bt-continued" not in methods:
                first = methods.index(warm[0])
                values = {**values, "methods": (*methods[:first], "bt-continued", *methods[first:])}
        return values

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        get_method("bt", TrainConfig())  # imports every built-in method
        unknown = [m for m in methods if m not in METHODS and m not in ENSEMBLES and m not in CONTROLS]
        if unknown or not methods:
            raise ValueError(
                f"unknown method(s) {', '.join(unknown) or '(none)'}; "
                f"choose from {', '.join(ALL_METHODS)} or {', '.join(CONTROLS)}"
            )
        needs_baseline = any(m in CIRCUIT_METHODS or m in CONTROLS for m in methods) and "bt" not in methods
        ordered = (("bt",) if needs_baseline else ()) + tuple(dict.fromkeys(methods))
        # bt first (CART reads its circuits), then bt-continued (warm-started methods are selected against it)
        return tuple(sorted(ordered, key=lambda m: (m != "bt", m != "bt-continued")))

    @model_validator(mode="after")
    def _control_needs_steps(self) -> RunConfig:
        continued = [m for m in self.methods if m in CONTROLS]
        if continued and not self.continue_steps:
            raise ValueError(f"{', '.join(continued)} continue bt for continue_steps steps: set continue_steps > 0")
        return self

    @model_validator(mode="after")
    def _fair_grids(self) -> RunConfig:
        """Tuning is fair when every method compared gets the same budget: all single-model methods but bt (the
        start and the reference) have grids of one size."""
        budgets = {method: len(grid) for method, grid in self.tune.items()}
        if len(set(budgets.values())) > 1:
            raise ValueError(f"tune: every tuned method gets the same number of variants, not {budgets}")
        untuned = [m for m in self.methods if self.tune and m != "bt" and m not in ENSEMBLES and m not in self.tune]
        if untuned:
            raise ValueError(
                f"tune: every method but bt and the ensembles gets a grid of the same size; "
                f"missing {', '.join(untuned)}"
            )
        for method, grid in self.tune.items():
            if method not in self.methods or method == "bt" or method in ENSEMBLES or not grid:
                raise ValueError(
                    f"tune: '{method}' cannot be tuned; tune single-model methods of this run other than bt "
                    "(bt is the start and the reference), each with at least one variant"
                )
            if matched_control(method, self.methods) not in self.methods:
                raise ValueError(f"tune: '{method}' is selected against {matched_control(method, self.methods)}")
            for overrides in grid:
                variant_config(self.train, overrides)
        return self

    @model_validator(mode="after")
    def _valid_ablations(self) -> RunConfig:
        if self.ablations and "cart" not in self.methods:
            raise ValueError("ablations change cart's settings: add cart to the methods")
        for name, overrides in self.ablations.items():
            label = f"cart-{name}"
            if not ABLATION_NAME.fullmatch(name) or label in METHODS or label in ENSEMBLES:
                raise ValueError(
                    f"ablation '{name}': use lower-case letters, digits and '-' in a name that is not a method's"
                )
            if not isinstance(overrides.get("warm_start", True), bool):
                raise ValueError(f"ablation '{name}': warm_start is true or false")
            if overrides.get("warm_start") is False and not self.continue_steps:
                raise ValueError(f"ablation '{name}': warm_start: false needs a warm-started cart (continue_steps > 0)")
            for cart in self.tune.get("cart", [{}]):  # any variant may be the selected one
                variant_config(variant_config(self.train, cart), _without_start(overrides))
        return self

    def warm_started(self, method: str) -> bool:
        return method in WARM_STARTED and self.continue_steps > 0

    @property
    def ablated_methods(self) -> dict[str, dict[str, Any]]:
        """The methods the ablations run as, cart-NAME, with their overrides."""
        return {f"cart-{name}": overrides for name, overrides in self.ablations.items()}

    @classmethod
    def preset(cls, kind: str, /, **overrides) -> RunConfig:
        """``quick``: one seed, bt vs cart, sizes that fit 10 minutes on 2 CPU cores with MiniLM (about 5 minutes,
        measured in docs/results.md). ``standard``: the experiment that can tell (docs/results.md): bt trained
        until it has learned the head, cart warm-started from it against bt-continued, the baselines, five seeds,
        validation and test splits sized for tuning and for the effect looked for. ``full``: three seeds, every
        method, the largest sizes (a GPU job)."""
        if kind not in PRESETS:
            raise CartError(f"unknown preset '{kind}'; choose from {', '.join(PRESETS)}")
        return cls(**{**PRESETS[kind](), **overrides})

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        return cls.model_validate(read_yaml_mapping(path, "--config", "run settings"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @property
    def directory(self) -> Path:
        return self.out_root / self.name

    @property
    def uses_benchmark(self) -> bool:
        return self.data is None


def _quick() -> dict[str, Any]:
    return dict(
        name="quick",
        benchmark=BenchmarkConfig(n_train=352, n_validation=100, n_test_head=150, n_test_tail=450),
        train=TrainConfig(epochs=1, batch_size=16, learning_rate=1e-4, max_length=128),
        methods=QUICK_METHODS,
        seeds=(0,),
        bon_prompts=2,
        analysis_pairs=160,
        discovery=DiscoveryConfig(patch_pairs=4, max_validated=2, n_null=10),
        assessment=AssessConfig(max_circuits=3, sensitivity_examples=8),
    )


def _standard() -> dict[str, Any]:
    return dict(
        name="standard",
        benchmark=BenchmarkConfig(n_train=STANDARD_TRAIN_PAIRS, n_validation=1200, n_test_head=400, n_test_tail=800),
        train=TrainConfig(max_steps=STANDARD_BT_STEPS, batch_size=16, learning_rate=5e-5, max_length=128),
        continue_steps=STANDARD_CONTINUE_STEPS,
        methods=STANDARD_METHODS,
        seeds=(0, 1, 2, 3, 4),
        ensemble_members=2,
        bon_prompts=12,
        bon_candidates=64,
        analysis_pairs=200,
        discovery=DiscoveryConfig(patch_pairs=8, max_validated=3, n_null=20),
        assessment=AssessConfig(max_circuits=3, sensitivity_examples=16),
    )


def _full() -> dict[str, Any]:
    return dict(
        name="full",
        benchmark=BenchmarkConfig(n_train=6000, n_validation=600),
        train=TrainConfig(epochs=2, batch_size=16, learning_rate=5e-5, max_length=128),
        methods=ALL_METHODS,
        seeds=(0, 1, 2),
        bon_prompts=32,
    )


PRESETS = {"quick": _quick, "standard": _standard, "full": _full}


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


def run_experiment(config: RunConfig, progress: bool = True) -> RunResults:
    """Run every stage for every seed (skipping finished ones), then write results.json and report.html."""
    started = time.time()
    root = config.directory
    seeds = [
        SeedRun(config, seed, progress) for seed in config.seeds
    ]  # bad data or tail specs fail before anything is written
    prepared = time.time() - started
    lock = lock_folder(root, "running an experiment in")
    handler = _log_to(root / "run.log")
    try:
        log.info("data splits and tails of seed(s) %s: ready in %.0f s", ", ".join(map(str, config.seeds)), prepared)
        write_text_atomic(root / "config.yaml", config.to_yaml())
        write_json_atomic(root / "versions.json", versions())
        outcomes = [seed.run() for seed in seeds]
        results = aggregate(config, outcomes, time.time() - started)
        results.save(root / "results.json")
        write_report(root)
        log.info("wrote %s and %s", root / "results.json", root / "report.html")
        return results
    finally:
        logging.getLogger("cartrm").removeHandler(handler)
        handler.close()
        os.close(lock)


class SeedRun:
    """The stages of one seed under ``runs/<name>/seed-<s>/``."""

    def __init__(self, config: RunConfig, seed: int, progress: bool) -> None:
        self.config, self.seed, self.progress = config, seed, progress
        self.root = config.directory / f"seed-{seed}"
        self.train_config = config.train.model_copy(update={"seed": seed})
        self.splits = self._data()
        spec = self._fitted_tail(self.splits["train"])
        self.tails = {name: spec.transform(split) for name, split in self.splits.items()}
        if not config.uses_benchmark:
            counts = (f"{k} {len(v)} pairs ({int(self.tails[k].mask.sum())} tail)" for k, v in self.splits.items())
            log.info("seed %d: %s", seed, ", ".join(counts))
        self.has_gold = gold_margin_of(self.splits["test"]) is not None

    def run(self) -> SeedOutcome:
        if self.config.uses_benchmark:
            self.benchmark_data.save(self.root / "data" / "benchmark.jsonl")
        outcome = SeedOutcome(self.seed)
        for method in self.config.methods:
            model, seconds = self._trained(method)
            outcome.train_seconds[method] = seconds
            outcome.curves[method] = self._learning_curve_of(method)
            if method in self.config.tune:
                outcome.tuning[method] = json.loads((self.root / "models" / method / "tuning.json").read_text())
            if method in CIRCUIT_METHODS and self.config.uses_benchmark:
                outcome.augmentation[method] = self._augmentation_audit(method)
            outcome.reports[method], outcome.correct[method] = self._evaluated(method, model)
            if self.config.uses_benchmark and self.config.bon_prompts:
                outcome.bon[method] = self._best_of_n(method, model)
        for label, overrides in self.config.ablated_methods.items():
            model, outcome.train_seconds[label] = self._ablated(label, overrides)
            if self.config.uses_benchmark:
                outcome.augmentation[label] = self._augmentation_audit(label)
            outcome.reports[label], outcome.correct[label] = self._evaluated(label, model)
        if "cart" in self.config.methods and (self.root / "analysis" / "vulnerability.json").exists():
            outcome.stability = self._stability()
        if "bt" in self.config.methods:
            outcome.tail_margin = self._tail_margin("bt")
        return outcome

    # -- data ---------------------------------------------------------------------------------------------

    def _data(self) -> dict:
        if self.config.uses_benchmark:
            dataset = make_longtail_dataset(self.config.benchmark.model_copy(update={"seed": self.seed}))
            self.benchmark_data = dataset
            return {name: dataset.split(name) for name in SPLITS}
        dataset = load_preferences(self.config.data)
        strata = self._fitted_tail(dataset).transform(dataset).mask  # the split's strata; training refits on train
        return _user_splits(dataset, self.seed, strata, self.config.user_split)

    def _fitted_tail(self, data):
        spec = parse_tail_spec(self.config.tail_by)
        if isinstance(spec, LabelTail):
            return spec.fit(data)
        tokenizer, embedder = _tail_probe(self.config.model, self.config.train.max_length, self.progress)
        return spec.fit(data, tokenizer=tokenizer, embedder=embedder)  # rarity: tokens; density: embeddings

    # -- training -----------------------------------------------------------------------------------------

    def _training_of(self, method: str) -> TrainConfig:
        """The run's training settings as ``method`` uses them (before tuning)."""
        return self.train_config.model_copy(
            update={"method": CONTROLS.get(method, method)}
            | ({"max_steps": self.config.continue_steps} if self.config.warm_started(method) else {})
        )

    def _trained(self, method: str) -> tuple[RewardModel | EnsembleRewardModel, float]:
        folder = self.root / "models" / method
        warm = self.config.warm_started(method)
        training = self._training_of(method)
        circuits, report = self._analysis() if method in CIRCUIT_METHODS else (None, None)
        upstream = _stage_key(self.root / "analysis") if method in CIRCUIT_METHODS else None  # circuits are inputs too
        key = stage_key(
            self.config.model,
            self.config.benchmark if self.config.uses_benchmark else [self.config.data, self.config.user_split],
            self.config.tail_by,
            _what_trains(method, training),
            self.config.ensemble_members if method in ENSEMBLES else None,
            upstream,
            *([_stage_key(self.root / "models" / "bt")] if warm else []),  # the start is an input too
        )
        if method in self.config.tune:
            return self._tuned(method, training, key, circuits, report)
        ensemble_dir = folder / "ensemble"
        if _stage_done(folder, key):
            log.info("seed %d: %s already trained, skipping", self.seed, method)
            seconds = json.loads((folder / STAGE_MARKER).read_text())["seconds"]
            return (
                EnsembleRewardModel.load(ensemble_dir) if method in ENSEMBLES else RewardModel.load(folder)
            ), seconds
        shutil.rmtree(folder, ignore_errors=True)
        started = time.time()
        model: RewardModel | EnsembleRewardModel
        with _logged(f"seed {self.seed}: training {method}"):
            if method in ENSEMBLES:
                model = self._train_ensemble(method, training, folder, circuits, report)
            else:
                start = self.root / "models" / "bt" if warm else self.config.model
                model = self._train_one(start, training, folder, circuits, report)
        seconds = time.time() - started
        _stage_finish(folder, key, seconds=seconds)
        return model, seconds

    def _tuned(
        self,
        method: str,
        training: TrainConfig,
        key: str,
        circuits: Circuits | None,
        report: VulnerabilityReport | None,
    ) -> tuple[RewardModel, float]:
        """Train every variant of ``method``'s grid from the same start, score each on the validation split and
        select one (:attr:`RunConfig.tune_head_tolerance`); its model is copied into ``models/<method>/``, the
        variants stay in ``models/<method>/variants/<i>/`` and the scores in ``models/<method>/tuning.json``."""
        folder = self.root / "models" / method
        control = matched_control(method, self.config.methods)
        grid = self.config.tune[method]
        key = stage_key(key, grid, self.config.tune_head_tolerance, _stage_key(self.root / "models" / control))
        if _stage_done(folder, key):
            log.info("seed %d: %s already tuned, skipping", self.seed, method)
            return RewardModel.load(folder), json.loads((folder / STAGE_MARKER).read_text())["seconds"]
        start: str | Path = self.root / "models" / "bt" if self.config.warm_started(method) else self.config.model
        variants = []
        for i, overrides in enumerate(grid):
            variant = folder / "variants" / str(i)
            variant_key = stage_key(key, overrides)
            if not _stage_done(variant, variant_key):
                shutil.rmtree(variant, ignore_errors=True)
                started = time.time()
                with _logged(f"seed {self.seed}: tuning {method}, variant {i + 1} of {len(grid)}: {overrides}"):
                    model = self._train_one(start, variant_config(training, overrides), variant, circuits, report)
                    scores = self._validation_scorer()(model)
                _stage_finish(variant, variant_key, seconds=time.time() - started, validation=scores)
            marker = json.loads((variant / STAGE_MARKER).read_text())
            variants.append({"settings": overrides, "validation": marker["validation"], "seconds": marker["seconds"]})
        reference = self._validation_of(control)
        chosen = select_variant([v["validation"] for v in variants], reference, self.config.tune_head_tolerance)
        for item in (folder / "variants" / str(chosen)).iterdir():
            if item.is_file() and item.name != STAGE_MARKER:
                shutil.copy2(item, folder / item.name)
        tuning = {"control": control, "control_validation": reference, "variants": variants, "chosen": chosen}
        write_json_atomic(folder / "tuning.json", tuning)
        seconds = float(sum(v["seconds"] for v in variants))
        _stage_finish(folder, key, seconds=seconds)
        return RewardModel.load(folder), seconds

    def _train_one(
        self,
        start: str | Path,
        training: TrainConfig,
        folder: Path,
        circuits: Circuits | None,
        report: VulnerabilityReport | None,
    ) -> RewardModel:
        """One model from ``start`` (the base model or a trained one) on the seed's training split into ``folder``,
        with its validation learning curve when ``training.eval_steps`` is set."""
        model = RewardModel.load(start, seed=self.seed)
        train(
            model,
            self.splits["train"],
            training,
            folder,
            tail=self.tails["train"],
            circuits=circuits,
            vulnerability=report,
            evaluate=self._learning_curve() if training.eval_steps else None,
            progress=self.progress,
        )
        return model

    def _ablated(self, label: str, overrides: dict[str, Any]) -> tuple[RewardModel, float]:
        """CART with one component changed (:attr:`RunConfig.ablations`): cart's settings, the selected
        variant's when cart is tuned, with ``overrides``, trained from cart's start on the same data and circuits.
        Settings identical to cart's reuse cart's model (training is seeded, so it would be the same model)."""
        cart, folder = self._cart_as_trained(), self.root / "models" / label
        warm = overrides.get("warm_start", True) and self.config.warm_started("cart")
        training = variant_config(cart, _without_start(overrides))
        if not warm and self.config.warm_started("cart"):
            steps = json.loads((self.root / "models" / "bt" / "train_result.json").read_text())["global_step"]
            training = training.model_copy(update={"max_steps": steps + self.config.continue_steps})
        key = stage_key(_stage_key(self.root / "models" / "cart"), training, warm)
        if _stage_done(folder, key):
            log.info("seed %d: %s already trained, skipping", self.seed, label)
            return RewardModel.load(folder), json.loads((folder / STAGE_MARKER).read_text())["seconds"]
        shutil.rmtree(folder, ignore_errors=True)
        started = time.time()
        if warm and training == cart:
            log.info("seed %d: %s has cart's settings; cart's model is reused", self.seed, label)
            shutil.copytree(self.root / "models" / "cart", folder, ignore=shutil.ignore_patterns("variants"))
        else:
            circuits, report = self._analysis()
            with _logged(f"seed {self.seed}: training {label}"):
                start = self.root / "models" / "bt" if warm else self.config.model
                self._train_one(start, training, folder, circuits, report)
        seconds = time.time() - started
        _stage_finish(folder, key, seconds=seconds)
        return RewardModel.load(folder), seconds

    def _cart_as_trained(self) -> TrainConfig:
        """cart's training settings in this seed: the selected variant's when cart is tuned."""
        training = self._training_of("cart")
        if "cart" not in self.config.tune:
            return training
        chosen = json.loads((self.root / "models" / "cart" / "tuning.json").read_text())["chosen"]
        return variant_config(training, self.config.tune["cart"][chosen])

    def _validation_scorer(self):
        return accuracy_scorer(self.splits["validation"], self.tails["validation"].mask)

    def _validation_of(self, method: str) -> dict[str, float]:
        """``method``'s validation scores, kept beside its model and recomputed when the model changed."""
        folder = self.root / "models" / method
        path, key = folder / "validation.json", stage_key(_stage_key(folder), SCORING_VERSION)
        if path.exists() and json.loads(path.read_text())["key"] == key:
            return json.loads(path.read_text())["scores"]
        with _logged(f"seed {self.seed}: scoring {method} on the validation split"):
            scores = self._validation_scorer()(RewardModel.load(folder))
        write_json_atomic(path, {"key": key, "scores": scores})
        return scores

    def _augmentation_audit(self, method: str) -> dict[str, dict[str, float]]:
        """Per transform, the kept augmentations' gold agreement recomputed from their edited text and the share
        that carry another domain's words (``benchmarks.longtail.augmentation_audit``); {} without any."""
        folder = self.root / "models" / method
        if (folder / "tuning.json").exists():  # the tested model's augmentations, not every variant's
            folder = folder / "variants" / str(json.loads((folder / "tuning.json").read_text())["chosen"])
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

    def _learning_curve_of(self, method: str) -> list[dict[str, float]]:
        """The validation scores a single model recorded while training (empty without ``train.eval_steps``)."""
        path = self.root / "models" / method / "train_result.json"
        return json.loads(path.read_text()).get("curve", []) if path.exists() else []

    def _learning_curve(self):
        """Scores of the validation split for ``train.eval_steps`` (each model's ``train_result.json`` curve)."""
        return self._validation_scorer()

    def _train_ensemble(
        self,
        method: str,
        training: TrainConfig,
        folder: Path,
        circuits: Circuits | None,
        report: VulnerabilityReport | None,
    ) -> EnsembleRewardModel:
        member_method, weighting = ENSEMBLES[method]
        targets = report.targets if report and member_method == "cart" else None
        ensemble = EnsembleConfig(
            members=self.config.ensemble_members,
            method=member_method,
            weighting=weighting,
            seed=self.seed,
            train=training,
        )
        result = train_ensemble(
            self.config.model,
            self.splits["train"],
            self.tails["train"],
            self.splits["validation"],
            self.tails["validation"],
            ensemble,
            folder,
            circuits=circuits if member_method == "cart" else None,
            targets=targets,
            trained=self._members_trained_as_bt(ensemble),
            progress=self.progress,
        )
        return EnsembleRewardModel.load(result.ensemble_dir)

    def _members_trained_as_bt(self, ensemble: EnsembleConfig) -> dict[int, Path]:
        """The seed's bt model as the ensemble's member 0 when that member's settings are bt's (``ensemble-mean``:
        same start, data, settings and seed, so training it again would rebuild the same weights)."""
        bt = self.root / "models" / "bt"
        same = "bt" in self.config.methods and member_train_config(ensemble, 0) == self._training_of("bt")
        return {0: bt} if same and (bt / STAGE_MARKER).exists() else {}

    def _analysis(self) -> tuple[Circuits, VulnerabilityReport | None]:
        """Phases 1–2 on the baseline, once per seed: its tail circuits and their vulnerability report (None when
        discovery found no circuit)."""
        from cartrm.circuits.plots import plot_coherence_graph, plot_delta_histogram
        from cartrm.vulnerability.plots import plot_vulnerability

        folder = self.root / "analysis"
        key = stage_key(
            _stage_key(self.root / "models" / "bt"),
            self.config.discovery,
            self.config.assessment,
            self.config.analysis_pairs,
        )
        circuits_path, vulnerability_path = folder / "circuits.json", folder / "vulnerability.json"
        if not _stage_done(folder, key):
            shutil.rmtree(folder, ignore_errors=True)
            baseline = RewardModel.load(self.root / "models" / "bt")
            data, tail = self._analysis_data()
            with _activation_cache(folder) as cache:
                with _logged(f"seed {self.seed}: discovering the baseline's tail circuits"):
                    circuits = discover(
                        baseline,
                        data,
                        tail,
                        self.config.discovery.model_copy(update={"seed": self.seed}),
                        progress=self.progress,
                        cache_dir=cache,
                    )
                circuits.save(circuits_path)
                plot_delta_histogram(circuits, folder / "delta_hist.png")
                plot_coherence_graph(circuits, folder / "coherence_graph.png")
                if circuits.circuits:
                    with _logged(f"seed {self.seed}: assessing their vulnerability"):
                        report = assess(
                            baseline,
                            data,
                            tail,
                            circuits,
                            self.config.assessment.model_copy(update={"seed": self.seed}),
                            progress=self.progress,
                            cache_dir=cache,
                        )
                    report.save(vulnerability_path)
                    plot_vulnerability(report, folder / "vulnerability.png")
                else:
                    log.warning(
                        "seed %d: discovery found no tail circuits; CART trains without circuit terms", self.seed
                    )
            _stage_finish(folder, key)
        assessed = VulnerabilityReport.load(vulnerability_path) if vulnerability_path.exists() else None
        return Circuits.load(circuits_path), assessed

    def _analysis_data(self) -> tuple[Any, TailSplit]:
        """A seeded subset of the training pairs, balanced head/tail, for discovery and assessment."""
        subset = balanced_subset(self.tails["train"].mask, self.config.analysis_pairs, self.seed)
        tail = self.tails["train"]
        return self.splits["train"].select(subset), TailSplit(tail.mask[subset], tail.description)

    # -- evaluation ---------------------------------------------------------------------------------------

    def _evaluated(self, method: str, model) -> tuple[EvaluationReport, dict[str, np.ndarray]]:
        """The test report and per-pair correctness (label and gold) for the paired comparisons."""
        folder = self.root / "eval" / method
        key = stage_key(_stage_key(self.root / "models" / method), "eval", SCORING_VERSION)
        if not _stage_done(folder, key):
            shutil.rmtree(folder, ignore_errors=True)
            test = self.splits["test"]
            with _logged(f"seed {self.seed}: evaluating {method} on {len(test)} test pairs"):
                chosen, rejected = model.score_pairs(test, progress=self.progress)
            groups = {c: test.column(c) for c in BREAKDOWN_COLUMNS if test.has_column(c)}
            report = evaluate_scores(
                chosen,
                rejected,
                tail=self.tails["test"],
                groups=groups,
                gold_margin=gold_margin_of(test),
                model=method,
                data=test.source,
                tail_by=self.config.tail_by,
                seed=self.seed,
            )
            report.save(folder / "metrics.json")
            write_json_atomic(folder / "scores.json", {"chosen": chosen.tolist(), "rejected": rejected.tolist()})
            _stage_finish(folder, key)
        return EvaluationReport.load(folder / "metrics.json"), self.test_correctness(method)

    def _tail_margin(self, method: str) -> float:
        """``method``'s mean |reward margin| over the test split's tail pairs: the reward scale that a circuit's
        patch effect is read against."""
        scores = json.loads((self.root / "eval" / method / "scores.json").read_text())
        margins = np.abs(np.array(scores["chosen"]) - np.array(scores["rejected"]))
        return float(margins[self.tails["test"].mask].mean())

    def test_correctness(self, method: str) -> dict[str, np.ndarray]:
        """Per test pair, whether ``method``'s saved test scores order it as labelled (``head_accuracy``,
        ``tail_accuracy``) and, where a gold reward exists, as the gold rule does (``head_gold_accuracy``,
        ``tail_gold_accuracy``): the paired tests' input, also for reading a finished run again."""
        from cartrm.evaluation.metrics import pairwise_correct

        scores = json.loads((self.root / "eval" / method / "scores.json").read_text())
        chosen, rejected = np.array(scores["chosen"]), np.array(scores["rejected"])
        tail = self.tails["test"].mask
        correct = pairwise_correct(chosen, rejected)
        out = {"head_accuracy": correct[~tail], "tail_accuracy": correct[tail]}
        gold = gold_margin_of(self.splits["test"])
        if gold is not None:
            gold_correct = pairwise_correct(np.sign(gold) * (chosen - rejected), np.zeros(len(gold)))
            out |= {"head_gold_accuracy": gold_correct[~tail], "tail_gold_accuracy": gold_correct[tail]}
        return out

    def _best_of_n(self, method: str, model) -> dict[str, BoNCurve]:
        from cartrm.datasets.longtail.best_of_n import best_of_n_by_group, candidate_pool

        folder = self.root / "bon" / method
        key = stage_key(
            _stage_key(self.root / "models" / method),
            self.config.bon_prompts,
            self.config.bon_candidates,
            SCORING_VERSION,
        )
        path = folder / "curves.json"
        if not _stage_done(folder, key):
            shutil.rmtree(folder, ignore_errors=True)
            benchmark = self.config.benchmark.model_copy(update={"seed": self.seed})
            with _logged(f"seed {self.seed}: best-of-n for {method}"):
                pool = candidate_pool(
                    benchmark,
                    self.config.bon_prompts,
                    self.config.bon_prompts,
                    self.config.bon_candidates,
                    seed=self.seed,
                )
                curves = best_of_n_by_group(model, pool, progress=self.progress)
            write_json_atomic(path, {group: curve.model_dump() for group, curve in curves.items()})
            _stage_finish(folder, key)
        return {group: BoNCurve.model_validate(curve) for group, curve in json.loads(path.read_text()).items()}

    # -- stability ----------------------------------------------------------------------------------------

    def _stability(self) -> SeedStability:
        """CART's top tail neurons vs the baseline's, and Vuln of the targeted circuits after CART."""

        folder = self.root / "stability"
        key = stage_key(_stage_key(self.root / "models" / "cart"), self.config.stability_top_k, SCORING_VERSION)
        if not _stage_done(folder, key):
            shutil.rmtree(folder, ignore_errors=True)
            with _logged(f"seed {self.seed}: circuit stability before/after CART"):
                baseline_circuits = Circuits.load(self.root / "analysis" / "circuits.json")
                before = VulnerabilityReport.load(self.root / "analysis" / "vulnerability.json")
                cart_model = RewardModel.load(self.root / "models" / "cart")
                data, tail = self._analysis_data()
                cheap = self.config.discovery.model_copy(
                    update={"seed": self.seed, "patch_pairs": 0, "top_k": self.config.stability_top_k}
                )
                with _activation_cache(folder) as cache:
                    cart_circuits = discover(
                        cart_model,
                        data,
                        tail,
                        cheap,
                        progress=self.progress,
                        cache_dir=cache,
                    )
                    after = assess(
                        cart_model,
                        data,
                        tail,
                        baseline_circuits,
                        self.config.assessment.model_copy(update={"seed": self.seed}),
                        progress=self.progress,
                        check_fingerprint=False,
                        cache_dir=cache,
                    )
                cart_circuits.save(folder / "cart_circuits.json")
                k = self.config.stability_top_k
                SeedStability(
                    seed=self.seed,
                    top_k=k,
                    baseline_vs_cart_jaccard=circuit_overlap(
                        [top_tail_neurons(baseline_circuits, k), top_tail_neurons(cart_circuits, k)]
                    ),
                    targets=list(before.targets),
                    vuln_before={c.id: c.vuln for c in before.circuits if c.id in before.targets},
                    vuln_after={c.id: c.vuln for c in after.circuits if c.id in before.targets},
                ).save(folder / "stability.json")
            _stage_finish(folder, key)
        return SeedStability.load(folder / "stability.json")


def variant_config(base: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """``base`` with a tuning grid's ``overrides`` (a nested ``cart`` dict updates CART's settings)."""
    values = base.model_dump()
    for name, value in overrides.items():
        values[name] = {**values[name], **value} if name == "cart" and isinstance(value, dict) else value
    return TrainConfig.model_validate(values)


def _without_start(overrides: dict[str, Any]) -> dict[str, Any]:
    """An ablation's TrainConfig overrides: all but its ``warm_start`` switch."""
    return {k: v for k, v in overrides.items() if k != "warm_start"}


def select_variant(scores: list[dict[str, float]], control: dict[str, float], tolerance: float) -> int:
    """The variant with the best validation tail accuracy (gold where scored) among those whose head accuracy
    is at least the control's minus ``tolerance``; all variants compete when none qualifies. Ties: the first."""
    prefix = "gold_" if "tail_gold_accuracy" in control else ""
    head, tail = f"head_{prefix}accuracy", f"tail_{prefix}accuracy"
    eligible = [i for i, s in enumerate(scores) if s[head] >= control[head] - tolerance] or list(range(len(scores)))
    return max(eligible, key=lambda i: (scores[i][tail], -i))


def _what_trains(method: str, training: TrainConfig) -> TrainConfig:
    """The part of ``training`` a method's result depends on: CART settings only for CART methods, so a changed
    CART setting retrains only CART (the circuits, an input, are in the analysis stage's key)."""
    return training if method in CIRCUIT_METHODS else training.model_copy(update={"cart": CartConfig()})


@functools.lru_cache(maxsize=2)
def _tail_probe(model: str, max_length: int, progress: bool) -> tuple[Any, Embedder]:
    """The base model's tokenizer (for ``rarity:``) and embeddings (for ``density:``), loaded once per process and
    memoised by text: each seed splits the same data and refits on its training split."""
    probe = RewardModel.load(model, max_length=max_length)
    return probe.tokenizer, memoised(functools.partial(probe.embed, progress=progress))


def _user_splits(dataset, seed: int, tail: np.ndarray, split: UserSplit) -> dict:
    """The data's own train/validation/test when its ``split`` column has them (validation carved from train
    when only train/test exist); else a seeded split of head and tail pairs separately (:class:`UserSplit`)."""
    present = set(dataset.column("split")) if dataset.has_column("split") else set()
    if {"train", "test"} <= present:
        train_split, test = dataset.split("train"), dataset.split("test")
        if "validation" in present:
            return {"train": train_split, "validation": dataset.split("validation"), "test": test}
        order = np.random.default_rng(seed).permutation(len(train_split))
        cut = max(1, int(len(order) * split.validation_share))
        return {
            "train": train_split.select(np.sort(order[cut:])),
            "validation": train_split.select(np.sort(order[:cut])),
            "test": test,
        }
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {name: [] for name in SPLITS}
    for is_tail in (False, True):
        order = rng.permutation(np.flatnonzero(tail == is_tail))
        n_test = round(len(order) * split.test_share)
        if is_tail:
            n_test = max(n_test, min(split.min_tail_test, len(order) // 2))
        n_validation = round(len(order) * split.validation_share)
        parts["test"] += order[:n_test].tolist()
        parts["validation"] += order[n_test : n_test + n_validation].tolist()
        parts["train"] += order[n_test + n_validation :].tolist()
    return {name: dataset.select(np.sort(np.asarray(rows, dtype=int))) for name, rows in parts.items()}


def _stage_done(folder: Path, key: str) -> bool:
    """Whether ``folder`` holds a finished stage made from these inputs. One made from other inputs (a changed
    setting or upstream stage) is about to be removed and redone, so that is logged."""
    marker = folder / STAGE_MARKER
    if not marker.exists():
        return False
    if json.loads(marker.read_text()).get("key") == key:
        return True
    log.warning("%s was made from other inputs (a setting or an upstream stage changed): it is redone", folder)
    return False


def _stage_key(folder: Path) -> str:
    return json.loads((folder / STAGE_MARKER).read_text())["key"]


def _stage_finish(folder: Path, key: str, **extra) -> None:
    write_json_atomic(folder / STAGE_MARKER, {"key": key, **extra})


@contextmanager
def _activation_cache(folder: Path) -> Iterator[Path]:
    """A scratch activation cache under ``folder`` shared by discovery and assessment of one model (one model
    pass instead of three), removed when the stage ends."""
    cache = folder / ".activations"
    try:
        yield cache
    finally:
        shutil.rmtree(cache, ignore_errors=True)


@contextmanager
def _logged(stage: str) -> Iterator[None]:
    """Log a stage's start and, when it succeeds, its wall time and the process's peak resident memory so far
    (run.log then shows where a run spends its time and memory)."""
    log.info(stage)
    started = time.time()
    yield
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = f", GPU {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if torch.cuda.is_initialized() else ""
    log.info("%s: done in %.0f s (peak memory so far %.0f MiB%s)", stage, time.time() - started, peak_mb, gpu)


def _log_to(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("cartrm")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler
