"""``cart evaluate``, ``cart discover``, ``cart assess`` and ``cart bound``: phases 1–2 and the bound, on a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cartrm.circuits.config import DiscoveryConfig
from cartrm.cli.app import (
    ASSESS_PANEL,
    DISCOVERY_PANEL,
    SWEEP_PANEL,
    TRAIN_PANEL,
    DataOption,
    MaxPairsOption,
    OverwriteOption,
    RequiredTailOption,
    SplitOption,
    TailOption,
    app,
    one_line_errors,
    split_or_all,
)
from cartrm.cli.inputs import check_out, inputs, same_folder, summary
from cartrm.cli.options import ConfigFileOption, config_options, settings_of, with_options
from cartrm.errors import CartError
from cartrm.experiments.config import BoundSweepConfig
from cartrm.training.config import TrainConfig
from cartrm.vulnerability.config import AssessConfig


@app.command()
@one_line_errors
def evaluate(
    model: Annotated[str, typer.Option(help="trained reward model folder (or a built-in name)")],
    data: DataOption,
    out: Annotated[Path, typer.Option(help="output folder for metrics.json")],
    tail_by: TailOption = None,
    by: Annotated[Optional[list[str]], typer.Option(help="also report per value of this column (repeatable)")] = None,
    split: SplitOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="sequences per forward pass")] = 64,
    seed: Annotated[int, typer.Option(min=0, help="seed of the bootstrap intervals")] = 0,
    config_file: ConfigFileOption = None,
) -> None:
    """Pairwise accuracy overall / head / tail / per column, with bootstrap 95% intervals; writes metrics.json."""
    check_out(out)
    if same_folder(model, out):
        raise CartError(f"--out {out} is the model folder: write metrics.json elsewhere, the model stays as trained")
    from cartrm.evaluation import evaluate as run_evaluation

    dataset, reward_model, tail = inputs(
        data, model, tail_by, split=split_or_all(split, "test"), ensembles=True, columns=by or []
    )
    report = run_evaluation(
        reward_model, dataset, tail=tail, by=by or [], tail_by=tail_by, seed=seed, batch_size=batch_size, progress=True
    )
    report.save(out / "metrics.json")
    typer.echo(summary(report))
    typer.echo(f"wrote {out / 'metrics.json'}")


@app.command()
@one_line_errors
@with_options(config_options(DiscoveryConfig, panel=DISCOVERY_PANEL))
def discover(
    model: Annotated[str, typer.Option(help="trained reward model folder (or a built-in name)")],
    data: DataOption,
    tail_by: RequiredTailOption,
    out: Annotated[Path, typer.Option(help="output folder: circuits.json, delta_hist.png, coherence_graph.png")],
    max_pairs: MaxPairsOption = None,
    cache_activations: Annotated[
        bool,
        typer.Option(
            help=(
                "keep pooled activations in OUT/activations (safetensors): "
                "reused by a rerun and by cart assess on the same model and data"
            )
        ),
    ] = False,
    split: SplitOption = None,
    config_file: ConfigFileOption = None,
    **settings: Any,
) -> None:
    """Phase 1: find tail-specialised neurons and circuits, test them causally; writes circuits.json and plots."""
    check_out(out)
    from cartrm.circuits.discover import discover as run_discovery
    from cartrm.circuits.plots import plot_coherence_graph, plot_delta_histogram

    config = DiscoveryConfig(**settings_of(DiscoveryConfig, settings))
    dataset, reward_model, tail = inputs(
        data, model, tail_by, split=split_or_all(split, "train"), max_pairs=max_pairs, seed=config.seed
    )
    circuits = run_discovery(
        reward_model, dataset, tail, config, cache_dir=out / "activations" if cache_activations else None
    )
    plot_delta_histogram(circuits, out / "delta_hist.png")  # the plots first: circuits.json means a whole result
    plot_coherence_graph(circuits, out / "coherence_graph.png")
    circuits.save(out / "circuits.json")
    typer.echo(
        f"{circuits.n_significant} of {circuits.n_features} neurons pass FDR {config.fdr}; "
        f"{len(circuits.circuits)} circuits; "
        f"attribution vs exact patching rank correlation {circuits.attribution_rank_correlation}"
    )
    for circuit in circuits.circuits[: config.max_validated]:
        tested = circuit.patch.get(config.null_mode)
        causal = f", |ΔR| {tested.mean_abs_delta_reward:.3f} (p={tested.p_value:.3f})" if tested else ""
        typer.echo(f"  {circuit.id}: {len(circuit.members)} neurons, tail Δ {circuit.tail_delta:+.3f}{causal}")
    typer.echo(f"wrote {out / 'circuits.json'}")


@app.command()
@one_line_errors
@with_options(config_options(AssessConfig, panel=ASSESS_PANEL))
def assess(
    model: Annotated[str, typer.Option(help="the reward model circuits.json was made from")],
    circuits: Annotated[Path, typer.Option(help="circuits.json from cart discover")],
    data: DataOption,
    tail_by: RequiredTailOption,
    out: Annotated[Path, typer.Option(help="output folder: vulnerability.json, vulnerability.png")],
    max_pairs: MaxPairsOption = None,
    split: SplitOption = None,
    config_file: ConfigFileOption = None,
    **settings: Any,
) -> None:
    """Phase 2: score each circuit's consistency, sensitivity, coverage and Vuln; pick the targets; bound terms."""
    check_out(out)
    from cartrm.circuits.result import Circuits
    from cartrm.vulnerability.assess import assess as run_assessment
    from cartrm.vulnerability.plots import plot_vulnerability

    config = AssessConfig(**settings_of(AssessConfig, settings))
    found = Circuits.load(circuits)
    dataset, reward_model, tail = inputs(
        data,
        model,
        tail_by,
        split=split_or_all(split, "train"),
        max_pairs=max_pairs,
        seed=config.seed,
        columns=[config.groups_column] if config.groups_column else [],
    )
    report = run_assessment(
        reward_model, dataset, tail, found, config, cache_dir=circuits.parent / "activations"
    )  # cart discover --cache-activations
    report.save(out / "vulnerability.json")
    plot_vulnerability(report, out / "vulnerability.png")
    for record in sorted(report.circuits, key=lambda c: c.rank):
        typer.echo(
            f"  #{record.rank} {record.id}: Vuln {record.vuln:.3f} = consist {record.consistency:.3f}, "
            f"sens {record.sensitivity_exact:.4g} (first-order {record.sensitivity_first_order:.4g}), "
            f"coverage {record.coverage:.3f}"
        )
    typer.echo(
        f"targets: {', '.join(report.targets)}; exact vs first-order sensitivity: {report.sensitivity_agreement}"
    )
    typer.echo(f"wrote {out / 'vulnerability.json'}")


@app.command()
@one_line_errors
@with_options(
    config_options(BoundSweepConfig, exclude=("train", "discovery"), panel=SWEEP_PANEL),
    config_options(TrainConfig, exclude=("settings", "seed"), panel=TRAIN_PANEL, defaults=BoundSweepConfig().train),
)
def bound(
    out: Annotated[Path, typer.Option(help="output folder: bound.json, bound.png and one sub-folder per N_tail")],
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="continue the sweep in --out: finished points are kept, an interrupted one "
            "continues from its last checkpoint",
        ),
    ] = False,
    overwrite: OverwriteOption = False,
    config_file: ConfigFileOption = None,
    **settings: Any,
) -> None:
    """Sweep N_tail on the embedded benchmark and test whether L_tail − L_head follows the bound's terms (eq. 4–5)."""
    check_out(out)
    from cartrm.experiments.sweep import plot_bound_sweep, run_bound_sweep

    training = TrainConfig(**settings_of(TrainConfig, settings))  # its seed is the sweep's (one --seed)
    config = BoundSweepConfig(**settings_of(BoundSweepConfig, settings), train=training)
    sweep = run_bound_sweep(config, out, resume=resume, overwrite=overwrite)
    sweep.save(out / "bound.json")
    plot_bound_sweep(sweep, out / "bound.png")
    for point in sweep.points:
        typer.echo(
            f"  N_tail {point.n_tail:4d}: L_head {point.l_head:.3f} L_tail {point.l_tail:.3f} gap {point.gap:+.3f}; "
            f"|C_tail| {point.n_circuits}, complexity {point.complexity:.3f}, Div {point.divergence:.3f}"
        )
    typer.echo(
        f"gap vs complexity: Spearman {sweep.spearman_complexity} (p {sweep.p_complexity}); "
        f"gap vs Div: Spearman {sweep.spearman_divergence} (p {sweep.p_divergence})"
    )
    typer.echo(f"wrote {out / 'bound.json'}")
