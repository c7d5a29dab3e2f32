"""Fair tuning: every variant of a method's grid trains from the same start and is scored on the validation split;
the selected one (:attr:`RunConfig.tune_head_tolerance`) is the only one the test split scores."""

from __future__ import annotations

import json
import shutil
import time

from cartrm.circuits.result import Circuits
from cartrm.experiments.run_config import variant_config
from cartrm.experiments.stages.context import SCORING_VERSION, SeedContext, log, logged
from cartrm.experiments.stages.single import start_of, train_one
from cartrm.io import write_json_atomic
from cartrm.models import RewardModel
from cartrm.runs import stage_key
from cartrm.runs.stage import STAGE_MARKER, Stage
from cartrm.training import TrainConfig, registry
from cartrm.vulnerability.result import VulnerabilityReport


def tuned(
    ctx: SeedContext,
    method: str,
    training: TrainConfig,
    key: str,
    circuits: Circuits | None,
    report: VulnerabilityReport | None,
) -> tuple[RewardModel, float]:
    """Train every variant of ``method``'s grid from the same start, score each on the validation split and
    select one; its model is copied into ``models/<method>/``, the variants stay in ``models/<method>/variants/<i>/``
    and the scores in ``models/<method>/tuning.json``."""
    layout, folder = ctx.layout, ctx.layout.model(method)
    control = registry.matched_control(method, ctx.config.methods)
    grid = ctx.config.tune[method]
    key = stage_key(key, grid, ctx.config.tune_head_tolerance, Stage.key_of(layout.model(control)))
    stage = Stage(folder, key, outputs=("config.json", "tuning.json"))
    if stage.done():
        log.info("seed %d: %s already tuned, skipping", ctx.seed, method)
        return RewardModel.load(folder), stage.record()["seconds"]
    variants = []
    for i, overrides in enumerate(grid):
        variant = Stage(layout.variant(method, i), stage_key(key, overrides), outputs=("config.json",))
        if not variant.done():
            resumes = variant.begin(resumable=True)
            started = time.time()
            with logged(f"seed {ctx.seed}: tuning {method}, variant {i + 1} of {len(grid)}: {overrides}"):
                settings = variant_config(training, overrides)
                model = train_one(ctx, start_of(ctx, method), settings, variant, circuits, report, resumes=resumes)
                scores = ctx.validation_scorer()(model)
            variant.finish(seconds=time.time() - started, validation=scores)
        marker = variant.record()
        variants.append({"settings": overrides, "validation": marker["validation"], "seconds": marker["seconds"]})
    reference = validation_of(ctx, control)
    chosen = select_variant([v["validation"] for v in variants], reference, ctx.config.tune_head_tolerance)
    for item in layout.variant(method, chosen).iterdir():
        if item.is_file() and item.name != STAGE_MARKER:
            shutil.copy2(item, folder / item.name)
    tuning = {"control": control, "control_validation": reference, "variants": variants, "chosen": chosen}
    write_json_atomic(layout.tuning(method), tuning)
    seconds = float(sum(v["seconds"] for v in variants))
    stage.finish(seconds=seconds)
    return RewardModel.load(folder), seconds


def select_variant(scores: list[dict[str, float]], control: dict[str, float], tolerance: float) -> int:
    """The variant with the best validation tail accuracy (gold where scored) among those whose head accuracy
    is at least the control's minus ``tolerance``; all variants compete when none qualifies. Ties: the first."""
    prefix = "gold_" if "tail_gold_accuracy" in control else ""
    head, tail = f"head_{prefix}accuracy", f"tail_{prefix}accuracy"
    eligible = [i for i, s in enumerate(scores) if s[head] >= control[head] - tolerance] or list(range(len(scores)))
    return max(eligible, key=lambda i: (scores[i][tail], -i))


def validation_of(ctx: SeedContext, method: str) -> dict[str, float]:
    """``method``'s validation scores, kept beside its model and recomputed when the model changed."""
    folder = ctx.layout.model(method)
    path, key = ctx.layout.validation(method), stage_key(Stage.key_of(folder), SCORING_VERSION)
    if path.exists() and json.loads(path.read_text())["key"] == key:
        return json.loads(path.read_text())["scores"]
    with logged(f"seed {ctx.seed}: scoring {method} on the validation split"):
        scores = ctx.validation_scorer()(RewardModel.load(folder))
    write_json_atomic(path, {"key": key, "scores": scores})
    return scores
