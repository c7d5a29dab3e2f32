"""Command-line options made from the pydantic configs, and ``--config FILE`` for every command.

Each config field becomes one option with the field's name (``learning_rate`` → ``--learning-rate``, the spelling
YAML uses too) and its description as help; bools are ``--x/--no-x``; ``Literal`` fields are choices; tuples are
comma-separated. ``--config FILE`` (YAML, or JSON such as a saved ``train_config.json``) gives the defaults of a
command's options: a flag on the command line wins over the file, the file over the built-in default.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Optional, Union, get_args, get_origin, get_type_hints

import typer
from pydantic import BaseModel

from cartrm.errors import CartError
from cartrm.io import read_yaml_mapping

ALIASES: dict[str, tuple[str, ...]] = {  # earlier spellings of some options, kept working
    "learning_rate": ("--lr",),
    "groups_column": ("--groups",),
    "vuln_threshold": ("--threshold",),
    "circuit_reg_weight": ("--lambda",),
    "augmentation": ("--aug/--no-aug",),
    "progressive_eta": ("--eta",),
    "min_tail_per_batch": ("--min-tail",),
}
OFF_SWITCHES = {"disable_dropout": "--keep-dropout"}  # bools whose "off" reads better than --no-<name>


def config_options(
    model: type[BaseModel],
    *,
    exclude: Iterable[str] = (),
    panel: str | None = None,
    defaults: BaseModel | None = None,
) -> list[inspect.Parameter]:
    """One keyword-only typer option per field of ``model`` (minus ``exclude``), in field order; the defaults are
    the fields' own or, given ``defaults`` (an instance, e.g. a nested config's default), its values."""
    skipped = set(exclude)
    return [
        _option(name, field, panel, getattr(defaults, name) if defaults is not None else _default(field))
        for name, field in model.model_fields.items()
        if name not in skipped
    ]


def with_options(*groups: list[inspect.Parameter]) -> Callable[[Callable], Callable]:
    """Add the generated options to a command whose function takes them through ``**settings``."""

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        hints = get_type_hints(command, include_extras=True)  # the command's own annotations, resolved
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in signature.parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        command.__signature__ = signature.replace(parameters=own + [p for group in groups for p in group])  # type: ignore[attr-defined]
        return command

    return decorate


def settings_of(model: type[BaseModel], settings: dict[str, Any]) -> dict[str, Any]:
    """The values of ``model``'s fields among a command's options, comma lists turned back into tuples."""
    values = {}
    for name, field in model.model_fields.items():
        if name in settings:
            value = settings[name]
            values[name] = _as_tuple(value) if _is_tuple(field.annotation) and isinstance(value, str) else value
    return values


def load_defaults(ctx: typer.Context, path: Path | None) -> Path | None:
    """``--config`` callback: the file's settings become the defaults of the command's options."""
    if path is None:
        return None
    try:
        loaded = read_yaml_mapping(path, "--config", "option names to values")
    except CartError as exc:
        raise typer.BadParameter(str(exc)) from None
    spellings = {  # every flag of an option names it in a file too: lr for learning_rate, as on the command line
        flag.lstrip("-").replace("-", "_"): p.name for p in ctx.command.params if p.name for flag in p.opts
    }
    flat = {spellings.get(name, name): value for name, value in _flatten(loaded).items()}
    known = {p.name for p in ctx.command.params if p.name}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise typer.BadParameter(f"{path}: no option {', '.join(unknown)} in 'cart {ctx.info_name}'")
    ctx.default_map = {**(ctx.default_map or {}), **flat}
    return path


ConfigFileOption = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        help="YAML or JSON file of option values (names as the options, '_' or '-'); flags given here win",
        is_eager=True,
        callback=load_defaults,
    ),
]


def _default(field: Any) -> Any:
    return field.get_default(call_default_factory=True)


def _option(name: str, field: Any, panel: str | None, default: Any) -> inspect.Parameter:
    annotation = _cli_type(field.annotation)
    flag = "--" + name.replace("_", "-")
    if annotation is bool:
        declarations: tuple[str, ...] = (f"{flag}/{OFF_SWITCHES.get(name, '--no-' + flag[2:])}",)
    else:
        declarations = (flag,)
    option = typer.Option(*declarations, *ALIASES.get(name, ()), help=field.description or "", rich_help_panel=panel)
    if isinstance(default, tuple):
        default = ",".join(map(str, default))
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, option]
    )


def _cli_type(annotation: Any) -> Any:
    """The type typer parses a field as: the field's own, with tuples as comma-separated text."""
    optional = False
    if get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation):
        optional = True
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is tuple:
        annotation = str
    return Optional[annotation] if optional else annotation


def _is_tuple(annotation: Any) -> bool:
    return get_origin(annotation) is tuple or any(get_origin(a) is tuple for a in get_args(annotation))


def _as_tuple(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _flatten(values: dict[str, Any]) -> dict[str, Any]:
    """Nested sections (``cart:``) merged into one level; lists as comma lists; ``-`` read as ``_``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= _flatten(value)
        else:
            flat[str(key).replace("-", "_")] = ",".join(map(str, value)) if isinstance(value, list | tuple) else value
    return flat
