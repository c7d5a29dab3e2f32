"""Held-out accuracy of the fast training defaults against the previous behaviour, paired by seed.

"fast" is ``TrainConfig()`` as it is now (dropout off, length-grouped batches, forward passes of at most 2,048
tokens, glibc mmap threshold fixed); "previous" sets
``disable_dropout=False, group_by_length=False, max_batch_tokens=0``, which is the
training loop before those changes. Both train MiniLM on the embedded long-tail benchmark with the same seed,
data and steps, and are scored on the same test pairs (gold-label accuracy on head and tail pairs). The
interval of the mean difference is a t-interval over seeds (the seed is the unit of replication).

Run: ``python bench/defaults_accuracy.py [--seeds 0,1,2] [--n-train 1000]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = {
    "fast (defaults)": {},
    "previous": {"disable_dropout": False, "group_by_length": False, "max_batch_tokens": 0},
}


def gold_accuracy(model, test, mask: np.ndarray) -> tuple[float, float]:
    chosen, rejected = model.score_pairs(test, batch_size=64)
    gold = np.array(test.column("gold_chosen"), dtype=float) - np.array(test.column("gold_rejected"), dtype=float)
    right = np.sign(chosen - rejected) == np.sign(gold)
    return float(right[~mask].mean()), float(right[mask].mean())


def main() -> None:
    from scipy import stats

    from cartrm.datasets import BenchmarkConfig, make_longtail_dataset
    from cartrm.models import RewardModel
    from cartrm.training import TrainConfig, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1100, help="test pairs per group (head, tail)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in VARIANTS}
    for seed in seeds:
        bench = make_longtail_dataset(
            BenchmarkConfig(
                n_train=args.n_train, n_validation=2, n_test_head=args.n_test, n_test_tail=args.n_test, seed=seed
            )
        )
        data, test = bench.split("train"), bench.split("test")
        mask = np.array(test.column("is_tail"), dtype=bool)
        for name, options in VARIANTS.items():
            model = RewardModel.load("minilm", seed=seed)
            config = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-4, max_length=128, seed=seed, **options)
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                train(model, data, config, Path(tmp) / "rm", progress=False)
                seconds = time.perf_counter() - started
            head, tail = gold_accuracy(model, test, mask)
            rows[name].append((head, tail, seconds))
            print(
                f"seed {seed} {name:16s} head gold {100 * head:5.1f}  tail gold {100 * tail:5.1f}  "
                f"train {seconds:5.1f}s",
                flush=True,
            )
    fast, previous = np.array(rows["fast (defaults)"]), np.array(rows["previous"])
    for column, label in ((0, "head gold"), (1, "tail gold")):
        diff = 100 * (fast[:, column] - previous[:, column])
        half = (
            stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        )
        per_seed = ", ".join(f"{d:+.1f}" for d in diff)
        print(
            f"{label}: fast − previous {diff.mean():+.2f} points "
            f"[{diff.mean() - half:+.2f}, {diff.mean() + half:+.2f}] (per seed {per_seed})"
        )
    print(
        f"training time: fast {fast[:, 2].mean():.1f}s, previous {previous[:, 2].mean():.1f}s per model "
        f"({previous[:, 2].mean() / fast[:, 2].mean():.2f}×)"
    )


if __name__ == "__main__":
    main()
