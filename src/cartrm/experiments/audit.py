"""``cart audit``: one pass over a reward model someone already has (cartrm, TRL, a decoder or an encoder) and
their data: head/tail accuracy with intervals, calibration, the tail circuits and their vulnerability, best-of-n
pressure on candidate responses when given, and a summary in plain words. Nothing trains."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from cartrm.circuits.discover import balanced_subset, discover
from cartrm.circuits.result import Circuits
from cartrm.data.readers import read_records
from cartrm.data.tail import TailSplit
from cartrm.errors import DataError
from cartrm.evaluation.bon import BON_NS, best_of_n_curve
from cartrm.evaluation.metrics import EvaluationReport, evaluate
from cartrm.experiments.config import AuditConfig
from cartrm.io import write_text_atomic
from cartrm.report.audit import Audit, AuditedCircuit, Pressure, render_audit
from cartrm.vulnerability.assess import assess
from cartrm.vulnerability.diagnostics import circuit_warnings, no_causal_circuit
from cartrm.vulnerability.result import VulnerabilityReport


class Candidates(BaseModel):
    """Best-of-n candidates of one prompt: two or more responses and, optionally, their gold rewards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    responses: list[str]
    gold: list[float] | None = None
    group: str = "all"


def read_candidates(path: str | Path) -> list[Candidates]:
    """The rows of a candidates file (JSONL/JSON: ``prompt``, ``responses``, optional ``gold`` and ``group``); a bad
    row is one error naming the file, line and field. Every prompt of a group has as many responses."""
    rows: list[Candidates] = []
    sizes: dict[str, int] = {}
    for line, record in read_records(path):
        row = _candidate_row(record, path, line)
        expected = sizes.setdefault(row.group, len(row.responses))
        if len(row.responses) != expected:
            raise DataError(
                f"{len(row.responses)} responses, but the group's first prompt has {expected}: best-of-n compares "
                "prompts with the same number of candidates",
                file=path,
                line=line,
                field="responses",
            )
        rows.append(row)
    if not rows:
        raise DataError("no candidate rows", file=path)
    return rows


def _candidate_row(record: dict[str, Any], path: str | Path, line: int) -> Candidates:
    for name in ("prompt", "responses"):
        if name not in record:
            raise DataError("missing", file=path, line=line, field=name)
    responses, gold = record["responses"], record.get("gold")
    if not isinstance(responses, list) or len(responses) < 2 or not all(isinstance(r, str) for r in responses):
        raise DataError("a list of two or more response strings is needed", file=path, line=line, field="responses")
    if gold is not None:
        numbers = isinstance(gold, list) and all(isinstance(g, int | float) and math.isfinite(g) for g in gold)
        if not numbers or len(gold) != len(responses):
            raise DataError("one finite number per response is needed", file=path, line=line, field="gold")
    unknown = sorted(set(record) - set(Candidates.model_fields))
    if unknown:
        raise DataError(f"unknown field(s) {', '.join(unknown)}", file=path, line=line, field=unknown[0])
    return Candidates(
        prompt=str(record["prompt"]), responses=responses, gold=gold, group=str(record.get("group", "all"))
    )


def audit(
    reward_model: Any,
    dataset: Any,
    tail: TailSplit,
    config: AuditConfig = AuditConfig(),
    *,
    by: Sequence[str] = (),
    candidates: Sequence[Candidates] = (),
    data_name: str = "",
    progress: bool = True,
) -> Audit:
    """Evaluate, discover and assess ``reward_model`` on ``dataset`` (the tail as ``tail`` marks it), and measure
    best-of-n pressure on ``candidates``; the summary and the warnings say what the figures mean."""
    report = evaluate(reward_model, dataset, tail=tail, by=by, seed=config.seed, progress=progress)
    circuits, vulnerability = _analysis(reward_model, dataset, tail, config, progress)
    pressure = [_pressure(reward_model, group, rows) for group, rows in _groups(candidates).items()]
    warnings = circuit_warnings(circuits, vulnerability) if circuits is not None else []
    audited = _audited(circuits, vulnerability)
    return Audit(
        model=reward_model.name or "model",
        model_fingerprint=reward_model.fingerprint(),
        data=data_name,
        tail_description=tail.description,
        evaluation=report,
        circuits=audited,
        pressure=pressure,
        warnings=warnings,
        summary=summary(report, audited, circuits, pressure, config.vuln_flag),
    )


def write_audit(result: Audit, out: str | Path) -> Path:
    """``OUT/audit.json`` and ``OUT/report.html`` (the page first: audit.json means a whole result)."""
    out = Path(out)
    write_text_atomic(out / "report.html", render_audit(result))
    result.save(out / "audit.json")
    return out / "report.html"


def _analysis(
    reward_model: Any, dataset: Any, tail: TailSplit, config: AuditConfig, progress: bool
) -> tuple[Circuits | None, VulnerabilityReport | None]:
    """Discovery and assessment on a balanced subset (None, None when the data has no head or no tail)."""
    if tail.mask.all() or not tail.mask.any():
        return None, None
    rows = balanced_subset(tail.mask, config.analysis_pairs, config.seed)
    data, part = dataset.select(rows), TailSplit(mask=tail.mask[rows], description=tail.description)
    circuits = discover(reward_model, data, part, config.discovery, progress=progress)
    if not circuits.circuits:
        return circuits, None
    return circuits, assess(reward_model, data, part, circuits, config.assessment, progress=progress)


def _audited(circuits: Circuits | None, report: VulnerabilityReport | None) -> list[AuditedCircuit]:
    vuln = {c.id: c for c in report.circuits} if report else {}
    targets = set(report.targets) if report else set()
    found = []
    for circuit in circuits.circuits if circuits else []:
        v = vuln.get(circuit.id)
        found.append(
            AuditedCircuit(
                id=circuit.id,
                n_members=len(circuit.members),
                patch_p_value=circuit.patch_p_value,
                vuln=v.vuln if v else None,
                consistency=v.consistency if v else None,
                sensitivity_normalised=v.sensitivity_normalised if v else None,
                coverage=v.coverage if v else None,
                target=circuit.id in targets,
            )
        )
    return sorted(found, key=lambda c: -(c.vuln if c.vuln is not None else -1.0))


def _groups(candidates: Sequence[Candidates]) -> dict[str, list[Candidates]]:
    found: dict[str, list[Candidates]] = {}
    for row in candidates:
        found.setdefault(row.group, []).append(row)
    return found


def _pressure(reward_model: Any, group: str, rows: list[Candidates]) -> Pressure:
    """The proxy's best-of-n gain on one group's candidates (the exact estimator over each prompt's responses)."""
    k = len(rows[0].responses)
    prompts = [row.prompt for row in rows for _ in row.responses]
    responses = [r for row in rows for r in row.responses]
    proxy = reward_model.score(prompts, responses).reshape(len(rows), k)
    ns = [n for n in BON_NS if n <= k]
    with_gold = all(row.gold is not None for row in rows)
    gold = np.array([row.gold for row in rows], dtype=np.float64) if with_gold else proxy
    curve = best_of_n_curve(proxy, gold, ns)
    own = best_of_n_curve(proxy, proxy, ns)
    return Pressure(
        group=group, n_prompts=len(rows), n=own.n, proxy_gain=own.proxy_gain, curve=curve if with_gold else None
    )


def summary(
    report: EvaluationReport,
    circuits: list[AuditedCircuit],
    found: Circuits | None,
    pressure: list[Pressure],
    vuln_flag: float,
) -> list[str]:
    """The audit in plain words, one line per finding."""
    lines = []
    if report.head is not None and report.tail is not None:
        gap = 100 * (report.head.accuracy - report.tail.accuracy)
        where = "below" if gap >= 0 else "above"
        lines.append(
            f"tail accuracy {abs(gap):.1f} points {where} head: tail {100 * report.tail.accuracy:.1f}% "
            f"[{100 * report.tail.ci_low:.1f}, {100 * report.tail.ci_high:.1f}] on {report.tail.n} pairs, head "
            f"{100 * report.head.accuracy:.1f}% [{100 * report.head.ci_low:.1f}, {100 * report.head.ci_high:.1f}] "
            f"on {report.head.n} pairs"
        )
        if report.head.gold_accuracy is not None and report.tail.gold_accuracy is not None:
            gold_gap = 100 * (report.head.gold_accuracy - report.tail.gold_accuracy)
            side = "below" if gold_gap >= 0 else "above"
            lines.append(
                f"against the gold reward: tail {100 * report.tail.gold_accuracy:.1f}%, head "
                f"{100 * report.head.gold_accuracy:.1f}% ({abs(gold_gap):.1f} points {side})"
            )
    lines.append(f"calibration: expected calibration error {report.overall.ece:.3f} over all pairs (0 is calibrated)")
    if found is None:
        lines.append("no circuit analysis: the data has no head or no tail pairs")
    else:
        flagged = [c for c in circuits if c.vuln is not None and c.vuln > vuln_flag]
        listed = ", ".join(f"{c.id} {c.vuln:.2f}" for c in flagged[:5])
        lines.append(
            f"{len(circuits)} tail circuits; {len(flagged)} with Vuln > {vuln_flag}"
            + (f" ({listed})" if listed else "")
        )
        caveat = no_causal_circuit(found)
        lines.append(caveat if caveat else "at least one circuit passed its causal (patching) test")
    for p in pressure:
        gold = p.curve.gold_gain[-1] if p.curve else None
        lines.append(
            f"best-of-{p.n[-1]} on {p.n_prompts} {p.group} prompts raises the proxy reward by {p.proxy_gain[-1]:+.2f} "
            "SD"
            + (
                f" while the gold reward moves {gold:+.2f} SD (gap {p.proxy_gain[-1] - gold:+.2f})"
                if gold is not None
                else ""
            )
        )
    return lines
