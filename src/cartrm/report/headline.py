"""The verdict box at the top of the report: what was compared, the effect with its interval and n, whether it
clears the noise, where it comes from, and the caveats a reviewer needs first (readable in ten seconds)."""

from __future__ import annotations

from html import escape

from cartrm.evaluation.statistics import PairedComparison
from cartrm.report.results import Headline, RunResults


def points(paired: PairedComparison) -> str:
    """``+1.6 points [+0.6, +2.7]``: a difference of accuracies in percentage points with its 95% interval."""
    return f"{100 * paired.difference:+.1f} points [{100 * paired.ci_low:+.1f}, {100 * paired.ci_high:+.1f}]"


def verdict_box(results: RunResults) -> str:
    """One box per CART method (from ``results.headlines``), then the verdict lines; the lines alone for a
    results.json written before the box existed."""
    boxes = "".join(_box(h) for h in results.headlines)
    lines = "".join(f"<li>{escape(line)}</li>" for line in results.verdict) or "<li>No verdict recorded.</li>"
    details = f"<details><summary>Verdict lines</summary><ul>{lines}</ul></details>" if boxes else f"<ul>{lines}</ul>"
    return f'<div class="verdict">{boxes}{details}</div>'


def _box(headline: Headline) -> str:
    metric = headline.metric.replace("_", " ")
    tail = headline.tail
    size = f"{tail.n_seeds} seed{'s' if tail.n_seeds != 1 else ''} × {tail.n // max(tail.n_seeds, 1)} tail test pairs"
    if headline.clears_noise:
        call = f"clears the noise (p = {tail.p_value:.3f})"
    else:
        call = f"within the noise (p = {tail.p_value:.3f}{', one seed' if tail.n_seeds == 1 else ''})"
    rows = [
        f'<p class="headline"><b>{escape(headline.method)}</b> vs <b>{escape(headline.control)}</b> (same start, '
        f"steps and data): {escape(metric)} <b>{escape(points(tail))}</b>, {escape(size)}: {escape(call)}.</p>"
    ]
    if headline.head is not None:
        rows.append(f"<p>Head: {escape(points(headline.head))}.</p>")
    if headline.upsampled is not None and headline.circuits is not None:
        rows.append(
            f"<p>Where it comes from: more tail pairs alone ({escape(str(headline.data_control))} − "
            f"{escape(headline.control)}) {escape(points(headline.upsampled))}; the circuit parts "
            f"({escape(headline.method)} − {escape(str(headline.data_control))}) {escape(points(headline.circuits))}."
            "</p>"
        )
    if headline.caveats:
        rows.append('<ul class="caveats">' + "".join(f"<li>{escape(c)}</li>" for c in headline.caveats) + "</ul>")
    return '<div class="box">' + "".join(rows) + "</div>"
