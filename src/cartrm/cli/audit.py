"""``cart audit``: where a reward model someone already has is weak on the tail, and how exploitable it is there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cartrm.cli.app import DataOption, RequiredTailOption, SplitOption, app, one_line_errors, split_or_all
from cartrm.cli.inputs import check_out, existing, inputs, same_folder
from cartrm.cli.options import ConfigFileOption, config_options, settings_of, with_options
from cartrm.errors import CartError
from cartrm.experiments.config import AuditConfig


@app.command()
@one_line_errors
@with_options(config_options(AuditConfig, exclude=("discovery", "assessment"), panel="Audit"))
def audit(
    model: Annotated[str, typer.Option(help="the reward model folder (cartrm, TRL, any HF sequence classifier)")],
    data: DataOption,
    tail_by: RequiredTailOption,
    out: Annotated[Path, typer.Option(help="output folder: audit.json and report.html")],
    by: Annotated[Optional[list[str]], typer.Option(help="also report per value of this column (repeatable)")] = None,
    candidates: Annotated[
        Optional[Path],
        typer.Option(
            help="best-of-n candidates, JSONL: prompt, responses (2 or more), optional gold (one number per response) "
            "and group (e.g. head / tail)"
        ),
    ] = None,
    split: SplitOption = None,
    config_file: ConfigFileOption = None,
    **settings: Any,
) -> None:
    """Audit a trained reward model: head/tail accuracy with intervals, calibration, its tail circuits and their
    vulnerability, best-of-n pressure on --candidates, and a plain-words summary (nothing trains)."""
    check_out(out)
    if same_folder(model, out):
        raise CartError(f"--out {out} is the model folder: write the audit elsewhere, the model stays as it is")
    from cartrm.experiments.audit import audit as run_audit
    from cartrm.experiments.audit import read_candidates, write_audit

    config = AuditConfig(**settings_of(AuditConfig, settings))
    rows = read_candidates(candidates) if existing(candidates, "--candidates") and candidates else []
    dataset, reward_model, tail = inputs(
        data, model, tail_by, split=split_or_all(split, "all"), columns=by or [], seed=config.seed
    )
    result = run_audit(reward_model, dataset, tail, config, by=by or [], candidates=rows, data_name=str(data))
    page = write_audit(result, out)
    for line in result.summary:
        typer.echo(f"- {line}")
    typer.echo(f"wrote {out / 'audit.json'} and {page}")
