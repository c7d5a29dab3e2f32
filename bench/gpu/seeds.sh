#!/usr/bin/env bash
# One GPU lease for a many-seed `cart run` (issue 17's standard-preset comparison and ablations): full.sh once per
# seed into one run folder, until DEADLINE_S, so a lease that runs short still brings back every finished seed; then
# one aggregation over the finished seeds when AGGREGATE_S seconds are left for it. Under $OUT: each seed's
# results-seed-N.json (a seed joins the run folder's results, so it holds every seed finished up to N) and cart-run-seed-N.log, the run's run.log and config.yaml, results.json (finished seeds), and
# run-light.tgz: the run folder without weights or tokenizers (per-pair test scores, tuning grids, validation scores,
# train results, circuits), enough for paired comparisons here (`cart compare`).
# Usage: SEEDS=3,4 DEADLINE_S=540 bash bench/gpu/seeds.sh --preset standard --methods bt,cart ...
# Tested on CPU with a tiny model: tests/test_gpu_script.py.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:?set OUT to the folder that receives the results}"
seeds="${SEEDS:?set SEEDS to the comma-separated seeds to run, in order}"
deadline=$(( $(date +%s) + ${DEADLINE_S:-540} ))
work="${CARTRM_GPU_WORK:-$(mktemp -d)}"
run="$work/runs/gpu"
left() { echo $(( deadline - $(date +%s) )); }
finished=()
for seed in ${seeds//,/ }; do
  [ "$(left)" -gt 30 ] || break
  CARTRM_GPU_WORK="$work" OUT="$work/seed-$seed" CARTRM_GPU_LIMIT="$(left)" \
    bash "$here/full.sh" "$@" --seeds "$seed" > /dev/null 2>&1
  status=$?
  cp "$work/seed-$seed/cart-run.log" "$out/cart-run-seed-$seed.log" 2>/dev/null
  [ "$status" -eq 0 ] || { echo "seed $seed: exit $status, $(left) s left" | tee -a "$out/seeds.txt"; break; }
  cp "$work/seed-$seed/results.json" "$out/results-seed-$seed.json"
  finished+=("$seed")
  echo "seed $seed: done, $(left) s left" | tee -a "$out/seeds.txt"
done
if [ "${#finished[@]}" -gt 1 ] && [ "$(left)" -gt "${AGGREGATE_S:-120}" ]; then
  list="$(IFS=,; echo "${finished[*]}")"
  CARTRM_GPU_WORK="$work" OUT="$work/all" CARTRM_GPU_LIMIT="$(left)" \
    bash "$here/full.sh" "$@" --seeds "$list" > /dev/null 2>&1 && cp "$work/all/results.json" "$out/results.json"
  echo "aggregated seeds $list: exit $?, $(left) s left" | tee -a "$out/seeds.txt"
fi
cp "$run/run.log" "$run/config.yaml" "$out/" 2>/dev/null
cp "$work/seed-${seeds%%,*}/machine.txt" "$out/" 2>/dev/null
tar czf "$out/run-light.tgz" -C "$work/runs" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' \
  --exclude='tokenizer*' --exclude='checkpoint-*' --exclude='benchmark.jsonl' gpu
[ "${#finished[@]}" -gt 0 ]
