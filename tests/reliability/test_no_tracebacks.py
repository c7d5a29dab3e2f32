"""Inputs that used to end in a traceback, a hang or a misleading message are one line naming what is wrong."""

import json

import pytest

from cartrm.data import load_preferences
from cartrm.data.tail import parse_tail_spec
from cartrm.errors import CartError, DataError
from cartrm.models import RewardModel
from cartrm.training import TrainConfig
from cartrm.training.config import CartConfig
from tests.reliability.test_bad_inputs import GOOD_ROWS, assert_one_line_error, invoke, write_jsonl


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('{"chosen": ' + "[" * 100_000 + "]" * 100_000 + ', "rejected": "b"}', "nested too deeply"),
        ('{"chosen": "a", "rejected": "b", "margin": ' + "9" * 5000 + "}", "4300 digits"),
        ('{"chosen": "a", "rejected": "b", "margin": 1' + "0" * 400 + "}", "field 'margin': expected a number"),
        ('{"chosen": "a \\ud800 x", "rejected": "b"}', "field 'chosen': invalid Unicode"),
    ],
)
def test_unreadable_values_are_one_line_naming_the_line(line, fragment, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(DataError, match=fragment) as raised:
        load_preferences(path)
    assert f"{path}:1" in str(raised.value)


@pytest.mark.parametrize("name", ["learning_rate", "weight_decay", "tail_weight", "max_grad_norm"])
def test_non_finite_settings_are_refused(name):
    with pytest.raises(ValueError, match="finite"):
        TrainConfig(**{name: float("inf")})
    with pytest.raises(ValueError, match="finite"):
        CartConfig(circuit_reg_weight=float("nan"))


def test_an_endless_number_of_epochs_is_refused():
    with pytest.raises(ValueError, match="less than or equal to 1000"):
        TrainConfig(epochs=1e300)


def test_a_max_length_beyond_the_model_s_positions_is_refused_before_training(tmp_path):
    data, out = write_jsonl(tmp_path / "d.jsonl", GOOD_ROWS), tmp_path / "out"
    result = invoke("train", "--data", data, "--model", "tiny-bert", "--out", out, "--max-length", 5000)
    assert_one_line_error(result, "--max-length 5000 is beyond the", out)


@pytest.mark.parametrize(("device", "fragment"), [("bogus", "not a device"), ("meta", "not a device")])
def test_a_device_that_cannot_hold_a_model_is_one_line(device, fragment, monkeypatch):
    monkeypatch.setenv("CARTRM_DEVICE", device)
    with pytest.raises(CartError, match=f"CARTRM_DEVICE={device}: {fragment}"):
        RewardModel.load("tiny-bert")


def test_a_gpu_device_on_a_machine_without_one_is_one_line(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv("CARTRM_DEVICE", "cuda")
    with pytest.raises(CartError, match="this machine has no such device"):
        RewardModel.load("tiny-bert")


def test_tfidf_density_on_texts_without_words_is_one_line():
    from cartrm.data import PreferenceDataset

    rows = [{"prompt": "?", "chosen": "!!", "rejected": "?!"}, {"prompt": "?", "chosen": "..", "rejected": "!?"}]
    with pytest.raises(CartError, match="found no words"):
        parse_tail_spec("density:0.5:tfidf").fit(PreferenceDataset.from_records(rows))


def test_weights_of_another_shape_are_one_line(tmp_path):
    folder = tmp_path / "m"
    RewardModel.load("tiny-bert").save(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": config["intermediate_size"] * 2}))
    with pytest.raises(CartError, match=f"cannot load a reward model from {folder}"):
        RewardModel.load(folder)


def test_a_full_disk_during_discover_names_the_file_and_leaves_no_circuits_json(tmp_path, monkeypatch):
    import errno

    from matplotlib.figure import Figure

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    data, out = write_jsonl(tmp_path / "d.jsonl", GOOD_ROWS), tmp_path / "out"
    args = ["discover", "--data", data, "--model", "tiny-bert", "--tail-by", "label:is_tail", "--out", out]
    result = invoke(*args, "--patch-pairs", 0, "--n-permutations", 0)
    assert result.exit_code == 1 and f"{out / 'delta_hist.png'}: No space left on device" in result.output
    assert not (out / "circuits.json").exists()


def test_a_full_disk_while_checkpointing_is_one_line_and_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    from accelerate import Accelerator

    def full_disk(self, output_dir, **kwargs):
        from pathlib import Path

        Path(output_dir).mkdir(parents=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(Accelerator, "save_state", full_disk)
    data, out = write_jsonl(tmp_path / "d.jsonl", GOOD_ROWS), tmp_path / "out"
    result = invoke("train", "--data", data, "--model", "tiny-bert", "--out", out, "--max-steps", 2, "--save-steps", 1)
    assert result.exit_code == 1 and "cannot write the checkpoint" in result.output and "Traceback" not in result.output
    assert not list(out.rglob(".step-*.tmp")) if out.exists() else True


def test_a_huge_data_weight_is_named_among_the_causes_of_a_non_finite_loss(tmp_path):
    rows = [{**row, "weight": 1e300} for row in GOOD_ROWS]
    data, out = write_jsonl(tmp_path / "d.jsonl", rows), tmp_path / "out"
    result = invoke("train", "--data", data, "--model", "tiny-bert", "--out", out, "--max-steps", 1)
    assert result.exit_code == 1 and "data weight/margin too large" in result.output, result.output
