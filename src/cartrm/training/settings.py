"""Each training method's own settings: one pydantic model per method with knobs, read by the method as
``self.settings`` (:class:`~cartrm.training.methods.base.TrainingMethod`).

They are kept apart from the methods' code (which needs torch) so that the CLI generates its options from them
without loading torch. In a config file and in ``train_config.json`` a method's settings sit flat among the
loop settings (``label_smoothing: 0.1``) or, for a model with a ``section``, under it (``cart: {...}``): the
spellings every earlier version wrote, so their files still load and their runs keep their identity.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from cartrm.errors import CartError
from cartrm.runs import KEYED_WHEN_SET
from cartrm.runs.identity import for_stage_key, without_keyed_defaults


class MethodSettings(BaseModel):
    """Base of a method's settings (a method without knobs has these: none)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # inf and NaN are never settings
    section: ClassVar[str | None] = None  # None: flat among the loop settings in a file; else under this key

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        dumped = handler(self)
        return without_keyed_defaults(self, dumped) if for_stage_key(info) else dumped


class LabelSmoothingSettings(MethodSettings):
    label_smoothing: float = Field(0.1, ge=0, lt=0.5, description="ε of the label-smoothing baseline")


class ReweightSettings(MethodSettings):
    tail_weight: float | None = Field(
        None, gt=0, description="reweight baseline: tail weight (default N_head / N_tail)"
    )


class HiddenRegSettings(MethodSettings):
    hidden_reg_weight: float = Field(
        0.1, ge=0, description="hidden-reg baseline: weight of the hidden-state drift penalty"
    )


Recipe = Literal["best", "paper"]
DEFAULT_RECIPE: Recipe = "best"
RECIPES: dict[str, dict[str, Any]] = {
    "best": {
        "tail_sampling": "add",
        "aug_scaling": "batch_share",
        "circuit_reg_form": "within_sides",
        "aug_vocabulary": "per_group",
    },
    "paper": {},
}
"""CART's recipes: the settings a recipe gives the fields a config leaves unset.

``paper``: eq. 10-16 as the paper states them (every field at its own default; the default up to 2026-12-03).
``best``: the variant measured best so far, the default: warm-started from bt, it gained +1.6 tail gold points
[+0.6, +2.7] over bt-continued on the standard preset, 5 seeds, head within 1 point (docs/results.md, "Tuned CART
against bt-continued, reweight-continued and ensemble-mean, 5 seeds with per-pair scores"); the paper's variant lost
points there. Its gain needs the warm start (``cart train --init-from`` a bt model, ``cart run`` with
``continue_steps``). Re-choose ``best`` whenever a later measurement beats it."""


class CartConfig(MethodSettings):
    """Components and weights of the CART objective (eq. 16: ``L_head + L_aug + L_circuit + L_prog``).

    Circuits and their vulnerability report are inputs of training (``train(..., circuits=, vulnerability=)``;
    ``cart train --circuits --vulnerability``); the targets ``C_v`` are the report's or ``target_circuits``.
    Without circuits, training runs ``warmup_steps`` of plain Bradley–Terry, then discovers and assesses
    circuits on the current model itself. A field left unset takes its ``recipe``'s value (:data:`RECIPES`), else
    its own default; the dump records the recipe and every resolved setting.
    """

    section: ClassVar[str | None] = "cart"

    @model_validator(mode="before")
    @classmethod
    def _recipe_fills_unset(cls, values: Any) -> Any:
        if isinstance(values, dict):
            return {**RECIPES.get(values.get("recipe", DEFAULT_RECIPE), {}), **values}
        return values

    recipe: Recipe = Field(
        DEFAULT_RECIPE,
        description="the settings CART's unset options take: best (the variant measured best so far, see "
        "cartrm.training.settings.RECIPES) or paper (eq. 10-16 as the paper states them)",
        json_schema_extra=KEYED_WHEN_SET,
    )

    target_circuits: tuple[str, ...] | None = Field(
        None, description="explicit circuit ids for C_v (overrides the targets)"
    )
    targets_from: Literal["circuits", "decisive", "random"] = Field(
        "circuits",
        description="C_v: circuits (the vulnerability report's targets, or target_circuits); beyond the paper, "
        "decisive (one circuit of the decisive_neurons neurons the model's tail rewards rest on most, by mean "
        "|first-order ΔR| under head-mean patching on discovery_pairs training pairs, found on the model when its "
        "targets are set); or random, a control (the circuits' targets with each neuron replaced by a random "
        "other one of its site, seeded by the run's seed: everything that reads C_v reads those)",
        json_schema_extra=KEYED_WHEN_SET,
    )
    decisive_neurons: int = Field(
        10,
        ge=1,
        description="neurons in the decisive circuit (targets_from decisive)",
        json_schema_extra=KEYED_WHEN_SET,
    )
    augmentation: bool = Field(True, description="circuit-guided augmentation (eq. 10-11)")
    aug_weight: float = Field(1.0, ge=0, description="weight of L_aug (eq. 10-11)")
    aug_scaling: Literal["separate_mean", "batch_share"] = Field(
        "separate_mean",
        description="how L_aug enters the loss: separate_mean (its own mean over the batch's augmented pairs, "
        "so each weighs about B/(tail pairs) times an original pair) or batch_share (each augmented pair joins "
        "the batch's Bradley-Terry mean with weight w_t/B, like a tail pair)",
    )
    aug_candidates: int = Field(8, ge=1, description="transformations G(x) drawn per tail pair")
    aug_keep: int = Field(1, ge=1, description="M: candidates kept per tail pair (largest circuit activation)")
    aug_transforms: tuple[str, ...] = Field(
        ("rare_token", "drop_shared_sentence", "reorder", "format"),
        description=(
            "rule-based G(x) (see cartrm.training.transforms.TRANSFORMS); 'synonym' is left out by default because "
            "it kept the gold label on only ~71% of benchmark tail pairs"
        ),
    )
    aug_vocabulary: Literal["pooled", "per_group"] = Field(
        "pooled",
        description="where rare_token draws its replacement words: pooled (words of all tail pairs against the "
        "head's; on the benchmark mostly another tail domain's, whose gold rules may differ) or per_group (words of "
        "the source pair's own group against every other pair's: its aug_group_column value, else its k-means "
        "cluster of tail embeddings)",
    )
    aug_group_column: str = Field("domain", description="data column naming a pair's group for per_group")
    aug_selection: Literal["circuits", "random", "against_circuits"] = Field(
        "circuits",
        description="which candidates are kept: circuits (the largest Σ_c a_c(x'), eq. 10), random (a seeded "
        "draw: the control that isolates eq. 10's argmax) or against_circuits (beyond the paper: those whose target "
        "circuits' chosen − rejected gap points most against the label; pair it with the move_sentence transform)",
    )
    generator: str | None = Field(None, description="local causal LM folder for sampled rewrites")
    circuit_reg: bool = Field(True, description="circuit variance regulariser (eq. 12)")
    circuit_reg_weight: float = Field(1.0, ge=0, description="λ of eq. 12")
    grad_norm_every: int = Field(
        0,
        ge=0,
        description="every N optimizer steps, log each loss term's gradient norm and its share of their sum "
        "(grad_norm/*, grad_share/*; costs a backward pass per term on those steps; 0: never)",
    )
    circuit_reg_form: Literal["pooled", "within_sides", "invariance"] = Field(
        "pooled",
        description="eq. 12's variance over the batch's tail texts: pooled (chosen and rejected together, as "
        "written; the chosen-rejected gap then counts as variance, so the term fights the preference), "
        "within_sides (the mean of the variance over chosen texts and over rejected texts), or invariance "
        "(λ Σ_c mean (a_c(x̃) − a_c(x))² between each kept augmentation and its source text; needs augmentation)",
    )
    progressive: bool = Field(True, description="progressive tail weights (eq. 13)")
    progressive_eta: float | None = Field(
        None, gt=0, description="η of eq. 13; default w_max / (progressive_ramp · total steps)"
    )
    progressive_ramp: float = Field(
        0.5, gt=0, le=1, description="share of training over which tail weights reach w_max"
    )
    w_max: float = Field(1.0, gt=0, description="cap of the tail weight; 1 reproduces the paper")
    circuit_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="beyond the paper: zero each target circuit's neurons in a tail text's forward pass with this "
        "probability, so the tail reward cannot rest on the vulnerable circuits alone (0: off)",
    )
    min_tail_per_batch: int = Field(4, ge=0, description="k: tail pairs guaranteed in every batch")
    tail_sampling: Literal["swap", "add"] = Field(
        "swap",
        description="how batches get their k tail pairs: swap (replace head pairs of a batch short of them; CART "
        "then sees fewer distinct head pairs than bt) or add (k tail pairs on top of bt's own batches)",
    )
    rediscover_every: int = Field(0, ge=0, description="re-run discovery and assessment every N steps (0: never)")
    warmup_steps: int | None = Field(None, ge=1, description="BT steps before self-discovery; default 10% of the steps")
    discovery_pairs: int = Field(256, ge=16, description="pairs used when discovering / assessing during training")
    top_targets: int = Field(3, ge=1, description="circuits in C_v when training picks the targets itself")

    @model_validator(mode="after")
    def _compatible_options(self) -> CartConfig:
        if self.circuit_reg and self.circuit_reg_form == "invariance" and not self.augmentation:
            raise ValueError(
                "circuit_reg_form invariance compares augmentations with their sources: turn augmentation on"
            )
        if self.targets_from == "decisive" and self.target_circuits:
            raise ValueError("target_circuits names circuits, targets_from decisive finds its own: choose one")
        if self.circuit_dropout and self.circuit_reg:
            raise ValueError(
                "circuit_dropout replaces the circuit regulariser (eq. 12 would read the dropped activations): "
                "turn circuit_reg off (--no-circuit-reg)"
            )
        return self


SETTINGS: dict[str, type[MethodSettings]] = {
    "label-smoothing": LabelSmoothingSettings,
    "reweight": ReweightSettings,
    "hidden-reg": HiddenRegSettings,
    "cart": CartConfig,
}
"""The settings model of every training method with knobs, by method name (a method missing here has none)."""


def register_settings(method: str, settings: type[MethodSettings]) -> str:
    """The method whose entry of a config holds ``method``'s settings: the method that registered ``settings``
    first (a subclass of CART reads CART's), else ``method``, registering them (a method defined outside this
    package); their flat option names must not be taken already."""
    owner = next((name for name, model in SETTINGS.items() if model is settings), None)
    if owner is not None or not settings.model_fields:
        return owner or method
    taken = {spelling for name, model in SETTINGS.items() if name != method for spelling in spellings(model)}
    clash = sorted(taken & set(spellings(settings)))
    if clash:
        raise CartError(f"method {method!r}: its settings {', '.join(clash)} are another method's already")
    SETTINGS[method] = settings
    return method


def spellings(settings: type[MethodSettings]) -> tuple[str, ...]:
    """The names a method's settings take in a config file: its section, or its fields when it has none."""
    return (settings.section,) if settings.section else tuple(settings.model_fields)
