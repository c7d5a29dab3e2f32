"""Phases 1–2 on the baseline, once per seed: its tail circuits and their vulnerability report."""

from __future__ import annotations

from typing import Any

from cartrm.circuits.discover import balanced_subset, discover
from cartrm.circuits.result import Circuits
from cartrm.data.tail import TailSplit
from cartrm.experiments.stages.context import SeedContext, activation_cache, log, logged
from cartrm.models import RewardModel
from cartrm.runs import stage_key
from cartrm.runs.stage import Stage
from cartrm.training import registry
from cartrm.vulnerability.assess import assess
from cartrm.vulnerability.result import VulnerabilityReport


def analysed(ctx: SeedContext) -> tuple[Circuits, VulnerabilityReport | None]:
    """The baseline's circuits and their vulnerability report (None when discovery found no circuit)."""
    layout, config = ctx.layout, ctx.config
    key = stage_key(
        Stage.key_of(layout.model(registry.BASELINE)), config.discovery, config.assessment, config.analysis_pairs
    )
    stage = Stage(layout.analysis, key, outputs=("circuits.json",))
    if not stage.done():
        stage.begin()
        _discover_and_assess(ctx)
        stage.finish()
    assessed = VulnerabilityReport.load(layout.vulnerability) if layout.vulnerability.exists() else None
    return Circuits.load(layout.circuits), assessed


def _discover_and_assess(ctx: SeedContext) -> None:
    from cartrm.circuits.plots import plot_coherence_graph, plot_delta_histogram
    from cartrm.vulnerability.plots import plot_vulnerability

    layout, config, folder = ctx.layout, ctx.config, ctx.layout.analysis
    baseline = RewardModel.load(layout.model(registry.BASELINE))
    data, tail = analysis_data(ctx)
    with activation_cache(folder) as cache:
        with logged(f"seed {ctx.seed}: discovering the baseline's tail circuits"):
            circuits = discover(
                baseline,
                data,
                tail,
                config.discovery.model_copy(update={"seed": ctx.seed}),
                progress=ctx.progress,
                cache_dir=cache,
            )
        circuits.save(layout.circuits)
        plot_delta_histogram(circuits, folder / "delta_hist.png")
        plot_coherence_graph(circuits, folder / "coherence_graph.png")
        if not circuits.circuits:
            log.warning("seed %d: discovery found no tail circuits; CART trains without circuit terms", ctx.seed)
            return
        with logged(f"seed {ctx.seed}: assessing their vulnerability"):
            report = assess(
                baseline,
                data,
                tail,
                circuits,
                config.assessment.model_copy(update={"seed": ctx.seed}),
                progress=ctx.progress,
                cache_dir=cache,
            )
        report.save(layout.vulnerability)
        plot_vulnerability(report, folder / "vulnerability.png")


def analysis_data(ctx: SeedContext) -> tuple[Any, TailSplit]:
    """A seeded subset of the training pairs, balanced head/tail, for discovery and assessment."""
    tail = ctx.tails["train"]
    subset = balanced_subset(tail.mask, ctx.config.analysis_pairs, ctx.seed)
    return ctx.splits["train"].select(subset), TailSplit(tail.mask[subset], tail.description)
