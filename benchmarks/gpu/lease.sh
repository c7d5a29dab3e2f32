#!/usr/bin/env bash
# What one short GPU lease ran (docs/results.md, "One GPU"): the full preset's sizes for bt and CART over seeds
# 0,1,2, then, with the time left, every other method of the full preset for seed 0 (or, under 5 minutes left,
# every method at --quick sizes, which still runs each code path on the GPU). Each run stops at the deadline
# and keeps its stage times. Usage: DEADLINE_S=540 bash benchmarks/gpu/lease.sh (results under $OUT).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:?set OUT to the folder that receives the results}"
deadline=$(( $(date +%s) + ${DEADLINE_S:-540} ))
scratch="$(mktemp -d)"
left() { echo $(( deadline - $(date +%s) )); }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/machine.txt" 2>&1 || true

run() {  # run NAME ARGS...: full.sh with what is left of the deadline
  local name=$1
  shift
  if [ "$(left)" -lt 30 ]; then
    echo "$name: skipped, under 30 s left ($*)" | tee -a "$out/machine.txt"
    return
  fi
  CARTRM_GPU_WORK="$scratch/work-$name" OUT="$scratch/$name" CARTRM_GPU_LIMIT="$(left)" \
    bash "$here/full.sh" "$@" > "$scratch/$name.txt" 2>&1
  echo "$name: exit $? ($*)" | tee -a "$out/machine.txt"
}

run bt-cart --full --methods bt,cart
if [ "$(left)" -ge 300 ]; then
  run others --full --seeds 0 --methods label-smoothing,reweight,hidden-reg,ensemble-mean,cart-ensemble
else
  run others --quick --methods all
fi
cat "$scratch"/bt-cart/machine.txt >> "$out/machine.txt" 2>/dev/null
for name in bt-cart others; do
  cp "$scratch/$name/run.log" "$out/$name-run.log" 2>/dev/null
  cp "$scratch/$name/results.json" "$out/$name-results.json" 2>/dev/null
  tail -n 25 "$scratch/$name.txt" | tr '\r' '\n' | grep -v '%|' | tail -n 8
done
tar czf "$out/lease.tgz" -C "$scratch" bt-cart others bt-cart.txt others.txt 2>/dev/null
cat "$out"/*-run.log
