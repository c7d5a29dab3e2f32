"""Figures of a discovery result, drawn from ``circuits.json`` alone (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from cartrm.circuits.result import Circuits
from cartrm.plotting import plt, save_figure


def plot_delta_histogram(circuits: Circuits, path: str | Path) -> None:
    """Histogram of Δ_j = E_tail[a_j] − E_head[a_j] over all features, with the candidates marked."""
    figure, axis = plt.subplots(figsize=(6, 3.5))
    hist = circuits.delta_histogram
    axis.stairs(hist.counts, hist.edges, fill=True, alpha=0.6, label="all features")
    for neuron in circuits.neurons:
        if neuron.permutation_p_value is not None:
            axis.axvline(neuron.delta, color="crimson", alpha=0.4, linewidth=0.8)
    axis.set_yscale("log")
    axis.set_xlabel("Δ = E_tail[a] − E_head[a]")
    axis.set_ylabel("features")
    axis.set_title(f"{circuits.n_significant} of {circuits.n_features} features pass FDR (red: candidates)")
    save_figure(figure, path)


def plot_coherence_graph(circuits: Circuits, path: str | Path) -> None:
    """Candidates joined by high-coherence edges, coloured by circuit."""
    graph = nx.Graph()
    circuit_of = {m.feature: i for i, c in enumerate(circuits.circuits) for m in c.members}
    label_of = {m.feature: f"L{m.layer}.{m.index}" for c in circuits.circuits for m in c.members}
    graph.add_nodes_from(circuit_of)
    graph.add_weighted_edges_from((e.source, e.target, e.coherence) for e in circuits.coherence_edges)
    figure, axis = plt.subplots(figsize=(6, 6))
    if graph.number_of_nodes():
        layout = nx.spring_layout(graph, seed=0)
        nx.draw_networkx(
            graph,
            layout,
            ax=axis,
            node_color=[circuit_of.get(n, -1) for n in graph.nodes],
            cmap="tab20",
            labels={n: label_of.get(n, str(n)) for n in graph.nodes},
            font_size=6,
            node_size=120,
            width=0.6,
        )
    axis.set_title(f"{len(circuits.circuits)} circuits; edges: coherence > {circuits.coherence_threshold or 0:.3g}")
    axis.axis("off")
    save_figure(figure, path)
