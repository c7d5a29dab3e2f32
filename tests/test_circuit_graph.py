import numpy as np
import pytest

from cartrm.circuits import (
    HEAD,
    TAIL,
    CorrelationAccumulator,
    GroupMoments,
    coherence,
    edge_threshold,
    find_circuits,
    gaussian_mutual_information,
)


def two_blocks(bridge: float = 0.3) -> np.ndarray:
    """Coherence of two 3-blocks (0.5 inside) joined by one weaker edge between positions 2 and 3."""
    coh = np.full((6, 6), -0.05)
    coh[:3, :3] = coh[3:, 3:] = 0.5
    coh[2, 3] = coh[3, 2] = bridge
    np.fill_diagonal(coh, 0.0)
    return coh


def gaussian_coherence(acts: np.ndarray, is_tail: np.ndarray) -> np.ndarray:
    moments = GroupMoments(acts.shape[1])
    moments.update(acts, is_tail)
    corr = CorrelationAccumulator.from_moments(moments)
    corr.update(acts, is_tail)
    tail, head = corr.correlation(TAIL), corr.correlation(HEAD)
    return coherence(gaussian_mutual_information(tail), gaussian_mutual_information(head))


def planted_activations(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Six features: 0 and 1 co-fire on tail inputs, 2 is shifted on tail but fires alone, 3–5 are noise."""
    rng = np.random.default_rng(seed)
    n = 4000
    is_tail = rng.random(n) < 0.3
    latent = rng.normal(size=n)
    acts = rng.normal(size=(n, 6))
    acts[is_tail, 0] += 1.5 * latent[is_tail]
    acts[is_tail, 1] += 1.5 * latent[is_tail]
    acts[is_tail, 2] += 2.0
    return acts, is_tail


def test_planted_tail_co_firing_features_form_one_circuit():
    acts, is_tail = planted_activations()
    coh = gaussian_coherence(acts, is_tail)
    rng = np.random.default_rng(1)
    null = [gaussian_coherence(acts, rng.permutation(is_tail)) for _ in range(20)]
    threshold = max(c[np.triu_indices(6, k=1)].max() for c in null)  # largest coherence under shuffled labels
    ids = np.array([40, 12, 7, 99, 3, 58])

    circuits = find_circuits(coh, ids, threshold=threshold)
    assert circuits[0].members == (12, 40)
    assert circuits[0].positions == (1, 0)
    assert circuits[0].mean_coherence == pytest.approx(coh[0, 1])
    assert all(c.size == 1 for c in circuits[1:])
    assert [c.members[0] for c in circuits[1:]] == [3, 7, 58, 99]  # singletons by id
    assert find_circuits(coh, ids, threshold=threshold, min_size=2) == circuits[:1]


def test_default_quantile_rule_admits_noise_edges_when_structure_is_sparse():
    acts, is_tail = planted_activations()
    circuits = find_circuits(gaussian_coherence(acts, is_tail), np.arange(6))
    # 1 true pair of 15: the 0.9 quantile lets one more (noise) edge through, which joins the circuit
    assert {0, 1} < set(circuits[0].members) and circuits[0].size == 3


def test_default_threshold_finds_dense_blocks():
    coh = np.random.default_rng(2).normal(scale=1e-3, size=(8, 8))
    coh = coh + coh.T
    coh[:3, :3] += 0.4
    coh[3:, 3:] += 0.2
    # 28 pairs: the 0.9 quantile admits the top three, exactly the strong block's pairs
    circuits = find_circuits(coh, np.arange(10, 18))
    assert [c.members for c in circuits] == [(10, 11, 12), *[(i,) for i in range(13, 18)]]
    assert [c.members for c in find_circuits(coh, np.arange(10, 18), threshold=0.1)] == [
        (13, 14, 15, 16, 17),
        (10, 11, 12),
    ]


def test_louvain_splits_two_blocks_that_components_merge():
    ids = np.array([5, 1, 9, 2, 8, 0])
    louvain = find_circuits(two_blocks(), ids, threshold=0.1, method="louvain", seed=0)
    components = find_circuits(two_blocks(), ids, threshold=0.1, method="components")
    assert [c.members for c in louvain] == [(0, 2, 8), (1, 5, 9)]  # equal sizes: smallest member id first
    assert [c.members for c in components] == [(0, 1, 2, 5, 8, 9)]
    assert louvain[1].mean_coherence == pytest.approx(0.5)
    assert louvain == find_circuits(two_blocks(), ids, threshold=0.1, method="louvain", seed=0)


def test_a_threshold_above_the_bridge_separates_the_components():
    components = find_circuits(two_blocks(), np.arange(6), threshold=0.4, method="components")
    assert [c.members for c in components] == [(0, 1, 2), (3, 4, 5)]


def test_default_threshold_is_a_high_quantile_and_never_negative():
    coh = two_blocks()
    assert edge_threshold(coh) == pytest.approx(np.quantile(coh[np.triu_indices(6, k=1)], 0.9))
    negative = -np.abs(two_blocks()) - 0.1
    assert edge_threshold(negative) == 0.0
    assert [c.size for c in find_circuits(negative, np.arange(6))] == [1] * 6


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="method"):
        find_circuits(two_blocks(), np.arange(6), method="spectral")
    with pytest.raises(ValueError, match="candidates"):
        find_circuits(two_blocks(), np.arange(5))
