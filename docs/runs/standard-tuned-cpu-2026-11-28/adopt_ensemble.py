"""Reuse the ensemble-mean models of the 2026-11-27 standard run (/tmp/std) in runs/cart-tuned, then run cart.

ensemble-mean is not tuned and does not depend on bt or the circuits: two bt members of 100 steps from the base
model, on the seed's data. The 2026-11-27 run trained them with the same code path, but its stage keys digest a
CartConfig that has since gained options (defaults unchanged for bt), so the pipeline would retrain them (about
13 minutes per seed). This script copies a seed's models/ensemble-mean only after checking that the two runs
trained bt on byte-identical data into byte-identical weights, and lets the pipeline accept the copy under the
current key (the marker keeps the old key and the source). Everything downstream (test scores, best-of-n) is
recomputed by the current code.

    python docs/runs/standard-tuned-cpu-2026-11-28/adopt_ensemble.py /tmp/std runs/cart-tuned 0,1,2,3,4 -- \
        --preset standard --methods bt,bt-continued,reweight-continued,ensemble-mean,cart \
        --tune docs/experiments/cart-tuned-grid.yaml --out runs/cart-tuned
"""

import filecmp
import json
import shutil
import sys
from pathlib import Path

import cartrm.experiments.pipeline as pipeline

METHOD = "ensemble-mean"


def same_bt(old: Path, new: Path) -> bool:
    files = ("data/benchmark.jsonl", "models/bt/model.safetensors")
    return all(filecmp.cmp(old / name, new / name, shallow=False) for name in files)


def copy_ensemble(old: Path, new: Path) -> None:
    source, target = old / "models" / METHOD, new / "models" / METHOD
    if target.exists():
        return
    if not same_bt(old, new):
        raise SystemExit(f"{old} and {new}: bt's data or weights differ; not adopting {METHOD}")
    shutil.copytree(source, target)
    result = target / "ensemble_result.json"
    result.write_text(result.read_text().replace(str(source), str(target.resolve())))
    marker = target / pipeline.STAGE_MARKER
    stage = json.loads(marker.read_text())
    marker.write_text(json.dumps({**stage, "adopted_from": str(source)}))


_done = pipeline._stage_done


def adopting(folder: Path, key: str) -> bool:
    """Accept an adopted ensemble-mean model under the current key."""
    marker = folder / pipeline.STAGE_MARKER
    if folder.name == METHOD and folder.parent.name == "models" and marker.exists():
        stage = json.loads(marker.read_text())
        if "adopted_from" in stage and stage["key"] != key:
            marker.write_text(json.dumps({**stage, "key": key, "adopted_key": stage["key"]}))
    return _done(folder, key)


if __name__ == "__main__":
    old_run, new_run, seeds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
    for seed in seeds:
        copy_ensemble(old_run / f"seed-{seed}", new_run / f"seed-{seed}")
    pipeline._stage_done = adopting
    from cartrm.cli import app

    sys.argv = ["cart", "run", *sys.argv[sys.argv.index("--") + 1 :], "--seeds", ",".join(seeds)]
    app()
