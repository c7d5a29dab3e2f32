"""What several test modules build: planted datasets and models with known answers, and the tiny `cart run` sizes."""

from __future__ import annotations

import random

import numpy as np
import torch

from cartrm.circuits.discover import DiscoveryConfig
from cartrm.data import PreferenceDataset
from cartrm.datasets import BenchmarkConfig
from cartrm.models import RewardModel
from cartrm.training import TrainConfig, register
from cartrm.training.methods import BradleyTerry
from cartrm.vulnerability.assess import AssessConfig

WORDS = ["apple", "river", "stone", "cloud", "music", "paper", "garden", "window", "light", "table", "bread", "horse"]


def planted_pairs(n: int, seed: int = 0, marker: str = "thanks") -> PreferenceDataset:
    """Pairs whose chosen response is the rejected one plus ``marker``: a preference a model can learn."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        base = " ".join(rng.choice(WORDS) for _ in range(6))
        records.append(
            {"prompt": f"Say something about item {i}.", "chosen": f"{base} {marker}", "rejected": base, "group": i % 3}
        )
    return PreferenceDataset.from_records(records)


def varied_pairs(n: int, seed: int = 0) -> PreferenceDataset:
    """Planted pairs whose lengths vary from 2 to ~40 words, so batches can be grouped or split."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        words = " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), size=int(rng.integers(2, 40))))
        records.append({"prompt": f"item {i}", "chosen": f"{words} thanks", "rejected": words})
    return PreferenceDataset.from_records(records)


TAIL_TOKEN = "zebra"
MARKER_DIM, REWARD_DIM = 5, 9  # residual dimensions: "tail token present" and "planted circuit output"
PLANTED, PARTNER, CONSTANT = 7, 11, 20  # layer-0 MLP neurons


def planted_model() -> RewardModel:
    """Neurons PLANTED and PARTNER fire only on the tail token; PLANTED writes REWARD_DIM, which the score reads.

    CONSTANT has zero input weights: its activation is the same on every input.
    """
    model = RewardModel.load("tiny-gpt2", seed=0)
    gpt2 = model.model.transformer
    token = model.tokenizer.convert_tokens_to_ids(TAIL_TOKEN)
    with torch.no_grad():
        for dim in (MARKER_DIM, REWARD_DIM):
            gpt2.wte.weight[:, dim] = 0.0
            gpt2.wpe.weight[:, dim] = 0.0
        gpt2.wte.weight[token, MARKER_DIM] = 1.0
        fc, proj = gpt2.h[0].mlp.c_fc, gpt2.h[0].mlp.c_proj  # Conv1D weights are (in, out)
        for neuron, gain, bias in ((PLANTED, 3.0, -2.0), (PARTNER, 2.5, -1.5), (CONSTANT, 0.0, 0.3)):
            fc.weight[:, neuron] = 0.0
            fc.weight[MARKER_DIM, neuron] = gain
            fc.bias[neuron] = bias
        proj.weight[:, REWARD_DIM] = 0.0
        proj.weight[PLANTED, REWARD_DIM] = 2.0
        model.model.score.weight.zero_()
        model.model.score.weight[0, REWARD_DIM] = 3.0
    return model


def planted_data(n_head: int = 120, n_tail: int = 60, seed: int = 0) -> PreferenceDataset:
    """Tail responses contain the tail token 1–3 times and end with it; head responses never contain it."""
    rng = random.Random(seed)
    records = []
    for i in range(n_head + n_tail):
        tail = i >= n_head

        def response(tail: bool = tail) -> str:
            words = [rng.choice(WORDS) for _ in range(rng.randint(5, 9))]
            if tail:
                for _ in range(rng.randint(0, 2)):
                    words.insert(rng.randrange(len(words)), TAIL_TOKEN)
                words.append(TAIL_TOKEN)
            return " ".join(words)

        records.append(
            {"prompt": f"Tell me about item {i}.", "chosen": response(), "rejected": response(), "is_tail": tail}
        )
    return PreferenceDataset.from_records(records)


# The smallest `cart run` that exercises every stage (RunConfig overrides).
TINY = dict(
    model="tiny-bert",
    benchmark=BenchmarkConfig(n_train=80, n_validation=40, n_test_head=24, n_test_tail=24),
    train=TrainConfig(max_steps=2, batch_size=8, max_length=48, learning_rate=1e-3),
    discovery=DiscoveryConfig(top_k=8, patch_pairs=2, n_null=2, max_validated=1, n_permutations=20),
    assessment=AssessConfig(max_circuits=2, sensitivity_examples=4, pgd_steps=1),
    analysis_pairs=80,
    bon_prompts=2,
    bon_candidates=8,
    stability_top_k=8,
    data_controls=False,  # tail-upsample only where a test names it: the run's default adds it beside cart
)


class Interrupt(Exception):
    pass


@register
class InterruptedBradleyTerry(BradleyTerry):
    """Bradley–Terry that raises at a chosen step, to simulate a killed run."""

    name = "test-interrupted-bt"
    interrupt_at: int | None = None

    def loss(self, module, batch, step):
        if step == InterruptedBradleyTerry.interrupt_at:
            raise Interrupt
        return super().loss(module, batch, step)
