"""The settings of ``cart run`` (:class:`RunConfig`), validated once before anything runs, and its presets.

Which methods may run together, which is whose compute-matched control and which continue bt are asked of the
method registry (:mod:`cartrm.training.registry`), never spelled out here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cartrm.circuits.config import DiscoveryConfig
from cartrm.datasets import BenchmarkConfig
from cartrm.errors import CartError
from cartrm.io import read_yaml_mapping
from cartrm.training import registry
from cartrm.training.config import TrainConfig
from cartrm.vulnerability.assess import AssessConfig

BENCHMARK_TAIL_SPEC = "label:is_tail"
ALL_METHODS = (
    "bt",
    "label-smoothing",
    "reweight",
    "hidden-reg",
    "tail-upsample",
    "ensemble-mean",
    "cart",
    "cart-ensemble",
)
QUICK_METHODS = ("bt", "cart")  # with continue_steps, the run adds bt-continued and tail-upsample
QUICK_CONTINUE_STEPS = 11  # half of bt's 22 steps: warm-started CART, as measured best (docs/results.md)
STANDARD_METHODS = ("bt", "bt-continued", "cart")  # add reweight,ensemble-mean with --methods (docs/results.md)
STANDARD_TRAIN_PAIRS, STANDARD_BT_STEPS, STANDARD_CONTINUE_STEPS = 1600, 100, 50  # docs/results.md: sizing
ABLATION_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


class UserSplit(BaseModel):
    """How a user's data without its own train/test split is split, per seed: head and tail pairs separately
    (stratified), so the tail's share is the same in every split, and the tail test set raised to
    ``min_tail_test`` pairs where the data allow (at most half of the tail pairs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    validation_share: float = Field(0.1, ge=0, lt=1, description="share of head and of tail pairs for validation")
    test_share: float = Field(0.1, gt=0, lt=1, description="share of head and of tail pairs for the test split")
    min_tail_test: int = Field(
        100, ge=0, description="tail test pairs to reach at least, taking at most half of the tail pairs"
    )


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "default"
    out_root: Path = Path("runs")
    model: str = "minilm"
    seeds: tuple[int, ...] = Field((0,), min_length=1)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    data: str | None = Field(None, description="the user's preference file instead of the embedded benchmark")
    tail_by: str = BENCHMARK_TAIL_SPEC
    user_split: UserSplit = Field(default_factory=UserSplit)
    train: TrainConfig = Field(default_factory=TrainConfig)
    methods: tuple[str, ...] = QUICK_METHODS
    discovery: DiscoveryConfig = Field(default_factory=lambda: DiscoveryConfig(patch_pairs=16, max_validated=5))
    assessment: AssessConfig = Field(default_factory=AssessConfig)
    analysis_pairs: int = Field(
        400, ge=16, description="training pairs (up to half tail) used for discovery and assessment"
    )
    ensemble_members: int = Field(3, ge=2)
    bon_prompts: int = Field(16, ge=0, description="best-of-n test prompts per group (head, tail); 0 skips best-of-n")
    bon_candidates: int = Field(256, ge=2, description="responses drawn per best-of-n prompt (largest n)")
    stability_top_k: int = Field(64, ge=1, description="top tail neurons compared across seeds and before/after CART")
    continue_steps: int = Field(
        0,
        ge=0,
        description="warm start: cart continues from the seed's trained bt model for this many optimizer steps "
        "(a fresh optimizer), and bt-continued, its compute-matched control, runs the same steps on the same data "
        "with the Bradley–Terry loss; 0: cart trains from the base model",
    )

    tune: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict,
        description="fair tuning: per method, a grid of TrainConfig overrides (a nested 'cart:' allowed); each "
        "variant is trained and scored on the validation split, every tuned method gets the same number of "
        "variants (the budget), and only the selected one is tested (see tune_head_tolerance)",
    )
    tune_head_tolerance: float = Field(
        0.01,
        ge=0,
        description="the selected variant has the best validation tail accuracy (gold where known) among those "
        "whose head accuracy is within this of the compute-matched control's",
    )

    ablations: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="CART with one component changed: per name, TrainConfig overrides (a nested 'cart:' allowed) "
        "applied on top of cart's settings (the selected variant's when cart is tuned); 'warm_start: false' trains "
        "from the base model for bt's steps plus continue_steps instead. Each runs as the method cart-NAME from "
        "cart's start and data, is scored on the test split (no best-of-n) and compared with cart",
    )

    data_controls: bool = Field(
        True,
        description="add each CART method's data control (tail-upsample: plain Bradley-Terry on the same extra tail "
        "pairs), so the verdict says what the circuits add over showing more tail pairs; a run that tunes adds it "
        "only when its grids have one for it",
    )

    concentration_pairs: int = Field(
        0,
        ge=0,
        description="validation pairs per group (tail, head, conflict pairs on the benchmark) on which to measure "
        "whether bt's most tail-specific neurons carry its tail margin (cartrm.circuits.concentration; 0: off)",
    )
    anchors: tuple[Literal["bag-of-words"], ...] = Field(
        (),
        description="reward models fitted without a network, scored and compared like the methods: bag-of-words "
        "(logistic Bradley-Terry on the responses' word counts, fitted on the training labels): where it ranks the "
        "tail as well as the trained models, the tail's preferences are carried by words",
    )

    @model_validator(mode="before")
    @classmethod
    def _add_matched_control(cls, values: Any) -> Any:
        """A warm-started cart (or reweight-continued) brings its compute-matched control, as a circuit method
        brings bt; a CART method brings its data control (``data_controls``)."""
        if not isinstance(values, dict) or not isinstance(values.get("methods", QUICK_METHODS), list | tuple):
            return values
        methods = list(values.get("methods", QUICK_METHODS))
        known = registry.names()
        if values.get("data_controls", True):
            methods = _with_data_controls(methods, values.get("tune") or {})
        if values.get("continue_steps"):
            warm = [m for m in methods if m in known and m != registry.WARM_CONTROL and registry.continues_bt(m, 1)]
            if warm and registry.WARM_CONTROL not in methods:
                first = methods.index(warm[0])
                methods = [*methods[:first], registry.WARM_CONTROL, *methods[first:]]
        return {**values, "methods": tuple(methods)}

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: tuple[int, ...]) -> tuple[int, ...]:
        """A seed is the unit of replication: one listed twice would count one training run as two."""
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated or min(seeds) < 0:
            shown = ", ".join(map(str, repeated)) or str(min(seeds))
            raise ValueError(f"seeds are distinct non-negative integers ({shown} is not)")
        return seeds

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        known = registry.names()
        unknown = [m for m in methods if m not in known]
        if unknown or not methods:
            raise ValueError(f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(known)}")
        needs_baseline = any(_reads_bt(m) for m in methods) and registry.BASELINE not in methods
        ordered = ((registry.BASELINE,) if needs_baseline else ()) + tuple(dict.fromkeys(methods))
        # bt first (CART reads its circuits), then bt-continued (warm-started methods are selected against it)
        return tuple(sorted(ordered, key=lambda m: (m != registry.BASELINE, m != registry.WARM_CONTROL)))

    @model_validator(mode="after")
    def _control_needs_steps(self) -> RunConfig:
        continued = [m for m in self.methods if registry.design(m).start == "bt"]
        if continued and not self.continue_steps:
            raise ValueError(f"{', '.join(continued)} continue bt for continue_steps steps: set continue_steps > 0")
        return self

    @model_validator(mode="after")
    def _fair_grids(self) -> RunConfig:
        """Tuning is fair when every method compared gets the same budget: all single-model methods but bt (the
        start and the reference) have grids of one size."""
        budgets = {method: len(grid) for method, grid in self.tune.items()}
        if len(set(budgets.values())) > 1:
            raise ValueError(f"tune: every tuned method gets the same number of variants, not {budgets}")
        untuned = [m for m in self.methods if self.tune and _tunable(m) and m not in self.tune]
        if untuned:
            raise ValueError(
                f"tune: every method but bt and the ensembles gets a grid of the same size; "
                f"missing {', '.join(untuned)}"
            )
        for method, grid in self.tune.items():
            _method_stays(f"tune: {method}", grid)
            if method not in self.methods or not _tunable(method) or not grid:
                raise ValueError(
                    f"tune: '{method}' cannot be tuned; tune single-model methods of this run other than bt "
                    "(bt is the start and the reference), each with at least one variant"
                )
            control = registry.matched_control(method, self.methods)
            if control not in self.methods:
                raise ValueError(f"tune: '{method}' is selected against {control}")
            for overrides in grid:
                variant_config(self.train, overrides)
        return self

    @model_validator(mode="after")
    def _valid_ablations(self) -> RunConfig:
        if self.ablations and "cart" not in self.methods:
            raise ValueError("ablations change cart's settings: add cart to the methods")
        for name, overrides in self.ablations.items():
            _method_stays(f"ablation '{name}'", [overrides])
            label = f"cart-{name}"
            if not ABLATION_NAME.fullmatch(name) or label in registry.names():
                raise ValueError(
                    f"ablation '{name}': use lower-case letters, digits and '-' in a name that is not a method's"
                )
            if not isinstance(overrides.get("warm_start", True), bool):
                raise ValueError(f"ablation '{name}': warm_start is true or false")
            if overrides.get("warm_start") is False and not self.continue_steps:
                raise ValueError(f"ablation '{name}': warm_start: false needs a warm-started cart (continue_steps > 0)")
            for cart in self.tune.get("cart", [{}]):  # any variant may be the selected one
                variant_config(variant_config(self.train, cart), without_start(overrides))
        return self

    def warm_started(self, method: str) -> bool:
        """Whether ``method`` continues the seed's trained bt model in this run."""
        return registry.continues_bt(method, self.continue_steps)

    @property
    def ablated_methods(self) -> dict[str, dict[str, Any]]:
        """The methods the ablations run as, cart-NAME, with their overrides."""
        return {f"cart-{name}": overrides for name, overrides in self.ablations.items()}

    @classmethod
    def preset(cls, kind: str, /, **overrides) -> RunConfig:
        """``quick``: one seed, bt vs cart, sizes that fit 10 minutes on 2 CPU cores with MiniLM (about 5 minutes,
        measured in docs/results.md). ``standard``: the experiment that can tell (docs/results.md): bt trained
        until it has learned the head, cart warm-started from it against bt-continued, the baselines, five seeds,
        validation and test splits sized for tuning and for the effect looked for. ``full``: three seeds, every
        method, the largest sizes (a GPU job)."""
        if kind not in PRESETS:
            raise CartError(f"unknown preset '{kind}'; choose from {', '.join(PRESETS)}")
        return cls(**{**PRESETS[kind](), **overrides})

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        return cls.model_validate(read_yaml_mapping(path, "--config", "run settings"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @property
    def directory(self) -> Path:
        return self.out_root / self.name

    @property
    def uses_benchmark(self) -> bool:
        return self.data is None


def _quick() -> dict[str, Any]:
    return dict(
        name="quick",
        benchmark=BenchmarkConfig(n_train=352, n_validation=100, n_test_head=120, n_test_tail=360),
        train=TrainConfig(epochs=1, batch_size=16, learning_rate=1e-4, max_length=128),
        methods=QUICK_METHODS,
        continue_steps=QUICK_CONTINUE_STEPS,
        bon_candidates=128,
        seeds=(0,),
        bon_prompts=2,
        analysis_pairs=160,
        discovery=DiscoveryConfig(patch_pairs=4, max_validated=2, n_null=10),
        assessment=AssessConfig(max_circuits=3, sensitivity_examples=8),
    )


def _standard() -> dict[str, Any]:
    return dict(
        name="standard",
        benchmark=BenchmarkConfig(n_train=STANDARD_TRAIN_PAIRS, n_validation=1200, n_test_head=400, n_test_tail=800),
        train=TrainConfig(max_steps=STANDARD_BT_STEPS, batch_size=16, learning_rate=5e-5, max_length=128),
        continue_steps=STANDARD_CONTINUE_STEPS,
        methods=STANDARD_METHODS,
        seeds=(0, 1, 2, 3, 4),
        ensemble_members=2,
        bon_prompts=12,
        bon_candidates=64,
        analysis_pairs=200,
        discovery=DiscoveryConfig(patch_pairs=8, max_validated=3, n_null=20),
        assessment=AssessConfig(max_circuits=3, sensitivity_examples=16),
    )


def _full() -> dict[str, Any]:
    return dict(
        name="full",
        benchmark=BenchmarkConfig(n_train=6000, n_validation=600),
        train=TrainConfig(epochs=2, batch_size=16, learning_rate=5e-5, max_length=128),
        methods=ALL_METHODS,
        seeds=(0, 1, 2),
        bon_prompts=32,
    )


PRESETS = {"quick": _quick, "standard": _standard, "full": _full}


def variant_config(base: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """``base`` with a tuning grid's ``overrides``: a nested ``cart`` dict updates CART's settings, or, naming a
    ``recipe``, replaces them with that recipe's and the dict's other settings."""
    values = base.model_dump()
    for name, value in overrides.items():
        merged = name == "cart" and isinstance(value, dict) and "recipe" not in value
        values[name] = {**values[name], **value} if merged else value
    return TrainConfig.model_validate(values)


def without_start(overrides: dict[str, Any]) -> dict[str, Any]:
    """An ablation's TrainConfig overrides: all but its ``warm_start`` switch."""
    return {k: v for k, v in overrides.items() if k != "warm_start"}


def _method_stays(where: str, overrides: list[dict[str, Any]]) -> None:
    """A variant or an ablation changes a method's settings, never which method it is (its row would be another
    method's model under this method's name)."""
    if any(isinstance(o, dict) and "method" in o for o in overrides):
        raise ValueError(f"{where}: 'method' cannot be changed here; list the other method in methods instead")


def _with_data_controls(methods: list[str], tune: dict[str, Any]) -> list[str]:
    """``methods`` with each CART method's data control before it (a tuned run's only when its grid is given, so
    an earlier run's config runs as it did)."""
    known, found = registry.names(), []
    for method in methods:
        control = registry.data_control(method) if method in known else None
        if control and control not in methods and control not in found and (not tune or control in tune):
            found.append(control)
        found.append(method)
    return found


def _reads_bt(method: str) -> bool:
    """Whether a method needs the seed's bt model: its circuits, or as the model it continues."""
    design = registry.design(method)
    return design.uses_circuits or design.start != "base"


def _tunable(method: str) -> bool:
    """Every single-model method but bt (the start and the reference) is tuned when a run tunes."""
    return method != registry.BASELINE and not registry.is_ensemble(method)
