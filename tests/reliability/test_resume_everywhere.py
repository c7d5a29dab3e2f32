"""`--resume` wherever work is long: a finished training's resume is a no-op that keeps its result; an interrupted
ensemble keeps its finished members and continues the rest (the bound sweep's resume: test_stage_inputs.py)."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import cartrm.experiments.ensemble as ensemble_module
from cartrm.data.tail import TailSplit
from cartrm.experiments.config import EnsembleConfig
from cartrm.training import TrainConfig
from tests.helpers import planted_pairs
from tests.reliability.test_bad_inputs import GOOD_ROWS, invoke, write_jsonl


def test_resuming_a_finished_training_keeps_its_result_and_weights(tmp_path):
    data, out = write_jsonl(tmp_path / "d.jsonl", GOOD_ROWS), tmp_path / "m"
    args = ["train", "--data", data, "--model", "tiny-bert", "--out", out, "--max-steps", 2, "--lr", 1e-3]
    assert invoke(*args).exit_code == 0
    result, weights = (out / "train_result.json").read_text(), load_file(out / "model.safetensors")
    again = invoke(*args, "--resume")
    assert again.exit_code == 0, again.output
    assert (out / "train_result.json").read_text() == result and "NaN" not in result
    assert all(torch.equal(weights[k], v) for k, v in load_file(out / "model.safetensors").items())


def test_an_interrupted_ensemble_resumes_with_its_finished_members(tmp_path, monkeypatch):
    data = planted_pairs(24, seed=0)
    tail = TailSplit(np.arange(24) % 3 == 0, "every third pair")
    validation = planted_pairs(12, seed=1)
    validation_tail = TailSplit(np.arange(12) % 3 == 0, "every third pair")
    config = EnsembleConfig(
        members=2,
        method="bt",
        train=TrainConfig(max_steps=2, batch_size=4, max_length=32, learning_rate=3e-3),
        top_neurons=8,
        min_tail_to_fit=4,
    )
    real_train, calls = ensemble_module.train, []

    def second_member_dies(model, dataset, settings, out, *args, **kwargs):
        calls.append((out.name, kwargs["resume"]))
        if out.name == "member-1" and len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(model, dataset, settings, out, *args, **kwargs)

    monkeypatch.setattr(ensemble_module, "train", second_member_dies)
    arguments = ("tiny-bert", data, tail, validation, validation_tail, config, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        ensemble_module.train_ensemble(*arguments, progress=False)
    first = (tmp_path / "members" / "member-0" / "train_result.json").read_text()
    with pytest.raises(Exception, match="not empty"):
        ensemble_module.train_ensemble(*arguments, progress=False)
    result = ensemble_module.train_ensemble(*arguments, resume=True, progress=False)
    assert calls[-2:] == [("member-0", True), ("member-1", False)]  # member 1 had no checkpoint: trained anew
    assert (tmp_path / "members" / "member-0" / "train_result.json").read_text() == first
    assert len(result.alpha) == 2
