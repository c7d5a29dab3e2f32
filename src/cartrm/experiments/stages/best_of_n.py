"""Best-of-n on the benchmark's sampler: the gold reward of the proxy's pick as n grows, per prompt group."""

from __future__ import annotations

import json
from typing import Any

from cartrm.evaluation.bon import BoNCurve
from cartrm.experiments.stages.context import SCORING_VERSION, SeedContext, logged
from cartrm.io import write_json_atomic
from cartrm.runs import stage_key
from cartrm.runs.stage import Stage


def best_of_n(ctx: SeedContext, method: str, model: Any) -> dict[str, BoNCurve]:
    from cartrm.datasets.longtail.best_of_n import best_of_n_by_group, candidate_pool

    config, layout = ctx.config, ctx.layout
    key = stage_key(Stage.key_of(layout.model(method)), config.bon_prompts, config.bon_candidates, SCORING_VERSION)
    stage = Stage(layout.bon(method), key, outputs=("curves.json",))
    path = stage.folder / "curves.json"
    if not stage.done():
        stage.begin()
        benchmark = config.benchmark.model_copy(update={"seed": ctx.seed})
        with logged(f"seed {ctx.seed}: best-of-n for {method}"):
            pool = candidate_pool(
                benchmark, config.bon_prompts, config.bon_prompts, config.bon_candidates, seed=ctx.seed
            )
            curves = best_of_n_by_group(model, pool, progress=ctx.progress)
        write_json_atomic(path, {group: curve.model_dump() for group, curve in curves.items()})
        stage.finish()
    return {group: BoNCurve.model_validate(curve) for group, curve in json.loads(path.read_text()).items()}
