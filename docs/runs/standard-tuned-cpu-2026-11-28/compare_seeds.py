"""Paired gold-accuracy comparisons of runs/cart-tuned from each method's test scores (hierarchical bootstrap).

python docs/runs/standard-tuned-cpu-2026-11-28/compare_seeds.py 0,1,2
"""

import json
import sys
from pathlib import Path

import numpy as np

from cartrm.evaluation.metrics import gold_margin_of, pairwise_correct
from cartrm.evaluation.statistics import hierarchical_bootstrap
from cartrm.experiments.pipeline import RunConfig, SeedRun

RUN = Path("runs/cart-tuned")
METHODS = ("bt", "bt-continued", "reweight-continued", "ensemble-mean", "cart", "cart-sampler-only")
PAIRS = (
    ("cart", "bt-continued"),
    ("cart", "reweight-continued"),
    ("cart", "ensemble-mean"),
    ("cart", "cart-sampler-only"),
    ("reweight-continued", "bt-continued"),
    ("cart-sampler-only", "bt-continued"),
    ("cart", "bt"),
)


def correct_by_group(config: RunConfig, seed: int) -> dict[str, dict[str, np.ndarray]]:
    test = SeedRun(config, seed, progress=False).splits["test"]
    gold = np.asarray(gold_margin_of(test))
    tail = np.asarray(test.column("is_tail"), bool)
    out = {}
    for method in METHODS:
        scores = json.loads((RUN / f"seed-{seed}" / "eval" / method / "scores.json").read_text())
        margin = np.sign(gold) * (np.asarray(scores["chosen"]) - np.asarray(scores["rejected"]))
        correct = pairwise_correct(margin, np.zeros(len(gold)))
        out[method] = {"head": correct[~tail], "tail": correct[tail]}
    return out


def main(seeds: list[int]) -> None:
    config = RunConfig.from_yaml(RUN / "config.yaml")
    by_seed = [correct_by_group(config, seed) for seed in seeds]
    for method in METHODS:
        for group in ("head", "tail"):
            values = [100 * s[method][group].mean() for s in by_seed]
            print(f"{method} {group} {np.mean(values):.1f} ({', '.join(f'{v:.1f}' for v in values)})")
    for a, b in PAIRS:
        for group in ("tail", "head"):
            d = hierarchical_bootstrap([s[a][group] for s in by_seed], [s[b][group] for s in by_seed])
            per_seed = ", ".join(f"{100 * x:+.1f}" for x in d.per_seed)
            print(
                f"{a} - {b} {group}: {100 * d.difference:+.1f} [{100 * d.ci_low:+.1f}, {100 * d.ci_high:+.1f}] "
                f"p={d.p_value:.3f} per seed {per_seed}"
            )


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1].split(",")])
