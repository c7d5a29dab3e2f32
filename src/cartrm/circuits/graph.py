"""Circuits as communities of the coherence graph (§3.3).

Nodes are the candidate features; an edge joins two candidates whose coherence exceeds a threshold, weighted
by the coherence. The default threshold is the 0.9 quantile of the off-diagonal coherences, floored at 0 (only
pairs more dependent on tail than on head inputs can be linked). That is a ranking rule, not a test: it
always admits about a tenth of the pairs, so where fewer pairs are truly coherent it admits noise edges, and
Louvain readily attaches such a weakly linked node to a real circuit. The coherence's null distribution is
estimator- and group-size-dependent (the Gaussian estimate's noise is χ²-like and scales with 1/n of each
group), so no floor computed from the coherences alone is calibrated; pass ``threshold`` from a null (e.g. the
largest coherence after permuting the head/tail labels) for calibrated edges.

Candidates left without an edge stand as singleton circuits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import networkx as nx
import numpy as np

DEFAULT_QUANTILE = 0.9


@dataclass(frozen=True)
class CircuitMembers:
    """One circuit: its members' feature ids (ascending), their rows in the coherence matrix, and the mean
    coherence over its within-circuit pairs (0 for a singleton)."""

    members: tuple[int, ...]
    positions: tuple[int, ...]
    mean_coherence: float

    @property
    def size(self) -> int:
        return len(self.members)


def edge_threshold(coherence: np.ndarray, quantile: float = DEFAULT_QUANTILE) -> float:
    """The default edge threshold: the ``quantile`` of the off-diagonal coherences, floored at 0."""
    upper = coherence[np.triu_indices(len(coherence), k=1)]
    return max(float(np.quantile(upper, quantile)), 0.0) if len(upper) else 0.0


def coherence_graph(coherence: np.ndarray, threshold: float) -> nx.Graph:
    """Undirected graph on rows 0 … K−1 with an edge wherever the (symmetrised) coherence exceeds ``threshold``."""
    graph = nx.Graph()
    graph.add_nodes_from(range(len(coherence)))
    rows, cols = np.nonzero(np.triu(coherence > threshold, k=1))
    graph.add_weighted_edges_from((int(i), int(j), float(coherence[i, j])) for i, j in zip(rows, cols))
    return graph


def _circuit(positions: set[int], coherence: np.ndarray, candidate_ids: np.ndarray) -> CircuitMembers:
    ordered = sorted(positions, key=lambda p: candidate_ids[p])
    block = coherence[np.ix_(ordered, ordered)]
    pairs = block[np.triu_indices(len(ordered), k=1)]
    return CircuitMembers(
        members=tuple(int(candidate_ids[p]) for p in ordered),
        positions=tuple(ordered),
        mean_coherence=float(pairs.mean()) if len(pairs) else 0.0,
    )


def find_circuits(
    coherence: np.ndarray,
    candidate_ids: np.ndarray,
    threshold: float | None = None,
    method: Literal["louvain", "components"] = "louvain",
    seed: int = 0,
    min_size: int = 1,
) -> list[CircuitMembers]:
    """Partition the candidates into circuits, largest first, ties broken by smallest member id.

    ``louvain`` maximises weighted modularity (networkx, seeded so the result is reproducible);
    ``components`` takes connected components, which merges blocks joined by a single strong edge.
    """
    coherence = np.asarray(coherence, dtype=np.float64)
    candidate_ids = np.asarray(candidate_ids)
    if coherence.ndim != 2 or coherence.shape[0] != coherence.shape[1] or len(candidate_ids) != len(coherence):
        raise ValueError(f"coherence must be (K, K) with K = {len(candidate_ids)} candidates, got {coherence.shape}")
    coherence = 0.5 * (coherence + coherence.T)
    if threshold is None:
        threshold = edge_threshold(coherence)
    graph = coherence_graph(coherence, threshold)
    if method == "louvain":
        groups = nx.community.louvain_communities(graph, weight="weight", seed=seed)
    elif method == "components":
        groups = nx.connected_components(graph)
    else:
        raise ValueError(f"method must be 'louvain' or 'components', got {method!r}")
    circuits = [_circuit(group, coherence, candidate_ids) for group in groups if len(group) >= min_size]
    return sorted(circuits, key=lambda c: (-c.size, c.members[0]))
