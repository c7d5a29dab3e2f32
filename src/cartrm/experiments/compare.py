"""Two methods of a finished ``cart run`` on the same test pairs, read again from each seed's saved per-pair test
scores (``RUN/seed-S/eval/METHOD/scores.json``): ``cart compare``.

The run's own ``results.json`` compares cart with every other method; this compares any two, for instance an
ablation against its compute-matched control. Per metric: the hierarchical bootstrap over seeds then pairs (the
pipeline's paired test, :func:`~cartrm.evaluation.statistics.hierarchical_bootstrap`), each seed's difference, and
a Student-t interval over the per-seed differences (the seed as the only unit, ignoring the pairs' sampling
noise). Which test pairs are tail and their gold margins are read from the run (:class:`FinishedRun`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from cartrm.errors import CartError
from cartrm.evaluation.statistics import PairedComparison, SeedSummary, hierarchical_bootstrap, summarise_seeds
from cartrm.experiments.reader import FinishedRun

GOLD_METRICS = ("tail_gold_accuracy", "head_gold_accuracy")
LABEL_METRICS = ("tail_accuracy", "head_accuracy")
CONFLICT_METRIC = "conflict_gold_accuracy"  # benchmark runs: gold accuracy on the tail's conflict pairs
METRICS = (CONFLICT_METRIC, *GOLD_METRICS, *LABEL_METRICS)


class MethodComparison(BaseModel):
    """``method − baseline`` on one per-pair metric (shares, not points)."""

    model_config = ConfigDict(extra="forbid")

    method: str
    baseline: str
    metric: str
    seeds: list[int]
    paired: PairedComparison  # hierarchical bootstrap: seeds, then pairs
    over_seeds: SeedSummary  # t-interval of the per-seed differences
    confidence: float = 0.95  # of both intervals


def compare_methods(
    run: Path,
    method: str,
    baseline: str,
    seeds: Sequence[int] | None = None,
    metrics: Sequence[str] | None = None,
    confidence: float = 0.95,
) -> list[MethodComparison]:
    """``method − baseline`` on each of ``metrics`` (default: tail and head gold accuracy where the run has a gold
    reward, after conflict-pair gold accuracy on the benchmark; else tail and head accuracy) over ``seeds``
    (default: the run's), with intervals at ``confidence`` (e.g. 0.9875 for four tests at α = 0.05, Bonferroni)."""
    if not 0.5 <= confidence < 1:
        raise CartError(f"confidence must be in [0.5, 1), got {confidence}")
    finished = FinishedRun(Path(run))
    seeds = list(finished.config.seeds if seeds is None else seeds)
    if not seeds:
        raise CartError("no seeds to compare")
    for seed in seeds:
        _check_scores(finished, seed, (method, baseline))
    pairs = finished.test_pairs(seeds[0])
    has_gold = pairs.gold_margin is not None
    has_conflict = bool(pairs.conflict is not None and pairs.conflict.any())
    default = ((CONFLICT_METRIC,) if has_conflict else ()) + GOLD_METRICS if has_gold else LABEL_METRICS
    metrics = list(metrics or default)
    _check_metrics(metrics, has_gold, has_conflict)
    correct = {m: [finished.correctness(seed, m) for seed in seeds] for m in (method, baseline)}
    out = []
    for metric in metrics:
        paired = hierarchical_bootstrap(
            [c[metric] for c in correct[method]], [c[metric] for c in correct[baseline]], confidence=confidence
        )
        out.append(
            MethodComparison(
                method=method,
                baseline=baseline,
                metric=metric,
                seeds=seeds,
                paired=paired,
                over_seeds=summarise_seeds(paired.per_seed, confidence),
                confidence=confidence,
            )
        )
    return out


def _check_scores(run: FinishedRun, seed: int, methods: Sequence[str]) -> None:
    if not run.layout.seed(seed).root.is_dir():
        raise CartError(f"{run.root}: no seed-{seed} folder (the run's seeds are in its config.yaml)")
    present = run.methods(seed)
    for name in methods:
        if name not in present:
            raise CartError(
                f"{run.root}: seed {seed} has no test scores for '{name}' (eval/{name}/scores.json); "
                f"it has {', '.join(present) or 'none'}"
            )


def _check_metrics(metrics: Sequence[str], has_gold: bool, has_conflict: bool) -> None:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise CartError(f"unknown metric '{unknown[0]}'; choose from {', '.join(METRICS)}")
    if not has_gold and any(m in (*GOLD_METRICS, CONFLICT_METRIC) for m in metrics):
        raise CartError(f"the run's data have no gold reward: choose from {', '.join(LABEL_METRICS)}")
    if not has_conflict and CONFLICT_METRIC in metrics:
        raise CartError(f"{CONFLICT_METRIC} needs the embedded benchmark's test pairs (its head and tail rules)")


def comparison_table(comparisons: Sequence[MethodComparison]) -> str:
    """The comparisons as a plain-text table, in accuracy points."""
    if not comparisons:
        return ""
    first = comparisons[0]
    header = (
        "metric",
        "pairs",
        f"{first.method} − {first.baseline}",
        f"{100 * first.confidence:g}% interval",
        "p",
        "per seed",
        "t-interval (seeds)",
    )
    rows = [header, *(_row(c) for c in comparisons)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    seeds = ", ".join(str(s) for s in first.seeds)
    return f"seeds {seeds}; accuracy points (pairs: test pairs over all seeds)\n" + "\n".join(lines)


def _row(comparison: MethodComparison) -> tuple[str, ...]:
    paired, over = comparison.paired, comparison.over_seeds
    seed_interval = f"[{100 * over.ci_low:+.1f}, {100 * over.ci_high:+.1f}]" if over.n_seeds > 1 else "— (1 seed)"
    return (
        comparison.metric,
        str(paired.n),
        f"{100 * paired.difference:+.1f}",
        f"[{100 * paired.ci_low:+.1f}, {100 * paired.ci_high:+.1f}]",
        f"{paired.p_value:.3f}",
        ", ".join(f"{100 * v:+.1f}" for v in paired.per_seed),
        seed_interval,
    )
