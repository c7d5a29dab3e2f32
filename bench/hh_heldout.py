"""Held-out accuracy on real HH-RLHF pairs: the new-user training defaults against the previous loop.

The new user of issue 13 runs ``cart train --data hh-rlhf-harmless-base-1500.jsonl.gz --model minilm --out rm/``
(every default). To score it on pairs it has not seen, the 1,500 pairs are split once per seed into
``--n-train`` training pairs and the rest held out. Both variants start from the same MiniLM, see the same pairs
in the same steps (batch 16, lr 5e-5, 1 epoch: the CLI defaults) and are scored on the same held-out pairs at
512 tokens:

* ``defaults``: ``TrainConfig()`` as it is now (dropout off, length-grouped batches, passes of at most 2,048
  tokens, max length from the data);
* ``previous``: the loop before issue 13 (dropout on, random batches, one pass per batch, max length 512).

The interval of the accuracy difference is a paired bootstrap over held-out pairs (and over seeds first when
there are several). Needs ``../shared/data`` (or ``--data``).

Run: ``python bench/hh_heldout.py [--seeds 0] [--n-train 1200]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hh-rlhf-harmless-base-1500.jsonl.gz"
VARIANTS = {
    "defaults": {},
    "previous": {"disable_dropout": False, "group_by_length": False, "max_batch_tokens": 0, "max_length": 512},
}


def held_out_correct(model, held_out) -> np.ndarray:
    chosen, rejected = model.score_pairs(held_out, batch_size=64)
    return (chosen > rejected).astype(float)


def bootstrap_difference(diffs: list[np.ndarray], rng: np.random.Generator, draws: int = 10_000) -> tuple[float, float]:
    """95% interval of the mean per-pair difference, resampling seeds and then pairs within each seed."""
    means = np.empty(draws)
    for b in range(draws):
        seeds = rng.integers(len(diffs), size=len(diffs))
        means[b] = np.mean([diffs[s][rng.integers(len(diffs[s]), size=len(diffs[s]))].mean() for s in seeds])
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    from cartrm.data import load_preferences
    from cartrm.models import RewardModel
    from cartrm.training import TrainConfig, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--n-train", type=int, default=1200)
    args = parser.parse_args()
    pairs = load_preferences(args.data)
    diffs, seeds = [], [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(pairs))
        data, held_out = pairs.select(order[: args.n_train]), pairs.select(order[args.n_train :])
        correct = {}
        for name, options in VARIANTS.items():
            model = RewardModel.load("minilm", seed=seed)
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                train(model, data, TrainConfig(seed=seed, **options), Path(tmp) / "rm", progress=False)
                seconds = time.perf_counter() - started
            model.max_length = 512
            correct[name] = held_out_correct(model, held_out)
            print(
                f"seed {seed} {name:9s} held-out accuracy {100 * correct[name].mean():5.1f}% "
                f"({len(held_out)} pairs)  train {seconds:6.1f}s",
                flush=True,
            )
        diffs.append(correct["defaults"] - correct["previous"])
        print(f"seed {seed}: defaults − previous {100 * diffs[-1].mean():+.1f} points", flush=True)
    low, high = bootstrap_difference(diffs, np.random.default_rng(0))
    mean = np.mean([d.mean() for d in diffs])
    print(
        f"held-out accuracy, defaults − previous: {100 * mean:+.1f} points, "
        f"95% bootstrap [{100 * low:+.1f}, {100 * high:+.1f}] "
        f"over {len(seeds)} seed(s) × {len(diffs[0])} pairs"
    )


if __name__ == "__main__":
    main()
