"""Kills and Ctrl-C: a SIGKILLed training resumes to the same weights; SIGINT stops with a checkpoint;
``cart run`` resumes after the last finished stage; a kill during a save never leaves a truncated file."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.reliability.test_bad_inputs import GOOD_ROWS, write_jsonl

TRAIN = ["--model", "tiny-bert", "--batch-size", 2, "--save-steps", 1, "--max-steps", 12, "--lr", 1e-3, "--seed", 3]


def cart(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cartrm", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def wait_for(path, process, timeout=120.0) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, f"finished before {path} appeared: {process.communicate()[1][-2000:]}"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("d") / "data.jsonl", GOOD_ROWS)


def train_to_end(data, out, *extra) -> dict[str, torch.Tensor]:
    process = cart("train", "--data", data, "--out", out, *TRAIN, *extra)
    assert process.wait(timeout=300) == 0, process.communicate()[1][-2000:]
    return load_file(out / "model.safetensors")


def assert_same_weights(out, reference) -> None:
    final = load_file(out / "model.safetensors")
    assert final.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(final[name], tensor), name


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    return train_to_end(data, tmp_path_factory.mktemp("ref") / "rm")


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_weights(data, reference, tmp_path):
    out = tmp_path / "rm"
    process = cart("train", "--data", data, "--out", out, *TRAIN)
    wait_for(out / "checkpoints" / "step-3" / "trainer_state.json", process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert not (out / "config.json").exists()
    train_to_end(data, out, "--resume")
    assert_same_weights(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("accumulation", [1, 3])
def test_sigint_stops_at_a_step_boundary_and_resume_gives_the_uninterrupted_weights(
    data, accumulation, tmp_path_factory
):
    """Ctrl-C lands mid-step (mid gradient accumulation when it is 3); training finishes that optimizer step,
    saves a checkpoint, exits 1 naming the step, and --resume ends bit-identical to an uninterrupted run."""
    extra = ("--gradient-accumulation-steps", accumulation)
    reference = train_to_end(data, tmp_path_factory.mktemp("ref") / "rm", *extra)
    out = tmp_path_factory.mktemp("int") / "rm"
    process = cart("train", "--data", data, "--out", out, *TRAIN, *extra)
    wait_for(out / "checkpoints" / "step-2" / "trainer_state.json", process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and "interrupted at step" in stderr and "--resume" in stderr, stderr[-2000:]
    assert "Traceback" not in stderr
    step = int(stderr.split("interrupted at step ")[1].split()[0])
    assert 2 <= step < 12
    assert (out / "checkpoints" / f"step-{step}" / "trainer_state.json").exists()
    train_to_end(data, out, *extra, "--resume")
    assert json.loads((out / "train_result.json").read_text())["global_step"] == 12
    assert_same_weights(out, reference)


def test_cart_run_resumes_after_the_last_finished_stage(tmp_path, monkeypatch):
    import cartrm.experiments.pipeline as pipeline
    import cartrm.experiments.stages.single as single
    from cartrm.experiments.run_config import RunConfig
    from tests.helpers import TINY

    config = RunConfig(name="r", out_root=tmp_path, methods=("bt", "label-smoothing"), **TINY)
    real_train, calls = single.train, []

    def train_then_die(model, data, training, *args, **kwargs):
        calls.append(training.method)
        if training.method == "label-smoothing" and len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(model, data, training, *args, **kwargs)

    monkeypatch.setattr(single, "train", train_then_die)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_experiment(config, progress=False)
    assert (config.directory / "seed-0" / "models" / "bt" / ".stage.json").exists()
    pipeline.run_experiment(config, progress=False)
    assert calls == ["bt", "label-smoothing", "label-smoothing"]


def test_a_ctrl_c_d_training_stage_of_cart_run_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """Ctrl-C during a stage's training saves a checkpoint; running the same `cart run` again continues it (the
    trainer is called with resume) and ends with the weights of an uninterrupted run."""
    import os

    import cartrm.experiments.stages.single as single
    from cartrm.errors import CartError
    from cartrm.experiments.pipeline import run_experiment
    from cartrm.experiments.run_config import RunConfig
    from cartrm.experiments.stages.context import SeedContext
    from tests.helpers import TINY

    training = TINY["train"].model_copy(update={"max_steps": 4, "save_steps": 1, "eval_steps": 1})
    settings = {**TINY, "train": training, "bon_prompts": 0}
    reference = RunConfig(name="whole", out_root=tmp_path, methods=("bt",), **settings)
    run_experiment(reference, progress=False)
    config = reference.model_copy(update={"name": "stopped"})
    scorer, calls = SeedContext.validation_scorer, []

    def interrupting(self):
        score = scorer(self)

        def scored(model):
            calls.append(1)
            if len(calls) == 3:  # step 0, step 1, then Ctrl-C during step 2
                os.kill(os.getpid(), signal.SIGINT)
            return score(model)

        return scored

    monkeypatch.setattr(SeedContext, "validation_scorer", interrupting)
    with pytest.raises(CartError, match="run the same `cart run` again"):
        run_experiment(config, progress=False)
    monkeypatch.setattr(SeedContext, "validation_scorer", scorer)
    resumed, real_train = [], single.train
    monkeypatch.setattr(single, "train", lambda *a, **k: resumed.append(k["resume"]) or real_train(*a, **k))
    run_experiment(config, progress=False)
    assert resumed == [True]
    weights = [load_file(c.directory / "seed-0" / "models" / "bt" / "model.safetensors") for c in (reference, config)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_a_multi_seed_run_that_fails_still_writes_the_results_of_its_finished_seeds(tmp_path, monkeypatch):
    import cartrm.experiments.stages.single as single
    from cartrm.experiments.pipeline import run_experiment
    from cartrm.experiments.run_config import RunConfig
    from cartrm.report.results import RunResults
    from tests.helpers import TINY

    config = RunConfig(name="m", out_root=tmp_path, methods=("bt",), seeds=(0, 1), **{**TINY, "bon_prompts": 0})
    real_train = single.train

    def dies_on_seed_1(model, data, training, *args, **kwargs):
        if training.seed == 1:
            raise KeyboardInterrupt
        return real_train(model, data, training, *args, **kwargs)

    monkeypatch.setattr(single, "train", dies_on_seed_1)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, progress=False)
    results = RunResults.load(config.directory / "results.json")
    assert results.seeds == [0] and results.methods["bt"].n_pairs["tail"] == [24]
    assert (config.directory / "report.html").exists()


KILL_DURING_SAVE = """
import sys
from cartrm.io import write_json_atomic
from cartrm.models import RewardModel
kind, target = sys.argv[1], sys.argv[2]
model = RewardModel.load("tiny-bert") if kind == "model" else None
print("ready", flush=True)
for i in range(10**6):
    if kind == "json":
        write_json_atomic(target, {"i": i, "payload": list(range(200_000))})
    else:
        model.save(target)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["json", "model"])
def test_a_kill_during_saves_never_leaves_a_truncated_artifact(kind, tmp_path):
    from cartrm.models import RewardModel

    target = tmp_path / ("artifact.json" if kind == "json" else "model")
    for delay in (0.3, 0.7, 1.1):
        process = subprocess.Popen(
            [sys.executable, "-c", KILL_DURING_SAVE, kind, str(target)], stdout=subprocess.PIPE, text=True
        )
        assert process.stdout.readline().strip() == "ready"
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        if kind == "json":
            if target.exists():
                assert len(json.loads(target.read_text())["payload"]) == 200_000
        elif (target / "config.json").exists():
            RewardModel.load(target)
    visible = [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert visible in ([], [target.name])
