"""``cart train`` and ``cart ensemble``."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cartrm.cli.app import (
    BASELINES_PANEL,
    CART_PANEL,
    ENSEMBLE_PANEL,
    TRAIN_PANEL,
    OverwriteOption,
    RequiredTailOption,
    SplitOption,
    TailOption,
    app,
    one_line_errors,
    split_or_all,
)
from cartrm.cli.inputs import check_out, existing, inputs, learning_curve, not_into_start, warm_start
from cartrm.cli.options import ConfigFileOption, config_options, settings_of, with_options
from cartrm.errors import CartError
from cartrm.experiments.config import EnsembleConfig
from cartrm.training.config import TrainConfig
from cartrm.training.settings import SETTINGS


def method_options() -> list[inspect.Parameter]:
    """An option per setting of every method: the baselines' in one panel, CART's last (it has the most)."""
    flat = [config_options(m, panel=BASELINES_PANEL) for m in SETTINGS.values() if not m.section]
    own = [
        config_options(m, panel=CART_PANEL if name == "cart" else f"--method {name}", defaults=m())
        for name, m in SETTINGS.items()
        if m.section
    ]
    return [option for group in flat + own for option in group]


def train_config_of(ctx: typer.Context, settings: dict[str, Any]) -> TrainConfig:
    """The training config a command's options give: the loop's settings and each method's own. Options left at
    their defaults (neither on the command line nor in ``--config``) are left out, so CART's unset options take
    its ``--recipe``'s values."""
    given = {name: value for name, value in settings.items() if _source(ctx, name) != "DEFAULT"}
    values = settings_of(TrainConfig, given)
    for model in SETTINGS.values():
        own = settings_of(model, given)
        values.update({model.section: own} if model.section else own)
    return TrainConfig.model_validate(values)


def _source(ctx: typer.Context, name: str) -> str | None:
    source = ctx.get_parameter_source(name)
    return None if source is None else source.name


@app.command()
@one_line_errors
@with_options(config_options(TrainConfig, exclude=("settings",), panel=TRAIN_PANEL), method_options())
def train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option(help="preference (chosen/rejected) or pointwise (score) data file")],
    out: Annotated[Path, typer.Option(help="output folder: the trained model (plain HF folder), checkpoints, logs")],
    model: Annotated[
        str,
        typer.Option(
            help="built-in name (minilm, tiny-bert, tiny-gpt2, tiny-llama; smollm2-135m, mpnet once prepared) or a "
            "model folder"
        ),
    ] = "minilm",
    tail_by: TailOption = None,
    split: SplitOption = None,
    init_from: Annotated[
        Optional[Path],
        typer.Option(
            help="warm start: a trained reward model folder to continue from, weights only, with a fresh optimizer "
            "and learning-rate schedule (replaces --model); its fair control is a bt run continued the same way"
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue the run in --out from its newest checkpoint (same settings)")
    ] = False,
    overwrite: OverwriteOption = False,
    eval_split: Annotated[
        Optional[str],
        typer.Option(help="score the rows of --data with this 'split' value every --eval-steps: a learning curve"),
    ] = None,
    circuits: Annotated[
        Optional[Path],
        typer.Option(
            help="circuits.json from cart discover (default: discover after a warm-up)",
        ),
    ] = None,
    vulnerability: Annotated[
        Optional[Path],
        typer.Option(help="vulnerability.json from cart assess: its targets are C_v"),
    ] = None,
    config_file: ConfigFileOption = None,
    **settings: Any,
) -> None:
    """Train a reward model: bt (Bradley–Terry; squared error on scored data), cart (needs --tail-by) or any
    baseline registered in cartrm.training.methods (--method)."""
    check_out(out)
    if init_from is not None:
        model = warm_start(init_from, out)
    from cartrm.circuits.result import Circuits
    from cartrm.training import train as run_training
    from cartrm.vulnerability.result import VulnerabilityReport

    settings["generator"] = existing(Path(settings["generator"]) if settings["generator"] else None, "--generator")
    config = train_config_of(ctx, settings)
    if eval_split and not config.eval_steps:
        raise CartError(f"--eval-split {eval_split} is scored every --eval-steps N steps: give --eval-steps")
    not_into_start(model, out)
    found = Circuits.load(circuits) if circuits else None
    report = VulnerabilityReport.load(vulnerability) if vulnerability else None
    dataset, reward_model, tail = inputs(
        data,
        model,
        tail_by,
        split=split_or_all(split, "train"),
        scored=True,
        max_length=config.max_length,
        seed=config.seed,
    )
    result = run_training(
        reward_model,
        dataset,
        config,
        out,
        tail=tail,
        circuits=found,
        vulnerability=report,
        resume=resume,
        overwrite=overwrite,
        evaluate=learning_curve(data, eval_split, tail_by, dataset, reward_model) if config.eval_steps else None,
    )
    typer.echo(
        f"trained {result.global_step} steps in {result.seconds:.0f}s, final loss {result.final_loss:.4f}; "
        f"model saved to {out}"
    )


@app.command()
@one_line_errors
@with_options(
    config_options(EnsembleConfig, exclude=("train",), panel=ENSEMBLE_PANEL),
    config_options(TrainConfig, exclude=("settings", "method", "seed"), panel=TRAIN_PANEL),
    method_options(),
)
def ensemble(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option(help="training data (its 'validation' split, or --validation-data, fits α)")],
    out: Annotated[
        Path, typer.Option(help="output folder: members/, circuits/, ensemble/ (loadable), ensemble_result.json")
    ],
    tail_by: RequiredTailOption,
    model: Annotated[str, typer.Option(help="base model: built-in name or model folder")] = "minilm",
    validation_data: Annotated[
        Optional[Path], typer.Option(help="held-out pairs for α (default: the 'validation' split of --data)")
    ] = None,
    circuits: Annotated[
        Optional[Path], typer.Option(help="circuits.json; cart members split its targets", rich_help_panel=CART_PANEL)
    ] = None,
    vulnerability: Annotated[
        Optional[Path],
        typer.Option(help="vulnerability.json with the targets C_v", rich_help_panel=CART_PANEL),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="continue in --out: finished members are kept, an interrupted one continues from its last checkpoint",
        ),
    ] = False,
    overwrite: OverwriteOption = False,
    config_file: ConfigFileOption = None,
    **settings: Any,
) -> None:
    """Circuit-aware ensemble (eq. 14-15): K members with different seeds and circuit targets, α fit on held-out tail pairs."""  # noqa: E501
    check_out(out)
    from cartrm.circuits.result import Circuits
    from cartrm.data import load_dataset, parse_tail_spec
    from cartrm.experiments.ensemble import train_ensemble
    from cartrm.models import RewardModel
    from cartrm.vulnerability.result import VulnerabilityReport

    settings["generator"] = existing(Path(settings["generator"]) if settings["generator"] else None, "--generator")
    training = train_config_of(ctx, settings)
    config = EnsembleConfig(**settings_of(EnsembleConfig, settings), train=training)
    everything = load_dataset(data)
    if validation_data is None and not everything.has_column("split"):
        raise CartError(
            f"{data}: α needs held-out pairs; "
            "pass --validation-data or give the rows a 'split' column with 'validation' rows"
        )
    dataset = everything.split("train") if everything.has_column("split") else everything
    held_out = load_dataset(validation_data) if validation_data else everything.split("validation")
    probe = RewardModel.load(model, max_length=training.max_length)
    spec = parse_tail_spec(tail_by).fit(dataset, tokenizer=probe.tokenizer, embedder=probe.embed)
    report = VulnerabilityReport.load(vulnerability) if vulnerability else None
    result = train_ensemble(
        model,
        dataset,
        spec.transform(dataset),
        held_out,
        spec.transform(held_out),
        config,
        out,
        circuits=Circuits.load(circuits) if circuits else None,
        targets=report.targets if report else None,
        overwrite=overwrite,
        resume=resume,
    )
    typer.echo(
        f"α = {', '.join(f'{a:.3f}' for a in result.alpha)}; tail-circuit overlap {result.overlap}; "
        f"validation tail accuracy {result.ensemble_tail_accuracy}"
    )
    typer.echo(f"wrote {result.ensemble_dir} (load it with cartrm.load_reward_model)")
