"""``cart run`` (the experiment), ``cart report`` and ``cart data make-benchmark``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cartrm.cli.app import (
    TailOption,
    app,
    data_app,
    one_line_errors,
)
from cartrm.cli.inputs import check_out, existing, seed_list
from cartrm.cli.options import ConfigFileOption, config_options, settings_of, with_options
from cartrm.datasets import BenchmarkConfig
from cartrm.errors import CartError
from cartrm.io import read_yaml_mapping

QuickOption = Annotated[
    bool,
    typer.Option(
        "--quick", help="one seed, bt vs cart, small sizes: ~5 min on 2 CPU cores (the README's main command)"
    ),
]
FullOption = Annotated[
    bool,
    typer.Option(
        "--full",
        help="the research table (the default without --quick): every method, seeds 0,1,2, 6,000 training pairs, "
        "2 epochs (a GPU job: about 40 h on 2 CPU cores)",
    ),
]
PresetOption = Annotated[
    Optional[str],
    typer.Option(
        help="quick, standard or full (--quick and --full are short for the first and the last); standard: bt "
        "trained until it has learned the head, cart warm-started from it against bt-continued (add "
        "reweight-continued and ensemble-mean with --methods), 5 seeds, sized for the effect looked for "
        "(docs/results.md)"
    ),
]
RunConfigOption = Annotated[
    Optional[Path],
    typer.Option(
        help="config.yaml of an earlier run: reproduces it (--out or --name may move it, --seeds runs other seeds "
        "of it; other options are ignored)"
    ),
]
RunOutOption = Annotated[Optional[Path], typer.Option(help="the run folder (default: runs/<preset>, or runs/NAME)")]
NameOption = Annotated[Optional[str], typer.Option(help="run name: the folder runs/NAME when --out is not given")]
OutRootOption = Annotated[
    Optional[Path], typer.Option(help="deprecated: the folder holding runs/NAME; use --out", hidden=True)
]
BaseModelOption = Annotated[str, typer.Option(help="base model: built-in name or model folder")]
MethodsOption = Annotated[Optional[str], typer.Option(help="comma-separated methods, or 'all' (default: the preset's)")]
SeedsOption = Annotated[Optional[str], typer.Option(help="comma-separated seeds (default: the preset's)")]
MembersOption = Annotated[
    Optional[int], typer.Option(help="models per ensemble for ensemble-mean and cart-ensemble (default 3)")
]
UserDataOption = Annotated[
    Optional[Path], typer.Option(help="your preference file instead of the embedded benchmark (needs --tail-by)")
]
TuneOption = Annotated[
    Optional[Path],
    typer.Option(
        help="YAML of tuning grids, method: [TrainConfig overrides, ...] with as many variants for every method; "
        "each variant is trained and scored on validation, the test split scores only the selected one"
    ),
]
AblateOption = Annotated[
    Optional[Path],
    typer.Option(
        help="YAML of ablations, name: {TrainConfig overrides} on top of cart's (selected) settings, or "
        "'warm_start: false'; each runs as cart-NAME, tested and compared with cart "
        "(docs/experiments/cart-ablations.yaml)"
    ),
]
TestShareOption = Annotated[
    Optional[float],
    typer.Option(min=0.01, max=0.9, help="with --data: share of head and of tail pairs held out for test (0.1)"),
]
SeparabilityOption = Annotated[
    Optional[float],
    typer.Option(
        min=0.0,
        max=1.0,
        help="the benchmark's tail-separability dial: share of tail pairs whose responses use domain-neutral words, "
        "so the tail's own rules can be read only from the prompt (0: the classic benchmark; see cart data "
        "make-benchmark)",
    ),
]
ShortcutOption = Annotated[
    Optional[float],
    typer.Option(
        min=0.0,
        max=1.0,
        help="share of the benchmark's tail pairs given a planted shortcut that predicts the label in training and "
        "marks the gold-worse response in test (0: none; see cart data make-benchmark)",
    ),
]
AnchorsOption = Annotated[
    Optional[str],
    typer.Option(help="comma-separated anchors scored beside the methods: bag-of-words (a word-count reward model)"),
]
MinTailTestOption = Annotated[
    Optional[int],
    typer.Option(min=0, help="with --data: tail test pairs to reach, up to half of the tail pairs (100)"),
]


@app.command()
@one_line_errors
def run(
    quick: QuickOption = False,
    full: FullOption = False,
    preset: PresetOption = None,
    config: RunConfigOption = None,
    out: RunOutOption = None,
    name: NameOption = None,
    out_root: OutRootOption = None,
    model: BaseModelOption = "minilm",
    methods: MethodsOption = None,
    seeds: SeedsOption = None,
    members: MembersOption = None,
    data: UserDataOption = None,
    tail_by: TailOption = None,
    tune: TuneOption = None,
    ablate: AblateOption = None,
    test_share: TestShareOption = None,
    min_tail_test: MinTailTestOption = None,
    tail_separability: SeparabilityOption = None,
    tail_shortcut: ShortcutOption = None,
    anchors: AnchorsOption = None,
) -> None:
    """The main job: baseline, tail circuits and their vulnerability, CART and the baselines, evaluation,
    best-of-n reward hacking, results.json and report.html. Finished stages are skipped when rerun, and an
    interrupted training continues from its last checkpoint."""
    from cartrm.experiments.pipeline import run_experiment
    from cartrm.experiments.run_config import RunConfig

    chosen = [p for p in (preset, "quick" if quick else None, "full" if full else None) if p]
    if len(chosen) > 1:
        raise CartError("--quick, --full and --preset are alternatives: pick one")
    preset_name = chosen[0] if chosen else "full"
    if not chosen and config is None and data is None and not _has_gpu():
        raise CartError(
            "cart run without a preset is the full research run on the benchmark, tens of hours on a CPU: choose "
            "--quick (about 5 minutes), --preset standard (about 90) or --full to mean it"
        )
    if config is not None:
        run_config = RunConfig.from_yaml(config)
        moved = out is not None or out_root is not None or name is not None
        update = _run_folder(out, out_root, name or run_config.name) if moved else {}
        run_config = run_config.model_copy(update=update | ({"seeds": seed_list(seeds)} if seeds else {}))
    else:
        overrides = {**_run_folder(out, out_root, name or preset_name), "model": model}
        overrides |= _listed(methods, seeds, members, tune, ablate)
        overrides |= _user_data(data, tail_by, {"test_share": test_share, "min_tail_test": min_tail_test})
        run_config = RunConfig.preset(preset_name, **overrides)
        if preset_name == "full" and not _has_gpu():
            typer.echo(
                "note: the full preset on CPU takes tens of hours on 2 cores (docs/results.md); "
                "--quick takes about 5 minutes, --preset standard about 90",
                err=True,
            )
    dials = {"tail_separability": tail_separability, "tail_shortcut": tail_shortcut}
    run_config = _with_benchmark_options(run_config, dials, anchors)
    check_out(run_config.directory)
    results = run_experiment(run_config)
    for method, result in results.methods.items():
        typer.echo(f"[{method}] {_accuracy_line(result)}")
    for line in results.verdict:
        typer.echo(line)
    typer.echo(f"wrote {run_config.directory / 'results.json'} and {run_config.directory / 'report.html'}")


def _accuracy_line(result: Any) -> str:
    """Test accuracy of one method, saying which labels it is scored against: gold where the data has it (the
    benchmark), the annotators' labels beside it (on the benchmark these are noisy)."""
    labels = f"head {result.head_accuracy.mean:.3f}, tail {result.tail_accuracy.mean:.3f}"
    if result.tail_gold_accuracy is None or result.head_gold_accuracy is None:
        return f"accuracy on the labels: {labels}"
    gold = f"head {result.head_gold_accuracy.mean:.3f}, tail {result.tail_gold_accuracy.mean:.3f}"
    return f"gold accuracy: {gold} (on the noisy labels: {labels})"


def _with_benchmark_options(run_config: Any, dials: dict[str, float | None], anchors: str | None) -> Any:
    """``run_config`` with the benchmark's ``dials`` that were given (``--tail-separability``, ``--tail-shortcut``;
    benchmark runs only) and ``--anchors`` applied."""
    from cartrm.experiments.run_config import RunConfig

    update: dict[str, Any] = {}
    given = {name: value for name, value in dials.items() if value is not None}
    if given:
        if not run_config.uses_benchmark:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise CartError(f"{flags} set the embedded benchmark's dials: they do not apply to --data")
        update["benchmark"] = run_config.benchmark.model_copy(update=given)
    if anchors is not None:
        update["anchors"] = tuple(a.strip() for a in anchors.split(",") if a.strip())
    if not update:
        return run_config
    return RunConfig.model_validate(run_config.model_dump() | update)


def _listed(
    methods: str | None, seeds: str | None, members: int | None, tune: Path | None, ablate: Path | None
) -> dict[str, Any]:
    """The RunConfig overrides of ``--methods``, ``--seeds``, ``--members``, ``--tune`` and ``--ablate``."""
    from cartrm.experiments.run_config import ALL_METHODS

    overrides: dict[str, Any] = {}
    if methods:
        listed = tuple(m.strip() for m in methods.split(",") if m.strip())
        overrides["methods"] = ALL_METHODS if methods.strip() == "all" else listed
    if members is not None:
        overrides["ensemble_members"] = members
    if seeds:
        overrides["seeds"] = seed_list(seeds)
    if tune is not None:
        overrides["tune"] = read_yaml_mapping(tune, "--tune", "method names to lists of settings")
    if ablate is not None:
        overrides["ablations"] = read_yaml_mapping(ablate, "--ablate", "ablation names to settings")
    return overrides


def _user_data(data: Path | None, tail_by: str | None, split: dict[str, Any]) -> dict[str, Any]:
    """The RunConfig overrides of ``--data`` (with its ``--tail-by`` and split shares); the benchmark takes none."""
    from cartrm.experiments.run_config import BENCHMARK_TAIL_SPEC, UserSplit

    if data is not None:
        if not tail_by:
            raise CartError("--data needs --tail-by (how to tell tail pairs from head pairs)")
        given = {k: v for k, v in split.items() if v is not None}
        return {"data": existing(data, "--data"), "tail_by": tail_by, "user_split": UserSplit(**given)}
    if any(v is not None for v in split.values()):
        raise CartError("--test-share and --min-tail-test apply to --data; the benchmark has its own splits")
    if tail_by and tail_by != BENCHMARK_TAIL_SPEC:
        raise CartError(f"--tail-by applies to --data; the embedded benchmark's tail is {BENCHMARK_TAIL_SPEC}")
    return {}


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


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@app.command()
@one_line_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run folder written by cart run")],
    config_file: ConfigFileOption = None,
) -> None:
    """Re-render RUN_DIR/report.html from RUN_DIR/results.json."""
    from cartrm.report.html import write_report

    typer.echo(f"wrote {write_report(run_dir)}")


@app.command()
@one_line_errors
def compare(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="a run folder written by cart run")],
    method: Annotated[str, typer.Argument(metavar="A", help="the method (or ablation, e.g. cart-cold) read")],
    baseline: Annotated[str, typer.Argument(metavar="B", help="the method it is read against, e.g. bt-continued")],
    seeds: Annotated[
        Optional[str], typer.Option(help="comma-separated seeds (default: the run's, from its config.yaml)")
    ] = None,
    metric: Annotated[
        Optional[str],
        typer.Option(
            help="comma-separated: conflict_gold_accuracy (benchmark), tail_gold_accuracy, head_gold_accuracy, "
            "tail_accuracy, head_accuracy (default: conflict-pair, tail and head gold accuracy, or tail and head "
            "accuracy for data without a gold reward)"
        ),
    ] = None,
    confidence: Annotated[
        float,
        typer.Option(help="level of both intervals, e.g. 0.9875 for four pre-registered tests at α = 0.05"),
    ] = 0.95,
    config_file: ConfigFileOption = None,
) -> None:
    """A − B on the same test pairs of RUN, from each seed's saved per-pair test scores: the difference, its
    hierarchical bootstrap interval (seeds, then pairs; 95% unless --confidence) and p-value, each seed's
    difference and a t-interval over the seeds' differences, in accuracy points."""
    from cartrm.experiments.compare import compare_methods, comparison_table

    if method == baseline:
        raise CartError(f"A and B are both '{method}': name two different methods")
    chosen = seed_list(seeds) if seeds is not None else None
    metrics = [m.strip() for m in metric.split(",")] if metric is not None else None
    typer.echo(comparison_table(compare_methods(run_dir, method, baseline, chosen, metrics, confidence)))


@data_app.command("make-benchmark")
@one_line_errors
@with_options(config_options(BenchmarkConfig, panel="Benchmark"))
def make_benchmark(
    out: Annotated[Path, typer.Option(help="JSONL file to write (all splits, with a 'split' column)")],
    candidates: Annotated[
        Optional[Path],
        typer.Option(
            help="also write best-of-n candidates for test prompts (JSONL for cart audit --candidates: prompt, "
            "responses, their gold rewards, group head/tail)"
        ),
    ] = None,
    candidate_prompts: Annotated[int, typer.Option(min=1, help="test prompts per group (head, tail)")] = 16,
    candidates_per_prompt: Annotated[int, typer.Option(min=2, help="responses drawn per prompt")] = 64,
    config_file: ConfigFileOption = None,
    **settings: Any,
) -> None:
    """Write the embedded long-tail benchmark (TRL columns + domain, is_tail, rule_set, gold_*)."""
    check_out(out, file=True)
    from cartrm.datasets import make_longtail_dataset

    config = BenchmarkConfig(**settings_of(BenchmarkConfig, settings))
    if candidates is not None:
        check_out(candidates, file=True)
    dataset = make_longtail_dataset(config)
    dataset.save(out)
    typer.echo(f"wrote {len(dataset)} pairs to {out}")
    if candidates is not None:
        from cartrm.datasets.longtail.best_of_n import candidate_pool, candidate_records
        from cartrm.io import write_text_atomic

        pool = candidate_pool(config, candidate_prompts, candidate_prompts, candidates_per_prompt, seed=config.seed)
        rows = candidate_records(pool)
        write_text_atomic(candidates, "".join(json.dumps(row) + "\n" for row in rows))
        typer.echo(f"wrote {len(rows)} prompts × {candidates_per_prompt} candidates to {candidates}")


@data_app.command("separability")
@one_line_errors
@with_options(config_options(BenchmarkConfig, panel="Benchmark"))
def separability(
    values: Annotated[str, typer.Option(help="comma-separated dial settings to read")] = "0,0.5,1",
    config_file: ConfigFileOption = None,
    **settings: Any,
) -> None:
    """What the tail-separability dial does, read off the data: at each setting, the test split's conflict pairs
    (tail pairs the head's rules order wrongly) and the gold accuracy of a word-count model fitted on the
    training split's gold order, alone and one per prompt domain. Where the word model ranks conflict pairs right,
    the tail's rules are carried by words; where only the per-domain model does, they need the prompt."""
    from cartrm.experiments.separability import separability_table, separability_text

    try:
        dial = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise CartError(f"--values: '{values}' is not a comma-separated list of numbers") from None
    if not dial or any(not 0.0 <= v <= 1.0 for v in dial):
        raise CartError(f"--values: every setting must be between 0 and 1, got '{values}'")
    config = BenchmarkConfig(**settings_of(BenchmarkConfig, settings))
    typer.echo(separability_text(separability_table(config, dial)))
