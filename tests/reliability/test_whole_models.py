"""A model folder loads whole or not at all: its tokenizer, its trained head and finite weights are required."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from cartrm.errors import CartError
from cartrm.models import RewardModel


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "model"
    RewardModel.load("tiny-bert", seed=0).save(folder)
    return folder


def _rewrite_weights(folder, change) -> None:
    weights = load_file(folder / "model.safetensors")
    save_file(change(weights), folder / "model.safetensors", metadata={"format": "pt"})


def test_a_folder_without_its_tokenizer_is_refused(saved):
    for path in saved.iterdir():
        if path.name.startswith(("tokenizer", "vocab", "special_tokens")):
            path.unlink()
    with pytest.raises(CartError, match="no tokenizer files"):
        RewardModel.load(saved)


def test_a_trained_classifier_without_its_head_is_refused(saved):
    _rewrite_weights(saved, lambda w: {k: v for k, v in w.items() if not k.startswith("classifier.")})
    with pytest.raises(CartError, match="reward head is missing .*classifier"):
        RewardModel.load(saved)


def test_non_finite_weights_are_refused(saved):
    def poisoned(weights):
        name = next(k for k in weights if k.endswith("query.weight"))
        weights[name] = weights[name].clone()
        weights[name][0, 0] = float("nan")
        return weights

    _rewrite_weights(saved, poisoned)
    with pytest.raises(CartError, match="query.weight holds NaN"):
        RewardModel.load(saved)


def test_a_whole_saved_model_loads_with_its_scores(saved):
    original = RewardModel.load("tiny-bert", seed=0)
    loaded = RewardModel.load(saved)
    assert all(
        torch.equal(a, b) for a, b in zip(original.model.state_dict().values(), loaded.model.state_dict().values())
    )
