"""Figures of a whole run, drawn from ``results.json`` alone: accuracy, best-of-n, learning curves, Vuln before/after
CART.

Each function returns whether it wrote a figure: a run without the data for one (no methods, no best-of-n,
no stability block) gets no figure rather than an empty one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cartrm.evaluation.bon import BoNCurve, kl_best_of_n
from cartrm.evaluation.statistics import SeedSummary
from cartrm.plotting import plt, save_figure
from cartrm.report.results import RunResults

GROUP_ORDER = ("head", "tail")


def method_colours(results: RunResults) -> dict[str, str]:
    """One colour per method, the same in every figure of the report."""
    return {method: f"C{i % 10}" for i, method in enumerate(results.methods)}


def plot_accuracy(results: RunResults, path: str | Path) -> bool:
    """Head and tail accuracy per method (mean, 95% interval over seeds); gold-label accuracy beside it if any."""
    if not results.methods:
        return False
    panels = {"preference accuracy": ("head_accuracy", "tail_accuracy")}
    if any(m.head_gold_accuracy or m.tail_gold_accuracy for m in results.methods.values()):
        panels["gold-label accuracy"] = ("head_gold_accuracy", "tail_gold_accuracy")
    width = max(4.0, 0.9 * len(results.methods) + 2)
    figure, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 3.5), squeeze=False)
    for axis, (title, fields) in zip(axes[0], panels.items()):
        _grouped_bars(axis, results, fields)
        axis.set_title(title)
    axes[0][0].set_ylabel("accuracy")
    save_figure(figure, path)
    return True


def _grouped_bars(axis, results: RunResults, fields: tuple[str, str]) -> None:
    methods = list(results.methods)
    positions = np.arange(len(methods))
    bars = ((-0.2, fields[0], "head", "lightsteelblue"), (0.2, fields[1], "tail", "salmon"))
    for offset, field, label, colour in bars:
        summaries = [getattr(results.methods[m], field) for m in methods]
        means = [s.mean if s else np.nan for s in summaries]
        errors = np.array([_error_bar(s) for s in summaries]).T
        axis.bar(
            positions + offset,
            means,
            width=0.4,
            yerr=errors,
            capsize=3,
            color=colour,
            edgecolor="black",
            linewidth=0.5,
            label=label,
        )
    axis.set_xticks(positions, methods, rotation=30 if len(methods) > 4 else 0)
    axis.set_ylim(0, 1.05)
    axis.axhline(0.5, color="grey", linewidth=0.6, linestyle=":", zorder=0)
    axis.legend(fontsize=7, loc="lower right")


def _error_bar(summary: SeedSummary | None) -> tuple[float, float]:
    if summary is None:
        return 0.0, 0.0
    return max(0.0, summary.mean - summary.ci_low), max(0.0, summary.ci_high - summary.mean)


def plot_best_of_n(results: RunResults, path: str | Path) -> bool:
    """Gold reward of the proxy's best-of-n pick against KL_bon, per method (mean over seeds, min–max band)."""
    groups = bon_groups(results)
    if not groups:
        return False
    colours = method_colours(results)
    figure, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.8), squeeze=False)
    for axis, group in zip(axes[0], groups):
        for method, record in results.methods.items():
            if group in record.bon and record.bon[group].curves:
                _bon_line(axis, record.bon[group].curves, method, colours[method])
        axis.set_title(f"{group} prompts")
        axis.set_xlabel("KL_bon = log n − (n−1)/n")
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel("gold reward of the best-of-n pick")
    save_figure(figure, path)
    return True


def plot_learning_curve(results: RunResults, path: str | Path) -> bool:
    """Head and tail accuracy on the validation split during training, one thin line per seed and method (gold
    accuracy where the data have a gold reward)."""
    curves = {method: record.learning_curves for method, record in results.methods.items() if record.learning_curves}
    if not curves:
        return False
    first = next(iter(curves.values()))[0][0]
    prefix = "gold_" if "head_gold_accuracy" in first else ""
    colours = method_colours(results)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6), squeeze=False)
    for axis, group in zip(axes[0], GROUP_ORDER):
        metric = f"{group}_{prefix}accuracy"
        for method, seeds in curves.items():
            for i, curve in enumerate(seeds):
                points = [(p["step"], p[metric]) for p in curve if metric in p]
                label = method if i == 0 else None
                axis.plot(*zip(*points), color=colours[method], alpha=0.7, linewidth=1, label=label)
        axis.set_title(f"{group} {prefix.replace('_', ' ')}accuracy on validation")
        axis.set_xlabel("optimizer step")
        axis.legend(fontsize=7)
    save_figure(figure, path)
    return True


def bon_groups(results: RunResults) -> list[str]:
    """The best-of-n prompt groups of any method, head and tail first."""
    present = {g for m in results.methods.values() for g, s in m.bon.items() if s.curves}
    return [g for g in GROUP_ORDER if g in present] + sorted(present - set(GROUP_ORDER))


def _bon_line(axis, curves: list[BoNCurve], label: str, colour: str) -> None:
    """Seeds may have drawn different numbers of candidates, so only the n every seed reached are plotted."""
    ns = sorted(set.intersection(*(set(c.n) for c in curves)))
    if not ns:
        return
    gold = np.array([[dict(zip(c.n, c.gold))[n] for n in ns] for c in curves])
    kl = [kl_best_of_n(n) for n in ns]
    axis.plot(kl, gold.mean(axis=0), marker="o", markersize=3, color=colour, label=label)
    if len(curves) > 1:
        axis.fill_between(kl, gold.min(axis=0), gold.max(axis=0), color=colour, alpha=0.15, linewidth=0)


def plot_vuln_before_after(results: RunResults, path: str | Path) -> bool:
    """Vuln of each targeted circuit on the baseline model (x) and after CART (y); below the diagonal = reduced."""
    points = _vuln_points(results)
    if not points:
        return False
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    for i, (seed, seed_points) in enumerate(points.items()):
        before, after, _ = zip(*seed_points)
        axis.scatter(before, after, color=f"C{i % 10}", marker="os^Dv<>"[i % 7], label=f"seed {seed}", zorder=3)
        for x, y, circuit in seed_points:
            axis.annotate(circuit, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    values = [v for p in points.values() for x, y, _ in p for v in (x, y)]
    low, high = min(values), max(values)
    pad = 0.05 * (high - low or 1.0)
    axis.plot(
        [low - pad, high + pad], [low - pad, high + pad], color="grey", linestyle="--", linewidth=0.8, label="y = x"
    )
    axis.set_xlabel("Vuln before CART (baseline)")
    axis.set_ylabel("Vuln after CART")
    axis.set_title("targeted circuits")
    axis.legend(fontsize=7)
    save_figure(figure, path)
    return True


def _vuln_points(results: RunResults) -> dict[int, list[tuple[float, float, str]]]:
    """Per seed, (before, after, circuit id) of every target with both values."""
    if results.stability is None:
        return {}
    points = {}
    for record in results.stability.per_seed:
        seed_points = [
            (record.vuln_before[t], record.vuln_after[t], t)
            for t in record.targets
            if t in record.vuln_before and t in record.vuln_after
        ]
        if seed_points:
            points[record.seed] = seed_points
    return points
