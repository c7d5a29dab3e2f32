"""The typed result of circuit discovery, saved as ``circuits.json`` (schema-versioned)."""

from __future__ import annotations

from cartrm.circuits.config import DiscoveryConfig
from cartrm.io import Artifact, Record

CIRCUITS_SCHEMA_VERSION = 1


class NeuronRef(Record):
    site: str
    layer: int
    index: int
    feature: int


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
