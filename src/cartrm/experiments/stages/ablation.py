"""Ablations: CART with one component changed (:attr:`RunConfig.ablations`), as the method ``cart-NAME``."""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

from cartrm.experiments.run_config import variant_config, without_start
from cartrm.experiments.stages import analysis
from cartrm.experiments.stages.context import SeedContext, log, logged
from cartrm.experiments.stages.single import train_one, training_of
from cartrm.models import RewardModel
from cartrm.runs import stage_key
from cartrm.runs.stage import Stage
from cartrm.training import TrainConfig, registry

CART = "cart"


def ablated(ctx: SeedContext, label: str, overrides: dict[str, Any]) -> tuple[RewardModel, float]:
    """cart's settings, the selected variant's when cart is tuned, with ``overrides``, trained from cart's start on
    the same data and circuits. Settings identical to cart's reuse cart's model (training is seeded, so it would be
    the same model)."""
    layout = ctx.layout
    cart, folder = cart_as_trained(ctx), layout.model(label)
    warm = overrides.get("warm_start", True) and ctx.config.warm_started(CART)
    training = variant_config(cart, without_start(overrides))
    if not warm and ctx.config.warm_started(CART):
        steps = json.loads(layout.train_result(registry.BASELINE).read_text())["global_step"]
        training = training.model_copy(update={"max_steps": steps + ctx.config.continue_steps})
    stage = Stage(folder, stage_key(Stage.key_of(layout.model(CART)), training, warm), outputs=("config.json",))
    if stage.done():
        log.info("seed %d: %s already trained, skipping", ctx.seed, label)
        return RewardModel.load(folder), stage.record()["seconds"]
    resumes = stage.begin(resumable=True)
    started = time.time()
    if warm and training == cart:
        log.info("seed %d: %s has cart's settings; cart's model is reused", ctx.seed, label)
        shutil.copytree(layout.model(CART), folder, ignore=shutil.ignore_patterns("variants"), dirs_exist_ok=True)
    else:
        circuits, report = analysis.analysed(ctx)
        with logged(f"seed {ctx.seed}: training {label}"):
            start = layout.model(registry.BASELINE) if warm else ctx.config.model
            train_one(ctx, start, training, stage, circuits, report, resumes=resumes)
    seconds = time.time() - started
    stage.finish(seconds=seconds)
    return RewardModel.load(folder), seconds


def cart_as_trained(ctx: SeedContext) -> TrainConfig:
    """cart's training settings in this seed: the selected variant's when cart is tuned."""
    training = training_of(ctx, CART)
    if CART not in ctx.config.tune:
        return training
    chosen = json.loads(ctx.layout.tuning(CART).read_text())["chosen"]
    return variant_config(training, ctx.config.tune[CART][chosen])
