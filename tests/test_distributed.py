"""Two training processes (torchrun, gloo, CPU) end with the weights of one process at the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import varied_pairs

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parents[1]
# DDP averages the two processes' gradients where one process sums one batch: the same numbers added in
# another order, so after 16 AdamW steps at lr 1e-3 the weights agree to ~1e-5 (measured 1.1e-5), not bit for
# bit. Two processes that each train alone on all the data (accelerate without cpu=True) differ by ~1e-2.
TOLERANCE = dict(rtol=1e-3, atol=1e-4)


def run(command: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("lora_r", ["0", pytest.param("4", id="lora")])
def test_two_processes_match_one_process_and_only_rank_0_writes_the_model(tmp_path, lora_r):
    if lora_r != "0":
        pytest.importorskip("peft")
    data = tmp_path / "pairs.jsonl"
    varied_pairs(64).save(data)
    one = [str(data), str(tmp_path / "one"), "8", str(tmp_path / "audit-one"), lora_r]
    run([sys.executable, str(WORKER), *one], tmp_path)
    run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(WORKER),
            str(data),
            str(tmp_path / "two"),
            "4",
            str(tmp_path / "audit-two"),
            lora_r,
        ],
        tmp_path,
    )
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    for name in one.keys() - {"classifier.bias"}:  # a pairwise loss gives the bias a zero gradient (it cancels in
        torch.testing.assert_close(
            two[name], one[name], **TOLERANCE
        )  # R_c − R_r); AdamW turns rounding noise there into steps
    start = load_file_of_a_fresh_model(tmp_path)
    assert not torch.allclose(one["classifier.weight"], start["classifier.weight"])  # training moved the weights
    query, key = (f"bert.encoder.layer.0.attention.self.{m}.weight" for m in ("query", "key"))
    assert not torch.allclose(one[query], start[query])  # the adapters, merged
    assert torch.equal(one[key], start[key]) == (lora_r != "0")  # LoRA leaves the weights it does not adapt
    for run_name in ("one", "two"):
        result = json.loads((tmp_path / run_name / "train_result.json").read_text())
        assert result["global_step"] == 16  # 64 pairs, global batch 8, 2 epochs
    rank_1 = json.loads((tmp_path / "audit-two" / "rank-1.json").read_text())
    assert [path for path in rank_1 if not path.startswith("checkpoints")] == []
    rank_0 = json.loads((tmp_path / "audit-two" / "rank-0.json").read_text())
    assert "config.json" in rank_0 and "train_config.json" in rank_0
    assert ("adapter" in rank_0) == (lora_r != "0")


def load_file_of_a_fresh_model(tmp_path: Path) -> dict[str, torch.Tensor]:
    from cartrm.models import RewardModel

    model = RewardModel.load("tiny-bert", seed=0)
    return {name: tensor.detach().clone() for name, tensor in model.model.state_dict().items()}
