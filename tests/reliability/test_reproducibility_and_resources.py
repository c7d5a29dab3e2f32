"""Same command, same seed → byte-identical artifacts; memory flat in the number of examples; no file written
outside the run directory and the user's cache."""

import os
import shutil
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from cartrm.circuits.statistics import GroupMoments
from tests.reliability.test_bad_inputs import GOOD_ROWS, invoke, write_jsonl


def test_same_seed_gives_byte_identical_metrics_and_circuits(tmp_path):
    """The same commands, run twice into the same (emptied) folder, write the same bytes."""
    data = write_jsonl(tmp_path / "data.jsonl", GOOD_ROWS)
    out = tmp_path / "out"
    runs = []
    for _ in range(2):
        shutil.rmtree(out, ignore_errors=True)
        assert (
            invoke(
                "train",
                "--data",
                data,
                "--out",
                out / "rm",
                "--model",
                "tiny-bert",
                "--max-steps",
                3,
                "--batch-size",
                4,
            ).exit_code
            == 0
        )
        assert (
            invoke(
                "evaluate", "--model", out / "rm", "--data", data, "--tail-by", "label:is_tail", "--out", out / "eval"
            ).exit_code
            == 0
        )
        result = invoke(
            "discover",
            "--model",
            out / "rm",
            "--data",
            data,
            "--tail-by",
            "label:is_tail",
            "--out",
            out / "disc",
            "--split",
            "all",
            "--top-k",
            8,
            "--patch-pairs",
            2,
            "--n-null",
            2,
            "--max-validated",
            1,
        )
        assert result.exit_code == 0, result.output
        runs.append(
            {
                name: (out / name).read_bytes()
                for name in ("rm/model.safetensors", "eval/metrics.json", "disc/circuits.json")
            }
        )
    assert runs[0] == runs[1]


def _peak_streaming(n_batches: int, width: int = 4096, batch: int = 64) -> int:
    rng = np.random.default_rng(0)
    moments = GroupMoments(width)
    tracemalloc.start()
    for _ in range(n_batches):
        moments.update(rng.normal(size=(batch, width)), rng.random(batch) < 0.2)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_activation_statistics_hold_memory_flat_in_the_number_of_examples():
    small, large = _peak_streaming(10), _peak_streaming(80)  # 640 vs 5120 examples of 4096 features
    assert large < 1.1 * small + 256 * 1024, (small, large)
    assert large < 40 * 2**20  # far below the 5120 × 4096 × 8 bytes = 160 MiB the examples would take


DISCOVERY_PEAK = """
import resource, sys
import numpy as np
from transformers import AutoModelForSequenceClassification
from cartrm.circuits.discover import DiscoveryConfig, discover
from cartrm.data.tail import TailSplit
from cartrm.models import RewardModel
from cartrm.models.builtin import tiny_config
from tests.helpers import planted_pairs

tokenizer = RewardModel.load("tiny-bert").tokenizer
config = tiny_config("tiny-bert", tokenizer)
config.intermediate_size = 2048  # 2 layers x 2048 = 4,096 pooled features per text
reward_model = RewardModel(AutoModelForSequenceClassification.from_config(config), tokenizer)
for n_pairs in map(int, sys.argv[1:]):
    pairs = planted_pairs(n_pairs)
    tail = TailSplit(np.arange(n_pairs) % 4 == 0, "every 4th pair")
    discover(
        reward_model,
        pairs,
        tail,
        DiscoveryConfig(top_k=8, n_permutations=0, patch_pairs=0, coherence_null_shuffles=0),
        progress=False,
    )
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_discovery_on_a_model_holds_memory_flat_in_the_number_of_examples():
    """Discovery on 1,000 texts, then on 4,000 texts × 4,096 features in the same process (the first run sets the
    allocator's working set): kept in memory, the larger run's extra activations would take 3000 × 4096 × 8 B
    = 94 MiB more; streamed, the peak barely moves (measured: +8 MiB)."""
    process = subprocess.run(
        [sys.executable, "-c", DISCOVERY_PEAK, "500", "2000"], capture_output=True, text=True, timeout=600
    )
    assert process.returncode == 0, process.stderr[-2000:]
    small, large = map(int, process.stdout.split()[-2:])  # peak resident KiB after each run
    assert large - small < 32 * 1024, (small, large)


@pytest.mark.slow
def test_a_run_writes_only_to_its_run_directory_and_the_user_cache(tmp_path):
    from cartrm.experiments.run_config import RunConfig
    from tests.helpers import TINY

    work, home, runs = tmp_path / "work", tmp_path / "home", tmp_path / "runs"
    for folder in (work, home):
        folder.mkdir()
    config = RunConfig(name="w", out_root=runs, methods=("bt",), **{**TINY, "bon_prompts": 0})
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "MPLCONFIGDIR": str(home / ".cache" / "matplotlib"),
        "TMPDIR": str(tmp_path / "tmp"),
    }
    (tmp_path / "tmp").mkdir()
    process = subprocess.run(
        [sys.executable, "-m", "cartrm", "run", "--config", str(tmp_path / "config.yaml")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    assert not any(work.iterdir()), list(work.iterdir())
    outside_cache = [p for p in home.rglob("*") if p.is_file() and ".cache" not in p.relative_to(home).parts]
    assert not outside_cache, outside_cache
    assert not any((tmp_path / "tmp").iterdir()), list((tmp_path / "tmp").iterdir())
    assert (runs / "w" / "results.json").exists()
