"""Phase 1 of CART (§3.3): array-level statistics of circuit discovery over streamed, pooled activations. Submodules
load on first use (they need torch), so the ``cart`` command starts fast."""

from typing import TYPE_CHECKING

from cartrm.lazy import lazy_attributes

_LAZY = {
    "Decomposition": "cartrm.circuits.decomposition",
    "decompose_reward": "cartrm.circuits.decomposition",
    "CircuitMembers": "cartrm.circuits.graph",
    "coherence_graph": "cartrm.circuits.graph",
    "edge_threshold": "cartrm.circuits.graph",
    "find_circuits": "cartrm.circuits.graph",
    "CorrelationAccumulator": "cartrm.circuits.mutual_information",
    "JointHistogram": "cartrm.circuits.mutual_information",
    "binned_mutual_information": "cartrm.circuits.mutual_information",
    "coherence": "cartrm.circuits.mutual_information",
    "gaussian_mutual_information": "cartrm.circuits.mutual_information",
    "HEAD": "cartrm.circuits.statistics",
    "TAIL": "cartrm.circuits.statistics",
    "DifferentialResult": "cartrm.circuits.statistics",
    "GroupMoments": "cartrm.circuits.statistics",
    "differential_activation": "cartrm.circuits.statistics",
    "hedges_g": "cartrm.circuits.statistics",
    "permutation_p_values": "cartrm.circuits.statistics",
    "select_candidates": "cartrm.circuits.statistics",
    "tau_specialised": "cartrm.circuits.statistics",
    "welch_p_values": "cartrm.circuits.statistics",
}

__all__ = [
    "CircuitMembers",
    "CorrelationAccumulator",
    "Decomposition",
    "DifferentialResult",
    "GroupMoments",
    "HEAD",
    "JointHistogram",
    "TAIL",
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

if TYPE_CHECKING:
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


__getattr__ = lazy_attributes(__name__, _LAZY)
