"""The ``cart`` command line: parses options and calls the library; errors are one line on stderr."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cartrm.benchmarks.longtail import BenchmarkConfig
from cartrm.circuits.config import DiscoveryConfig
from cartrm.cli.options import ConfigFileOption, config_options, settings_of, with_options
from cartrm.errors import CartError
from cartrm.experiments.config import BoundSweepConfig, EnsembleConfig
from cartrm.io import read_yaml_mapping
from cartrm.training.config import CartConfig, TrainConfig
from cartrm.vulnerability.config import AssessConfig

app = typer.Typer(
    help="Circuit-Aware Reward Training: train reward models and measure their long-tail robustness.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Data utilities.", no_args_is_help=True)
app.add_typer(data_app, name="data")

ALL_SPLITS = "all"
CART_PANEL = "CART (--method cart)"
TRAIN_PANEL = "Training"
DISCOVERY_PANEL = "Discovery"
ASSESS_PANEL = "Assessment"
ENSEMBLE_PANEL = "Ensemble"
SWEEP_PANEL = "Sweep"

DEBUG = {"enabled": False}


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="show full tracebacks instead of one-line errors")] = False,
) -> None:
    """Circuit-Aware Reward Training: train reward models and measure their long-tail robustness."""
    DEBUG["enabled"] = debug
    warnings.formatwarning = _one_line_warning


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def _one_line_errors(command):
    """Report library errors (bad input, bad options) as ``error: …`` and exit 1, without a traceback
    (unless ``cart --debug``)."""
    from pydantic import ValidationError

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CartError as exc:
            error, message = exc, str(exc)
        except ValidationError as exc:
            first = exc.errors()[0]
            error, message = exc, f"invalid option {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        except OSError as exc:  # a full disk, a read-only folder, a path that is a file: one line, not a traceback
            where = f"{exc.filename}: " if exc.filename else ""
            error, message = exc, f"{where}{exc.strerror or exc}"
        if DEBUG["enabled"]:
            raise error
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1)

    return wrapper


def _split(value: str | None, default: str) -> str | None:
    chosen = value or default
    return None if chosen == ALL_SPLITS else chosen


SplitOption = Annotated[
    Optional[str], typer.Option(help="rows of this 'split' column value when the data has one; 'all' keeps every row")
]
TAIL_HELP = "label:COLUMN=V1,V2 | label:COLUMN | rarity:Q | density:Q[:tfidf]"
TailOption = Annotated[Optional[str], typer.Option("--tail-by", help=TAIL_HELP)]
RequiredTailOption = Annotated[str, typer.Option("--tail-by", help=TAIL_HELP)]
DataOption = Annotated[Path, typer.Option(help="preference data file")]
MaxPairsOption = Annotated[Optional[int], typer.Option(min=1, help="use a seeded random subset of this many pairs")]
SeedOption = Annotated[int, typer.Option(min=0, help="fixes data order, initialisation and dropout")]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="--out holds an earlier run: delete it and start over")
]


@app.command()
@_one_line_errors
@with_options(
    config_options(TrainConfig, exclude=("cart",), panel=TRAIN_PANEL),
    config_options(CartConfig, panel=CART_PANEL),
)
def train(
    data: Annotated[Path, typer.Option(help="preference (chosen/rejected) or pointwise (score) data file")],
    out: Annotated[Path, typer.Option(help="output folder: the trained model (plain HF folder), checkpoints, logs")],
    model: Annotated[
        str, typer.Option(help="built-in name (minilm, tiny-bert, tiny-gpt2, tiny-llama) or a model folder")
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
            help="circuits.json from cart discover (default: discover after a warm-up)", rich_help_panel=CART_PANEL
        ),
    ] = None,
    vulnerability: Annotated[
        Optional[Path],
        typer.Option(help="vulnerability.json from cart assess: its targets are C_v", rich_help_panel=CART_PANEL),
    ] = None,
    config_file: ConfigFileOption = None,
    **settings: Any,
) -> None:
    """Train a reward model: bt (Bradley–Terry; squared error on scored data), cart (needs --tail-by) or any
    baseline registered in cartrm.training.methods (--method)."""
    _check_out(out)
    if init_from is not None:
        model = _warm_start(init_from, out)
    from cartrm.circuits.result import Circuits
    from cartrm.training import train as run_training
    from cartrm.vulnerability.result import VulnerabilityReport

    settings["generator"] = _existing(Path(settings["generator"]) if settings["generator"] else None, "--generator")
    cart = CartConfig(**settings_of(CartConfig, settings))
    config = TrainConfig(**settings_of(TrainConfig, settings), cart=cart)
    found = Circuits.load(circuits) if circuits else None
    report = VulnerabilityReport.load(vulnerability) if vulnerability else None
    dataset, reward_model, tail = _inputs(
        data, model, tail_by, split=_split(split, "train"), scored=True, max_length=config.max_length, seed=config.seed
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
        evaluate=_learning_curve(data, eval_split, tail_by, dataset, reward_model) if config.eval_steps else None,
    )
    typer.echo(
        f"trained {result.global_step} steps in {result.seconds:.0f}s, final loss {result.final_loss:.4f}; "
        f"model saved to {out}"
    )


@app.command()
@_one_line_errors
@with_options(
    config_options(EnsembleConfig, exclude=("train",), panel=ENSEMBLE_PANEL),
    config_options(TrainConfig, exclude=("cart", "method", "seed"), panel=TRAIN_PANEL),
    config_options(CartConfig, panel=CART_PANEL),
)
def ensemble(
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
    overwrite: OverwriteOption = False,
    config_file: ConfigFileOption = None,
    **settings: Any,
) -> None:
    """Circuit-aware ensemble (eq. 14-15): K members with different seeds and circuit targets, α fit on held-out tail pairs."""  # noqa: E501
    _check_out(out)
    from cartrm.circuits.result import Circuits
    from cartrm.data import load_dataset, parse_tail_spec
    from cartrm.experiments.ensemble import train_ensemble
    from cartrm.models import RewardModel
    from cartrm.vulnerability.result import VulnerabilityReport

    settings["generator"] = _existing(Path(settings["generator"]) if settings["generator"] else None, "--generator")
    training = TrainConfig(**settings_of(TrainConfig, settings), cart=CartConfig(**settings_of(CartConfig, settings)))
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
    )
    typer.echo(
        f"α = {', '.join(f'{a:.3f}' for a in result.alpha)}; tail-circuit overlap {result.overlap}; "
        f"validation tail accuracy {result.ensemble_tail_accuracy}"
    )
    typer.echo(f"wrote {result.ensemble_dir} (load it with cartrm.load_reward_model)")


@app.command()
@_one_line_errors
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
    _check_out(out)
    from cartrm.evaluation import evaluate as run_evaluation

    dataset, reward_model, tail = _inputs(
        data, model, tail_by, split=_split(split, "test"), ensembles=True, columns=by or []
    )
    report = run_evaluation(
        reward_model, dataset, tail=tail, by=by or [], tail_by=tail_by, seed=seed, batch_size=batch_size, progress=True
    )
    report.save(out / "metrics.json")
    typer.echo(_summary(report))
    typer.echo(f"wrote {out / 'metrics.json'}")


@app.command()
@_one_line_errors
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
    _check_out(out)
    from cartrm.circuits.discover import discover as run_discovery
    from cartrm.circuits.plots import plot_coherence_graph, plot_delta_histogram

    config = DiscoveryConfig(**settings_of(DiscoveryConfig, settings))
    dataset, reward_model, tail = _inputs(
        data, model, tail_by, split=_split(split, "train"), max_pairs=max_pairs, seed=config.seed
    )
    circuits = run_discovery(
        reward_model, dataset, tail, config, cache_dir=out / "activations" if cache_activations else None
    )
    circuits.save(out / "circuits.json")
    plot_delta_histogram(circuits, out / "delta_hist.png")
    plot_coherence_graph(circuits, out / "coherence_graph.png")
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
@_one_line_errors
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
    _check_out(out)
    from cartrm.circuits.result import Circuits
    from cartrm.vulnerability.assess import assess as run_assessment
    from cartrm.vulnerability.plots import plot_vulnerability

    config = AssessConfig(**settings_of(AssessConfig, settings))
    found = Circuits.load(circuits)
    dataset, reward_model, tail = _inputs(
        data,
        model,
        tail_by,
        split=_split(split, "train"),
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
@_one_line_errors
@with_options(
    config_options(BoundSweepConfig, exclude=("train", "discovery"), panel=SWEEP_PANEL),
    config_options(TrainConfig, exclude=("cart", "seed"), panel=TRAIN_PANEL, defaults=BoundSweepConfig().train),
)
def bound(
    out: Annotated[Path, typer.Option(help="output folder: bound.json, bound.png and one sub-folder per N_tail")],
    config_file: ConfigFileOption = None,
    **settings: Any,
) -> None:
    """Sweep N_tail on the embedded benchmark and test whether L_tail − L_head follows the bound's terms (eq. 4–5)."""
    _check_out(out)
    from cartrm.experiments.sweep import plot_bound_sweep, run_bound_sweep

    training = TrainConfig(**settings_of(TrainConfig, settings))  # its seed is the sweep's (one --seed)
    config = BoundSweepConfig(**settings_of(BoundSweepConfig, settings), train=training)
    sweep = run_bound_sweep(config, out)
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


@app.command()
@_one_line_errors
def run(
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="one seed, bt vs cart, small sizes: ~5 min on 2 CPU cores (the README's main command)"
        ),
    ] = False,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help=(
                "the research table (the default without --quick): every method, seeds 0,1,2, 6,000 training pairs, "
                "2 epochs (a GPU job: about 40 h on 2 CPU cores)"
            ),
        ),
    ] = False,
    preset: Annotated[
        Optional[str],
        typer.Option(
            help="quick, standard or full (--quick and --full are short for the first and the last); standard: bt "
            "trained until it has learned the head, cart warm-started from it against bt-continued (add "
            "reweight-continued and ensemble-mean with --methods), 5 seeds, sized for the effect looked for "
            "(docs/results.md)"
        ),
    ] = None,
    config: Annotated[
        Optional[Path],
        typer.Option(
            help="config.yaml of an earlier run: reproduces it (--out or --name may move it, --seeds runs other seeds "
            "of it; other options are ignored)"
        ),
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="the run folder (default: runs/<preset>, or runs/NAME)")] = None,
    name: Annotated[Optional[str], typer.Option(help="run name: the folder runs/NAME when --out is not given")] = None,
    out_root: Annotated[
        Optional[Path], typer.Option(help="deprecated: the folder holding runs/NAME; use --out", hidden=True)
    ] = None,
    model: Annotated[str, typer.Option(help="base model: built-in name or model folder")] = "minilm",
    methods: Annotated[
        Optional[str],
        typer.Option(help="comma-separated methods, or 'all' (default: the preset's)"),
    ] = None,
    seeds: Annotated[Optional[str], typer.Option(help="comma-separated seeds (default: the preset's)")] = None,
    members: Annotated[
        Optional[int], typer.Option(help="models per ensemble for ensemble-mean and cart-ensemble (default 3)")
    ] = None,
    data: Annotated[
        Optional[Path], typer.Option(help="your preference file instead of the embedded benchmark (needs --tail-by)")
    ] = None,
    tail_by: TailOption = None,
    tune: Annotated[
        Optional[Path],
        typer.Option(
            help="YAML of tuning grids, method: [TrainConfig overrides, ...] with as many variants for every method; "
            "each variant is trained and scored on validation, the test split scores only the selected one"
        ),
    ] = None,
    ablate: Annotated[
        Optional[Path],
        typer.Option(
            help="YAML of ablations, name: {TrainConfig overrides} on top of cart's (selected) settings, or "
            "'warm_start: false'; each runs as cart-NAME, tested and compared with cart "
            "(docs/experiments/cart-ablations.yaml)"
        ),
    ] = None,
    test_share: Annotated[
        Optional[float],
        typer.Option(min=0.01, max=0.9, help="with --data: share of head and of tail pairs held out for test (0.1)"),
    ] = None,
    min_tail_test: Annotated[
        Optional[int],
        typer.Option(min=0, help="with --data: tail test pairs to reach, up to half of the tail pairs (100)"),
    ] = None,
) -> None:
    """The main job: baseline, tail circuits and their vulnerability, CART and the baselines, evaluation,
    best-of-n reward hacking, results.json and report.html. Finished stages are skipped when rerun."""
    from cartrm.experiments.pipeline import ALL_METHODS, BENCHMARK_TAIL_SPEC, RunConfig, UserSplit, run_experiment

    chosen = [p for p in (preset, "quick" if quick else None, "full" if full else None) if p]
    if len(chosen) > 1:
        raise CartError("--quick, --full and --preset are alternatives: pick one")
    preset_name = chosen[0] if chosen else "full"
    if config is not None:
        run_config = RunConfig.from_yaml(config)
        moved = out is not None or out_root is not None or name is not None
        update = _run_folder(out, out_root, name or run_config.name) if moved else {}
        run_config = run_config.model_copy(update=update | ({"seeds": _seed_list(seeds)} if seeds else {}))
    else:
        if data is not None and not tail_by:
            raise CartError("--data needs --tail-by (how to tell tail pairs from head pairs)")
        overrides = {**_run_folder(out, out_root, name or preset_name), "model": model}
        if methods:
            overrides["methods"] = (
                ALL_METHODS if methods.strip() == "all" else tuple(m.strip() for m in methods.split(",") if m.strip())
            )
        if members is not None:
            overrides["ensemble_members"] = members
        if seeds:
            overrides["seeds"] = _seed_list(seeds)
        if tune is not None:
            overrides["tune"] = read_yaml_mapping(tune, "--tune", "method names to lists of settings")
        if ablate is not None:
            overrides["ablations"] = read_yaml_mapping(ablate, "--ablate", "ablation names to settings")
        split = {"test_share": test_share, "min_tail_test": min_tail_test}
        if data is not None:
            overrides |= {"data": _existing(data, "--data"), "tail_by": tail_by}
            overrides["user_split"] = UserSplit(**{k: v for k, v in split.items() if v is not None})
        elif any(v is not None for v in split.values()):
            raise CartError("--test-share and --min-tail-test apply to --data; the benchmark has its own splits")
        elif tail_by and tail_by != BENCHMARK_TAIL_SPEC:
            raise CartError(f"--tail-by applies to --data; the embedded benchmark's tail is {BENCHMARK_TAIL_SPEC}")
        run_config = RunConfig.preset(preset_name, **overrides)
        if preset_name == "full" and not _has_gpu():
            typer.echo(
                "note: the full preset on CPU takes tens of hours on 2 cores (docs/results.md); "
                "--quick takes about 5 minutes, --preset standard about 90",
                err=True,
            )
    _check_out(run_config.directory)
    results = run_experiment(run_config)
    for method, summary in results.methods.items():
        typer.echo(f"[{method}] head acc {summary.head_accuracy.mean:.3f}, tail acc {summary.tail_accuracy.mean:.3f}")
    for line in results.verdict:
        typer.echo(line)
    typer.echo(f"wrote {run_config.directory / 'results.json'} and {run_config.directory / 'report.html'}")


def _run_folder(out: Path | None, out_root: Path | None, name: str) -> dict:
    """RunConfig's ``out_root`` and ``name`` from ``--out DIR`` (the run folder) or the deprecated ``--out-root``."""
    if out is not None and out_root is not None:
        raise CartError("--out-root is the deprecated form of --out; give only --out")
    if out_root is not None:
        warnings.warn(f"--out-root is deprecated; use --out {out_root / name}", FutureWarning, stacklevel=2)
        return {"out_root": out_root, "name": name}
    if out is None:
        return {"out_root": Path("runs"), "name": name}
    return {"out_root": out.parent, "name": out.name}


def _check_out(out: Path, *, file: bool = False) -> Path:
    """Refuse an output location that cannot be written (a file where a folder goes, a read-only place) before
    any expensive work; creates nothing."""
    if out.exists() and out.is_dir() == file:
        raise CartError(f"--out {out}: is a {'folder' if file else 'file'}, not a {'file' if file else 'folder'}")
    existing = next(p for p in (out.parent if file else out, *out.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise CartError(f"--out {out}: cannot write under {existing}")
    return out


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@app.command()
@_one_line_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run folder written by cart run")],
    config_file: ConfigFileOption = None,
) -> None:
    """Re-render RUN_DIR/report.html from RUN_DIR/results.json."""
    from cartrm.report.html import write_report

    typer.echo(f"wrote {write_report(run_dir)}")


@data_app.command("make-benchmark")
@_one_line_errors
@with_options(config_options(BenchmarkConfig, panel="Benchmark"))
def make_benchmark(
    out: Annotated[Path, typer.Option(help="JSONL file to write (all splits, with a 'split' column)")],
    config_file: ConfigFileOption = None,
    **settings: Any,
) -> None:
    """Write the embedded long-tail benchmark (TRL columns + domain, is_tail, rule_set, gold_*)."""
    _check_out(out, file=True)
    from cartrm.benchmarks import make_longtail_dataset

    config = BenchmarkConfig(**settings_of(BenchmarkConfig, settings))
    dataset = make_longtail_dataset(config)
    dataset.save(out)
    typer.echo(f"wrote {len(dataset)} pairs to {out}")


def _inputs(
    data: Path,
    model: str,
    tail_by: str | None,
    *,
    split: str | None,
    scored: bool = False,
    ensembles: bool = False,
    max_pairs: int | None = None,
    seed: int = 0,
    columns: Sequence[str] = (),
    max_length: int | None = None,
):
    """What every command starts from: the data (preference pairs, or also scored data when ``scored``; this
    ``split``; a seeded subset of ``max_pairs``; ``columns`` checked), the reward model (an ensemble folder too
    when ``ensembles``) and the tail split fitted on the data (None without ``tail_by``)."""
    from cartrm.data import load_dataset, load_preferences, parse_tail_spec
    from cartrm.models import RewardModel, load_reward_model

    dataset = _subset((load_dataset if scored else load_preferences)(data, split=split), max_pairs, seed)
    for column in columns:
        dataset.column(column)
    load = load_reward_model if ensembles else RewardModel.load
    reward_model = load(model, max_length=max_length, seed=seed)
    if not tail_by:
        return dataset, reward_model, None
    tail = parse_tail_spec(tail_by).fit_transform(
        dataset, tokenizer=reward_model.tokenizer, embedder=reward_model.embed
    )
    typer.echo(f"tail: {tail.description}")
    return dataset, reward_model, tail


def _learning_curve(data: Path, split: str | None, tail_by: str | None, training, reward_model):
    """The scorer of ``train(..., evaluate=)`` on the ``split`` rows of ``data``, with the tail definition fitted
    on the training rows."""
    import numpy as np

    from cartrm.data import load_preferences, parse_tail_spec
    from cartrm.evaluation.metrics import accuracy_scorer

    if split is None:
        raise CartError("--eval-steps needs --eval-split (the rows of --data to score, e.g. validation)")
    pairs = load_preferences(data, split=split)
    if tail_by:
        spec = parse_tail_spec(tail_by).fit(training, tokenizer=reward_model.tokenizer, embedder=reward_model.embed)
        mask = spec.transform(pairs).mask
    else:
        mask = np.zeros(len(pairs), dtype=bool)
    return accuracy_scorer(pairs, mask)


def _subset(dataset, max_pairs: int | None, seed: int):
    """A seeded random subset of ``max_pairs`` pairs (the whole dataset when None or larger)."""
    import numpy as np

    if max_pairs is None or max_pairs >= len(dataset):
        return dataset
    return dataset.select(np.sort(np.random.default_rng(seed).choice(len(dataset), size=max_pairs, replace=False)))


def _warm_start(init_from: Path, out: Path) -> str:
    """The model folder ``--init-from`` names, checked before anything loads: a model, and not ``--out`` itself
    (training would replace the weights it starts from)."""
    if not (init_from / "config.json").is_file():
        raise CartError(f"--init-from {init_from}: not a model folder (no config.json)")
    if out.exists() and init_from.resolve() == out.resolve():
        raise CartError(f"--init-from {init_from} is also --out: write the continued model to another folder")
    typer.echo(f"continuing from {init_from}: its weights, a fresh optimizer and learning-rate schedule")
    return str(init_from)


def _existing(path: Path | None, flag: str) -> str | None:
    if path is not None and not path.exists():
        raise CartError(f"{flag} {path}: not found")
    return None if path is None else str(path)


def _seed_list(text: str) -> tuple[int, ...]:
    """--seeds: distinct non-negative integers separated by commas."""
    try:
        seeds = tuple(int(v) for v in text.split(","))
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise CartError(f"--seeds expects distinct non-negative integers separated by commas, got '{text}'")
    return seeds


def _summary(report) -> str:
    parts = [f"overall acc {report.overall.accuracy:.3f} (n={report.overall.n})"]
    for label, metrics in (("head", report.head), ("tail", report.tail)):
        if metrics is not None:
            gold = f", gold {metrics.gold_accuracy:.3f}" if metrics.gold_accuracy is not None else ""
            parts.append(
                f"{label} acc {metrics.accuracy:.3f} [{metrics.ci_low:.3f}, {metrics.ci_high:.3f}]{gold} "
                f"(n={metrics.n})"
            )
    return "; ".join(parts)
