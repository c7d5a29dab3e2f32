import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from cartrm.errors import CartError
from cartrm.models import RewardModel
from cartrm.models.reward_model import DEFAULT_MAX_LENGTH, model_max_positions

FAMILIES = ["tiny-bert", "tiny-gpt2", "tiny-llama"]
PROMPTS = ["What is a river?\n", "Name a fruit.\n", "Tell me something long.\n"]
RESPONSES = ["Water that flows.", "Apple", "A very long answer " * 5]


@pytest.mark.parametrize("name", FAMILIES)
def test_saved_model_loads_with_plain_transformers_and_scores_the_same(name, tmp_path):
    model = RewardModel.load(name, seed=1)
    expected = model.score(PROMPTS, RESPONSES)
    model.save(tmp_path / "rm")

    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "rm")
    with torch.no_grad():
        for prompt, response, reward in zip(PROMPTS, RESPONSES, expected):
            ids = tokenizer(prompt + response, return_tensors="pt")
            assert plain(**ids).logits.item() == pytest.approx(reward, abs=1e-5)
    reloaded = RewardModel.load(tmp_path / "rm").score(PROMPTS, RESPONSES)
    np.testing.assert_allclose(reloaded, expected, atol=1e-6)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_saved_model_scores_at_the_length_it_was_saved_with(name, tmp_path):
    """A model trained at a short max_length (the trainer sets it) scores long texts after saving as before."""
    model = RewardModel.load(name, seed=1, max_length=8)
    expected = model.score(PROMPTS, RESPONSES)
    model.save(tmp_path / "rm")
    reloaded = RewardModel.load(tmp_path / "rm")
    assert reloaded.max_length == 8
    np.testing.assert_allclose(reloaded.score(PROMPTS, RESPONSES), expected, atol=1e-6)
    longer = RewardModel.load(tmp_path / "rm", max_length=64)  # an explicit limit still wins
    assert longer.max_length == 64 and not np.allclose(longer.score(PROMPTS, RESPONSES), expected, rtol=0, atol=1e-6)


def test_a_tokenizer_without_a_limit_leaves_the_default():
    model = RewardModel.load("tiny-gpt2")
    assert model.tokenizer.model_max_length > 10**9  # transformers' "no limit"
    assert model.max_length == min(DEFAULT_MAX_LENGTH, model_max_positions(model.model))


@pytest.mark.parametrize("name", FAMILIES)
def test_score_does_not_depend_on_batch_padding(name):
    model = RewardModel.load(name)
    together = model.score(PROMPTS, RESPONSES, batch_size=3)
    alone = np.array([model.score([p], [r])[0] for p, r in zip(PROMPTS, RESPONSES)])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_decoder_scores_the_last_non_pad_token():
    model = RewardModel.load("tiny-gpt2")
    base = model.score(["Hi.\n"], ["Hello there"])[0]
    changed_last = model.score(["Hi.\n"], ["Hello where"])[0]
    assert base != pytest.approx(changed_last, abs=1e-7)


def test_response_mask_marks_exactly_the_response_tokens():
    model = RewardModel.load("tiny-bert")
    encoded = model.encode(["the prompt words\n"], ["answer is here"])
    tokens = model.tokenizer.convert_ids_to_tokens(encoded.input_ids[0])
    marked = [t for t, m in zip(tokens, encoded.response_mask[0]) if m]
    assert marked == ["answer", "is", "here"]


def test_truncation_keeps_the_end_of_the_response():
    model = RewardModel.load("tiny-bert", max_length=12)
    encoded = model.encode(["word " * 50 + "\n"], ["final answer ends here"])
    tokens = model.tokenizer.convert_ids_to_tokens(encoded.input_ids[0])
    assert len(tokens) == 12
    assert tokens[0] == "[CLS]" and tokens[-5:] == ["final", "answer", "ends", "here", "[SEP]"]


def test_same_seed_same_head_and_different_seed_differs():
    a = RewardModel.load("tiny-bert", seed=3).score(PROMPTS, RESPONSES)
    b = RewardModel.load("tiny-bert", seed=3).score(PROMPTS, RESPONSES)
    c = RewardModel.load("tiny-bert", seed=4).score(PROMPTS, RESPONSES)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_default_minilm_is_the_real_pretrained_model():
    model = RewardModel.load("minilm")
    n_params = sum(p.numel() for p in model.model.parameters())
    assert type(model.model).__name__ == "BertForSequenceClassification"
    assert 22_000_000 < n_params < 23_500_000
    embeddings = model.embed(["a cat sits on the mat", "a kitten sits on a rug", "stock market futures fell"])
    similarity = embeddings @ embeddings.T / np.outer(*(2 * [np.linalg.norm(embeddings, axis=1)]))
    assert similarity[0, 1] > similarity[0, 2]


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(CartError, match="neither a built-in"):
        RewardModel.load(tmp_path / "missing")


def test_fingerprint_survives_save_and_load_and_changes_with_the_weights(tmp_path):
    model = RewardModel.load("tiny-bert", seed=0)
    model.save(tmp_path / "rm")
    assert RewardModel.load(tmp_path / "rm").fingerprint() == model.fingerprint()
    with torch.no_grad():
        model.model.classifier.bias += 1e-3
    assert RewardModel.load(tmp_path / "rm").fingerprint() != model.fingerprint()
