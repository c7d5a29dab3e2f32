#!/usr/bin/env bash
# The full preset (`cart run --full`) on one GPU machine without network; writes stage times and results.
# Needs bench/gpu/carry/ from prepare.sh. Extra arguments go to `cart run` (e.g. --seeds 0 --methods bt).
# Tested on CPU: `CARTRM_DEVICE=cpu bash bench/gpu/full.sh --quick --model tiny-bert` (tests/test_gpu_script.py).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
carry="${CARTRM_GPU_CARRY:-$here/carry}"
python="${PYTHON:-python3}"
work="${CARTRM_GPU_WORK:-$(mktemp -d)}"
out="${OUT:-$work/out}"
mkdir -p "$work/site" "$out"
wheels=("$carry"/wheels/*.whl)
if [ -e "${wheels[0]}" ] && [ ! -e "$work/site/.wheels-installed" ]; then  # once per work folder (seeds.sh)
  "$python" -m pip install --quiet --no-index --no-deps --target "$work/site" "${wheels[@]}"
  touch "$work/site/.wheels-installed"
fi
"$python" "$here/minilm_fp16.py" unpack "$carry/minilm-fp16" "$work/site"
export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$python" - <<'PY' > "$out/machine.txt"
import platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"{gpu}; torch {torch.__version__}; Python {platform.python_version()}")
PY
# CARTRM_GPU_LIMIT (seconds) stops the run early with Ctrl-C's clean exit, so a lease that runs short still
# brings back the stage times in run.log; the copies below run whatever the run's exit status.
limit="${CARTRM_GPU_LIMIT:-0}"
start=$(date +%s)
status=0
timeout --signal=INT --kill-after=30 "$limit" "$python" -m cartrm run "${@:---full}" --out "$work/runs/gpu" 2>&1 \
  | tee "$out/cart-run.log" || status=$?
echo "wall seconds: $(( $(date +%s) - start )); exit status $status" | tee -a "$out/cart-run.log"
for file in run.log results.json config.yaml report.html; do
  cp "$work/runs/gpu/$file" "$out/" 2>/dev/null || true
done
exit "$status"
