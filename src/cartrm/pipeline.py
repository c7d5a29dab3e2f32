"""``cart run``: the whole experiment on the embedded long-tail benchmark.

Stages: benchmark data → baseline (``bt``) → discovery and assessment on the baseline (when a CART method
runs) → every other method → evaluation on the test split → report.

Layout of ``runs/<name>/``: ``data/benchmark.jsonl`` (all splits), ``models/<method>/`` (trained reward
models, plain HF folders; ensembles hold ``members/`` and a loadable ``ensemble/``), ``analysis/``
(``circuits.json`` and ``vulnerability.json`` of the baseline), ``eval/<method>/metrics.json`` (``cart
evaluate`` output on the test split), ``metrics.json`` (all methods together, with the run's config) and
``report.md``.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cartrm.benchmarks import BenchmarkConfig, make_longtail_dataset
from cartrm.circuits.discover import DiscoveryConfig, balanced_subset, discover
from cartrm.data.tail import TailSplit, parse_tail_spec
from cartrm.errors import CartError
from cartrm.evaluation import EvaluationReport, evaluate
from cartrm.io import write_json_atomic, write_text_atomic
from cartrm.models import RewardModel
from cartrm.training import METHODS, TrainConfig, get_method, train
from cartrm.training.ensemble import EnsembleConfig, EnsembleRewardModel, train_ensemble
from cartrm.vulnerability.assess import AssessConfig, assess

BENCHMARK_TAIL_SPEC = "label:is_tail"
BREAKDOWN_COLUMNS = ("rule_set", "domain")
ENSEMBLES = {"ensemble-mean": ("bt", "uniform"), "cart-ensemble": ("cart", "fit")}
ALL_METHODS = ("bt", "label-smoothing", "reweight", "hidden-reg", "ensemble-mean", "cart", "cart-ensemble")
QUICK_METHODS = ("bt", "cart")
CIRCUIT_METHODS = ("cart", "cart-ensemble")


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "default"
    out_root: Path = Path("runs")
    model: str = "minilm"
    seed: int = 0
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    methods: tuple[str, ...] = QUICK_METHODS
    discovery: DiscoveryConfig = Field(default_factory=lambda: DiscoveryConfig(patch_pairs=16, max_validated=5))
    assessment: AssessConfig = Field(default_factory=AssessConfig)
    analysis_pairs: int = Field(400, ge=16, description="training pairs (up to half tail) used for discovery and assessment")
    ensemble_members: int = Field(3, ge=2)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        get_method("bt", TrainConfig())  # imports every built-in method
        unknown = [m for m in methods if m not in METHODS and m not in ENSEMBLES]
        if unknown or not methods:
            raise ValueError(f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ALL_METHODS)}")
        needs_baseline = any(m in CIRCUIT_METHODS for m in methods) and "bt" not in methods
        ordered = (("bt",) if needs_baseline else ()) + tuple(dict.fromkeys(methods))
        return tuple(sorted(ordered, key=lambda m: m != "bt"))  # the baseline first: CART reads its circuits

    @classmethod
    def preset(cls, quick: bool, **overrides) -> RunConfig:
        """``quick``: a ≤10-minute CPU run of bt vs cart; otherwise the larger sizes and every method."""
        seed = overrides.get("seed", 0)
        if quick:
            benchmark = BenchmarkConfig(n_train=1000, n_validation=200, n_test_head=300, n_test_tail=1100, seed=seed)
            training = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-4, max_length=128, seed=seed)
            methods = QUICK_METHODS
        else:
            benchmark = BenchmarkConfig(n_train=6000, n_validation=600, seed=seed)
            training = TrainConfig(epochs=2, batch_size=16, learning_rate=5e-5, max_length=128, seed=seed)
            methods = ALL_METHODS
        return cls(**{"benchmark": benchmark, "train": training, "methods": methods, **overrides})

    @property
    def directory(self) -> Path:
        return self.out_root / self.name


class RunResult(BaseModel):
    config: RunConfig
    reports: dict[str, EvaluationReport]
    train_seconds: dict[str, float]
    total_seconds: float


def run_experiment(config: RunConfig, progress: bool = True) -> RunResult:
    started = time.time()
    root = config.directory
    dataset = make_longtail_dataset(config.benchmark)
    dataset.save(root / "data" / "benchmark.jsonl")
    splits = {name: dataset.split(name) for name in ("train", "validation", "test")}
    tail_spec = parse_tail_spec(BENCHMARK_TAIL_SPEC).fit(splits["train"])
    tails = {name: tail_spec.transform(split) for name, split in splits.items()}
    reports, seconds = {}, {}
    for method in config.methods:
        method_started = time.time()
        if method in ENSEMBLES:
            model = _train_ensemble(config, method, splits, tails, root, progress)
        else:
            model = _train_method(config, method, splits["train"], tails["train"], root, progress)
        seconds[method] = time.time() - method_started
        report = evaluate(model, splits["test"], tail=tails["test"], by=BREAKDOWN_COLUMNS, tail_by=BENCHMARK_TAIL_SPEC, progress=progress)
        report.save(root / "eval" / method / "metrics.json")
        reports[method] = report
    outcome = RunResult(config=config, reports=reports, train_seconds=seconds, total_seconds=time.time() - started)
    write_json_atomic(root / "metrics.json", outcome.model_dump(mode="json"))
    write_text_atomic(root / "report.md", markdown_report(outcome))
    return outcome


def _train_method(config: RunConfig, method: str, train_split, tail: TailSplit, root: Path, progress: bool) -> RewardModel:
    training = config.train.model_copy(update={"method": method})
    if method in CIRCUIT_METHODS:
        training = training.model_copy(update={"cart": _analysis(config, train_split, tail, root, progress)})
    model = RewardModel.load(config.model, seed=config.seed)
    train(model, train_split, training, root / "models" / method, tail_mask=tail.mask, progress=progress)
    return model


def _train_ensemble(config: RunConfig, method: str, splits: dict, tails: dict, root: Path, progress: bool) -> EnsembleRewardModel:
    member_method, weighting = ENSEMBLES[method]
    training = config.train
    targets = None
    if member_method == "cart":
        cart = _analysis(config, splits["train"], tails["train"], root, progress)
        training = training.model_copy(update={"cart": cart})
        targets = _targets(cart)
    ensemble = EnsembleConfig(
        members=config.ensemble_members, method=member_method, weighting=weighting, seed=config.seed, train=training,
    )
    result = train_ensemble(
        config.model, splits["train"], tails["train"].mask, splits["validation"], tails["validation"].mask, ensemble,
        root / "models" / method, targets=targets, progress=progress,
    )
    return EnsembleRewardModel.load(result.ensemble_dir)


def _analysis(config: RunConfig, train_split, tail: TailSplit, root: Path, progress: bool):
    """Discovery and assessment on the baseline (phases 1–2), once per run; returns the CART config using them."""
    folder = root / "analysis"
    circuits_path, vulnerability_path = folder / "circuits.json", folder / "vulnerability.json"
    if not vulnerability_path.exists():
        baseline_dir = root / "models" / "bt"
        if not (baseline_dir / "config.json").exists():
            raise CartError(f"CART needs the baseline model in {baseline_dir}; include 'bt' in the methods")
        baseline = RewardModel.load(baseline_dir)
        subset = balanced_subset(tail.mask, config.analysis_pairs, config.seed)
        data, mask = train_split.select(subset), tail.mask[subset]
        circuits = discover(baseline, data, TailSplit(mask, tail.description), config.discovery.model_copy(update={"seed": config.seed}), progress=progress)
        circuits.save(circuits_path)
        assess(baseline, data, mask, circuits, config.assessment.model_copy(update={"seed": config.seed}), progress=progress).save(vulnerability_path)
    return config.train.cart.model_copy(update={"circuits": str(circuits_path), "vulnerability": str(vulnerability_path)})


def _targets(cart) -> list[str]:
    from cartrm.vulnerability.result import VulnerabilityReport

    return list(VulnerabilityReport.load(cart.vulnerability).targets)


def markdown_report(result: RunResult) -> str:
    config = result.config
    lines = [
        f"# cartrm run `{config.name}`",
        "",
        f"Model `{config.model}`, seed {config.seed}; benchmark: {config.benchmark.n_train} training pairs, "
        f"head share α = {config.benchmark.alpha}; test: {config.benchmark.n_test_head} head + "
        f"{config.benchmark.n_test_tail} tail pairs. Total time {result.total_seconds / 60:.1f} min.",
        "",
        "Accuracy is agreement with the (noisy) annotator label; gold accuracy is agreement with the benchmark's "
        "gold reward; brackets are bootstrap 95% intervals.",
        "",
        "| method | head acc | tail acc | head gold acc | tail gold acc | tail − head (gold) | ECE | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, report in result.reports.items():
        head, tail = report.head, report.tail
        lines.append(
            f"| {method} | {_cell(head.accuracy, head.ci_low, head.ci_high)} | {_cell(tail.accuracy, tail.ci_low, tail.ci_high)} "
            f"| {_cell(head.gold_accuracy, head.gold_ci_low, head.gold_ci_high)} "
            f"| {_cell(tail.gold_accuracy, tail.gold_ci_low, tail.gold_ci_high)} "
            f"| {tail.gold_accuracy - head.gold_accuracy:+.3f} | {report.overall.ece:.3f} | {result.train_seconds[method]:.0f} |"
        )
    for method, report in result.reports.items():
        lines += ["", f"## `{method}` by rule set (gold accuracy)", "", "| rule set | n | gold acc | label–gold agreement |", "|---|---|---|---|"]
        for value, metrics in report.by.get("rule_set", {}).items():
            lines.append(f"| {value} | {metrics.n} | {_cell(metrics.gold_accuracy, metrics.gold_ci_low, metrics.gold_ci_high)} | {metrics.label_gold_agreement:.3f} |")
    return "\n".join(lines) + "\n"


def _cell(value: float, low: float, high: float) -> str:
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"
