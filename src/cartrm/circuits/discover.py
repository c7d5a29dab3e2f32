"""Phase 1 — tail-circuit discovery (SPEC §Phase 1, paper §3.3, eq. 1–3).

1. Stream pooled activations of every site over the data (two examples per pair) into per-group moments.
2. Differential activation Δ_j, Hedges' g, Welch p-values with Benjamini–Hochberg q-values, τ-scores (eq. 3);
   candidates are the ``top_k`` features by |g| with q ≤ ``fdr``; permutation p-values are added for them.
3. A second pass keeps the candidates' activations; mutual information within head and within tail gives the
   coherence ``Coh = I_tail − I_head``; circuits are communities of the high-coherence graph.
4. A circuit's activation ``a_c(x)`` is the plain mean of its members' pooled activations; eq. 1 is fitted by
   ridge regression of the reward on the circuit activations.
5. Causal validation by activation patching (exact and first-order) with a random-set null.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cartrm.capture.cache import ActivationCache
from cartrm.capture.sites import list_sites
from cartrm.capture.stream import ExampleSet, FeatureIndex, pooled_batches
from cartrm.circuits.compare import circuit_divergence
from cartrm.circuits.config import DiscoveryConfig
from cartrm.circuits.decomposition import Decomposition, decompose_reward
from cartrm.circuits.graph import find_circuits
from cartrm.circuits.mutual_information import (
    CorrelationAccumulator,
    JointHistogram,
    binned_mutual_information,
    coherence,
    gaussian_mutual_information,
)
from cartrm.circuits.patching import PATCH_MODES, PatchBench, random_feature_sets
from cartrm.circuits.result import (
    CircuitRecord,
    Circuits,
    CoherenceEdge,
    DecompositionRecord,
    Histogram,
    NeuronRecord,
    NeuronRef,
    PatchResult,
)
from cartrm.circuits.statistics import (
    DifferentialResult,
    GroupMoments,
    differential_activation,
    hedges_g,
    permutation_p_values,
    select_candidates,
    tau_specialised,
)
from cartrm.data.tail import TailSplit
from cartrm.errors import CartError
from cartrm.models.reward_model import RewardModel

MAX_LISTED_NEURONS = 1000
HISTOGRAM_BINS = 60


def discover(
    reward_model: RewardModel,
    dataset,
    tail: TailSplit,
    config: DiscoveryConfig = DiscoveryConfig(),
    progress: bool = True,
    cache_dir: str | Path | None = None,
) -> Circuits:
    """Run phase 1 on ``dataset`` split by ``tail``; ``cache_dir`` stores pooled activations (safetensors) and
    reuses them when they match this model, sites, pooling and data size, so only one model pass is made."""
    sites = list_sites(reward_model.model, config.sites)
    features = FeatureIndex(tuple(sites))
    examples = ExampleSet.from_pairs(reward_model, dataset, tail.mask)

    fingerprint = reward_model.fingerprint()
    description = ActivationCache.describe(fingerprint, [s.name for s in sites], config.pooling, examples)

    def batches(desc: str) -> Iterator:
        """Pooled activations from the cache when one matches, else from the model (filling the cache)."""
        cached = ActivationCache.open_matching(cache_dir, description) if cache_dir else None
        if cached is not None:
            return iter(cached)
        bar = (lambda it: tqdm(it, desc=desc, leave=False)) if progress else None
        computed = pooled_batches(
            reward_model, examples, sites, pooling=config.pooling, batch_size=config.batch_size, progress=bar
        )
        return ActivationCache.write(cache_dir, description, computed) if cache_dir else computed

    moments = GroupMoments(features.size)
    for batch in batches("discover: activation statistics"):
        moments.update(batch.activations, examples.is_tail[batch.indices])
    differential = differential_activation(moments)
    tau = config.tau if config.tau is not None else float(np.quantile(differential.tau_score, config.tau_quantile))
    specialised = tau_specialised(differential, tau)
    candidates = select_candidates(differential, config.top_k, config.fdr)

    candidate_acts, rewards = _candidate_pass(batches("discover: candidates"), candidates, len(examples))
    permutation = (
        permutation_p_values(candidate_acts, examples.is_tail, config.n_permutations, config.seed)
        if len(candidates) and config.n_permutations
        else np.full(len(candidates), np.nan)
    )
    groups, coh, threshold = _circuits(candidates, candidate_acts, examples.is_tail, moments, config)
    records, decomposition = _circuit_records(groups, candidate_acts, rewards, examples.is_tail, features, config)
    counts, edges = np.histogram(differential.delta, bins=HISTOGRAM_BINS)
    rank_correlation = None
    if records and config.patch_pairs and config.max_validated:
        rank_correlation = _validate(reward_model, examples, features, moments, records, config, progress)
    return Circuits(
        model=reward_model.name,
        model_fingerprint=fingerprint,
        model_type=reward_model.model.config.model_type,
        data=dataset.source,
        tail_description=tail.description,
        config=config,
        n_examples=len(examples),
        n_features=features.size,
        n_significant=int((differential.q_value <= config.fdr).sum()),
        tau=tau,
        n_tau_specialised=int(specialised.sum()),
        delta_histogram=Histogram(edges=edges.tolist(), counts=counts.tolist()),
        neurons=_neuron_records(features, differential, specialised, candidates, permutation, config.fdr, config.top_k),
        coherence_threshold=threshold,
        coherence_edges=_edges(candidates, coh, threshold),
        circuits=records,
        decomposition=DecompositionRecord(
            r2=decomposition.r2, cv_r2=decomposition.cv_r2, intercept=decomposition.intercept
        )
        if decomposition
        else None,
        null_mode=config.null_mode,
        attribution_rank_correlation=rank_correlation,
    )


def _circuit_records(
    groups, candidate_acts, rewards, is_tail, features, config
) -> tuple[list[CircuitRecord], Decomposition | None]:
    """Circuit activations a_c(x) (mean of members), their tail statistics and the eq. 1 decomposition."""
    if not groups:
        return [], None
    circuit_acts = np.stack([candidate_acts[:, list(g.positions)].mean(axis=1) for g in groups], axis=1)
    decomposition = decompose_reward(circuit_acts, rewards, config.ridge_alpha, seed=config.seed)  # eq. 1
    effects = hedges_g(GroupMoments.from_batch(circuit_acts, is_tail))
    deltas = circuit_acts[is_tail].mean(0) - circuit_acts[~is_tail].mean(0)
    records = [
        CircuitRecord(
            id=f"c{i}",
            members=[NeuronRef.of(features, m) for m in g.members],
            coherence=g.mean_coherence,
            tail_delta=float(deltas[i]),
            tail_effect_size=float(effects[i]),
            divergence=circuit_divergence(circuit_acts[is_tail, i], circuit_acts[~is_tail, i]),
            decomposition_weight=float(decomposition.weights[i]),
        )
        for i, g in enumerate(groups)
    ]
    return records, decomposition


def _candidate_pass(batches: Iterator, candidates: np.ndarray, n_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """The candidates' pooled activations (N, K) and the rewards (N,): O(N·K) memory with K ≤ top_k."""
    acts = np.zeros((n_examples, len(candidates)))
    rewards = np.zeros(n_examples)
    for batch in batches:
        acts[batch.indices] = batch.activations[:, candidates]
        rewards[batch.indices] = batch.rewards
    return acts, rewards


def _circuits(candidates, candidate_acts, is_tail, moments: GroupMoments, config: DiscoveryConfig):
    """Communities of the graph whose edges are candidate pairs with coherence above a label-shuffle null.

    The edge threshold is the largest coherence seen over ``coherence_null_shuffles`` shufflings of the
    head/tail labels (floored at 0): a pair is linked only if it is more tail-coupled than any pair is by chance.
    """
    if len(candidates) < 2:
        return [], None, None
    subset = moments.subset(candidates)
    coh = _coherence(candidate_acts, is_tail, subset, config)
    rng = np.random.default_rng(config.seed)
    off_diagonal = ~np.eye(len(candidates), dtype=bool)
    null_maxima = [
        _coherence(candidate_acts, rng.permutation(is_tail), subset, config)[off_diagonal].max()
        for _ in range(config.coherence_null_shuffles)
    ]
    threshold = max(max(null_maxima, default=0.0), 0.0)
    return (
        find_circuits(coh, candidates, threshold=threshold, method=config.community, seed=config.seed),
        coh,
        threshold,
    )


def _edges(candidates: np.ndarray, coh: np.ndarray | None, threshold: float | None) -> list[CoherenceEdge]:
    if coh is None:
        return []
    rows, cols = np.nonzero(np.triu(coh > threshold, k=1))
    return [
        CoherenceEdge(source=int(candidates[i]), target=int(candidates[j]), coherence=float(coh[i, j]))
        for i, j in zip(rows, cols)
    ]


def _coherence(acts: np.ndarray, is_tail: np.ndarray, moments: GroupMoments, config: DiscoveryConfig) -> np.ndarray:
    """``Coh = I_tail − I_head`` for all candidate pairs, with the configured MI estimator."""
    if config.mi_estimator == "binned":
        histogram = JointHistogram.from_moments(moments, bins=config.mi_bins)
        histogram.update(acts, is_tail)
        return coherence(binned_mutual_information(histogram, 1), binned_mutual_information(histogram, 0))
    correlation = CorrelationAccumulator.from_moments(moments)
    correlation.update(acts, is_tail)
    return coherence(
        gaussian_mutual_information(correlation.correlation(1)), gaussian_mutual_information(correlation.correlation(0))
    )


def _validate(reward_model, examples, features, moments, records, config, progress) -> float | None:
    """Exact + attribution patching for the largest circuits, each against ``n_null`` random sets (null mode)."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(config.seed)
    n_pairs = len(examples) // 2
    tail_pairs = np.flatnonzero(examples.is_tail[:n_pairs])
    head_examples = np.flatnonzero(~examples.is_tail)
    pairs = np.sort(rng.choice(tail_pairs, size=min(config.patch_pairs, len(tail_pairs)), replace=False))
    donors = _donor_activations(
        reward_model, examples, features, rng.choice(head_examples, size=2 * len(pairs)), config
    )
    bench = PatchBench(
        reward_model, examples, features, pairs, moments.mean(0), donors, config.pooling, config.batch_size
    )
    exact_points, attribution_points = [], []
    targets = records[: config.max_validated]
    for record in tqdm(targets, desc="discover: patching", disable=not progress, leave=False):
        members = np.array([m.feature for m in record.members])
        for mode in PATCH_MODES:
            effect, accuracy_change = bench.exact(members, mode)
            attribution = bench.attribution(members, mode)
            exact_points.append(effect)
            attribution_points.append(attribution)
            result = PatchResult(
                mode=mode,
                mean_abs_delta_reward=effect,
                tail_accuracy_change=accuracy_change,
                attribution_mean_abs_delta_reward=attribution,
            )
            if mode == config.null_mode:
                null = []
                for random_set in random_feature_sets(features, members, config.n_null, rng):
                    null.append(bench.exact(random_set, mode)[0])
                    exact_points.append(null[-1])
                    attribution_points.append(bench.attribution(random_set, mode))
                result.null_mean_abs_delta_reward = null
                result.p_value = float((1 + np.sum(np.array(null) >= effect)) / (1 + len(null)))
                record.patch_effect, record.patch_p_value, record.attribution_effect = (
                    effect,
                    result.p_value,
                    attribution,
                )
            record.patch[mode] = result
    if len(exact_points) < 3:
        return None
    return float(spearmanr(exact_points, attribution_points).statistic)


def _donor_activations(reward_model, examples, features, donor_examples, config) -> np.ndarray:
    """Pooled activations of random head examples, one row per patched tail text (for ``resample``)."""
    rows = np.zeros((len(donor_examples), features.size))
    position: dict[int, list[int]] = {}
    for row, example in enumerate(donor_examples):
        position.setdefault(int(example), []).append(row)
    unique = np.array(sorted(position))
    for batch in pooled_batches(
        reward_model, examples, features.sites, pooling=config.pooling, batch_size=config.batch_size, subset=unique
    ):
        for example, acts in zip(batch.indices, batch.activations):
            rows[position[int(example)]] = acts
    return rows


def _neuron_records(
    features, differential: DifferentialResult, specialised, candidates, permutation, fdr, top_k
) -> list[NeuronRecord]:
    """Neurons passing FDR plus the ``top_k`` largest |effect sizes| whether significant or not (at most
    MAX_LISTED_NEURONS), by |effect size|, largest first."""
    strongest = np.argsort(-np.abs(differential.effect_size), kind="stable")[:top_k]
    listed = set(np.flatnonzero(differential.q_value <= fdr).tolist()) | set(strongest.tolist())
    ranked = sorted(listed, key=lambda j: (-abs(differential.effect_size[j]), j))[:MAX_LISTED_NEURONS]
    permutation_of = dict(zip(candidates.tolist(), permutation.tolist()))
    return [
        NeuronRecord(
            **NeuronRef.of(features, j).model_dump(),
            delta=float(differential.delta[j]),
            effect_size=float(differential.effect_size[j]),
            tau_score=float(differential.tau_score[j]),
            tau_specialised=bool(specialised[j]),
            p_value=float(differential.p_value[j]),
            q_value=float(differential.q_value[j]),
            permutation_p_value=permutation_of.get(j),
        )
        for j in ranked
    ]


def balanced_subset(tail_mask: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Up to ``limit`` row indices, half tail and half head where the data allows: discovery contrasts tail with
    head, so a balanced subset gives both sides as many examples as it can."""
    tail, head = np.flatnonzero(tail_mask), np.flatnonzero(~tail_mask)
    if len(tail) == 0 or len(head) == 0:
        raise CartError(f"the training data has {len(tail)} tail and {len(head)} head examples; discovery needs both")
    n_tail = min(len(tail), max(limit // 2, limit - len(head)))
    n_head = min(len(head), limit - n_tail)
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(tail, n_tail, replace=False), rng.choice(head, n_head, replace=False)]))
