"""tail-upsample: bt's batches with TAIL_PAIRS_PER_BATCH tail pairs added on top, and plain Bradley–Terry on them."""

import numpy as np
import pytest
import torch

from cartrm.data.tail import TailSplit
from cartrm.models import RewardModel
from cartrm.training import TrainConfig, get_method, registry, train
from cartrm.training.batches import BatchBuilder
from cartrm.training.methods.tail_upsample import TAIL_PAIRS_PER_BATCH, TailUpsample
from cartrm.training.sampling import EpochShuffleSampler
from tests.helpers import planted_data

BATCH = 8


@pytest.fixture(scope="module")
def planted():
    data = planted_data(n_head=40, n_tail=12)
    return data, np.array(data.column("is_tail"), dtype=bool)


def _config(**changes):
    return TrainConfig(method="tail-upsample", batch_size=BATCH, max_batch_tokens=0, max_length=48, **changes)


def test_it_continues_bt_in_warm_started_runs_like_cart():
    assert registry.design("tail-upsample").start == "bt-when-warm"
    assert registry.continues_bt("tail-upsample", 2) and not registry.continues_bt("tail-upsample", 0)
    assert registry.matched_control("tail-upsample", ["bt", "bt-continued", "tail-upsample"]) == "bt-continued"


def test_training_sees_the_plain_batches_with_k_tail_pairs_added(planted, tmp_path, monkeypatch):
    """The batches training runs are bt's own order, block by block, each followed by k tail pairs."""
    data, mask = planted
    seen = []
    loss = TailUpsample.loss
    monkeypatch.setattr(
        TailUpsample, "loss", lambda self, module, batch, step: seen.append(batch) or loss(self, module, batch, step)
    )
    model = RewardModel.load("tiny-bert", seed=0)
    result = train(model, data, _config(epochs=1), tmp_path / "rm", tail=TailSplit(mask, "is_tail"), progress=False)
    lengths = BatchBuilder(RewardModel.load("tiny-bert", seed=0), data, mask, max_length=48).lengths()
    plain = list(EpochShuffleSampler(len(data), 0, lengths=lengths, batch_size=BATCH))
    assert result.global_step == len(seen) == -(-len(data) // BATCH)
    for number, batch in enumerate(seen):
        rows = batch.index.tolist()
        assert rows[:-TAIL_PAIRS_PER_BATCH] == plain[number * BATCH : (number + 1) * BATCH]
        assert len(rows[-TAIL_PAIRS_PER_BATCH:]) == TAIL_PAIRS_PER_BATCH and mask[rows[-TAIL_PAIRS_PER_BATCH:]].all()
    assert np.isfinite(result.final_loss)


def test_its_loss_is_plain_bradley_terry_on_those_batches(planted):
    data, mask = planted
    method = get_method("tail-upsample", _config())
    draw = method.sampler(mask, BATCH, 0, None)
    assert draw.batch_size == BATCH + TAIL_PAIRS_PER_BATCH
    order = list(draw.sampler)
    model = RewardModel.load("tiny-bert", seed=0)
    builder = BatchBuilder(model, data, mask, max_length=48)
    bt = get_method("bt", TrainConfig(batch_size=BATCH))
    with model.eval_mode(), torch.no_grad():
        for start in range(0, len(order), draw.batch_size):
            batch = builder(order[start : start + draw.batch_size])
            assert int(batch.is_tail[-TAIL_PAIRS_PER_BATCH:].sum()) == TAIL_PAIRS_PER_BATCH
            ours, _ = method.loss(model.model, batch, 0)
            plain, _ = bt.loss(model.model, batch, 0)
            assert ours.item() == plain.item()


def test_it_needs_the_tail_split(planted, tmp_path):
    with pytest.raises(Exception, match="--tail-by"):
        train(RewardModel.load("tiny-bert", seed=0), planted[0], _config(max_steps=1), tmp_path / "x", progress=False)
