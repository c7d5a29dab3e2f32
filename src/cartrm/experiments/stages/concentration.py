"""The concentration diagnostic of the seed's baseline (``RunConfig.concentration_pairs`` > 0): the neurons
ranked by tail specificity on the analysis pairs, patched on validation pairs (tail, head and, on the benchmark,
conflict pairs), against layer-matched random sets (:mod:`cartrm.circuits.concentration`)."""

from __future__ import annotations

from cartrm.circuits.concentration import CONCENTRATION_VERSION, Concentration, concentration, tail_specific_ranking
from cartrm.datasets import conflict_pairs
from cartrm.experiments.stages.analysis import analysis_data
from cartrm.experiments.stages.context import SeedContext, logged
from cartrm.models import RewardModel
from cartrm.runs import stage_key
from cartrm.runs.stage import Stage
from cartrm.training import registry

OUTPUT = "concentration.json"


def concentrated(ctx: SeedContext) -> Concentration | None:
    """The baseline's diagnostic, measured unless a finished stage has it; None when the run does not ask."""
    config, layout = ctx.config, ctx.layout
    if not config.concentration_pairs:
        return None
    key = stage_key(
        Stage.key_of(layout.model(registry.BASELINE)),
        config.discovery.sites,
        config.discovery.pooling,
        config.analysis_pairs,
        config.concentration_pairs,
        CONCENTRATION_VERSION,
    )
    stage = Stage(layout.concentration, key, outputs=(OUTPUT,))
    if not stage.done():
        stage.begin()
        with logged(f"seed {ctx.seed}: the concentration diagnostic of {registry.BASELINE}"):
            _measure(ctx).save(layout.concentration / OUTPUT)
        stage.finish()
    return Concentration.load(layout.concentration / OUTPUT)


def _measure(ctx: SeedContext) -> Concentration:
    config = ctx.config
    model = RewardModel.load(ctx.layout.model(registry.BASELINE))
    ranking_data, ranking_tail = analysis_data(ctx)
    ranked = tail_specific_ranking(model, ranking_data, ranking_tail.mask, config.discovery)
    validation, tail = ctx.splits["validation"], ctx.tails["validation"].mask
    groups = {"tail": tail, "head": ~tail}
    conflict = conflict_pairs(validation) if config.uses_benchmark else None
    if conflict is not None and conflict.any():
        groups["conflict"] = conflict
    return concentration(
        model,
        validation,
        groups,
        ranked,
        config.discovery,
        n_pairs=config.concentration_pairs,
        seed=ctx.seed,
        progress=ctx.progress,
    )
