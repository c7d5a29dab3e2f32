"""The training stage: one model (or ensemble) per method in ``models/<method>/``, from the base model or, for a
method that continues bt in a warm-started run, from the seed's trained bt model. An interrupted training resumes
from its last checkpoint when the stage runs again with the same inputs."""

from __future__ import annotations

import time
from pathlib import Path

from cartrm.circuits.result import Circuits
from cartrm.experiments.ensemble import EnsembleConfig, member_train_config, train_ensemble
from cartrm.experiments.stages import analysis, tuning
from cartrm.experiments.stages.context import SeedContext, log, logged
from cartrm.experiments.stages.single import start_of, train_one, training_of
from cartrm.models import EnsembleRewardModel, RewardModel
from cartrm.runs import stage_key
from cartrm.runs.identity import source_identity
from cartrm.runs.stage import Stage
from cartrm.training import TrainConfig, registry
from cartrm.vulnerability.result import VulnerabilityReport

Trained = RewardModel | EnsembleRewardModel


def what_trains(method: str, training: TrainConfig) -> TrainConfig:
    """The part of ``training`` a method's result depends on: the settings of the method it trains as (of its members'
    for an ensemble), every other method's at their defaults, so a changed CART setting retrains only the methods
    that run CART (the circuits, an input, are in the analysis stage's key)."""
    ensemble = registry.design(method).ensemble
    return training.only_settings_of(ensemble[0] if ensemble else registry.trains_as(method))


def training_key(ctx: SeedContext, method: str, training: TrainConfig) -> str:
    config, layout = ctx.config, ctx.layout
    circuits = registry.design(method).uses_circuits
    data = config.benchmark if config.data is None else [source_identity(config.data), config.user_split]
    return stage_key(
        source_identity(config.model),  # content, not paths: an edited file or model folder retrains
        data,
        config.tail_by,
        what_trains(method, training),
        config.ensemble_members if registry.is_ensemble(method) else None,
        Stage.key_of(layout.analysis) if circuits else None,  # the circuits are inputs too
        *([Stage.key_of(layout.model(registry.BASELINE))] if config.warm_started(method) else []),  # so is the start
    )


def trained(ctx: SeedContext, method: str) -> tuple[Trained, float]:
    """``method``'s model for this seed, trained (or tuned) unless a finished stage has it; and its seconds."""
    training = training_of(ctx, method)
    circuits, report = analysis.analysed(ctx) if registry.design(method).uses_circuits else (None, None)
    key = training_key(ctx, method, training)
    if method in ctx.config.tune:
        return tuning.tuned(ctx, method, training, key, circuits, report)
    folder = ctx.layout.model(method)
    ensemble = registry.is_ensemble(method)
    stage = Stage(folder, key, outputs=("ensemble",) if ensemble else ("config.json",))
    model: Trained
    if stage.done():
        log.info("seed %d: %s already trained, skipping", ctx.seed, method)
        model = EnsembleRewardModel.load(folder / "ensemble") if ensemble else RewardModel.load(folder)
        return model, stage.record()["seconds"]
    resumes = stage.begin(resumable=not ensemble)
    started = time.time()
    with logged(f"seed {ctx.seed}: training {method}"):
        if ensemble:
            model = trained_ensemble(ctx, method, training, folder, circuits, report)
        else:
            model = train_one(ctx, start_of(ctx, method), training, stage, circuits, report, resumes=resumes)
    seconds = time.time() - started
    stage.finish(seconds=seconds)
    return model, seconds


def trained_ensemble(
    ctx: SeedContext,
    method: str,
    training: TrainConfig,
    folder: Path,
    circuits: Circuits | None,
    report: VulnerabilityReport | None,
) -> EnsembleRewardModel:
    member_method, weighting = registry.design(method).ensemble or (registry.BASELINE, "uniform")
    uses_circuits = registry.design(member_method).uses_circuits
    ensemble = EnsembleConfig(
        members=ctx.config.ensemble_members,
        method=member_method,
        weighting=weighting,
        seed=ctx.seed,
        train=training,
    )
    result = train_ensemble(
        ctx.config.model,
        ctx.splits["train"],
        ctx.tails["train"],
        ctx.splits["validation"],
        ctx.tails["validation"],
        ensemble,
        folder,
        circuits=circuits if uses_circuits else None,
        targets=report.targets if report and uses_circuits else None,
        trained=members_trained_as_bt(ctx, ensemble),
        progress=ctx.progress,
    )
    return EnsembleRewardModel.load(result.ensemble_dir)


def members_trained_as_bt(ctx: SeedContext, ensemble: EnsembleConfig) -> dict[int, Path]:
    """The seed's bt model as the ensemble's member 0 when that member's settings are bt's (``ensemble-mean``:
    same start, data, settings and seed, so training it again would rebuild the same weights)."""
    bt = ctx.layout.model(registry.BASELINE)
    same = registry.BASELINE in ctx.config.methods and member_train_config(ensemble, 0) == training_of(
        ctx, registry.BASELINE
    )
    return {0: bt} if same and Stage.finished(bt) else {}
