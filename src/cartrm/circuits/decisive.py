"""Beyond the paper: the neurons a model's tail rewards rest on most, as one circuit.

Discovery (eq. 1–3) ranks neurons by how differently they fire on tail and head inputs. On the models measured
here that ranking misses what decides the tail rewards: the 1,000 most tail-specific neurons of a trained
Bradley–Terry model move its tail margins less than 1,000 random ones (docs/results.md, "where bt's tail reward
lives"), so eq. 12, circuit dropout and circuit-guided augmentation on them act on little. The *decisive* circuit
is chosen by effect instead: the ``size`` neurons with the largest mean |first-order ΔR| under head-mean patching
(:mod:`cartrm.circuits.patching`, ``c_j(x) = Σ_t (v_j − a_tj(x)) ∂R/∂a_tj(x)``) over the tail texts given.
"""

from __future__ import annotations

import numpy as np

from cartrm.capture.sites import list_sites
from cartrm.capture.stream import ExampleSet, FeatureIndex, pooled_batches
from cartrm.circuits.config import DiscoveryConfig
from cartrm.circuits.patching import PatchBench
from cartrm.circuits.result import CircuitRecord, NeuronRef
from cartrm.circuits.statistics import HEAD, TAIL, GroupMoments, hedges_g
from cartrm.data.tail import TailSplit
from cartrm.errors import CartError
from cartrm.models.reward_model import RewardModel

DECISIVE_ID = "decisive"


def decisive_circuit(
    reward_model: RewardModel, dataset, tail: TailSplit, config: DiscoveryConfig, size: int
) -> CircuitRecord:
    """The ``size`` neurons (at ``config.sites``) with the largest mean |first-order ΔR| over the tail pairs'
    texts when patched to their head mean, as circuit ``decisive``. Its ``tail_delta`` and ``tail_effect_size``
    are those of its activation a_c(x) (the members' mean); it is not a coherence community, so ``coherence``,
    ``divergence`` and ``decomposition_weight`` are 0; ``patch_effect`` is the exact mean |ΔR| of patching it."""
    features = FeatureIndex(tuple(list_sites(reward_model.model, config.sites)))
    examples = ExampleSet.from_pairs(reward_model, dataset, tail.mask)
    n_pairs = len(examples) // 2
    tail_pairs = np.flatnonzero(examples.is_tail[:n_pairs])
    if len(tail_pairs) == 0 or len(tail_pairs) == n_pairs:
        raise CartError(f"{len(tail_pairs)} of {n_pairs} pairs are tail: the decisive circuit needs tail and head")
    acts = np.zeros((len(examples), features.size))
    for batch in pooled_batches(
        reward_model, examples, features.sites, pooling=config.pooling, batch_size=config.batch_size
    ):
        acts[batch.indices] = batch.activations
    head_mean = acts[~examples.is_tail].mean(axis=0)
    no_donors = np.zeros((2 * len(tail_pairs), features.size))
    bench = PatchBench(
        reward_model, examples, features, tail_pairs, head_mean, no_donors, config.pooling, config.batch_size
    )
    effect = np.abs(bench.contributions["head_mean"]).mean(axis=0)
    members = np.sort(np.argsort(-effect, kind="stable")[:size])
    activation = GroupMoments.from_batch(acts[:, members].mean(axis=1, keepdims=True), examples.is_tail)
    delta = activation.mean(TAIL) - activation.mean(HEAD)
    patch_effect, _ = bench.exact(members, "head_mean")
    return CircuitRecord(
        id=DECISIVE_ID,
        members=[NeuronRef.of(features, j) for j in members],
        coherence=0.0,
        tail_delta=float(delta[0]),
        tail_effect_size=float(hedges_g(activation)[0]),
        divergence=0.0,
        decomposition_weight=0.0,
        patch_effect=patch_effect,
        attribution_effect=bench.attribution(members, "head_mean"),
    )
