"""Any two methods of a `cart run` folder on the same test pairs: gold head and tail accuracy differences with the
pipeline's hierarchical bootstrap (seeds, then pairs), from each seed's saved per-pair scores. The run's own
results.json compares cart with every other method; this reads e.g. an ablation (cart-decisive-dropout) against
the compute-matched control (bt-continued) directly.

python docs/runs/ablations-cpu-2026-11-28/versus_control.py runs/ablations 0,1,2 cart-decisive-dropout bt-continued
"""

import sys
from pathlib import Path

import numpy as np

from cartrm.evaluation.statistics import hierarchical_bootstrap
from cartrm.experiments.pipeline import RunConfig, SeedRun


def gold_correct(seed_run: SeedRun, method: str) -> dict[str, np.ndarray]:
    """Per test pair, whether ``method`` orders it as the gold rule does, for head and tail pairs."""
    correct = seed_run.test_correctness(method)
    return {g: correct[f"{g}_gold_accuracy"] for g in ("head", "tail")}


def main(run: Path, seeds: list[int], a: str, b: str) -> None:
    config = RunConfig.from_yaml(run / "config.yaml")
    runs = [SeedRun(config, seed, progress=False) for seed in seeds]
    correct = {m: [gold_correct(r, m) for r in runs] for m in (a, b)}
    for group in ("tail", "head"):
        paired = hierarchical_bootstrap([c[group] for c in correct[a]], [c[group] for c in correct[b]])
        per_seed = ", ".join(f"{100 * v:+.1f}" for v in paired.per_seed)
        print(
            f"{a} - {b} {group} gold: {100 * paired.difference:+.1f} [{100 * paired.ci_low:+.1f}, "
            f"{100 * paired.ci_high:+.1f}] p={paired.p_value:.3f} ({per_seed})"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), [int(s) for s in sys.argv[2].split(",")], sys.argv[3], sys.argv[4])
