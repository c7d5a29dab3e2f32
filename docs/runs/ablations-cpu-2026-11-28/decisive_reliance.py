"""Did circuit dropout on the decisive circuit do what it is for? (issue 17, no training)

For one seed of a `cart run` folder: the decisive circuit that `cart-decisive-dropout` trained against (its
`cart/step-0/circuits.json`, found on bt), patched to its head mean by exact activation patching in bt,
bt-continued, cart and the decisive variants, on tail and head test pairs. Read: mean |Δ margin| per pair as a share
of the pairs' mean |margin|. Dropout on tail texts should leave the trained model's tail margins resting less on
those neurons than bt-continued's (the same steps without it) and cart's do; its head margins are not asked to.

python docs/runs/ablations-cpu-2026-11-28/decisive_reliance.py runs/ablations 0 [PAIRS [MODEL,MODEL…]]
"""

import json
import sys
from pathlib import Path

import numpy as np

from cartrm.capture.sites import list_sites
from cartrm.capture.stream import ExampleSet, FeatureIndex, pooled_batches
from cartrm.circuits.patching import PatchBench
from cartrm.experiments.pipeline import RunConfig, SeedRun
from cartrm.models.reward_model import RewardModel

MODELS = ("bt", "bt-continued", "cart", "cart-decisive-eq12", "cart-decisive-dropout")


def main(run: Path, seed: int, n_pairs: int, models: tuple[str, ...] = MODELS) -> None:
    config = RunConfig.from_yaml(run / "config.yaml")
    seed_run = SeedRun(config, seed, progress=False)
    test, tail = seed_run.splits["test"], seed_run.tails["test"].mask
    step = run / f"seed-{seed}" / "models" / "cart-decisive-dropout" / "cart" / "step-0"
    circuits = json.loads((step / "circuits.json").read_text())
    decisive = next(c for c in circuits["circuits"] if c["id"] == "decisive")
    members = np.array([m["feature"] for m in decisive["members"]])
    rng = np.random.default_rng(seed)
    chosen = {
        "tail": np.sort(rng.choice(np.flatnonzero(tail), n_pairs, replace=False)),
        "head": np.sort(rng.choice(np.flatnonzero(~tail), n_pairs, replace=False)),
    }
    print(f"seed {seed}: decisive circuit of {len(members)} neurons; {n_pairs} test pairs per group")
    for name in models:
        model = RewardModel.load(run / f"seed-{seed}" / "models" / name)
        features = FeatureIndex(tuple(list_sites(model.model, config.discovery.sites)))
        examples = ExampleSet.from_pairs(model, test, tail)
        head_texts = np.concatenate([chosen["head"], chosen["head"] + len(test)])
        head_mean = np.zeros(features.size)
        pooling = config.discovery.pooling
        for batch in pooled_batches(model, examples, features.sites, pooling=pooling, subset=head_texts):
            head_mean += batch.activations.sum(axis=0) / len(head_texts)
        shares = []
        for group, pairs in chosen.items():
            bench = PatchBench(model, examples, features, pairs, head_mean, np.zeros((2 * n_pairs, features.size)))
            margins = _margins(bench.clean_rewards)
            moved = _margins(bench.patched_rewards(members, "head_mean"))
            shares.append(f"{group} {100 * np.abs(moved - margins).mean() / np.abs(margins).mean():5.1f}%")
        print(f"  {name:>22}: |Δmargin| / mean |margin|: {', '.join(shares)}")


def _margins(rewards: np.ndarray) -> np.ndarray:
    half = len(rewards) // 2
    return rewards[:half] - rewards[half:]


if __name__ == "__main__":
    names = tuple(sys.argv[4].split(",")) if len(sys.argv) > 4 else MODELS
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 60, names)
