"""The run's report: one self-contained HTML page (inline CSS, images as base64 data URIs, no scripts).

Everything shown comes from ``results.json``; the phase figures (Δ histogram, coherence graph, Vuln ranking,
bound trend) are the PNGs listed in its ``artifacts``, the run-level figures are drawn into ``RUN_DIR/plots``.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable
from html import escape
from pathlib import Path

import numpy as np

from cartrm.evaluation.statistics import SeedSummary
from cartrm.io import write_text_atomic
from cartrm.report.headline import verdict_box
from cartrm.report.plots import (
    bon_groups,
    plot_accuracy,
    plot_best_of_n,
    plot_learning_curve,
    plot_vuln_before_after,
)
from cartrm.report.results import MethodResults, RunResults

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Column = tuple[str, Callable[[MethodResults], str]]  # a results-table column: header, cell text of a method

# (name, caption, drawer or None for a phase artifact), in page order.
FIGURES: tuple[tuple[str, str, Callable | None], ...] = (
    ("accuracy", "Head and tail accuracy per method (mean over seeds, 95% interval)", plot_accuracy),
    (
        "best_of_n",
        "Best-of-n: gold reward (the benchmark's true reward) of the proxy's pick vs KL_bon (mean over seeds; "
        "band: min–max over seeds, drawn with 2 or more seeds)",
        plot_best_of_n,
    ),
    ("learning_curve", "Validation accuracy during training (one line per seed)", plot_learning_curve),
    ("delta_hist", "Δ = E_tail[a] − E_head[a] over all features (circuit discovery)", None),
    ("coherence_graph", "Candidate neurons joined by coherence, coloured by circuit", None),
    ("vulnerability", "Circuit vulnerability ranking (eq. 9)", None),
    ("vuln_before_after", "Vuln of the targeted circuits before and after CART", plot_vuln_before_after),
    ("bound", "Bound trend", None),
)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { margin-bottom: 0.3rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
.verdict { background: #fff8db; border-left: 5px solid #e0a800; padding: 0.6rem 1rem; margin: 1rem 0; }
.verdict .box { margin-bottom: 0.6rem; } .verdict .box p { margin: 0.2rem 0; }
.verdict .headline { font-size: 1.1rem; } .verdict .caveats li { color: #8a4b00; }
.subtitle { color: #555; margin-top: 0; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dt { font-weight: 600; } dd { margin: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; font-variant-numeric: tabular-nums; }
td { white-space: nowrap; } th { background: #f0f0f3; }
td:first-child, th:first-child, td.text, th.text { text-align: left; }
.scroll { overflow-x: auto; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9rem; color: #555; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
.muted { color: #777; }
"""


def write_report(run_dir: str | Path) -> Path:
    """Draw the run-level figures and write ``RUN_DIR/report.html`` from ``RUN_DIR/results.json``."""
    run_dir = Path(run_dir)
    results = RunResults.load(run_dir / "results.json")
    path = run_dir / "report.html"
    write_text_atomic(path, render_html(results, run_dir))
    return path


def render_html(results: RunResults, run_dir: str | Path) -> str:
    """The page as a string; draws the run-level figures into ``RUN_DIR/plots`` to embed them."""
    run_dir = Path(run_dir)
    notes = list(results.notes)
    figures = _figures(results, run_dir, notes)
    body = [
        f"<h1>CART report: run '{escape(results.name)}'</h1>",
        _subtitle(results),
        verdict_box(results),
        _setup(results),
        _results_table(results),
        _by_group_tables(results),
        _comparisons(results),
        _tuning(results),
        _augmentation(results),
        _stability(results),
        figures,
        _notes(notes),
        _config(results.config),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>CART report: {escape(results.name)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )


# --- formatting ---------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def fmt_summary(summary: SeedSummary | None, digits: int = 3, scale: float = 1.0) -> str:
    """``mean [low, high]`` (times ``scale``: 100 for percent); the mean alone for one seed without an interval."""
    if summary is None:
        return "–"
    mean, low, high = (scale * v for v in (summary.mean, summary.ci_low, summary.ci_high))
    if summary.n_seeds < 2 and summary.interval == "seeds":
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def fmt_pct(summary: SeedSummary | None) -> str:
    """An accuracy in percent with one decimal, with its interval."""
    return fmt_summary(summary, digits=1, scale=100)


def fmt_p(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def fmt_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _table(header: list[str], rows: list[list[str]], text_columns: frozenset[int] = frozenset()) -> str:
    """Numbers right-aligned, the first column and ``text_columns`` left-aligned; wide tables scroll sideways."""

    def cell(tag: str, i: int, text: str) -> str:
        return f'<{tag} class="text">{escape(text)}</{tag}>' if i in text_columns else f"<{tag}>{escape(text)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>\n" for row in rows)
    return f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table></div>'


# --- sections -----------------------------------------------------------------------------------------------


def _subtitle(results: RunResults) -> str:
    n = len(results.seeds)
    methods = ", ".join(results.methods)
    return (
        f'<p class="subtitle">{n} seed{"s" if n != 1 else ""} · methods: {escape(methods)} · '
        f"{escape(fmt_duration(results.total_seconds))}</p>"
    )


def _setup(results: RunResults) -> str:
    entries = {
        **results.setup,
        "seeds": ", ".join(map(str, results.seeds)),
        "total time": fmt_duration(results.total_seconds),
    }
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in entries.items())
    return f"<h2>Setup</h2>\n<dl>{items}</dl>"


def _results_table(results: RunResults) -> str:
    """Accuracy and calibration in one table, best-of-n in another: one table of both is too wide to read."""
    if not results.methods:
        return '<h2>Results</h2>\n<p class="muted">No methods were evaluated.</p>'
    caption = (
        f"Accuracy in % (gold: agreement with the benchmark's true reward), {_interval_text(results)}; "
        "n: test pairs per seed; ECE: expected calibration error (0 is calibrated)."
    )
    parts = [
        f'<h2>Results</h2>\n<p class="muted">{escape(caption)}</p>',
        _method_table(results, _accuracy_columns(results)),
    ]
    bon_columns = _bon_columns(results)
    if bon_columns:
        config = results.config
        note = (
            "Gold reward (the benchmark's true reward, on its own scale) of the proxy's pick at its best n and at the "
            "largest n; gap: proxy − gold gain at the largest n, each gain over n = 1 in SDs of its reward across all "
            "candidates (a positive gap: the proxy is being exploited). "
            f"n = {config.get('bon_prompts', '?')} prompts per group × up to {config.get('bon_candidates', '?')} "
            "sampled responses, per seed."
        )
        parts += [f'<h3>Best-of-n</h3>\n<p class="muted">{escape(note)}</p>', _method_table(results, bon_columns)]
    return "\n".join(parts)


def _interval_text(results: RunResults) -> str:
    n_seeds = len(results.seeds)
    if n_seeds == 1:
        return "one seed [95% bootstrap interval over its test pairs, which leaves out seed-to-seed variation]"
    return f"mean over {n_seeds} seeds [95% t-interval over seeds]"


def _by_group_tables(results: RunResults) -> str:
    """Per ``--by`` column (the benchmark's domain), each method's accuracy on each value's test pairs."""
    columns = sorted({column for m in results.methods.values() for column in m.by})
    parts = []
    for column in columns:
        values = sorted({v for m in results.methods.values() for v in m.by.get(column, {})})
        rows = [[m.method] + [fmt_pct(m.by.get(column, {}).get(v)) for v in values] for m in results.methods.values()]
        note = f"(Gold, where known) accuracy in % on each {column}'s test pairs, {_interval_text(results)}."
        parts.append(
            f'<h3>By {escape(column)}</h3>\n<p class="muted">{escape(note)}</p>\n{_table(["method", *values], rows)}'
        )
    return "\n".join(parts)


def _method_table(results: RunResults, columns: list[Column]) -> str:
    header = ["method"] + [name for name, _ in columns]
    return _table(header, [[m.method] + [cell(m) for _, cell in columns] for m in results.methods.values()])


def _accuracy_columns(results: RunResults) -> list[Column]:
    columns: list[Column] = [
        (f"head acc %{n_pairs(results, 'head')}", lambda m: fmt_pct(m.head_accuracy)),
        (f"tail acc %{n_pairs(results, 'tail')}", lambda m: fmt_pct(m.tail_accuracy)),
        (f"overall acc %{n_pairs(results, 'overall')}", lambda m: fmt_pct(m.overall_accuracy)),
    ]
    for group in ("head", "tail"):
        if any(getattr(m, f"{group}_gold_accuracy") for m in results.methods.values()):
            columns.append(
                (f"{group} gold acc %{n_pairs(results, group)}", functools.partial(_gold_accuracy_cell, group))
            )
    if any(m.shortcut_gain for m in results.methods.values()):
        columns.append(("shortcut reward gain (validation)", lambda m: fmt_summary(m.shortcut_gain)))
    columns.append(("ECE", lambda m: fmt_summary(m.ece)))
    columns.append(("train s", lambda m: fmt_summary(m.train_seconds, digits=0)))
    return columns


def n_pairs(results: RunResults, group: str) -> str:
    """`` (n = N)``: the test pairs per seed behind a column (a range where seeds differ), "" when unrecorded."""
    counts = [n for m in results.methods.values() for n in m.n_pairs.get(group, [])]
    if not counts:
        return ""
    low, high = min(counts), max(counts)
    return f" (n = {low})" if low == high else f" (n = {low}–{high})"


def _gold_accuracy_cell(group: str, method: MethodResults) -> str:
    return fmt_pct(getattr(method, f"{group}_gold_accuracy"))


def _bon_columns(results: RunResults) -> list[Column]:
    def cell(group: str, field: str) -> Callable[[MethodResults], str]:
        return lambda m: fmt_summary(getattr(m.bon[group], field)) if group in m.bon else "–"

    columns: list[Column] = []
    for group in bon_groups(results):
        columns += [
            (f"{group} gold @ peak", cell(group, "gold_at_peak")),
            (f"{group} gold @ max n", cell(group, "gold_at_max")),
            (f"{group} gap @ max n", cell(group, "gap_at_max")),
        ]
    return columns


def _comparisons(results: RunResults) -> str:
    if not results.comparisons:
        return ""
    rows = [
        [
            f"{c.method} − {c.baseline}",
            c.metric,
            f"{c.paired.n_seeds} × {c.paired.n // max(c.paired.n_seeds, 1)}",
            f"{fmt(100 * c.paired.difference, 1, signed=True)} "
            f"[{fmt(100 * c.paired.ci_low, 1, signed=True)}, {fmt(100 * c.paired.ci_high, 1, signed=True)}]",
            ", ".join(fmt(100 * d, 1, signed=True) for d in c.paired.per_seed) or "–",
            fmt_p(c.paired.p_value),
        ]
        for c in results.comparisons
    ]
    note = (
        "The seed is the unit: mean over seeds of each seed's mean difference on the same test pairs, 95% interval "
        "of a hierarchical bootstrap (seeds, then pairs within each seed), two-sided mid-p value."
    )
    headers = ["comparison", "metric", "seeds × pairs", "difference, points [95% CI]", "per seed", "p-value"]
    table = _table(headers, rows, frozenset({1}))
    return f'<h2>Paired comparisons</h2>\n<p class="muted">{escape(note)}</p>\n{table}'


def _augmentation(results: RunResults) -> str:
    """Per CART method and transform: the kept augmentations, mean over seeds."""
    rows = []
    for method, record in results.methods.items():
        transforms = sorted({t for seed in record.augmentation for t in seed["transforms"]})
        for transform in transforms:
            stats = [seed["transforms"][transform] for seed in record.augmentation if transform in seed["transforms"]]
            rows.append(
                [method, transform, fmt(float(np.mean([s["n"] for s in stats])), 0)]
                + [fmt(float(np.mean([s[key] for s in stats]))) for key in ("gold_agreement", "foreign_word")]
            )
    if not rows:
        return ""
    note = (
        "Kept augmentations (eq. 10) on the benchmark, mean over seeds: pairs kept per seed; the share whose gold "
        "reward, recomputed from the edited text (under the domain it now reads as), still prefers the chosen "
        "response; the share carrying another domain's words (whose gold rules may differ)."
    )
    headers = ["method", "transform", "kept", "gold agreement", "another domain's word"]
    return f'<h2>Augmentations</h2>\n<p class="muted">{escape(note)}</p>\n{_table(headers, rows, frozenset({1}))}'


def _tuning(results: RunResults) -> str:
    """Every tuned variant's validation scores, the control's, and which variant was tested (✓)."""
    rows = []
    for method, record in results.methods.items():
        for seed in record.tuning:
            rows.append(
                [f"{seed['control']} (control)", str(seed["seed"]), "–", *_scores(seed["control_validation"]), ""]
            )
            for i, variant in enumerate(seed["variants"]):
                settings = json.dumps(variant["settings"], sort_keys=True)
                chosen = "✓" if i == seed["chosen"] else ""
                rows.append([method, str(seed["seed"]), settings, *_scores(variant["validation"]), chosen])
    if not rows:
        return ""
    note = (
        "Selected on the validation split only: the best tail accuracy (gold where known) among the variants whose "
        "head accuracy is within the tolerance of the compute-matched control's; the test split scores the chosen "
        "variant once. Every tuned method trains the same number of variants."
    )
    headers = ["method", "seed", "settings", "head %", "tail %", "head gold %", "tail gold %", "tested"]
    return f'<h2>Tuning (validation)</h2>\n<p class="muted">{escape(note)}</p>\n{_table(headers, rows, frozenset({2}))}'


def _scores(scores: dict[str, float]) -> list[str]:
    keys = ("head_accuracy", "tail_accuracy", "head_gold_accuracy", "tail_gold_accuracy")
    return [fmt(None if scores.get(k) is None else 100 * scores[k], 1) for k in keys]


def _stability(results: RunResults) -> str:
    stability = results.stability
    if stability is None:
        return ""
    summary = (
        f"Top-{stability.top_k} tail neurons across seeds: "
        f"mean pairwise Jaccard {fmt(stability.across_seeds_neuron_jaccard)}; "
        f"circuits across seeds: {fmt(stability.across_seeds_circuit_jaccard)}."
    )
    rows = [
        [
            str(s.seed),
            fmt(s.baseline_vs_cart_jaccard),
            ", ".join(s.targets) or "–",
            "; ".join(f"{t}: {fmt(s.vuln_before.get(t))} → {fmt(s.vuln_after.get(t))}" for t in s.targets) or "–",
            "; ".join(f"{t}: {100 * share:.1f}%" for t, share in s.effect_share.items()) or "–",
        ]
        for s in stability.per_seed
    ]
    header = [
        "seed",
        f"top-{stability.top_k} Jaccard baseline vs CART",
        "targets",
        "Vuln before → after",
        "patch |ΔR| / bt's mean tail |margin|",
    ]
    table = _table(header, rows, frozenset({2, 3, 4}))
    return f"<h2>Stability</h2>\n<p>{escape(summary)}</p>\n{table}"


def _figures(results: RunResults, run_dir: Path, notes: list[str]) -> str:
    """Every figure that exists, embedded; a note for each listed artifact that cannot be shown."""
    parts = []
    extra = [(name, name.replace("_", " "), None) for name in results.artifacts if name not in {f[0] for f in FIGURES}]
    for name, caption, draw in (*FIGURES, *extra):
        if draw is not None:
            path = run_dir / "plots" / f"{name}.png"
            if not draw(results, path):
                continue
        elif name in results.artifacts:
            path = run_dir / results.artifacts[name]
        else:
            continue
        image = _data_uri(path)
        if image is None:
            notes.append(f"figure {name!r} skipped: {results.artifacts.get(name, path)} is missing or not a PNG")
            continue
        parts.append(
            f'<figure><img alt="{escape(name)}" src="{image}"><figcaption>{escape(caption)}</figcaption></figure>'
        )
    return "<h2>Figures</h2>\n" + "\n".join(parts) if parts else ""


def _data_uri(path: Path) -> str | None:
    if not path.is_file():
        return None
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _notes(notes: list[str]) -> str:
    if not notes:
        return ""
    return "<h2>Notes</h2>\n<ul>" + "".join(f"<li>{escape(note)}</li>" for note in notes) + "</ul>"


def _config(config: dict) -> str:
    if not config:
        return ""
    text = json.dumps(config, indent=2, sort_keys=True, default=str)
    return f"<details><summary>Configuration</summary><pre>{escape(text)}</pre></details>"
