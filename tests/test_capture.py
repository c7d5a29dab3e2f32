import pytest
import torch

from cartrm.capture import ActivationCapture, list_sites, patch_response_tokens, pool, pooling_mask
from cartrm.errors import CartError
from cartrm.models import RewardModel, reward_forward
from cartrm.models.reward_model import TokenBatch

FAMILIES = ["tiny-bert", "tiny-gpt2", "tiny-llama"]


def batch_of(
    model,
    prompts=("Question one?\n", "Another question here?\n"),
    responses=("short answer", "a somewhat longer answer here"),
):
    encoded = model.encode(list(prompts), list(responses))
    return model.collate(encoded, range(len(encoded)))


@pytest.mark.parametrize("name", FAMILIES)
def test_sites_have_transformerlens_names_and_the_right_widths(name):
    model = RewardModel.load(name)
    sites = list_sites(model.model, ("mlp", "attn", "resid"))
    assert [s.name for s in sites[:3]] == ["blocks.0.mlp.hook_post", "blocks.0.attn.hook_z", "blocks.0.hook_resid_post"]
    assert len(sites) == 3 * 2
    batch = batch_of(model)
    with ActivationCapture(model.model, sites) as capture:
        capture.set_mask(pooling_mask(batch))
        reward_forward(model.model, batch)
    for site in sites:
        assert capture.pooled[site.name].shape == (2, site.width)
    assert {s.width for s in sites if s.kind == "mlp"} == {64}
    assert {s.width for s in sites if s.kind != "mlp"} == {32}


def test_mlp_site_is_the_post_activation_hidden_layer():
    model = RewardModel.load("tiny-bert")
    site = list_sites(model.model, ("mlp",), layers=[0])[0]
    layer = model.model.bert.encoder.layer[0]
    seen = {}
    handle = layer.intermediate.dense.register_forward_hook(lambda m, a, o: seen.setdefault("pre", o.detach()))
    batch = batch_of(model)
    try:
        with ActivationCapture(model.model, [site]) as capture:
            capture.set_mask(torch.ones_like(batch.attention_mask) * batch.attention_mask)
            reward_forward(model.model, batch)
    finally:
        handle.remove()
    expected = pool(torch.nn.functional.gelu(seen["pre"]), batch.attention_mask)
    torch.testing.assert_close(capture.pooled[site.name], expected)


def test_pooling_methods_on_a_known_tensor():
    acts = torch.tensor([[[1.0], [2.0], [6.0], [100.0]]])
    mask = torch.tensor([[0, 1, 1, 0]])
    assert pool(acts, mask, "mean").item() == 4.0
    assert pool(acts, mask, "max").item() == 6.0
    assert pool(acts, mask, "last").item() == 6.0
    with pytest.raises(CartError):
        pool(acts, torch.zeros_like(mask), "mean")


def test_pooling_mask_falls_back_to_all_tokens_for_an_empty_response():
    batch = TokenBatch(
        input_ids=torch.zeros(2, 3, dtype=torch.long),
        response_mask=torch.tensor([[0, 0, 0], [0, 1, 1]]),
        attention_mask=torch.tensor([[1, 1, 0], [1, 1, 1]]),
    )
    assert pooling_mask(batch).tolist() == [[1, 1, 0], [0, 1, 1]]


def test_hooks_are_removed_when_an_exception_escapes():
    model = RewardModel.load("tiny-gpt2")
    sites = list_sites(model.model, ("mlp", "attn", "resid"))
    with pytest.raises(RuntimeError), ActivationCapture(model.model, sites) as capture:
        assert capture.active
        raise RuntimeError("boom")
    assert not capture.active
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.model.modules())


def test_patching_a_site_sets_the_pooled_value_and_moves_the_reward():
    model = RewardModel.load("tiny-bert")
    sites = list_sites(model.model, ("mlp",), layers=[0])
    batch = batch_of(model)
    mask = pooling_mask(batch)
    with model.eval_mode(), torch.no_grad():
        baseline = reward_forward(model.model, batch)
        indices = torch.arange(64)
        values = torch.full((2, 64), 3.0)
        with ActivationCapture(
            model.model, sites, interventions={sites[0].name: patch_response_tokens(indices, values)}
        ) as capture:
            capture.set_mask(mask)
            patched = reward_forward(model.model, batch)
    torch.testing.assert_close(capture.pooled[sites[0].name], values)
    assert not torch.allclose(baseline, patched)


def test_patching_a_site_that_does_not_feed_the_score_changes_nothing():
    # in a decoder the score is read at the last token, so a *future* position cannot matter; in any model,
    # patching the last layer's MLP neurons at tokens other than the scored one cannot change the score
    model = RewardModel.load("tiny-gpt2")
    site = list_sites(model.model, ("mlp",), layers=[1])[0]
    batch = batch_of(model, prompts=("Q?\n",), responses=("one two three four",))
    not_last = batch.attention_mask.clone()
    not_last[0, -1] = 0
    with model.eval_mode(), torch.no_grad():
        baseline = reward_forward(model.model, batch)
        with ActivationCapture(
            model.model,
            [site],
            interventions={site.name: patch_response_tokens(torch.arange(64), torch.full((1, 64), 5.0))},
        ) as capture:
            capture.set_mask(not_last)
            patched = reward_forward(model.model, batch)
    torch.testing.assert_close(baseline, patched)


def test_unknown_architecture_lists_supported_ones():
    from transformers import AutoModelForSequenceClassification, T5Config

    model = AutoModelForSequenceClassification.from_config(
        T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, vocab_size=100, num_labels=1)
    )
    with pytest.raises(CartError, match="supported: .*bert.*gpt2.*llama"):
        list_sites(model, ("mlp",))


def test_keep_grad_lets_a_loss_on_pooled_activations_train_the_model():
    model = RewardModel.load("tiny-llama")
    site = list_sites(model.model, ("mlp",), layers=[0])[0]
    batch = batch_of(model)
    with ActivationCapture(model.model, [site], keep_grad=True) as capture:
        capture.set_mask(pooling_mask(batch))
        reward_forward(model.model, batch)
    variance = capture.pooled[site.name].var(dim=0).sum()  # the shape of the circuit regulariser (eq. 12)
    variance.backward()
    grad = model.model.model.layers[0].mlp.up_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
