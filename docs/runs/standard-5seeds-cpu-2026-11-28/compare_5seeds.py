"""The tuned comparison over 5 seeds: seeds 0-2 from their replays (runs/replay-S, replay.sh), seeds 3-4 from the
tuned run (runs/cart-tuned). Per method: test gold accuracy per seed and best-of-n tail peak n; per pair of methods:
the pipeline's hierarchical bootstrap (seeds, then pairs) of gold accuracy differences on the per-pair test scores.

python docs/runs/standard-5seeds-cpu-2026-11-28/compare_5seeds.py 0:runs/replay-0 1:runs/replay-1 \
    2:runs/replay-2 3:runs/cart-tuned 4:runs/cart-tuned
"""

import json
import sys
from pathlib import Path

import numpy as np

from cartrm.evaluation.statistics import hierarchical_bootstrap
from cartrm.experiments.pipeline import RunConfig, SeedRun

METHODS = ("bt", "bt-continued", "reweight-continued", "ensemble-mean", "cart")
PAIRS = (
    ("cart", "bt-continued"),
    ("cart", "reweight-continued"),
    ("cart", "ensemble-mean"),
    ("reweight-continued", "bt-continued"),
    ("cart", "bt"),
)


def gold_correct(run: Path, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Per method, per test pair, whether it orders the pair as the gold rule does (head and tail pairs)."""
    seed_run = SeedRun(RunConfig.from_yaml(run / "config.yaml"), seed, progress=False)
    correct = {method: seed_run.test_correctness(method) for method in METHODS}
    return {m: {g: c[f"{g}_gold_accuracy"] for g in ("head", "tail")} for m, c in correct.items()}


def tail_peak_n(run: Path, seed: int) -> dict[str, int]:
    """Per method, the best-of-n size at which the seed's mean tail gold reward peaks."""
    bon = run / f"seed-{seed}" / "bon"
    return {method: json.loads((bon / method / "curves.json").read_text())["tail"]["peak_n"] for method in METHODS}


def main(runs: dict[int, Path]) -> None:
    by_seed = [gold_correct(run, seed) for seed, run in runs.items()]
    print("seeds", ", ".join(f"{s} ({r})" for s, r in runs.items()))
    peaks = [tail_peak_n(run, seed) for seed, run in runs.items()]
    for method in METHODS:
        for group in ("head", "tail"):
            values = [100 * s[method][group].mean() for s in by_seed]
            print(f"{method} {group} gold {np.mean(values):.1f} ({', '.join(f'{v:.1f}' for v in values)})")
        print(f"{method} best-of-n tail peak n per seed: {', '.join(str(p[method]) for p in peaks)}")
    for a, b in PAIRS:
        for group in ("tail", "head"):
            d = hierarchical_bootstrap([s[a][group] for s in by_seed], [s[b][group] for s in by_seed])
            per_seed = ", ".join(f"{100 * x:+.1f}" for x in d.per_seed)
            print(
                f"{a} - {b} {group} gold: {100 * d.difference:+.1f} [{100 * d.ci_low:+.1f}, {100 * d.ci_high:+.1f}] "
                f"p={d.p_value:.3f} ({per_seed})"
            )


if __name__ == "__main__":
    main({int(s): Path(r) for s, r in (arg.split(":") for arg in sys.argv[1:])})
