"""The ``cart`` application: its command groups, the one-line error contract and the option types commands share."""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from cartrm.errors import CartError

app = typer.Typer(
    help="Circuit-Aware Reward Training: train reward models and measure their long-tail robustness.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Data utilities.", no_args_is_help=True)
app.add_typer(data_app, name="data")
models_app = typer.Typer(help="Built-in models made from PyPI packages (smollm2-135m, mpnet).", no_args_is_help=True)
app.add_typer(models_app, name="models")

ALL_SPLITS = "all"
CART_PANEL = "CART (--method cart)"
BASELINES_PANEL = "Baselines' settings"
TRAIN_PANEL = "Training"
DISCOVERY_PANEL = "Discovery"
ASSESS_PANEL = "Assessment"
ENSEMBLE_PANEL = "Ensemble"
SWEEP_PANEL = "Sweep"

DEBUG = {"enabled": False}


@app.callback()
def options(
    debug: Annotated[bool, typer.Option("--debug", help="show full tracebacks instead of one-line errors")] = False,
) -> None:
    """Circuit-Aware Reward Training: train reward models and measure their long-tail robustness."""
    DEBUG["enabled"] = debug
    warnings.formatwarning = _one_line_warning


def main(argv: list[str] | None = None) -> None:
    """The ``cart`` executable: the application, with the command line's own errors (a bad option value, a missing
    option, a bad ``--config`` file) as one ``error:`` line and exit status 2, like the library's errors."""
    args = sys.argv[1:] if argv is None else argv
    try:
        status = app(prog_name="cart", args=args or ["--help"], standalone_mode=False)
    except typer.TyperException as exc:
        typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        status = exc.exit_code
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        status = 1
    sys.exit(status if isinstance(status, int) else 0)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def one_line_errors(command):
    """Report library errors (bad input, bad options) as ``error: …`` and exit 1, without a traceback
    (unless ``cart --debug``)."""
    from pydantic import ValidationError

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CartError as exc:
            error, message = exc, str(exc)
        except ValidationError as exc:
            first = exc.errors()[0]
            error, message = exc, f"invalid option {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        except OSError as exc:  # a full disk, a read-only folder, a path that is a file: one line, not a traceback
            where = f"{exc.filename}: " if exc.filename else ""
            error, message = exc, f"{where}{exc.strerror or exc}"
        if DEBUG["enabled"]:
            raise error
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1)

    return wrapper


def split_or_all(value: str | None, default: str) -> str | None:
    chosen = value or default
    return None if chosen == ALL_SPLITS else chosen


SplitOption = Annotated[
    Optional[str], typer.Option(help="rows of this 'split' column value when the data has one; 'all' keeps every row")
]
TAIL_HELP = "label:COLUMN=V1,V2 | label:COLUMN | rarity:Q | density:Q[:tfidf]"
TailOption = Annotated[Optional[str], typer.Option("--tail-by", help=TAIL_HELP)]
RequiredTailOption = Annotated[str, typer.Option("--tail-by", help=TAIL_HELP)]
DataOption = Annotated[Path, typer.Option(help="preference data file")]
MaxPairsOption = Annotated[Optional[int], typer.Option(min=1, help="use a seeded random subset of this many pairs")]
SeedOption = Annotated[int, typer.Option(min=0, help="fixes data order, initialisation and dropout")]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="--out holds an earlier run: delete it and start over")
]
