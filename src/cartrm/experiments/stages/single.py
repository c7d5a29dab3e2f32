"""One model trained for a seed: from the base model or, for a method that continues bt in a warm-started run,
from the seed's trained bt model; an interrupted training resumes from its last checkpoint."""

from __future__ import annotations

from pathlib import Path

from cartrm.circuits.result import Circuits
from cartrm.errors import CartError
from cartrm.experiments.stages.context import SeedContext, log
from cartrm.models import RewardModel
from cartrm.runs.stage import Stage
from cartrm.training import TrainConfig, registry, train
from cartrm.training.checkpoints import checkpoints
from cartrm.vulnerability.result import VulnerabilityReport


def training_of(ctx: SeedContext, method: str) -> TrainConfig:
    """The run's training settings as ``method`` uses them (before tuning)."""
    warm = ctx.config.warm_started(method)
    return ctx.train_config.model_copy(
        update={"method": registry.trains_as(method)} | ({"max_steps": ctx.config.continue_steps} if warm else {})
    )


def start_of(ctx: SeedContext, method: str) -> str | Path:
    """The model ``method`` starts from: the seed's bt model when it continues bt, else the base model."""
    return ctx.layout.model(registry.BASELINE) if ctx.config.warm_started(method) else ctx.config.model


def train_one(
    ctx: SeedContext,
    start: str | Path,
    training: TrainConfig,
    stage: Stage,
    circuits: Circuits | None,
    report: VulnerabilityReport | None,
    *,
    resumes: bool = False,
) -> RewardModel:
    """One model from ``start`` (the base model or a trained one) on the seed's training split into the stage's
    folder, with its validation learning curve when ``training.eval_steps`` is set; ``resumes`` continues an
    interrupted training of the same inputs from its last checkpoint."""
    if resumes and not checkpoints(stage.folder):
        stage.restart()  # a killed attempt may have left a claimed folder without a checkpoint
        resumes = False
    if resumes:
        log.info("seed %d: %s resumes from its last checkpoint", ctx.seed, stage.folder)
    model = RewardModel.load(start, seed=ctx.seed)
    try:
        train(
            model,
            ctx.splits["train"],
            training,
            stage.folder,
            tail=ctx.tails["train"],
            circuits=circuits,
            vulnerability=report,
            resume=resumes,
            evaluate=ctx.validation_scorer() if training.eval_steps else None,
            progress=ctx.progress,
        )
    except CartError as error:
        if str(error).startswith(("interrupted at step", "aborted during step")):
            raise CartError(f"{error}: run the same `cart run` again to continue from it") from None
        raise
    return model
