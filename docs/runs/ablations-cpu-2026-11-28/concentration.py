"""How much of bt's tail preference runs through its most tail-specific neurons? (issue 17, no training)

For the trained bt of a seed of a `cart run` folder: exact activation patching (mode head_mean) of the K neurons
with the largest |Hedges' g| tail vs head (ranked by discovery on the analysis pairs, `analysis/circuits.json`),
against random sets of K neurons with the same count per layer, on test pairs the ranking never saw. Reads the
mean |ΔR| per text and the mean |Δ margin| per pair against the mean |reward margin| of the same pairs, and the
change of pairwise accuracy, on tail pairs and on head pairs. For contrast, "ΔR-top K": the K neurons bt's tail
rewards rest on most (mean |first-order ΔR| on validation tail pairs). If even hundreds of the most tail-specific
neurons move a small share of the tail margin, circuit-level interventions (eq. 12, circuit dropout,
circuit-guided augmentation) act on little.

python docs/runs/ablations-cpu-2026-11-28/concentration.py runs/ablations 0 [PAIRS]
"""

import json
import sys
from pathlib import Path

import numpy as np

from cartrm.capture.sites import list_sites
from cartrm.capture.stream import ExampleSet, FeatureIndex, pooled_batches
from cartrm.circuits.patching import PatchBench, random_feature_sets
from cartrm.circuits.statistics import GroupMoments
from cartrm.experiments.pipeline import RunConfig, SeedRun
from cartrm.models.reward_model import RewardModel

SIZES = (3, 10, 30, 100, 300, 1000)
DECISIVE_SIZES = (3, 10, 30, 100)
RANDOM_SETS = 3


def main(run: Path, seed: int, n_pairs: int) -> None:
    config = RunConfig.from_yaml(run / "config.yaml")
    seed_run = SeedRun(config, seed, progress=False)
    test, tail = seed_run.splits["test"], seed_run.tails["test"].mask
    model = RewardModel.load(run / f"seed-{seed}" / "models" / "bt")
    circuits = json.loads((run / f"seed-{seed}" / "analysis" / "circuits.json").read_text())
    ranked = np.array([n["feature"] for n in circuits["neurons"]])  # by |effect size| on the analysis pairs
    targets = json.loads((run / f"seed-{seed}" / "analysis" / "vulnerability.json").read_text())["targets"]
    members = {c["id"]: [m["feature"] for m in c["members"]] for c in circuits["circuits"]}
    target_features = np.array(sorted({f for t in targets for f in members[t]}))

    features = FeatureIndex(tuple(list_sites(model.model, config.discovery.sites)))
    examples = ExampleSet.from_pairs(model, test, tail)
    rng = np.random.default_rng(seed)
    n = len(test)
    chosen = {
        "tail": np.sort(rng.choice(np.flatnonzero(tail), n_pairs, replace=False)),
        "head": np.sort(rng.choice(np.flatnonzero(~tail), n_pairs, replace=False)),
    }
    head_texts = np.concatenate([chosen["head"], chosen["head"] + n])
    moments = GroupMoments(features.size)
    for batch in pooled_batches(model, examples, features.sites, pooling=config.discovery.pooling, subset=head_texts):
        moments.update(batch.activations, np.zeros(len(batch.indices), bool))
    head_mean = moments.mean(0)
    decisive = _by_attribution(seed_run, model, features, head_mean, n_pairs, np.random.default_rng([seed, 1]))
    print(
        f"seed {seed}: {len(ranked)} ranked neurons of {features.size}; targets {targets} "
        f"({len(target_features)} neurons); {n_pairs} test pairs per group"
    )
    for group, pairs in chosen.items():
        bench = PatchBench(model, examples, features, pairs, head_mean, np.zeros((2 * n_pairs, features.size)))
        margins = _margins(bench.clean_rewards)
        scale = float(np.abs(margins).mean())
        print(f"  {group}: mean |margin| {scale:.3f}, accuracy vs stored order {100 * np.mean(margins > 0):.1f}%")
        sets = [("targets", target_features)] + [(f"top {k}", ranked[:k]) for k in SIZES if k <= len(ranked)]
        sets += [(f"ΔR-top {k}", decisive[:k]) for k in DECISIVE_SIZES]
        for label, members_k in sets:
            patched = _shares(bench, members_k, margins, scale)
            null = [
                _shares(bench, r, margins, scale) for r in random_feature_sets(features, members_k, RANDOM_SETS, rng)
            ]
            print(f"    {label:>10} ({len(members_k):4d}): {_line(patched)} | random: {_line(np.mean(null, 0))}")


def _margins(rewards: np.ndarray) -> np.ndarray:
    half = len(rewards) // 2
    return rewards[:half] - rewards[half:]


def _shares(bench: PatchBench, members: np.ndarray, margins: np.ndarray, scale: float) -> np.ndarray:
    """(mean |ΔR| per text, mean |Δ margin| per pair) as shares of the mean |margin|, and the accuracy change."""
    patched = bench.patched_rewards(members, "head_mean")
    moved = _margins(patched)
    return np.array(
        [
            np.abs(patched - bench.clean_rewards).mean() / scale,
            np.abs(moved - margins).mean() / scale,
            np.mean(moved > 0) - np.mean(margins > 0),
        ]
    )


def _line(shares: np.ndarray) -> str:
    reward, margin, accuracy = 100 * shares
    return f"|ΔR| {reward:5.1f}%, |Δmargin| {margin:5.1f}%, accuracy {accuracy:+5.1f}"


def _by_attribution(seed_run, model, features, head_mean, n_pairs, rng) -> np.ndarray:
    """Neurons by their mean |first-order ΔR| under head_mean patching on tail pairs of the validation split:
    the neurons bt's tail rewards rest on most, found on pairs the test never sees."""
    validation, tail = seed_run.splits["validation"], seed_run.tails["validation"].mask
    examples = ExampleSet.from_pairs(model, validation, tail)
    pairs = np.sort(rng.choice(np.flatnonzero(tail), min(n_pairs, int(tail.sum())), replace=False))
    bench = PatchBench(model, examples, features, pairs, head_mean, np.zeros((2 * len(pairs), features.size)))
    return np.argsort(-np.abs(bench.contributions["head_mean"]).mean(axis=0), kind="stable")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 100)
