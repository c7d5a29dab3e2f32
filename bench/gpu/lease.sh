#!/usr/bin/env bash
# What one short GPU lease runs (docs/results.md, "One GPU"). The first lease ran the full preset's bt and CART over
# seeds 0,1,2 (commit 207db30 has that script); this one, within DEADLINE_S seconds:
#  1. step_profile.py: where a training step's time goes (trainer vs a bare loop; max_batch_tokens 2048 vs one pass);
#  2. every other method of the full preset at its sizes for seed 0, one forward pass per batch on the GPU
#     (max_batch_tokens: 0; the default on a GPU since), stopping at the deadline with the stage times it has.
# Usage: DEADLINE_S=540 bash bench/gpu/lease.sh (results under $OUT).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:?set OUT to the folder that receives the results}"
python="${PYTHON:-python3}"
deadline=$(( $(date +%s) + ${DEADLINE_S:-540} ))
scratch="$(mktemp -d)"
left() { echo $(( deadline - $(date +%s) )); }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/machine.txt" 2>&1 || true

# full.sh installs the carried wheels and MiniLM; a --help run does only that, so the profile can import cartrm.
CARTRM_GPU_WORK="$scratch/work" OUT="$scratch/setup" bash "$here/full.sh" --help > /dev/null 2>&1
export PYTHONPATH="$scratch/work/site" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
timeout 150 "$python" "$here/step_profile.py" --out "$out" 2>&1 | grep -v "shards" | tail -n 6
echo "step_profile: exit ${PIPESTATUS[0]}, $(left) s left" | tee -a "$out/machine.txt"

"$python" - "$scratch/others.yaml" <<'PY'
import sys
from cartrm.experiments.pipeline import RunConfig
full = RunConfig.preset("full")
config = full.model_copy(update=dict(
    seeds=(0,),
    methods=("bt", "label-smoothing", "reweight", "hidden-reg", "ensemble-mean", "cart-ensemble"),
    train=full.train.model_copy(update=dict(max_batch_tokens=0)),
))
open(sys.argv[1], "w").write(config.to_yaml())
PY
CARTRM_GPU_WORK="$scratch/work" OUT="$scratch/others" CARTRM_GPU_LIMIT="$(left)" \
  bash "$here/full.sh" --config "$scratch/others.yaml" > "$scratch/others.txt" 2>&1
echo "others: exit $?, $(left) s left" | tee -a "$out/machine.txt"
cat "$scratch/others/machine.txt" >> "$out/machine.txt" 2>/dev/null
cp "$scratch/others/run.log" "$out/others-run.log" 2>/dev/null
cp "$scratch/others/results.json" "$out/others-results.json" 2>/dev/null
tail -n 25 "$scratch/others.txt" | tr '\r' '\n' | grep -v '%|' | tail -n 8
tar czf "$out/lease.tgz" -C "$scratch" others others.txt 2>/dev/null
cat "$out"/*-run.log
