"""Shared fixtures: the tiny built-in models' tokenizers and the optional shared data folder."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core (pyproject's addopts): a worker, and the `cart` processes it starts,
    # use one thread each, or the workers' torch thread pools would oversubscribe the cores. Set before torch loads.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def tiny_bert_tokenizer():
    """A tokenizer without a chat template (tiny random BERT; loads offline)."""
    from cartrm.models.reward_model import RewardModel

    return RewardModel.load("tiny-bert").tokenizer


@pytest.fixture(scope="session")
def tiny_llama_tokenizer():
    """A tokenizer with a chat template (tiny random Llama; loads offline)."""
    from cartrm.models.reward_model import RewardModel

    return RewardModel.load("tiny-llama").tokenizer


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA
