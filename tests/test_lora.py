"""LoRA (peft), gradient checkpointing and bf16 weights in training: what trains, what is saved, what loads."""

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from cartrm.data.tail import TailSplit
from cartrm.errors import CartError
from cartrm.models import RewardModel
from cartrm.models.lora import LoraSettings, add_lora, head_parameters, merge_lora
from cartrm.training import TrainConfig, train
from cartrm.training.config import CartConfig
from tests.helpers import Interrupt, InterruptedBradleyTerry, planted_data, planted_model, planted_pairs

peft = pytest.importorskip("peft")

FAST = dict(batch_size=16, learning_rate=3e-3, logging_steps=1, warmup_ratio=0.0)


def test_only_the_adapters_and_the_reward_head_train():
    model = RewardModel.load("tiny-llama", seed=0).model
    add_lora(model, LoraSettings(r=4))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert head_parameters(model) == {"score.weight"}
    assert trainable - {"score.weight"} and all(".lora_" in name for name in trainable - {"score.weight"})
    adapted = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable - {"score.weight"}}
    assert adapted == {"q_proj", "v_proj"}  # peft's choice for Llama


def test_merging_keeps_the_scores_and_gives_back_the_plain_module_tree():
    reward_model = RewardModel.load("tiny-bert", seed=0)
    plain_names = set(reward_model.model.state_dict())
    add_lora(reward_model.model, LoraSettings(r=4, target_modules=("all-linear",)))
    with torch.no_grad():
        for name, parameter in reward_model.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)  # a trained adapter: B is no longer zero
    pairs = planted_pairs(8)
    adapted = reward_model.score_pairs(pairs)
    merge_lora(reward_model.model)
    assert set(reward_model.model.state_dict()) == plain_names
    assert all(p.requires_grad for p in reward_model.model.parameters())
    for before, after in zip(adapted, reward_model.score_pairs(pairs)):
        np.testing.assert_allclose(before, after, atol=1e-5)


def test_lora_training_saves_a_merged_plain_model_and_a_peft_adapter(tmp_path):
    start = RewardModel.load("tiny-llama", seed=0)
    start.save(tmp_path / "start")
    model = RewardModel.load(str(tmp_path / "start"))
    config = TrainConfig(max_steps=6, lora_r=4, lora_alpha=8, **FAST)
    train(model, planted_pairs(96), config, tmp_path / "rm", progress=False)
    saved, begun = load_file(tmp_path / "rm" / "model.safetensors"), load_file(tmp_path / "start" / "model.safetensors")
    assert saved.keys() == begun.keys()  # merged: no adapter weights left in the model
    changed = {name for name in saved if not torch.equal(saved[name], begun[name])}
    assert "score.weight" in changed and any("q_proj" in n for n in changed)
    assert not any("mlp" in n or "k_proj" in n for n in changed)  # frozen weights stay as they were
    held_out = planted_pairs(16, seed=5)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    reloaded = RewardModel(plain, model.tokenizer, max_length=model.max_length)
    expected = model.score_pairs(held_out)
    for in_memory, loaded in zip(expected, reloaded.score_pairs(held_out)):
        np.testing.assert_allclose(in_memory, loaded, atol=1e-5)
    adapter = tmp_path / "rm" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tmp_path / "start"
    )
    base = AutoModelForSequenceClassification.from_pretrained(tmp_path / "start", num_labels=1)
    with_adapter = peft.PeftModel.from_pretrained(base, adapter)
    via_peft = RewardModel(with_adapter, model.tokenizer, max_length=model.max_length)
    for in_memory, loaded in zip(expected, via_peft.score_pairs(held_out)):
        np.testing.assert_allclose(in_memory, loaded, atol=1e-5)


def test_lora_learns_a_planted_preference(tmp_path):
    model = RewardModel.load("tiny-bert", seed=0)
    config = TrainConfig(epochs=3, lora_r=8, lora_alpha=16, lora_target_modules=("all-linear",), **FAST)
    train(model, planted_pairs(256), config, tmp_path / "rm", progress=False)
    chosen, rejected = model.score_pairs(planted_pairs(64, seed=99))
    assert (chosen > rejected).mean() >= 0.9


def test_a_resumed_lora_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    data = planted_pairs(64)
    config = TrainConfig(method="test-interrupted-bt", max_steps=8, save_steps=3, lora_r=4, **FAST)
    InterruptedBradleyTerry.interrupt_at = None
    train(RewardModel.load("tiny-llama", seed=0), data, config, tmp_path / "full", progress=False)
    InterruptedBradleyTerry.interrupt_at = 5  # after the checkpoint at step 3
    with pytest.raises(Interrupt):
        train(RewardModel.load("tiny-llama", seed=0), data, config, tmp_path / "run", progress=False)
    InterruptedBradleyTerry.interrupt_at = None
    train(RewardModel.load("tiny-llama", seed=0), data, config, tmp_path / "run", resume=True, progress=False)
    full, resumed = (
        load_file(tmp_path / "full" / "model.safetensors"),
        load_file(tmp_path / "run" / "model.safetensors"),
    )
    assert full.keys() == resumed.keys()
    for name in full:
        torch.testing.assert_close(full[name], resumed[name], rtol=0, atol=0)
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()


def test_cart_trains_with_lora(tmp_path):
    data = planted_data()
    mask = np.array(data.column("is_tail"), dtype=bool)
    cart = CartConfig(augmentation=False, warmup_steps=2, discovery_pairs=120)
    config = TrainConfig(method="cart", max_steps=5, lora_r=4, lora_target_modules=("all-linear",), cart=cart, **FAST)
    model = planted_model()
    result = train(model, data, config, tmp_path / "rm", tail=TailSplit(mask, "is_tail"), progress=False)
    assert "circuit_var" in result.history[-1] and np.isfinite(result.final_loss)
    reloaded = RewardModel.load(str(tmp_path / "rm"))
    pairs = planted_pairs(8)
    for a, b in zip(model.score_pairs(pairs), reloaded.score_pairs(pairs)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_gradient_checkpointing_is_refused_for_a_method_that_hooks_activations(tmp_path):
    data = planted_data()
    mask = np.array(data.column("is_tail"), dtype=bool)
    config = TrainConfig(method="cart", max_steps=2, gradient_checkpointing=True, **FAST)
    with pytest.raises(CartError, match="recomputation would not replay"):
        train(planted_model(), data, config, tmp_path / "rm", tail=TailSplit(mask, "is_tail"), progress=False)
    assert not (tmp_path / "rm").exists()


def test_gradient_checkpointing_gives_the_gradient_of_a_plain_run(tmp_path):
    weights, calls = {}, {}
    for checkpointing in (False, True):
        model = RewardModel.load("tiny-llama", seed=0)
        calls[checkpointing] = 0

        def count(*_, on=checkpointing):
            calls[on] += 1

        model.model.model.layers[0].mlp.down_proj.register_forward_pre_hook(count)  # inside the checkpointed layer
        config = TrainConfig(max_steps=3, gradient_checkpointing=checkpointing, **FAST)
        train(model, planted_pairs(48), config, tmp_path / str(checkpointing), progress=False)
        weights[checkpointing] = load_file(tmp_path / str(checkpointing) / "model.safetensors")
    assert calls[True] == 2 * calls[False]  # each layer ran again in the backward pass
    for name in weights[False]:
        torch.testing.assert_close(weights[True][name], weights[False][name], rtol=1e-4, atol=1e-5)


def test_bf16_weights_train_and_save_in_bf16(tmp_path):
    model = RewardModel.load("tiny-bert", seed=0)
    train(model, planted_pairs(32), TrainConfig(max_steps=2, dtype="bf16", **FAST), tmp_path / "rm", progress=False)
    assert next(model.model.parameters()).dtype == torch.bfloat16
    assert {t.dtype for t in load_file(tmp_path / "rm" / "model.safetensors").values()} == {torch.bfloat16}
    pairs = planted_pairs(8)
    reloaded = RewardModel.load(str(tmp_path / "rm"))
    for a, b in zip(model.score_pairs(pairs), reloaded.score_pairs(pairs)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_lora_options_without_a_rank_are_refused():
    with pytest.raises(ValidationError, match="lora_alpha set without lora_r"):
        TrainConfig(lora_alpha=32)


def test_unknown_target_modules_are_one_line(tmp_path):
    config = TrainConfig(max_steps=1, lora_r=4, lora_target_modules=("no_such_proj",), **FAST)
    with pytest.raises(CartError, match="--lora-target-modules"):
        train(RewardModel.load("tiny-llama"), planted_pairs(16), config, tmp_path / "rm", progress=False)
    assert not (tmp_path / "rm" / "config.json").exists()


def test_new_options_at_their_defaults_leave_a_run_identity_unchanged(tmp_path):
    train(RewardModel.load("tiny-bert"), planted_pairs(16), TrainConfig(max_steps=1, **FAST), tmp_path, progress=False)
    settings = json.loads((tmp_path / "run.json").read_text())["settings"]
    assert not {"lora_r", "gradient_checkpointing", "dtype"} & set(settings)


def test_cart_train_with_lora_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from cartrm.cli import app

    def invoke(*args):
        return CliRunner().invoke(app, [str(a) for a in args])

    data = tmp_path / "bench.jsonl"
    made = invoke("data", "make-benchmark", "--out", data, "--n-train", 48, "--n-validation", 8, "--n-test-head", 8)
    assert made.exit_code == 0, made.output
    common = ["train", "--data", data, "--model", "tiny-llama", "--max-steps", 2, "--batch-size", 8]
    result = invoke(*common, "--lora-r", 4, "--lora-target-modules", "q_proj,k_proj", "--out", tmp_path / "rm")
    assert result.exit_code == 0, result.output
    assert "LoRA r=4" in result.output
    adapted = json.loads((tmp_path / "rm" / "adapter" / "adapter_config.json").read_text())["target_modules"]
    assert sorted(adapted) == ["k_proj", "q_proj"]
    assert json.loads((tmp_path / "rm" / "train_config.json").read_text())["lora_r"] == 4
    refused = invoke(*common, "--lora-alpha", 32, "--out", tmp_path / "no")
    assert refused.exit_code != 0 and "without lora_r" in refused.output
    assert not (tmp_path / "no").exists()


def test_lora_without_peft_names_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_peft(name, *args, **kwargs):
        if name == "peft" or name.startswith("peft."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    with pytest.raises(CartError, match=r'pip install "cartrm\[lora\]"'):
        add_lora(RewardModel.load("tiny-bert").model, LoraSettings(r=4))


def test_bf16_weights_keep_float32_adapters_and_save_merged_in_bf16(tmp_path):
    model = RewardModel.load("tiny-llama", seed=0)
    model.model.to(torch.bfloat16)
    add_lora(model.model, LoraSettings(r=4))
    assert {p.dtype for n, p in model.model.named_parameters() if ".lora_" in n} == {torch.float32}
    model = RewardModel.load("tiny-llama", seed=0)
    config = TrainConfig(max_steps=2, lora_r=4, dtype="bf16", **FAST)
    train(model, planted_pairs(32), config, tmp_path / "rm", progress=False)
    assert {t.dtype for t in load_file(tmp_path / "rm" / "model.safetensors").values()} == {torch.bfloat16}
    pairs = planted_pairs(8)
    reloaded = RewardModel.load(str(tmp_path / "rm"))
    for a, b in zip(model.score_pairs(pairs), reloaded.score_pairs(pairs)):
        np.testing.assert_allclose(a, b, atol=1e-2)  # the merge rounds once more to bf16
