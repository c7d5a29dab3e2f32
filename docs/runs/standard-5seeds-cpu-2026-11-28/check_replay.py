"""Check that the replayed seeds reproduce the test gold accuracies reported for the tuned comparison on 2026-11-28
(docs/results.md, "Tuned CART against bt-continued, reweight-continued and ensemble-mean, scored as trained").

python docs/runs/standard-5seeds-cpu-2026-11-28/check_replay.py 0 1 2
"""

import json
import sys
from pathlib import Path

REPORTED = {  # method: per seed 0, 1, 2 (head gold %, tail gold %)
    "bt": ((95.0, 78.8), (92.5, 77.4), (94.2, 78.2)),
    "bt-continued": ((95.2, 79.0), (93.5, 76.5), (94.5, 78.1)),
    "reweight-continued": ((95.2, 79.4), (93.2, 77.2), (94.8, 77.8)),
    "ensemble-mean": ((96.0, 78.0), (94.5, 77.4), (95.0, 77.8)),
    "cart": ((94.5, 79.4), (93.2, 78.5), (95.5, 79.9)),
}


def main(seeds: list[int]) -> int:
    mismatches = 0
    for seed in seeds:
        results = json.loads(Path(f"runs/replay-{seed}/results.json").read_text())["methods"]
        for method, reported in REPORTED.items():
            got = tuple(round(100 * results[method][f"{g}_gold_accuracy"]["values"][0], 1) for g in ("head", "tail"))
            same = all(abs(a - b) < 0.06 for a, b in zip(got, reported[seed], strict=True))
            mismatches += not same
            print(f"seed {seed} {method}: replayed {got}, reported {reported[seed]}{'' if same else '  MISMATCH'}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main([int(s) for s in sys.argv[1:]]))
