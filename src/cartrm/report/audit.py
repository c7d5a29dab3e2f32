"""``audit.json`` and its page: where a reward model someone already has is weak on the tail, and whether a
policy could exploit it there (``cart audit``)."""

from __future__ import annotations

from html import escape

from cartrm.evaluation.bon import BoNCurve
from cartrm.evaluation.metrics import EvaluationReport, GroupMetrics
from cartrm.io import Artifact, Record

AUDIT_SCHEMA_VERSION = 1


class AuditedCircuit(Record):
    """One tail circuit of the audited model: its size, its causal test and its vulnerability (eq. 9)."""

    id: str
    n_members: int
    patch_p_value: float | None = None
    vuln: float | None = None
    consistency: float | None = None
    sensitivity_normalised: float | None = None
    coverage: float | None = None
    target: bool = False


class Pressure(Record):
    """Best-of-n on one prompt group's candidates: the proxy's gain of its pick over n = 1 in SDs of the
    candidates' proxy rewards, per n; with gold rewards, the whole curve (gold of the pick, the hacking gap)."""

    group: str
    n_prompts: int
    n: list[int]
    proxy_gain: list[float]
    curve: BoNCurve | None = None


class Audit(Artifact):
    kind = "audit"
    schema_version: int = AUDIT_SCHEMA_VERSION
    model: str
    model_fingerprint: str
    data: str
    tail_description: str
    evaluation: EvaluationReport
    circuits: list[AuditedCircuit]
    pressure: list[Pressure] = []
    warnings: list[str] = []
    summary: list[str]


def render_audit(audit: Audit) -> str:
    """A self-contained page: the plain-words summary first, then accuracy, circuits, best-of-n and warnings."""
    parts = [
        f"<h1>Reward-model audit: {escape(audit.model)}</h1>",
        f'<p class="muted">data {escape(audit.data)} · tail: {escape(audit.tail_description)}</p>',
        '<div class="verdict"><ul>' + "".join(f"<li>{escape(s)}</li>" for s in audit.summary) + "</ul></div>",
        "<h2>Accuracy</h2>",
        _accuracy_table(audit.evaluation),
        *_by_tables(audit.evaluation),
        "<h2>Tail circuits</h2>",
        _circuit_table(audit.circuits),
        *([f"<h2>Best-of-n pressure</h2>{_pressure_table(audit.pressure)}"] if audit.pressure else []),
        *(
            ["<h2>Warnings</h2><ul>" + "".join(f"<li>{escape(w)}</li>" for w in audit.warnings) + "</ul>"]
            if audit.warnings
            else []
        ),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Audit: {escape(audit.model)}</title>\n<style>{AUDIT_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )


AUDIT_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; color: #1d1d1f; }
.verdict { background: #fff8db; border-left: 5px solid #e0a800; padding: 0.6rem 1rem; margin: 1rem 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
td:first-child, th:first-child { text-align: left; } .muted { color: #777; }
"""


def _pct(low: float | None, mid: float | None, high: float | None) -> str:
    if mid is None:
        return "–"
    interval = f" [{100 * low:.1f}, {100 * high:.1f}]" if low is not None and high is not None else ""
    return f"{100 * mid:.1f}{interval}"


def _group_row(name: str, g: GroupMetrics) -> list[str]:
    return [
        name,
        str(g.n),
        _pct(g.ci_low, g.accuracy, g.ci_high),
        _pct(g.gold_ci_low, g.gold_accuracy, g.gold_ci_high),
        f"{g.ece:.3f}",
    ]


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


ACCURACY_HEADER = ["group", "pairs", "accuracy % [95% CI]", "gold accuracy % [95% CI]", "ECE"]


def _accuracy_table(report: EvaluationReport) -> str:
    groups = [(n, g) for n, g in (("head", report.head), ("tail", report.tail), ("all", report.overall)) if g]
    return _table(ACCURACY_HEADER, [_group_row(name, g) for name, g in groups])


def _by_tables(report: EvaluationReport) -> list[str]:
    return [
        f"<h3>By {escape(column)}</h3>"
        + _table([column, *ACCURACY_HEADER[1:]], [_group_row(v, g) for v, g in values.items()])
        for column, values in report.by.items()
    ]


def _circuit_table(circuits: list[AuditedCircuit]) -> str:
    if not circuits:
        return '<p class="muted">Discovery found no tail circuit.</p>'

    def num(value: float | None, digits: int = 3) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    rows = [
        [
            c.id + (" (target)" if c.target else ""),
            str(c.n_members),
            num(c.patch_p_value),
            num(c.vuln),
            num(c.consistency),
            num(c.sensitivity_normalised, 5),
            num(c.coverage),
        ]
        for c in circuits
    ]
    header = ["circuit", "neurons", "patch p", "Vuln", "consistency", "sensitivity (norm.)", "coverage"]
    return _table(header, rows)


def _pressure_table(pressure: list[Pressure]) -> str:
    rows = []
    for p in pressure:
        gold = dict(zip(p.curve.n, p.curve.gold_gain)) if p.curve else {}
        for n, gain in zip(p.n, p.proxy_gain):
            rows.append([p.group, str(p.n_prompts), str(n), f"{gain:+.2f}", f"{gold[n]:+.2f}" if n in gold else "–"])
    return _table(["group", "prompts", "n", "proxy gain (SD)", "gold gain (SD)"], rows)
