"""The typed result of circuit discovery, saved as ``circuits.json`` (schema-versioned)."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from pydantic import model_validator

from cartrm.circuits.config import DiscoveryConfig
from cartrm.errors import CartError
from cartrm.io import Artifact, Record

if TYPE_CHECKING:
    from cartrm.capture.stream import FeatureIndex

CIRCUITS_SCHEMA_VERSION = 1


class NeuronRef(Record):
    site: str
    layer: int
    index: int
    feature: int

    @classmethod
    def of(cls, features: FeatureIndex, feature: int) -> NeuronRef:
        """The neuron numbered ``feature`` on ``features``' axis."""
        site, local = features.locate(int(feature))
        return cls(site=site.name, layer=site.layer, index=local, feature=int(feature))


class NeuronRecord(NeuronRef):
    delta: float
    effect_size: float
    tau_score: float
    tau_specialised: bool
    p_value: float
    q_value: float
    permutation_p_value: float | None = None


class PatchResult(Record):
    """Exact activation patching of one circuit on tail inputs, for one patch mode."""

    mode: str
    mean_abs_delta_reward: float
    tail_accuracy_change: float
    attribution_mean_abs_delta_reward: float
    null_mean_abs_delta_reward: list[float] = []
    p_value: float | None = None


class CircuitRecord(Record):
    id: str
    members: list[NeuronRef]
    coherence: float
    tail_delta: float
    tail_effect_size: float
    divergence: float
    decomposition_weight: float
    patch_effect: float | None = None
    patch_p_value: float | None = None
    attribution_effect: float | None = None
    patch: dict[str, PatchResult] = {}

    @model_validator(mode="after")
    def _distinct_members(self) -> CircuitRecord:
        """A neuron listed twice would count twice in a circuit's activation (eq. 10, 12) and in its size |C|."""
        features = [m.feature for m in self.members]
        repeated = sorted({f for f in features if features.count(f) > 1})
        if repeated:
            raise ValueError(f"circuit {self.id} lists neuron(s) {', '.join(map(str, repeated))} more than once")
        return self


class Histogram(Record):
    edges: list[float]
    counts: list[int]


class CoherenceEdge(Record):
    source: int
    target: int
    coherence: float


class DecompositionRecord(Record):
    r2: float
    cv_r2: float | None
    intercept: float


class Circuits(Artifact):
    """Everything ``cart discover`` found; later phases load it with :meth:`load`."""

    kind = "circuits"
    schema_version: int = CIRCUITS_SCHEMA_VERSION
    model: str
    model_fingerprint: str
    model_type: str | None = None
    data: str
    tail_description: str
    config: DiscoveryConfig
    n_examples: int
    n_features: int
    n_significant: int
    tau: float
    n_tau_specialised: int
    delta_histogram: Histogram
    neurons: list[NeuronRecord]
    coherence_threshold: float | None
    coherence_edges: list[CoherenceEdge]
    circuits: list[CircuitRecord]
    decomposition: DecompositionRecord | None
    null_mode: str
    attribution_rank_correlation: float | None

    def effect_share(self, ids: Collection[str], margin: float) -> dict[str, float]:
        """Each listed circuit's patch effect (mean |ΔR| per tail text) over ``margin``, a reward scale such as the
        model's mean |reward margin| on tail pairs; circuits that were not patched are left out."""
        if not margin > 0:
            return {}
        return {c.id: c.patch_effect / margin for c in self.circuits if c.id in ids and c.patch_effect is not None}


def check_circuits_fit(circuits: Circuits, model: Any, source: str = "circuits.json") -> FeatureIndex:
    """The feature axis of ``circuits`` on ``model`` (a Hugging Face module), after checking that the file
    describes this architecture: its sites exist, every member's site, layer, index and feature number agree
    with them, every circuit has members, ids are unique and the circuits' numbers are finite."""
    from cartrm.capture.sites import list_sites
    from cartrm.capture.stream import FeatureIndex

    features = FeatureIndex(tuple(list_sites(model, tuple(circuits.config.sites))))
    model_type = model.config.model_type
    if circuits.model_type not in (None, model_type) or features.size != circuits.n_features:
        raise CartError(
            f"{source} describes {circuits.n_features} features of a {circuits.model_type or '?'} model at sites "
            f"{circuits.config.sites}, but this {model_type} model has {features.size}: it was made from a "
            "different architecture"
        )
    sites = {site.name: site for site in features.sites}
    seen: set[str] = set()
    for circuit in circuits.circuits:
        where = f"{source}: circuit {circuit.id!r}"
        if circuit.id in seen:
            raise CartError(f"{where}: the id is used twice")
        seen.add(circuit.id)
        if not circuit.members:
            raise CartError(f"{where} has no members")
        numbers = {"coherence": circuit.coherence, "tail_delta": circuit.tail_delta, "divergence": circuit.divergence}
        for name, value in numbers.items():
            if not math.isfinite(value):
                raise CartError(f"{where}: {name} is {value}, not a finite number")
        for member in circuit.members:
            site = sites.get(member.site)
            if site is None or site.layer != member.layer or not 0 <= member.index < site.width:
                raise CartError(
                    f"{where}: member {member.site}[{member.index}] (layer {member.layer}) is not a neuron of this "
                    f"model (its sites: {', '.join(sites)})"
                )
            if member.feature != features.offset_of(member.site) + member.index:
                raise CartError(
                    f"{where}: member {member.site}[{member.index}] has feature number {member.feature}, but that "
                    f"neuron is feature {features.offset_of(member.site) + member.index} of this model"
                )
    return features
