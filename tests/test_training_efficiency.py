"""Dropout off, length-grouped batches, batches split into forward passes, the default max length."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cartrm.data import PreferenceDataset
from cartrm.models import RewardModel
from cartrm.training import TrainConfig, get_method, train
from cartrm.training.batches import BatchBuilder
from cartrm.training.config import CPU_BATCH_TOKENS
from cartrm.training.methods import TrainingContext
from cartrm.training.runtime import disable_dropout
from cartrm.training.sampling import EpochShuffleSampler, TailAwareSampler, group_by_length
from tests.helpers import planted_pairs, varied_pairs

FAST = dict(batch_size=8, learning_rate=3e-3, logging_steps=1)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2", "tiny-llama"])
def test_disable_dropout_makes_training_mode_deterministic(name):
    model = RewardModel.load(name, seed=0)
    for module in model.model.modules():  # give every family's dropout something to switch off
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.5
    batch = model.collate(model.encode(["a question "] * 4, ["an answer with several words"] * 4), range(4))
    model.model.train()
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    assert not torch.equal(model.model(**inputs).logits, model.model(**inputs).logits)
    disable_dropout(model.model)
    assert torch.equal(model.model(**inputs).logits, model.model(**inputs).logits)


def test_dropout_is_off_by_default_and_recorded(tmp_path):
    model = RewardModel.load("tiny-bert", seed=0)
    train(model, planted_pairs(16), TrainConfig(max_steps=1, **FAST), tmp_path / "off", progress=False)
    assert all(m.p == 0 for m in model.model.modules() if isinstance(m, torch.nn.Dropout))
    assert json.loads((tmp_path / "off" / "train_config.json").read_text())["disable_dropout"] is True
    kept = RewardModel.load("tiny-bert", seed=0)
    train(
        kept,
        planted_pairs(16),
        TrainConfig(max_steps=1, disable_dropout=False, **FAST),
        tmp_path / "on",
        progress=False,
    )
    assert {m.p for m in kept.model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
    assert (
        json.loads((tmp_path / "on" / "config.json").read_text())["hidden_dropout_prob"] == 0.1
    )  # the saved config keeps it


def test_group_by_length_keeps_every_index_and_cuts_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 500, size=1000)
    order = rng.permutation(1000)
    grouped = group_by_length(order, lengths, 16, np.random.default_rng(1))
    assert sorted(grouped.tolist()) == list(range(1000))

    def padded(sequence):
        return sum(lengths[sequence[i : i + 16]].max() * len(sequence[i : i + 16]) for i in range(0, 1000, 16))

    assert padded(grouped) < 0.8 * padded(order)
    first_megabatch = order[:64]  # 4 batches of 16: the same examples, regrouped
    assert sorted(grouped[:64].tolist()) == sorted(first_megabatch.tolist())


def test_grouped_samplers_follow_seed_and_epoch_and_keep_the_tail_guarantee():
    lengths = np.random.default_rng(0).integers(5, 300, size=200)
    plain = EpochShuffleSampler(200, seed=3, lengths=lengths, batch_size=8)
    first = list(plain)
    assert first == list(EpochShuffleSampler(200, seed=3, lengths=lengths, batch_size=8))
    plain.set_epoch(1)
    assert list(plain) != first and sorted(plain) == list(range(200))
    mask = np.zeros(200, dtype=bool)
    mask[[5, 60, 150]] = True
    tail = TailAwareSampler(mask, batch_size=8, min_tail=2, seed=0, lengths=lengths)
    order = list(tail)
    assert len(order) == 200 and order == list(
        TailAwareSampler(mask, batch_size=8, min_tail=2, seed=0, lengths=lengths)
    )
    assert all(mask[order[i : i + 8]].sum() >= 2 for i in range(0, 200, 8))


def test_split_batches_give_the_whole_batch_gradient(tmp_path):
    """A batch run as several forward passes (max_batch_tokens) ends with the weights of one pass per batch:
    weights, margins and reward centring are normalised over the whole batch."""
    records = [
        {**r, "weight": 1 + (i % 3), "margin": 0.1 * (i % 2)} for i, r in enumerate(varied_pairs(48).to_records())
    ]
    data = PreferenceDataset.from_records(records)
    config = dict(epochs=2, batch_size=12, learning_rate=3e-3, center_rewards_coefficient=0.01, seed=0)
    whole = RewardModel.load("tiny-bert", seed=0)
    train(whole, data, TrainConfig(max_batch_tokens=0, **config), tmp_path / "whole", progress=False)
    split = RewardModel.load("tiny-bert", seed=0)
    builder = BatchBuilder(split, data)
    assert len(builder.chunks(list(range(12)), max_tokens=200)) > 2  # the setting below does split batches
    result = train(split, data, TrainConfig(max_batch_tokens=200, **config), tmp_path / "split", progress=False)
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "split" / "model.safetensors")
    for name in a:  # 8 AdamW steps at lr 3e-3: float32 rounding of the summed passes, nothing larger
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-4)
    assert 0 < result.history[0]["loss"] < 5 and 0 <= result.history[0]["accuracy"] <= 1


@pytest.mark.parametrize("method_name", ["bt", "reweight", "hidden-reg"])
def test_the_passes_of_a_split_batch_sum_to_the_whole_batch_gradient(tmp_path, method_name):
    records = [
        {**r, "weight": 1 + (i % 3), "margin": 0.1 * (i % 2)} for i, r in enumerate(varied_pairs(16).to_records())
    ]
    data = PreferenceDataset.from_records(records)
    tail = np.arange(16) % 4 == 0
    model = RewardModel.load("tiny-bert", seed=0)
    disable_dropout(model.model)
    method = get_method(method_name, TrainConfig(method=method_name, center_rewards_coefficient=0.01))
    method.setup(model, data, TrainingContext(tail_mask=tail, total_steps=1, output_dir=tmp_path, progress=False))
    builder = BatchBuilder(model, data, tail)

    def gradient(max_tokens):
        model.model.zero_grad()
        chunks = builder.chunks(list(range(16)), max_tokens, method.example_weights)
        for chunk in chunks:
            method.loss(model.model, chunk, 0)[0].backward()
        return len(chunks), [p.grad.clone() for p in model.model.parameters() if p.grad is not None]

    (one, whole), (several, split) = gradient(None), gradient(150)
    assert one == 1 and several > 3
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_batches_are_split_on_a_cpu_and_run_whole_on_a_gpu_by_default():
    default = TrainConfig()
    assert default.batch_tokens("cpu") == CPU_BATCH_TOKENS
    assert default.batch_tokens("cuda") is None
    assert TrainConfig(max_batch_tokens=0).batch_tokens("cpu") is None
    assert TrainConfig(max_batch_tokens=512).batch_tokens("cuda") == 512


def test_chunks_respect_the_token_budget_and_keep_pairs_whole():
    model = RewardModel.load("tiny-bert", seed=0)
    data = varied_pairs(40)
    builder = BatchBuilder(model, data)
    rows = list(range(40))
    chunks = builder.chunks(rows, max_tokens=300)
    assert [int(i) for c in chunks for i in c.index] == rows
    for chunk in chunks:
        assert chunk.input_ids.shape[0] == 2 * len(chunk.index)
        assert chunk.input_ids.numel() <= 300 or len(chunk.index) == 1
        assert chunk.count == 40
    assert builder.chunks(rows, max_tokens=None)[0].input_ids.shape[0] == 80


def test_default_max_length_is_the_longest_text_and_truncation_is_counted(tmp_path, capsys):
    model = RewardModel.load("tiny-bert", seed=0)
    data = varied_pairs(24)
    longest = int(model.token_lengths(*zip(*[(p.prompt, p.chosen) for p in data.render(model.tokenizer)])).max())
    result = train(model, data, TrainConfig(max_steps=1, **FAST), tmp_path / "a", progress=True)
    assert result.max_length == longest and result.truncated == 0
    assert json.loads((tmp_path / "a" / "train_config.json").read_text())["max_length"] == longest
    assert model.max_length == 512  # the in-memory model keeps its own limit for scoring
    assert f"max length {longest} tokens; 0 of 48 texts" in capsys.readouterr().err
    short = train(
        RewardModel.load("tiny-bert", seed=0),
        data,
        TrainConfig(max_steps=1, max_length=12, **FAST),
        tmp_path / "b",
        progress=False,
    )
    assert short.max_length == 12 and short.truncated > 0


def test_scoring_sorts_by_length_and_returns_the_input_order():
    model = RewardModel.load("tiny-bert", seed=0)
    data = varied_pairs(30)
    pairs = data.render(model.tokenizer)
    texts = [p.chosen for p in pairs]
    together = model.score([p.prompt for p in pairs], texts, batch_size=7)
    one_by_one = np.array([model.score([p.prompt], [t])[0] for p, t in zip(pairs, texts)])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-4, atol=1e-5)
