import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from cartrm.data import PointwiseDataset
from cartrm.errors import CartError
from cartrm.models import RewardModel
from cartrm.training import TrainConfig, train
from cartrm.training.batches import TrainBatch
from cartrm.training.methods import get_method
from tests.helpers import Interrupt, InterruptedBradleyTerry, planted_pairs

FAST = dict(batch_size=16, learning_rate=3e-3, logging_steps=2)


def test_tiny_training_learns_a_planted_preference(tmp_path):
    model = RewardModel.load("tiny-bert", seed=0)
    held_out = planted_pairs(64, seed=99)
    chosen, rejected = model.score_pairs(held_out)
    assert np.abs(chosen - rejected).mean() < 0.1  # an untrained model barely separates the pair
    result = train(model, planted_pairs(256), TrainConfig(epochs=3, **FAST), tmp_path / "rm", progress=False)
    chosen, rejected = model.score_pairs(held_out)
    assert (chosen > rejected).mean() >= 0.95
    assert (chosen - rejected).mean() > 1.0
    assert result.final_loss < 0.3
    assert result.history and result.history[-1]["step"] == result.global_step


def test_output_folder_is_a_plain_hf_model(tmp_path):
    model = RewardModel.load("tiny-gpt2", seed=0)
    train(model, planted_pairs(32), TrainConfig(max_steps=2, **FAST), tmp_path / "rm", progress=False)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    assert plain.config.num_labels == 1
    assert json.loads((tmp_path / "rm" / "train_result.json").read_text())["global_step"] == 2
    assert list((tmp_path / "rm" / "logs").rglob("events.out.tfevents*")), "TensorBoard events missing"


def test_a_model_trained_under_bf16_autocast_scores_in_float32_like_its_reload(tmp_path):
    """Training's autocast wrapper must not stay on ``forward``: the model in memory and the saved one score the
    same texts identically."""
    model = RewardModel.load("tiny-bert", seed=0)
    config = TrainConfig(max_steps=2, mixed_precision="bf16", **FAST)
    train(model, planted_pairs(32), config, tmp_path / "rm", progress=False)
    held_out = planted_pairs(16, seed=5)
    reloaded = RewardModel.load(str(tmp_path / "rm"))
    for in_memory, saved in zip(model.score_pairs(held_out), reloaded.score_pairs(held_out)):
        np.testing.assert_allclose(in_memory, saved, rtol=0, atol=1e-6)


def test_auto_precision_follows_the_device_the_model_is_on(monkeypatch):
    from cartrm.training.runtime import mixed_precision as _mixed_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setenv("CARTRM_DEVICE", "cpu")
    assert _mixed_precision("auto") == "no"
    monkeypatch.setenv("CARTRM_DEVICE", "cuda")
    assert _mixed_precision("auto") == "bf16"
    assert _mixed_precision("no") == "no"


def test_a_learning_curve_scores_held_out_pairs_without_changing_training(tmp_path):
    from cartrm.evaluation.metrics import accuracy_scorer

    held_out = planted_pairs(32, seed=7)
    tail = np.arange(32) % 4 == 0
    config = TrainConfig(epochs=2, eval_steps=4, **FAST)
    model = RewardModel.load("tiny-bert", seed=0)
    result = train(model, planted_pairs(128), config, tmp_path / "a", evaluate=accuracy_scorer(held_out, tail))
    assert [point["step"] for point in result.curve] == [0, 4, 8, 12, 16]
    assert set(result.curve[0]) == {"step", "head_accuracy", "tail_accuracy"}
    assert result.curve[-1]["head_accuracy"] >= 0.9 and result.curve[-1]["tail_accuracy"] >= 0.9
    untrained = accuracy_scorer(held_out, tail)(RewardModel.load("tiny-bert", seed=0))
    assert result.curve[0] == {"step": 0, **untrained}
    trained = accuracy_scorer(held_out, tail)(RewardModel.load(str(tmp_path / "a")))
    assert result.curve[-1]["tail_accuracy"] == trained["tail_accuracy"]
    plain = RewardModel.load("tiny-bert", seed=0)
    train(plain, planted_pairs(128), config, tmp_path / "b", progress=False)
    weights = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_resume_gives_the_same_final_weights_as_an_uninterrupted_run(tmp_path):
    data = planted_pairs(100)
    config = TrainConfig(
        method="test-interrupted-bt",
        epochs=2,
        batch_size=8,
        gradient_accumulation_steps=2,
        learning_rate=3e-3,
        save_steps=3,
    )
    InterruptedBradleyTerry.interrupt_at = None
    train(RewardModel.load("tiny-bert", seed=0), data, config, tmp_path / "full", progress=False)
    InterruptedBradleyTerry.interrupt_at = 10  # in the second epoch, after the checkpoint at step 9
    with pytest.raises(Interrupt):
        train(RewardModel.load("tiny-bert", seed=0), data, config, tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed" / "config.json").exists()
    InterruptedBradleyTerry.interrupt_at = None
    train(RewardModel.load("tiny-bert", seed=0), data, config, tmp_path / "resumed", resume=True, progress=False)
    full = load_file(tmp_path / "full" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    assert full.keys() == resumed.keys()
    for name in full:
        torch.testing.assert_close(full[name], resumed[name], rtol=0, atol=0)


def test_same_seed_same_weights_different_seed_differs(tmp_path):
    def weights(seed, name):
        train(
            RewardModel.load("tiny-bert", seed=seed),
            planted_pairs(48),
            TrainConfig(max_steps=3, seed=seed, **FAST),
            tmp_path / name,
            progress=False,
        )
        return load_file(tmp_path / name / "model.safetensors")["classifier.weight"]

    first = weights(1, "a")
    assert torch.equal(first, weights(1, "b"))
    assert not torch.equal(first, weights(2, "c"))


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CartError, match="no run to continue"):
        train(
            RewardModel.load("tiny-bert"),
            planted_pairs(16),
            TrainConfig(max_steps=1),
            tmp_path / "x",
            resume=True,
            progress=False,
        )


def _loss(batch_rewards, **batch_fields):
    """Run the Bradley–Terry method on fixed rewards by patching the forward pass."""
    method = get_method("bt", TrainConfig(center_rewards_coefficient=batch_fields.pop("center", None)))
    import cartrm.training.methods.bt as bt

    fields = {k: torch.tensor(v, dtype=torch.float32) for k, v in batch_fields.items()}
    empty = torch.zeros((len(batch_rewards), 0), dtype=torch.long)
    batch = TrainBatch(empty, empty, empty, torch.arange(len(fields["weight"])), is_tail=fields["weight"] < 0, **fields)
    original = bt.reward_forward
    bt.reward_forward = lambda module, batch: torch.tensor(batch_rewards, dtype=torch.float32)
    try:
        return method.loss(None, batch, 0)[0].item()
    finally:
        bt.reward_forward = original


def test_bradley_terry_loss_weights_margin_and_centering():
    # rewards: chosen [2, 0], rejected [1, 3]
    rewards = [2.0, 0.0, 1.0, 3.0]

    def softplus(x):
        return float(np.log1p(np.exp(-x)))  # -log σ(x)

    assert _loss(rewards, weight=[1, 1], margin=[0, 0]) == pytest.approx((softplus(1) + softplus(-3)) / 2, rel=1e-6)
    assert _loss(rewards, weight=[1, 0], margin=[0, 0]) == pytest.approx(softplus(1), rel=1e-6)
    assert _loss(rewards, weight=[1, 0], margin=[0.5, 0]) == pytest.approx(softplus(0.5), rel=1e-6)
    centered = _loss(rewards, weight=[1, 1], margin=[0, 0], center=0.1)
    assert centered == pytest.approx((softplus(1) + softplus(-3)) / 2 + 0.1 * (9 + 9) / 2, rel=1e-6)
    assert _loss([1.0, 3.0], weight=[1, 1], score=[0.0, 1.0]) == pytest.approx((1 + 4) / 2, rel=1e-6)


def test_pointwise_squared_error_learns_planted_scores(tmp_path):
    pairs = planted_pairs(128)
    records = [{"prompt": p, "response": c, "score": 1.0} for p, c in zip(pairs.prompt, pairs.chosen)]
    records += [{"prompt": p, "response": r, "score": -1.0} for p, r in zip(pairs.prompt, pairs.rejected)]
    data = PointwiseDataset.from_records(records)
    model = RewardModel.load("tiny-bert", seed=0)
    train(model, data, TrainConfig(epochs=4, **FAST), tmp_path / "rm", progress=False)
    test = planted_pairs(32, seed=5)
    scores = model.score(test.prompt + test.prompt, test.chosen + test.rejected)
    assert scores[:32].mean() > 0.5 and scores[32:].mean() < -0.5


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(CartError, match="available: .*bt"):
        get_method("nope", TrainConfig())


def test_a_warm_start_begins_at_the_loss_of_the_model_it_continues(tmp_path):
    """Continuing from a trained model (what --init-from and cart's warm start do): the first step's loss, taken
    before any update, is the trained model's own Bradley–Terry loss on that batch, not a fresh model's ~log 2.
    tiny-llama has no dropout, so the training-mode loss equals the scored one; one batch holds every pair."""
    data = planted_pairs(16)
    config = TrainConfig(max_steps=3, batch_size=16, learning_rate=3e-3, logging_steps=1)
    train(RewardModel.load("tiny-llama", seed=0), data, config, tmp_path / "bt", progress=False)
    chosen, rejected = RewardModel.load(tmp_path / "bt").score_pairs(data)
    trained_loss = torch.nn.functional.softplus(-torch.tensor(chosen - rejected)).mean().item()
    assert abs(trained_loss - np.log(2)) > 0.01  # the bt model has moved away from a fresh model's loss
    continued = train(RewardModel.load(tmp_path / "bt"), data, config, tmp_path / "continued", progress=False)
    assert continued.history[0]["step"] == 1
    assert continued.history[0]["loss"] == pytest.approx(trained_loss, abs=1e-4)


def test_trackers_are_checked_and_none_logs_nothing(tmp_path, monkeypatch):
    import accelerate.utils

    with pytest.raises(ValueError, match="choose trackers among"):
        TrainConfig(report_to=("tensorbored",))
    with pytest.raises(ValueError, match="none alone"):
        TrainConfig(report_to=("none", "tensorboard"))
    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    config = TrainConfig(max_steps=1, report_to=("wandb",), **FAST)
    with pytest.raises(CartError, match=r"--report-to wandb: the wandb package is not installed"):
        train(RewardModel.load("tiny-bert"), planted_pairs(16), config, tmp_path / "w", progress=False)
    assert not (tmp_path / "w").exists()
    quiet = TrainConfig(max_steps=1, report_to=("none",), **FAST)
    train(RewardModel.load("tiny-bert"), planted_pairs(16), quiet, tmp_path / "rm", progress=False)
    assert (tmp_path / "rm" / "config.json").exists() and not list(tmp_path.joinpath("rm").rglob("events.out*"))
