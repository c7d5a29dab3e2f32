"""The ablation run's tables from its results.json: gold accuracy per method and seed, and every paired comparison
of cart (hierarchical bootstrap over seeds then pairs, as `cart run` wrote them).

python docs/runs/ablations-cpu-2026-11-28/summarise.py runs/ablations/results.json
"""

import json
import sys
from pathlib import Path

METRICS = ("head_gold_accuracy", "tail_gold_accuracy")


def main(path: str) -> None:
    results = json.loads(Path(path).read_text())
    print(f"seeds {results['seeds']}")
    for name, method in results["methods"].items():
        cells = []
        for metric in METRICS:
            values = [100 * v for v in method[metric]["values"]]
            cells.append(f"{metric[:4]} {sum(values) / len(values):.1f} ({', '.join(f'{v:.1f}' for v in values)})")
        print(f"{name:>18}: " + " | ".join(cells))
    for comparison in results["comparisons"]:
        if comparison["metric"] not in METRICS or comparison["method"] != "cart":
            continue
        paired = comparison["paired"]
        per_seed = ", ".join(f"{100 * v:+.1f}" for v in paired["per_seed"])
        print(
            f"cart - {comparison['baseline']:<17} {comparison['metric'][:4]}: {100 * paired['difference']:+.1f} "
            f"[{100 * paired['ci_low']:+.1f}, {100 * paired['ci_high']:+.1f}] p={paired['p_value']:.3f} ({per_seed})"
        )


if __name__ == "__main__":
    main(sys.argv[1])
