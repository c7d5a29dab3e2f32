"""Shared fixtures: the tiny built-in models' tokenizers and the optional shared data folder."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
