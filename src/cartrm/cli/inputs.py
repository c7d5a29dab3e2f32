"""What the commands share: their inputs loaded and checked at the edge, output folders checked before any work."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import typer

from cartrm.errors import CartError
from cartrm.runs.folder import RUN_MARKERS


def check_out(out: Path, *, file: bool = False) -> Path:
    """Refuse an output location that cannot be written (a file where a folder goes, a read-only place) before
    any expensive work; creates nothing."""
    if out.exists() and out.is_dir() == file:
        raise CartError(f"--out {out}: is a {'folder' if file else 'file'}, not a {'file' if file else 'folder'}")
    existing = next(p for p in (out.parent if file else out, *out.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise CartError(f"--out {out}: cannot write under {existing}")
    return out


def inputs(
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

    dataset = subset((load_dataset if scored else load_preferences)(data, split=split), max_pairs, seed)
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


def learning_curve(data: Path, split: str | None, tail_by: str | None, training, reward_model):
    """The scorer of ``train(..., evaluate=)`` on the ``split`` rows of ``data``, with the tail definition fitted
    on the training rows."""
    import numpy as np

    from cartrm.data import load_preferences, parse_tail_spec
    from cartrm.evaluation.metrics import accuracy_scorer

    if split is None:
        raise CartError("--eval-steps needs --eval-split (the rows of --data to score, e.g. validation)")
    pairs = load_preferences(data, split=split)
    if not pairs.has_column("split"):
        raise CartError(f"--eval-split {split}: {data} has no 'split' column, so its training rows would be scored")
    if tail_by:
        spec = parse_tail_spec(tail_by).fit(training, tokenizer=reward_model.tokenizer, embedder=reward_model.embed)
        mask = spec.transform(pairs).mask
    else:
        mask = np.zeros(len(pairs), dtype=bool)
    return accuracy_scorer(pairs, mask)


def subset(dataset, max_pairs: int | None, seed: int):
    """A seeded random subset of ``max_pairs`` pairs (the whole dataset when None or larger)."""
    import numpy as np

    if max_pairs is None or max_pairs >= len(dataset):
        return dataset
    return dataset.select(np.sort(np.random.default_rng(seed).choice(len(dataset), size=max_pairs, replace=False)))


def warm_start(init_from: Path, out: Path) -> str:
    """The model folder ``--init-from`` names, checked before anything loads: a model, and not ``--out`` itself
    (training would replace the weights it starts from)."""
    if not (init_from / "config.json").is_file():
        raise CartError(f"--init-from {init_from}: not a model folder (no config.json)")
    if same_folder(init_from, out):
        raise CartError(f"--init-from {init_from} is also --out: write the continued model to another folder")
    typer.echo(f"continuing from {init_from}: its weights, a fresh optimizer and learning-rate schedule")
    return str(init_from)


def same_folder(model: str | Path, out: Path) -> bool:
    """Whether ``--out`` is the folder ``--model`` (or ``--init-from``) names: a command must not write there."""
    return Path(model).is_dir() and out.exists() and Path(model).resolve() == out.resolve()


def not_into_start(model: str, out: Path) -> None:
    """Refuse ``--out`` equal to the ``--model`` folder: training (with --overwrite) would delete the weights it
    starts from."""
    trained = any((out / marker).exists() for marker in RUN_MARKERS)  # other folders --overwrite refuses to clear
    if trained and same_folder(model, out):
        raise CartError(f"--model {model} is also --out: write the trained model to another folder")


def existing(path: Path | None, flag: str) -> str | None:
    if path is not None and not path.exists():
        raise CartError(f"{flag} {path}: not found")
    return None if path is None else str(path)


def seed_list(text: str) -> tuple[int, ...]:
    """--seeds: distinct non-negative integers separated by commas."""
    try:
        seeds = tuple(int(v) for v in text.split(","))
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise CartError(f"--seeds expects distinct non-negative integers separated by commas, got '{text}'")
    return seeds


def summary(report) -> str:
    parts = [f"overall acc {report.overall.accuracy:.3f} (n={report.overall.n})"]
    for label, metrics in (("head", report.head), ("tail", report.tail)):
        if metrics is not None:
            gold = f", gold {metrics.gold_accuracy:.3f}" if metrics.gold_accuracy is not None else ""
            parts.append(
                f"{label} acc {metrics.accuracy:.3f} [{metrics.ci_low:.3f}, {metrics.ci_high:.3f}]{gold} "
                f"(n={metrics.n})"
            )
    return "; ".join(parts)
