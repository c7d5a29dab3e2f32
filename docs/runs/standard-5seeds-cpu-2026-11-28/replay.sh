#!/usr/bin/env bash
# Rebuild seeds 0-2 of the tuned comparison at their selected variants (replay-seedS.yaml), each in runs/replay-S,
# starting from the bt model, circuits and (where the settings match) the trained models of runs/ablations, whose
# stage keys decide what is reused. Then check the test accuracies against the ones reported on 2026-11-28.
#   bash docs/runs/standard-5seeds-cpu-2026-11-28/replay.sh [seeds, default "0 1 2"]
set -euo pipefail
here=$(dirname "$0")
for seed in ${1:-0 1 2}; do
  target=runs/replay-$seed/seed-$seed
  if [ ! -d "$target" ] && [ -d runs/ablations/seed-$seed ]; then
    mkdir -p "$target/models" "$target/eval" "$target/bon"
    cp -r runs/ablations/seed-$seed/{data,analysis} "$target/"
    for method in bt bt-continued cart; do
      cp -r runs/ablations/seed-$seed/models/$method "$target/models/"
      cp -r runs/ablations/seed-$seed/eval/$method "$target/eval/"
      cp -r runs/ablations/seed-$seed/bon/$method "$target/bon/"
    done
  fi
  cart run --preset standard --methods bt,bt-continued,reweight-continued,ensemble-mean,cart \
    --tune "$here/replay-seed$seed.yaml" --seeds "$seed" --out "runs/replay-$seed"
done
python "$here/check_replay.py" ${1:-0 1 2}
