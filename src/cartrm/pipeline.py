"""``cart run``: the whole experiment on the embedded long-tail benchmark.

Layout of ``runs/<name>/``: ``data/benchmark.jsonl`` (all splits), ``models/<method>/`` (trained reward
models, plain HF folders), ``eval/<method>/metrics.json`` (``cart evaluate`` output on the test split),
``metrics.json`` (all methods together, with the run's config) and ``report.md``.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cartrm.benchmarks import BenchmarkConfig, make_longtail_dataset
from cartrm.data.tail import parse_tail_spec
from cartrm.evaluation import EvaluationReport, evaluate
from cartrm.io import write_json_atomic, write_text_atomic
from cartrm.models import RewardModel
from cartrm.training import TrainConfig, train

BENCHMARK_TAIL_SPEC = "label:is_tail"
BREAKDOWN_COLUMNS = ("rule_set", "domain")


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "default"
    out_root: Path = Path("runs")
    model: str = "minilm"
    seed: int = 0
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    methods: tuple[str, ...] = ("bt",)

    @classmethod
    def preset(cls, quick: bool, **overrides) -> RunConfig:
        """``quick``: a ≤10-minute CPU run; otherwise the larger default sizes."""
        seed = overrides.get("seed", 0)
        if quick:
            benchmark = BenchmarkConfig(n_train=1000, n_validation=200, n_test_head=300, n_test_tail=1100, seed=seed)
            training = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-4, max_length=128, seed=seed)
        else:
            benchmark = BenchmarkConfig(n_train=6000, n_validation=600, seed=seed)
            training = TrainConfig(epochs=2, batch_size=16, learning_rate=5e-5, max_length=128, seed=seed)
        return cls(benchmark=benchmark, train=training, **overrides)

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
    train_split, test_split = dataset.split("train"), dataset.split("test")
    tail = parse_tail_spec(BENCHMARK_TAIL_SPEC).fit(train_split).transform(test_split)
    reports, seconds = {}, {}
    for method in config.methods:
        model = RewardModel.load(config.model, seed=config.seed)
        result = train(model, train_split, config.train.model_copy(update={"method": method}), root / "models" / method, progress=progress)
        seconds[method] = result.seconds
        report = evaluate(model, test_split, tail=tail, by=BREAKDOWN_COLUMNS, tail_by=BENCHMARK_TAIL_SPEC, progress=progress)
        report.save(root / "eval" / method / "metrics.json")
        reports[method] = report
    outcome = RunResult(config=config, reports=reports, train_seconds=seconds, total_seconds=time.time() - started)
    write_json_atomic(root / "metrics.json", outcome.model_dump(mode="json"))
    write_text_atomic(root / "report.md", markdown_report(outcome))
    return outcome


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
