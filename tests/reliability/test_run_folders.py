"""Misuse that used to end with exit 0 and a wrong model: a reused --out, --resume with other settings or data,
two writers at once, weights that do not fit the config, analysis files that do not fit the model, an --out
that cannot be written. Each ends with one `error:` line and leaves what was there untouched."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.torch import load_file

from cartrm.models import RewardModel
from tests.reliability.test_bad_inputs import GOOD_ROWS, assert_one_line_error, invoke, write_jsonl

TRAIN = ["--model", "tiny-bert", "--batch-size", 4, "--lr", 1e-3, "--save-steps", 1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("d") / "data.jsonl", GOOD_ROWS)


def train(data, out, *extra):
    return invoke("train", "--data", data, "--out", out, *TRAIN, *extra)


def assert_error(result, fragment):
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0] and "Traceback" not in result.output, result.output


def steps_in(out):
    return sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith("."))


def test_a_folder_holding_another_run_needs_overwrite_which_clears_it(data, tmp_path):
    out = tmp_path / "rm"
    assert train(data, out, "--max-steps", 4).exit_code == 0
    before = load_file(out / "model.safetensors")
    assert_error(train(data, out, "--max-steps", 2, "--seed", 1), "--overwrite")
    after = load_file(out / "model.safetensors")
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)  # untouched
    assert train(data, out, "--max-steps", 2, "--seed", 1, "--overwrite").exit_code == 0
    assert steps_in(out) == ["step-1", "step-2"]  # the earlier run's step-3/step-4 are gone, not resumed from
    assert json.loads((out / "run.json").read_text())["settings"]["seed"] == 1


def test_overwrite_never_clears_a_folder_of_other_files(data, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    assert_error(train(data, out, "--max-steps", 1, "--overwrite"), "holds other files")
    assert (out / "thesis.tex").read_text() == "years of work"
    RewardModel.load("tiny-bert").save(tmp_path / "base")  # a model folder, but not a cartrm training run
    base = tmp_path / "base"
    result = invoke("train", "--data", data, "--out", base, "--model", base, "--max-steps", 1, "--overwrite")
    assert_error(result, "holds other files")
    assert (base / "model.safetensors").exists() and (base / "config.json").exists()


@pytest.mark.parametrize(
    "change, fragment",
    [(["--lr", 2e-3], "learning_rate: 0.001 → 0.002"), (["--seed", 5], "seed: 0 → 5"), ([], "data differs")],
)
def test_resume_refuses_other_settings_or_other_data(data, tmp_path, change, fragment):
    out = tmp_path / "rm"
    assert train(data, out, "--max-steps", 2).exit_code == 0
    before = (out / "model.safetensors").read_bytes()
    edited = [GOOD_ROWS[0] | {"chosen": "a better answer"}, *GOOD_ROWS[1:]]
    other = data if change else write_jsonl(tmp_path / "other.jsonl", edited)
    assert_error(train(other, out, "--max-steps", 2, "--resume", *change), fragment)
    assert (out / "model.safetensors").read_bytes() == before


def test_resume_may_change_how_often_it_logs_and_checkpoints(data, tmp_path):
    out = tmp_path / "rm"
    assert train(data, out, "--max-steps", 2).exit_code == 0
    assert train(data, out, "--max-steps", 2, "--resume", "--logging-steps", 1, "--save-steps", 2).exit_code == 0


def hold_lock(folder):
    """Another process that holds ``folder``'s lock until killed."""
    folder.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)",
            str(folder / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_stops_while_the_first_holds_the_folder(data, tmp_path):
    out = tmp_path / "rm"
    holder = hold_lock(out)
    try:
        assert_error(train(data, out, "--max-steps", 1), "another process is training into this folder")
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    assert train(data, out, "--max-steps", 1).exit_code == 0  # the lock goes with the process that held it


def test_a_second_experiment_in_a_run_folder_stops_while_the_first_runs(tmp_path):
    from cartrm.errors import CartError
    from cartrm.experiments.pipeline import run_experiment
    from cartrm.experiments.run_config import RunConfig
    from tests.helpers import TINY

    config = RunConfig(name="r", out_root=tmp_path, methods=("bt",), **TINY)
    holder = hold_lock(config.directory)
    try:
        with pytest.raises(CartError, match="another process is running an experiment in this folder"):
            run_experiment(config, progress=False)
        assert sorted(p.name for p in config.directory.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_two_trainings_into_one_folder_at_once_leave_one_model_and_one_error(data, tmp_path):
    out = tmp_path / "rm"
    command = [sys.executable, "-m", "cartrm", "train", "--data", data, "--out", out, *TRAIN, "--max-steps", 6]
    processes = [subprocess.Popen(list(map(str, command)), stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((p.wait(timeout=300), p.stderr.read()) for p in processes)
    assert [code for code, _ in outcomes] == [0, 1], outcomes
    assert "another process" in outcomes[1][1] or "not empty" in outcomes[1][1], outcomes[1][1]
    assert json.loads((out / "train_result.json").read_text())["global_step"] == 6
    RewardModel.load(out)


def test_weights_that_do_not_fit_the_config_are_refused(data, tmp_path):
    RewardModel.load("tiny-bert").save(tmp_path / "bert")
    RewardModel.load("tiny-gpt2").save(tmp_path / "gpt2")
    shutil.copy(tmp_path / "gpt2" / "model.safetensors", tmp_path / "bert" / "model.safetensors")
    result = invoke("evaluate", "--model", tmp_path / "bert", "--data", data, "--out", tmp_path / "out")
    assert_one_line_error(result, "the weights do not fit config.json", tmp_path / "out")


def test_a_truncated_weight_file_is_one_line(data, tmp_path):
    RewardModel.load("tiny-bert").save(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = invoke("evaluate", "--model", tmp_path / "m", "--data", data, "--out", tmp_path / "out")
    assert_one_line_error(result, "cannot load a reward model", tmp_path / "out")


def test_a_base_model_still_gets_a_fresh_reward_head(tmp_path):
    RewardModel.load("tiny-bert").model.base_model.save_pretrained(tmp_path / "base")
    RewardModel.load("tiny-bert").tokenizer.save_pretrained(tmp_path / "base")
    assert RewardModel.load(tmp_path / "base").model.config.num_labels == 1


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """A planted model, its data and the circuits and vulnerability report found on it."""
    from cartrm.circuits.discover import DiscoveryConfig, discover
    from cartrm.data.tail import TailSplit
    from cartrm.vulnerability.assess import AssessConfig, assess
    from tests.helpers import planted_data, planted_model

    folder = tmp_path_factory.mktemp("analysed")
    data = planted_data(60, 30)
    data.save(folder / "planted.jsonl")
    model = planted_model()
    model.save(folder / "model")
    tail = TailSplit(np.array(data.column("is_tail"), dtype=bool), "is_tail")
    circuits = discover(model, data, tail, DiscoveryConfig(top_k=4, patch_pairs=0, n_permutations=10), progress=False)
    assert circuits.circuits, "the planted model must have a tail circuit"
    circuits.save(folder / "circuits.json")
    assess(model, data, tail, circuits, AssessConfig(max_circuits=1, sensitivity_examples=2), progress=False).save(
        folder / "vulnerability.json"
    )
    return folder


def spoil(analysed, tmp_path, name, change):
    values = json.loads((analysed / name).read_text())
    change(values)
    (tmp_path / name).write_text(json.dumps(values))
    return tmp_path / name


def first_member(values):
    return values["circuits"][0]["members"][0]


CIRCUIT_DEFECTS = {
    "a layer the model lacks": (lambda v: first_member(v).update(layer=7), "not a neuron of this model"),
    "a site the model lacks": (lambda v: first_member(v).update(site="blocks.9.mlp.hook_post"), "not a neuron"),
    "an index past the site's width": (lambda v: first_member(v).update(index=10_000), "not a neuron of this model"),
    "a feature number that is another neuron": (
        lambda v: first_member(v).update(feature=first_member(v)["feature"] + 1),
        "has feature number",
    ),
    "no members": (lambda v: v["circuits"][0].update(members=[]), "has no members"),
    "a repeated id": (lambda v: v["circuits"].append(v["circuits"][0]), "used twice"),
    "a number that is not finite": (lambda v: v["circuits"][0].update(coherence=float("nan")), "not a finite"),
}


@pytest.mark.parametrize("defect", sorted(CIRCUIT_DEFECTS))
def test_circuits_that_do_not_fit_the_model_are_refused(analysed, tmp_path, defect):
    change, fragment = CIRCUIT_DEFECTS[defect]
    circuits = spoil(analysed, tmp_path, "circuits.json", change)
    common = ["--data", analysed / "planted.jsonl", "--tail-by", "label:is_tail", "--out", tmp_path / "out"]
    result = invoke("assess", "--model", analysed / "model", "--circuits", circuits, *common)
    assert_one_line_error(result, fragment, tmp_path / "out")


def test_a_vulnerability_report_naming_unknown_circuits_is_refused(analysed, tmp_path):
    report = spoil(analysed, tmp_path, "vulnerability.json", lambda v: v.update(targets=["c404"]))
    result = invoke(
        "train",
        "--method",
        "cart",
        "--model",
        analysed / "model",
        "--data",
        analysed / "planted.jsonl",
        "--tail-by",
        "label:is_tail",
        "--circuits",
        analysed / "circuits.json",
        "--vulnerability",
        report,
        "--max-steps",
        1,
        "--out",
        tmp_path / "out",
    )
    assert_one_line_error(result, "c404", tmp_path / "out")


@pytest.mark.parametrize("command", ["train", "evaluate", "discover", "ensemble", "run"])
def test_an_out_that_is_a_file_fails_before_any_work(command, data, tmp_path):
    from tests.reliability.test_bad_inputs import data_commands

    taken = tmp_path / "taken"
    taken.write_text("keep me")
    args = data_commands(data, taken)[command]
    if command == "run":
        args[args.index("--out") + 1] = taken
    result = invoke(*args)
    assert_error(result, "is a file")
    assert taken.read_text() == "keep me"


def test_a_stale_temporary_folder_of_a_killed_run_is_cleaned_on_the_next_start(data, tmp_path):
    out = tmp_path / "rm"
    assert train(data, out, "--max-steps", 2).exit_code == 0
    (out / ".final.tmp").mkdir()
    (out / "checkpoints" / ".step-3.tmp").mkdir()
    assert train(data, out, "--max-steps", 2, "--resume").exit_code == 0
    assert not (out / ".final.tmp").exists() and not (out / "checkpoints" / ".step-3.tmp").exists()


@pytest.mark.parametrize(
    "command, option",
    [
        ("evaluate", "--batch-size"),
        ("evaluate", "--seed"),
        ("discover", "--max-pairs"),
        ("discover", "--seed"),
        ("ensemble", "--seed"),
        ("train", "--seed"),
    ],
)
def test_out_of_range_integer_options_are_one_line(command, option, data, tmp_path):
    from tests.reliability.test_bad_inputs import data_commands

    result = invoke(*data_commands(data, tmp_path / "out")[command], option, -1)
    assert result.exit_code in (1, 2) and isinstance(result.exception, SystemExit), result.output
    assert option in result.output or option[2:].replace("-", "_") in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_full_disk_while_saving_the_model_is_one_line_and_leaves_no_half_model(data, tmp_path, monkeypatch):
    import errno

    from cartrm.models.reward_model import RewardModel as Model

    def disk_full(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "model.safetensors"))

    monkeypatch.setattr(Model, "save_into", disk_full)
    out = tmp_path / "rm"
    assert_error(train(data, out, "--max-steps", 1), "No space left on device")
    assert not (out / "config.json").exists() and not (out / "model.safetensors").exists()
    assert not (out / ".final.tmp").exists()
