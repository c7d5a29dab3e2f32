"""The concentration diagnostic: does a reward model's tail preference run through its most tail-specific neurons?

CART acts on the neurons discovery ranks as tail-specific (|Hedges' g|, tail vs head, eq. 1–3). That only helps
where those neurons carry the tail's preference. Exact activation patching measures it: set the K top-ranked
neurons to their head mean at every response token (:mod:`cartrm.circuits.patching`, mode ``head_mean``) and
read how far each pair's reward margin moves, as a share of the pairs' mean |margin|:

    share(S, G) = mean_{pairs in G} |Δ margin(S)| / mean_{pairs in G} |margin|

for the neuron set S and pair group G (tail, head and, on the benchmark, the conflict pairs that only the tail's
own rules order right), against random sets with the same number of neurons per site (``random_feature_sets``).
``ratio = share(top K) / share(random K)``: a tail circuit exists where the ratio on the tail (or conflict pairs)
is well above 1 (≥ 2 is the bar the separability study uses) and above the head's. On MiniLM and the classic
benchmark the 1,000 most tail-specific neurons of bt carried 14–16% of the tail margin, random ones 21–25%.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel
from tqdm.auto import tqdm

from cartrm.capture.sites import list_sites
from cartrm.capture.stream import ExampleSet, FeatureIndex, pooled_batches
from cartrm.circuits.config import DiscoveryConfig
from cartrm.circuits.patching import PatchBench, random_feature_sets
from cartrm.circuits.statistics import GroupMoments, hedges_g
from cartrm.errors import CartError
from cartrm.io import Artifact

CONCENTRATION_VERSION = 1  # in the keys of the stages that measure it
SIZES = (10, 100, 1000)
RANDOM_SETS = 3
HEAD_GROUP = "head"


class ConcentrationRow(BaseModel):
    """One neuron set on one pair group: the shares of the mean |margin| that patching moves."""

    group: str
    neurons: int
    share: float  # mean |Δ margin| / mean |margin| with the top-ranked neurons patched
    random_share: float  # the same, averaged over the random layer-matched sets
    accuracy_change: float  # of the group's pairwise accuracy (stored order), top-ranked neurons patched

    @property
    def ratio(self) -> float:
        return self.share / self.random_share if self.random_share > 0 else float("inf")


class Concentration(Artifact):
    """The diagnostic of one model (``analysis/concentration.json`` in a run)."""

    kind = "concentration"

    model: str
    pairs: dict[str, int]  # pairs measured per group
    mean_margin: dict[str, float]  # per group: the clean mean |margin|, the shares' scale
    random_sets: int
    rows: list[ConcentrationRow]

    def row(self, group: str, neurons: int) -> ConcentrationRow:
        for row in self.rows:
            if row.group == group and row.neurons == neurons:
                return row
        raise CartError(f"no concentration row for {group} pairs and {neurons} neurons")

    def summary(self, group: str = "tail") -> str:
        """One line: per size, the share top/random and the ratio, on ``group`` and on the head."""
        parts = []
        for row in (r for r in self.rows if r.group == group):
            head = self.row(HEAD_GROUP, row.neurons)
            parts.append(
                f"top {row.neurons}: {100 * row.share:.1f}% vs random {100 * row.random_share:.1f}% "
                f"(×{row.ratio:.2f}; head ×{head.ratio:.2f})"
            )
        return f"share of the {group} margin moved by the most tail-specific neurons: " + "; ".join(parts)


def tail_specific_ranking(reward_model: Any, dataset: Any, tail: np.ndarray, config: DiscoveryConfig) -> np.ndarray:
    """Every feature at ``config.sites``, most tail-specific first: by |Hedges' g| of its pooled activation, tail
    texts against head texts of ``dataset`` (discovery's effect size, eq. 1–3, over all features, not only the
    significant ones)."""
    features = FeatureIndex(tuple(list_sites(reward_model.model, config.sites)))
    examples = ExampleSet.from_pairs(reward_model, dataset, tail)
    moments = GroupMoments(features.size)
    for batch in pooled_batches(
        reward_model, examples, features.sites, pooling=config.pooling, batch_size=config.batch_size
    ):
        moments.update(batch.activations, examples.is_tail[batch.indices])
    effect = np.nan_to_num(np.abs(hedges_g(moments)), posinf=np.finfo(float).max)
    return np.argsort(-effect, kind="stable")


def _has_random_match(features: FeatureIndex, members: np.ndarray) -> bool:
    """Whether each site holds as many other features as ``members`` has there (a random set can match it)."""
    widths = {s.name: s.width for s in features.sites}
    return all(2 * len(local) <= widths[name] for name, local in features.by_site(members).items())


def _margins(rewards: np.ndarray) -> np.ndarray:
    half = len(rewards) // 2
    return rewards[:half] - rewards[half:]


def _head_mean(reward_model: Any, examples: ExampleSet, features: FeatureIndex, head: np.ndarray, config) -> Any:
    n = len(examples) // 2
    texts = np.concatenate([head, head + n])
    total = np.zeros(features.size)
    for batch in pooled_batches(
        reward_model, examples, features.sites, pooling=config.pooling, batch_size=config.batch_size, subset=texts
    ):
        total += batch.activations.sum(axis=0)
    return total / len(texts)


def concentration(
    reward_model: Any,
    dataset: Any,
    groups: Mapping[str, np.ndarray],
    ranked: np.ndarray,
    config: DiscoveryConfig,
    sizes: Sequence[int] = SIZES,
    n_pairs: int = 60,
    random_sets: int = RANDOM_SETS,
    seed: int = 0,
    progress: bool = False,
) -> Concentration:
    """The diagnostic of ``reward_model`` on ``dataset``: per pair group (masks over its pairs; ``head`` is
    required, its pairs give the patch values) up to ``n_pairs`` seeded pairs, the top ``k`` of ``ranked`` (global
    feature ids at ``config.sites``, most tail-specific first) for each ``k`` in ``sizes``, and ``random_sets``
    layer-matched random sets of each size (a size no random set can match, as it fills more than half of a site,
    is left out)."""
    if HEAD_GROUP not in groups or not groups[HEAD_GROUP].any():
        raise CartError("the concentration diagnostic needs head pairs: their mean activations are the patch values")
    rng = np.random.default_rng(seed)
    features = FeatureIndex(tuple(list_sites(reward_model.model, config.sites)))
    examples = ExampleSet.from_pairs(reward_model, dataset, np.asarray(groups.get("tail", groups[HEAD_GROUP])))
    chosen = {
        name: np.sort(rng.choice(np.flatnonzero(mask), min(n_pairs, int(mask.sum())), replace=False))
        for name, mask in groups.items()
        if mask.any()
    }
    head_mean = _head_mean(reward_model, examples, features, chosen[HEAD_GROUP], config)
    sizes = [k for k in sizes if k <= len(ranked) and _has_random_match(features, ranked[:k])]
    sets = {k: (ranked[:k], random_feature_sets(features, ranked[:k], random_sets, rng)) for k in sizes}
    rows, scale = [], {}
    steps = tqdm(total=len(chosen) * len(sizes) * (1 + random_sets), desc="concentration", disable=not progress)
    for name, pairs in chosen.items():
        no_donors = np.zeros((2 * len(pairs), features.size))
        bench = PatchBench(
            reward_model, examples, features, pairs, head_mean, no_donors, config.pooling, config.batch_size
        )
        margins = _margins(bench.clean_rewards)
        scale[name] = float(np.abs(margins).mean())
        for k, (top, randoms) in sets.items():
            moved = [_margins(bench.patched_rewards(members, "head_mean")) for members in (top, *randoms)]
            steps.update(1 + random_sets)
            shares = [float(np.abs(m - margins).mean()) / scale[name] for m in moved]
            accuracy = float(np.mean(moved[0] > 0) - np.mean(margins > 0))
            rows.append(
                ConcentrationRow(
                    group=name,
                    neurons=k,
                    share=shares[0],
                    random_share=float(np.mean(shares[1:])),
                    accuracy_change=accuracy,
                )
            )
    steps.close()
    return Concentration(
        model=str(reward_model.name),
        pairs={name: len(p) for name, p in chosen.items()},
        mean_margin=scale,
        random_sets=random_sets,
        rows=rows,
    )
