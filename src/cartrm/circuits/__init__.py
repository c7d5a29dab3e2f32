"""Phase 1 of CART (§3.3): array-level statistics of circuit discovery over streamed, pooled activations."""

from cartrm.circuits.decomposition import Decomposition, decompose_reward
from cartrm.circuits.graph import CircuitMembers, coherence_graph, edge_threshold, find_circuits
from cartrm.circuits.mutual_information import (
    CorrelationAccumulator,
    JointHistogram,
    binned_mutual_information,
    coherence,
    gaussian_mutual_information,
)
from cartrm.circuits.statistics import (
    HEAD,
    TAIL,
    DifferentialResult,
    GroupMoments,
    differential_activation,
    hedges_g,
    permutation_p_values,
    select_candidates,
    tau_specialised,
    welch_p_values,
)

__all__ = [
    "HEAD",
    "TAIL",
    "CircuitMembers",
    "CorrelationAccumulator",
    "Decomposition",
    "DifferentialResult",
    "GroupMoments",
    "JointHistogram",
    "binned_mutual_information",
    "coherence",
    "coherence_graph",
    "decompose_reward",
    "differential_activation",
    "edge_threshold",
    "find_circuits",
    "gaussian_mutual_information",
    "hedges_g",
    "permutation_p_values",
    "select_candidates",
    "tau_specialised",
    "welch_p_values",
]
