"""``cart bound``: does the gap L_tail − L_head follow the bound's terms (eq. 4–5) as N_tail varies?

One embedded benchmark is generated; every point of the sweep trains a fresh Bradley–Terry model on the
same ``n_head`` head pairs plus the first ``n_tail`` tail pairs of a fixed seeded order (nested tail sets),
evaluates the Bradley–Terry losses on the shared test split, and runs discovery (no patching) on its training
data for |C_tail| and Div (the mean scale-free 1-Wasserstein distance of circuit activations, tail vs head).
A one-sided Spearman test then asks whether the gap grows with sqrt(|C_tail|·log(1/δ)/N_tail) and with Div.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from cartrm.circuits.discover import discover
from cartrm.data.tail import parse_tail_spec
from cartrm.datasets import BenchmarkConfig, make_longtail_dataset
from cartrm.errors import CartError
from cartrm.experiments.config import BoundSweepConfig
from cartrm.io import Artifact, write_json_atomic
from cartrm.models import RewardModel
from cartrm.runs import key_dump, stage_key
from cartrm.runs.stage import Stage
from cartrm.training import train
from cartrm.training.checkpoints import checkpoints
from cartrm.vulnerability.bound import bradley_terry_loss, complexity_term, trend_test

TAIL_SPEC = "label:is_tail"
POINT_FILE = "point.json"


class BoundPoint(BaseModel):
    n_tail: int
    l_head: float
    l_tail: float
    gap: float
    n_circuits: int
    complexity: float
    divergence: float
    head_accuracy: float
    tail_accuracy: float


class BoundSweep(Artifact):
    """What ``cart bound`` writes to ``bound_sweep.json``: the points and the trend test (eq. 4-5)."""

    kind = "bound sweep"
    config: BoundSweepConfig
    points: list[BoundPoint]
    spearman_complexity: float | None
    p_complexity: float | None
    spearman_divergence: float | None
    p_divergence: float | None


def run_bound_sweep(
    config: BoundSweepConfig, out: str | Path, progress: bool = True, *, resume: bool = False, overwrite: bool = False
) -> BoundSweep:
    """Every point of the sweep in ``out/n_tail_N/``. Each point is a stage (:class:`~cartrm.runs.stage.Stage`):
    with ``resume`` the points an earlier run finished with these settings are read back and an interrupted one
    continues from its last checkpoint; ``overwrite`` starts over; without either, ``out`` must be empty."""
    out = Path(out)
    _claim(out, resume, overwrite)
    largest = max(config.tail_sizes)
    pool = make_longtail_dataset(
        BenchmarkConfig(
            n_train=2 * (config.n_head + largest),
            alpha=config.n_head / (config.n_head + largest),
            n_validation=2,
            n_test_head=config.n_test_head,
            n_test_tail=config.n_test_tail,
            seed=config.seed,
        )
    )
    train_pool, test = pool.split("train"), pool.split("test")
    is_tail = np.array([bool(v) for v in train_pool.column("is_tail")])
    rng = np.random.default_rng(config.seed)
    head_rows = rng.permutation(np.flatnonzero(~is_tail))[: config.n_head]
    tail_order = rng.permutation(np.flatnonzero(is_tail))
    test_tail = parse_tail_spec(TAIL_SPEC).fit(test).transform(test).mask
    points = []
    for n_tail in sorted(config.tail_sizes):
        data = train_pool.select(np.sort(np.concatenate([head_rows, tail_order[:n_tail]])))
        key = stage_key({k: v for k, v in key_dump(config).items() if k != "tail_sizes"}, largest, n_tail)
        stage = Stage(out / f"n_tail_{n_tail}", key, outputs=(POINT_FILE,))
        if not stage.done():
            resumes = stage.begin(resumable=True)
            point = _point(config, data, test, test_tail, stage.folder, progress, resumes)
            write_json_atomic(stage.folder / POINT_FILE, point.model_dump())
            stage.finish()
        points.append(BoundPoint.model_validate_json((stage.folder / POINT_FILE).read_text()))
    gaps = np.array([p.gap for p in points])
    trend = (
        trend_test(gaps, np.array([p.complexity for p in points]), np.array([p.divergence for p in points]))
        if len(points) >= 3
        else None
    )
    return BoundSweep(
        config=config,
        points=points,
        spearman_complexity=_finite(trend.spearman_complexity if trend else None),
        p_complexity=_finite(trend.p_complexity if trend else None),
        spearman_divergence=_finite(trend.spearman_divergence if trend else None),
        p_divergence=_finite(trend.p_divergence if trend else None),
    )


def _claim(out: Path, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise CartError("--resume continues the sweep in --out and --overwrite starts over: pick one")
    if overwrite:
        shutil.rmtree(out, ignore_errors=True)
    elif not resume and out.is_dir() and any(out.iterdir()):
        raise CartError(
            f"--out {out}: the folder is not empty; --resume continues the sweep in it, --overwrite replaces it"
        )


def _point(
    config: BoundSweepConfig, data, test, test_tail: np.ndarray, folder: Path, progress: bool, resumes: bool
) -> BoundPoint:
    model = RewardModel.load(config.model, seed=config.seed)
    checkpointed = resumes and bool(checkpoints(folder / "model"))
    if not checkpointed:
        shutil.rmtree(folder / "model", ignore_errors=True)
    train(model, data, config.train, folder / "model", resume=checkpointed, progress=progress)
    chosen, rejected = model.score_pairs(test, progress=progress)
    margins = chosen - rejected
    tail = parse_tail_spec(TAIL_SPEC).fit(data).transform(data)
    circuits = discover(model, data, tail, config.discovery, progress=progress)
    circuits.save(folder / "circuits.json")
    n_tail = tail.n_tail
    l_head, l_tail = bradley_terry_loss(margins[~test_tail]), bradley_terry_loss(margins[test_tail])
    divergence = float(np.mean([c.divergence for c in circuits.circuits])) if circuits.circuits else 0.0
    return BoundPoint(
        n_tail=n_tail,
        l_head=l_head,
        l_tail=l_tail,
        gap=l_tail - l_head,
        n_circuits=len(circuits.circuits),
        complexity=complexity_term(max(len(circuits.circuits), 1), n_tail, config.delta),
        divergence=divergence,
        head_accuracy=float(np.mean(margins[~test_tail] > 0)),
        tail_accuracy=float(np.mean(margins[test_tail] > 0)),
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def plot_bound_sweep(sweep: BoundSweep, path: str | Path) -> None:
    """Gap L_tail − L_head against the complexity term and against Div, one point per N_tail."""
    from cartrm.plotting import plt, save_figure

    figure, axes = plt.subplots(1, 2, figsize=(8, 3.5))
    gaps = [p.gap for p in sweep.points]
    for axis, key, label in (
        (axes[0], "complexity", "sqrt(|C_tail| log(1/δ) / N_tail)"),
        (axes[1], "divergence", "Div(C_tail, C_head)"),
    ):
        xs = [getattr(p, key) for p in sweep.points]
        axis.plot(xs, gaps, "o-")
        for x, y, p in zip(xs, gaps, sweep.points):
            axis.annotate(f"N_tail={p.n_tail}", (x, y), fontsize=7)
        axis.set_xlabel(label)
        axis.set_ylabel("L_tail − L_head (test)")
    figure.subplots_adjust(wspace=0.35)
    figure.suptitle(
        f"tail gap vs bound terms — Spearman: complexity {_fmt(sweep.spearman_complexity)} "
        f"(p {_fmt(sweep.p_complexity)}), "
        f"Div {_fmt(sweep.spearman_divergence)} (p {_fmt(sweep.p_divergence)})",
        fontsize=8,
    )
    save_figure(figure, path)
