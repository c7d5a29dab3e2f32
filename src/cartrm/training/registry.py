"""Every method's place in an experiment, asked by name: the one table the pipeline, the report and the CLI read.

A training method declares its :class:`Design` where it is defined (``design`` on its class, see
:mod:`cartrm.training.methods`); methods that run another's loss from another start (``bt-continued``) or that
are ensembles of other methods' models register a design of their own here. So adding a baseline is one file: its
class with its design, nothing in the pipeline or the report.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from cartrm.errors import CartError

WARM_CONTROL = "bt-continued"  # the compute-matched control of every method that continues bt
BASELINE = "bt"  # the first model of every seed: the start of warm-started methods and the circuits' source


@dataclass(frozen=True)
class Design:
    """What an experiment needs to know of a method.

    ``start``: ``base`` trains from the base model; ``bt-when-warm`` continues the seed's trained bt model when the
    run has ``continue_steps`` (from the base model otherwise); ``bt`` always continues it (the run must have
    ``continue_steps``). ``trains_as``: the training method whose loss it runs (None: its own name).
    ``uses_circuits``: it reads the baseline's circuits and vulnerability report. ``challenger``: a CART method,
    compared with the other methods on the same test pairs. ``ensemble``: (member method, weighting) for a method
    whose model is an ensemble of members. ``control``: its compute-matched control when that is fixed (else the
    rule of :func:`matched_control`). ``compared_with``: the only methods a challenger is compared with (None: every
    method that is not a challenger). ``data_control``: the method that trains on the same extra tail pairs without
    the circuit parts (CART's: tail-upsample); a run adds it, and the verdict splits the challenger's change over its
    control into what more tail pairs give and what the circuits add.
    """

    start: Literal["base", "bt-when-warm", "bt"] = "base"
    trains_as: str | None = None
    uses_circuits: bool = False
    challenger: bool = False
    ensemble: tuple[str, str] | None = None
    control: str | None = None
    compared_with: tuple[str, ...] | None = None
    data_control: str | None = None


DESIGNS: dict[str, Design] = {}


def register_design(name: str, design: Design) -> None:
    DESIGNS[name] = design


register_design(WARM_CONTROL, Design(start="bt", trains_as=BASELINE))
register_design("reweight-continued", Design(start="bt", trains_as="reweight"))
register_design("ensemble-mean", Design(ensemble=(BASELINE, "uniform")))
register_design(
    "cart-ensemble",
    Design(
        ensemble=("cart", "fit"),
        uses_circuits=True,
        challenger=True,
        control="ensemble-mean",
        compared_with=("ensemble-mean",),
    ),
)


def _builtins() -> dict[str, Design]:
    importlib.import_module("cartrm.training.methods")  # importing the package registers every built-in method
    return DESIGNS


def names() -> tuple[str, ...]:
    """Every method an experiment can run, in registration order."""
    return tuple(_builtins())


def design(name: str) -> Design:
    designs = _builtins()
    if name not in designs:
        raise CartError(f"unknown method '{name}'; available: {', '.join(designs)}")
    return designs[name]


def trains_as(name: str) -> str:
    """The training method whose loss ``name`` runs."""
    return design(name).trains_as or name


def continues_bt(name: str, continue_steps: int) -> bool:
    """Whether ``name`` starts from the seed's trained bt model in a run with ``continue_steps``."""
    start = design(name).start
    return start == "bt" or (start == "bt-when-warm" and continue_steps > 0)


def is_ensemble(name: str) -> bool:
    return design(name).ensemble is not None


def matched_control(method: str, methods: Collection[str]) -> str:
    """The compute-matched control a method is read (and tuned) against: the same start, steps and data. A method
    that continues bt is read against bt-continued (bt when the run has none); a fixed control is its own
    (cart-ensemble: ensemble-mean, as many members); every other method trains like bt."""
    found = design(method)
    if found.control:
        return found.control
    if found.start != "base" and method != WARM_CONTROL:
        return WARM_CONTROL if WARM_CONTROL in methods else BASELINE
    return BASELINE


def data_control(method: str) -> str | None:
    """The method that shows ``method``'s extra tail pairs without its circuit parts (None: there is none)."""
    return design(method).data_control


def baselines_of(challenger: str, methods: Collection[str]) -> list[str]:
    """The methods a challenger is compared with: its ``compared_with``, or every method that is not a challenger."""
    listed = design(challenger).compared_with
    if listed is not None:
        return [m for m in listed if m in methods]
    designs = _builtins()
    return [m for m in methods if not (m in designs and designs[m].challenger)]  # ablations (cart-NAME) are read too
