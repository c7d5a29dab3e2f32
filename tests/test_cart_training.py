"""CART training terms (eq. 12, 13, 16) and the baselines' losses, on known cases."""

import json
import math

import numpy as np
import pytest
import torch

from cartrm.capture.sites import list_sites
from cartrm.capture.stream import ExampleSet, FeatureIndex, pooled_batches
from cartrm.circuits.discover import DiscoveryConfig, discover
from cartrm.circuits.result import Circuits
from cartrm.data.tail import TailSplit
from cartrm.errors import CartError
from cartrm.models import RewardModel, reward_forward
from cartrm.training import TrainConfig, register, train
from cartrm.training.batches import AugmentedBatch, BatchBuilder
from cartrm.training.config import CartConfig
from cartrm.training.methods import TrainingContext, get_method, pairwise_losses
from cartrm.training.methods.cart import CircuitAwareTraining, TargetCircuit, circuit_variance, progressive_weight
from cartrm.training.sampling import TailAwareSampler
from tests.helpers import PLANTED, planted_data, planted_model

NO_COMPONENTS = CartConfig(augmentation=False, circuit_reg=False, progressive=False)


@pytest.fixture(scope="module")
def planted():
    data = planted_data()
    mask = np.array(data.column("is_tail"), dtype=bool)
    config = DiscoveryConfig(top_k=8, patch_pairs=0, n_permutations=50, seed=0)
    circuits = discover(planted_model(), data, TailSplit(mask, "is_tail"), config, progress=False)
    return data, mask, circuits


@pytest.fixture()
def planted_circuits_file(planted, tmp_path):
    circuits = planted[2]
    circuits.save(tmp_path / "circuits.json")
    target = next(c for c in circuits.circuits if PLANTED in {m.index for m in c.members if m.layer == 0})
    return tmp_path / "circuits.json", target.id


def test_progressive_weights_follow_eq_13():
    assert [progressive_weight(t, 0.25, 1.0) for t in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [progressive_weight(t, 0.5, 2.0) for t in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]


def test_default_eta_reaches_w_max_at_the_ramp_end(planted, tmp_path):
    data, mask, _ = planted
    method = get_method(
        "cart", TrainConfig(method="cart", cart=CartConfig(augmentation=False, w_max=3.0, progressive_ramp=0.5))
    )
    method.setup(planted_model(), data, TrainingContext(mask, total_steps=40, output_dir=tmp_path))
    assert progressive_weight(18, method.eta, 3.0) < 3.0
    assert progressive_weight(19, method.eta, 3.0) == pytest.approx(3.0)


def test_tail_aware_sampler_puts_k_tail_examples_in_every_batch():
    mask = np.zeros(100, dtype=bool)
    mask[[3, 50, 97]] = True
    sampler = TailAwareSampler(mask, batch_size=16, min_tail=4, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == 100
    for start in range(0, 100, 16):
        block = order[start : start + 16]
        assert mask[block].sum() >= min(4, len(block))
    assert list(sampler) == order
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_the_tail_adding_sampler_keeps_every_head_pair_of_an_epoch():
    from cartrm.training.sampling import EpochShuffleSampler, TailAddingSampler

    mask = np.zeros(100, dtype=bool)
    mask[[3, 50, 97]] = True
    lengths = np.random.default_rng(0).integers(5, 50, 100)
    adding = TailAddingSampler(mask, batch_size=16, added=4, seed=0, lengths=lengths)
    plain = list(EpochShuffleSampler(100, 0, lengths=lengths, batch_size=16))
    order = list(adding)
    assert len(order) == len(adding) == 100 + 4 * 7
    blocks = [order[i : i + 20] for i in range(0, len(order), 20)]
    assert [b[:-4] for b in blocks] == [plain[i : i + 16] for i in range(0, 100, 16)]  # bt's own batches, all kept
    assert all(mask[b[-4:]].all() for b in blocks)  # plus 4 tail pairs each
    assert list(adding) == order
    adding.set_epoch(1)
    assert list(adding) != order


def test_circuit_variance_is_eq_12_on_a_known_case():
    pooled = {
        "a": torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [100.0, 0.0]]),
        "b": torch.tensor([[2.0], [2.0], [2.0], [9.0]]),
    }
    rows = torch.tensor([True, True, True, False])
    one = TargetCircuit("c0", np.array([0]), {"a": np.array([0])})
    # a_c = mean over members on sites a and b: (1+2)/2, (3+2)/2, (5+2)/2 → 1.5, 2.5, 3.5; population variance 2/3
    two = TargetCircuit("c1", np.array([0, 2]), {"a": np.array([0]), "b": np.array([0])})
    assert circuit_variance(pooled, [one], rows).item() == pytest.approx(8 / 3)
    assert circuit_variance(pooled, [one, two], rows).item() == pytest.approx(8 / 3 + 2 / 3)
    assert circuit_variance(pooled, [one], torch.tensor([True, False, False, False])).item() == 0.0


def test_eq_12_within_sides_leaves_the_chosen_rejected_gap_out():
    """Two tail pairs whose target circuit reads 1 on both chosen texts and 0 on both rejected texts: pooled over
    the sides the variance is the gap's (0.25); within each side the activations are constant (0)."""
    pooled = {"a": torch.tensor([[1.0], [1.0], [9.0], [0.0], [0.0], [9.0]])}  # chosen rows 0-2, rejected rows 3-5
    is_tail = torch.tensor([True, True, False])
    target = TargetCircuit("c0", np.array([0]), {"a": np.array([0])})

    def term(form):
        method = get_method("cart", TrainConfig(method="cart", cart=CartConfig(circuit_reg_form=form)))
        method.targets = [target]
        return method._circuit_term(pooled, is_tail, scored=False).item()

    assert term("pooled") == pytest.approx(0.25)
    assert term("within_sides") == 0.0
    pooled["a"][1, 0] = 3.0  # chosen side now varies: Var{1, 3} = 1, rejected still 0 → mean 0.5
    assert term("within_sides") == pytest.approx(0.5)


def test_augmented_pairs_join_the_batch_mean_with_weight_w_t_over_b():
    model = RewardModel.load("tiny-bert", seed=0)
    model.model.eval()
    encoded = model.encode(["q"] * 8, [f"good answer {i}" for i in range(4)] + [f"bad {i}" for i in range(4)])
    text = model.collate(encoded, list(range(8)))
    batch = AugmentedBatch(  # the batch the 4 augmented pairs belong to has 16 pairs
        text.input_ids, text.attention_mask, text.response_mask, torch.arange(4), torch.zeros(4), torch.tensor(16.0)
    )
    with torch.no_grad():
        losses, _ = pairwise_losses(reward_forward(model.model, batch), batch.margin)
        for scaling, expected in (("separate_mean", losses.mean()), ("batch_share", 0.5 * losses.sum() / 16)):
            method = get_method("cart", TrainConfig(method="cart", cart=CartConfig(aug_scaling=scaling)))
            method.eta = 0.1  # w_t = min(1, 0.1 · (4 + 1)) = 0.5 at step 4
            loss, logs = method.loss(model.model, batch, step=4)
            assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
            assert logs["aug_loss"] == pytest.approx(losses.mean().item(), rel=1e-6)


def test_label_smoothing_loss_has_its_optimum_at_the_smoothed_target():
    epsilon = 0.1
    margin = torch.zeros(1)
    optimum = math.log((1 - epsilon) / epsilon)
    for z, sign in ((optimum - 1, -1), (optimum, 0), (optimum + 1, 1)):
        logit = torch.tensor([z], requires_grad=True)
        rewards = torch.cat([logit, torch.zeros(1)])
        losses, _ = pairwise_losses(rewards, margin, smoothing=epsilon)
        losses.sum().backward()
        assert np.sign(round(logit.grad.item(), 6)) == sign
    at_zero, _ = pairwise_losses(torch.zeros(2), margin, smoothing=epsilon)
    assert at_zero.item() == pytest.approx(math.log(2))


def test_reweight_gives_tail_pairs_the_head_to_tail_ratio(planted, tmp_path):
    data, mask, _ = planted
    method = get_method("reweight", TrainConfig(method="reweight"))
    method.setup(planted_model(), data, TrainingContext(mask, total_steps=1, output_dir=tmp_path))
    assert method.tail_weight == pytest.approx((~mask).sum() / mask.sum())
    batch = BatchBuilder(planted_model(), data, mask)([0, 1, 170, 171])
    assert method.example_weights(batch).tolist() == [1.0, 1.0, 2.0, 2.0]


def test_methods_that_need_the_tail_split_refuse_to_run_without_it(planted, tmp_path):
    data = planted[0]
    for name in ("cart", "reweight"):
        with pytest.raises(CartError, match="--tail-by"):
            train(planted_model(), data, TrainConfig(method=name, max_steps=1), tmp_path / name, progress=False)


def _one_batch_loss(name, config, data, mask, tmp_path, rows=(0, 1, 170, 171)):
    model = planted_model()
    method = get_method(name, config)
    method.setup(model, data, TrainingContext(mask, total_steps=10, output_dir=tmp_path))
    batch = BatchBuilder(model, data, mask)(list(rows))
    with model.eval_mode():
        return method.loss(model.model, batch, step=0)


@pytest.mark.parametrize("centring", [None, 0.5])
def test_cart_with_every_component_off_is_plain_bradley_terry(planted, tmp_path, centring):
    data, mask, _ = planted
    bt, _ = _one_batch_loss("bt", TrainConfig(center_rewards_coefficient=centring), data, mask, tmp_path / "bt")
    cart, logs = _one_batch_loss(
        "cart",
        TrainConfig(
            method="cart",
            center_rewards_coefficient=centring,
            cart=NO_COMPONENTS.model_copy(update={"warmup_steps": 5}),
        ),
        data,
        mask,
        tmp_path / "c",
    )
    assert cart.item() == pytest.approx(bt.item(), rel=1e-6)
    assert "circuit_var" not in logs and "aug_loss" not in logs


def test_reward_centring_applies_to_every_pairwise_method(planted, tmp_path):
    """TRL's centring term adds coefficient · mean((R_c + R_r)^2) to each method's loss, CART's included."""
    data, mask, _ = planted
    for name in ("bt", "label-smoothing", "reweight", "hidden-reg", "cart"):
        extra = {"cart": NO_COMPONENTS.model_copy(update={"warmup_steps": 5})} if name == "cart" else {}
        plain, _ = _one_batch_loss(name, TrainConfig(method=name, **extra), data, mask, tmp_path / f"{name}0")
        centred, _ = _one_batch_loss(
            name, TrainConfig(method=name, center_rewards_coefficient=0.5, **extra), data, mask, tmp_path / f"{name}1"
        )
        model = planted_model()
        batch = BatchBuilder(model, data, mask)([0, 1, 170, 171])
        with model.eval_mode(), torch.no_grad():
            chosen, rejected = reward_forward(model.model, batch).chunk(2)
        expected = 0.5 * ((chosen + rejected) ** 2).mean()
        assert centred.item() - plain.item() == pytest.approx(expected.item(), rel=1e-4), name


def test_progressive_weighting_scales_only_the_tail_pairs(planted, tmp_path):
    data, mask, _ = planted
    config = TrainConfig(
        method="cart",
        cart=CartConfig(augmentation=False, circuit_reg=False, progressive_eta=0.0 + 1e-9, warmup_steps=5),
    )
    head_only, _ = _one_batch_loss("bt", TrainConfig(), data, mask, tmp_path / "bt", rows=(0, 1))
    mixed, logs = _one_batch_loss("cart", config, data, mask, tmp_path / "c", rows=(0, 1, 170, 171))
    assert logs["tail_weight"] == pytest.approx(1e-9)
    # tail pairs weigh ~0, and the sum is divided by all four base weights: half the head-only mean
    assert mixed.item() == pytest.approx(head_only.item() / 2, rel=1e-5)


def _circuit_tail_variance(model, data, mask, members) -> float:
    """Var over all tail texts of a_c(x), the mean of the members' pooled activations (global feature ids)."""
    examples = ExampleSet.from_pairs(model, data, mask)
    values = np.zeros(len(examples))
    for batch in pooled_batches(model, examples, list_sites(model.model, ("mlp",)), batch_size=64):
        values[batch.indices] = batch.activations[:, members].mean(axis=1)
    return float(values[examples.is_tail].var())


def test_circuit_regulariser_lowers_the_tail_variance_of_the_targeted_circuit(planted, planted_circuits_file, tmp_path):
    data, mask, circuits = planted
    target = planted_circuits_file[1]
    members = [m.feature for c in circuits.circuits if c.id == target for m in c.members]
    before = _circuit_tail_variance(planted_model(), data, mask, members)
    variances = {}
    for regularise in (False, True):
        model = planted_model()
        cart = CartConfig(
            target_circuits=(target,),
            augmentation=False,
            progressive=False,
            circuit_reg=regularise,
            circuit_reg_weight=50.0,
        )
        config = TrainConfig(method="cart", max_steps=8, batch_size=16, learning_rate=1e-2, warmup_ratio=0.0, cart=cart)
        result = train(
            model,
            data,
            config,
            tmp_path / str(regularise),
            tail=TailSplit(mask, "is_tail"),
            circuits=circuits,
            progress=False,
        )
        variances[regularise] = _circuit_tail_variance(model, data, mask, members)
        assert ("circuit_var" in result.history[-1]) == regularise
    assert variances[True] < 0.5 * before
    assert variances[True] < 0.5 * variances[False]


def test_targets_come_from_the_vulnerability_report_or_explicit_ids(planted, tmp_path):
    data, mask, circuits = planted
    method = get_method("cart", TrainConfig(method="cart", cart=CartConfig(augmentation=False)))
    method.setup(
        planted_model(), data, TrainingContext(mask, total_steps=4, output_dir=tmp_path / "a", circuits=circuits)
    )
    assert [t.id for t in method.targets] == [c.id for c in circuits.circuits[:3]]
    bad = TrainConfig(method="cart", cart=CartConfig(target_circuits=("c999",), augmentation=False))
    with pytest.raises(CartError, match="c999"):
        get_method("cart", bad).setup(
            planted_model(), data, TrainingContext(mask, total_steps=4, output_dir=tmp_path / "b", circuits=circuits)
        )


def test_cart_says_when_its_targets_never_passed_a_causal_test(planted, tmp_path):
    """Noise must not be presented as targets without saying so: untested targets warn, a passed test does not."""
    import warnings

    data, mask, circuits = planted
    config = TrainConfig(method="cart", cart=CartConfig(augmentation=False))
    for p_value, warned in ((None, True), (0.5, True), (0.001, False)):
        found = [c.model_copy(update={"patch_p_value": p_value}) for c in circuits.circuits]
        context = TrainingContext(
            mask,
            total_steps=4,
            output_dir=tmp_path / str(p_value),
            circuits=circuits.model_copy(update={"circuits": found}),
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            get_method("cart", config).setup(planted_model(), data, context)
        said = [str(w.message) for w in caught if "no circuit passed its causal test" in str(w.message)]
        assert bool(said) == warned, (p_value, said)


def test_circuits_of_another_architecture_are_refused(planted, tmp_path):
    data, mask, circuits = planted
    config = TrainConfig(method="cart", cart=CartConfig(augmentation=False))
    with pytest.raises(CartError, match="different architecture"):
        get_method("cart", config).setup(
            RewardModel.load("tiny-bert"),
            data,
            TrainingContext(mask, total_steps=4, output_dir=tmp_path, circuits=circuits),
        )


@pytest.mark.slow
def test_self_discovery_after_warm_up_sets_targets_and_writes_artifacts(planted, tmp_path):
    data, mask, _ = planted
    cart = CartConfig(augmentation=False, warmup_steps=2, discovery_pairs=120, rediscover_every=3)
    result = train(
        planted_model(),
        data,
        TrainConfig(method="cart", max_steps=6, batch_size=16, logging_steps=1, cart=cart),
        tmp_path,
        tail=TailSplit(mask, "is_tail"),
        progress=False,
    )
    assert sorted(p.name for p in (tmp_path / "cart").iterdir()) == ["step-2", "step-5"]
    assert (tmp_path / "cart" / "step-2" / "vulnerability.json").exists()
    assert "circuit_var" not in result.history[1] and "circuit_var" in result.history[2]


class Interrupt(Exception):
    pass


@register
class InterruptedCart(CircuitAwareTraining):
    name = "test-interrupted-cart"
    interrupt_at: int | None = None

    def loss(self, module, batch, step):
        if step == InterruptedCart.interrupt_at:
            raise Interrupt
        return super().loss(module, batch, step)


@pytest.mark.slow
@pytest.mark.parametrize("tail_sampling", ["swap", "add"])
def test_resumed_cart_run_matches_an_uninterrupted_one(planted, tmp_path, tail_sampling):
    data, mask, _ = planted
    cart = CartConfig(augmentation=False, warmup_steps=2, discovery_pairs=120, tail_sampling=tail_sampling)
    config = TrainConfig(
        method="test-interrupted-cart", max_steps=6, batch_size=16, save_steps=3, learning_rate=3e-3, cart=cart
    )
    InterruptedCart.interrupt_at = None
    reference = planted_model()
    train(reference, data, config, tmp_path / "ref", tail=TailSplit(mask, "is_tail"), progress=False)
    InterruptedCart.interrupt_at = 4
    with pytest.raises(Interrupt):
        train(planted_model(), data, config, tmp_path / "run", tail=TailSplit(mask, "is_tail"), progress=False)
    InterruptedCart.interrupt_at = None
    resumed = planted_model()
    train(resumed, data, config, tmp_path / "run", tail=TailSplit(mask, "is_tail"), resume=True, progress=False)
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_hidden_reg_penalises_drift_from_the_initial_hidden_states(planted, tmp_path):
    data, mask, _ = planted
    _, logs = _one_batch_loss("hidden-reg", TrainConfig(method="hidden-reg"), data, mask, tmp_path / "h0")
    assert logs["hidden_drift"] == pytest.approx(0.0, abs=1e-10)
    drifts = {}
    for weight in (0.0, 100.0):
        config = TrainConfig(
            method="hidden-reg",
            hidden_reg_weight=weight,
            max_steps=5,
            batch_size=16,
            learning_rate=3e-3,
            logging_steps=1,
        )
        drifts[weight] = train(planted_model(), data, config, tmp_path / str(weight), progress=False).history[-1][
            "hidden_drift"
        ]
    assert 0 < drifts[100.0] < drifts[0.0]


def test_augmentation_trains_on_the_kept_candidates_of_the_batch_tail_pairs(planted, planted_circuits_file, tmp_path):
    data, mask, circuits = planted
    target = planted_circuits_file[1]
    cart = CartConfig(target_circuits=(target,), aug_candidates=4, aug_keep=2, circuit_reg=False)
    config = TrainConfig(method="cart", max_steps=2, batch_size=16, logging_steps=1, cart=cart)
    result = train(
        planted_model(),
        data,
        config,
        tmp_path / "rm",
        tail=TailSplit(mask, "is_tail"),
        circuits=circuits,
        progress=False,
    )
    lines = (tmp_path / "rm" / "cart" / "step-0" / "augmented.jsonl").read_text().splitlines()
    sources = [json.loads(line)["source"] for line in lines]
    assert set(sources) == set(np.flatnonzero(mask).tolist())
    assert max(sources.count(s) for s in set(sources)) <= 2
    assert all("aug_loss" in entry for entry in result.history)


def test_a_split_cart_batch_gives_the_whole_batch_gradient(planted, planted_circuits_file, tmp_path):
    """With every term on, the passes of a split batch (tail rows together for eq. 12, L_aug on its own) sum to
    the gradient of the batch run as one pass."""
    data, mask, circuits = planted
    target = planted_circuits_file[1]
    cart = CartConfig(target_circuits=(target,), aug_candidates=4, aug_keep=2, circuit_reg_weight=50.0)
    model = planted_model()
    method = get_method("cart", TrainConfig(method="cart", cart=cart))
    method.setup(model, data, TrainingContext(mask, total_steps=10, output_dir=tmp_path, circuits=circuits))
    builder = BatchBuilder(model, data, mask)
    rows = [0, 1, 2, 3, 170, 171, 4, 172, 5, 6]

    def gradient(max_tokens):
        model.model.zero_grad()
        passes = method.passes(builder.chunks(rows, max_tokens, method.example_weights, tail_together=True), step=3)
        logs = [method.loss(model.model, batch, step=3) for batch in passes]
        for loss, _ in logs:
            loss.backward()
        return passes, logs, [p.grad.clone() for p in model.model.parameters() if p.grad is not None]

    with model.eval_mode():
        (one, one_logs, whole), (several, split_logs, split) = gradient(None), gradient(1)
    assert len(one) == 2 and isinstance(one[0], AugmentedBatch)  # L_aug's pass, then the batch
    assert sorted(several[1].index.tolist()) == [170, 171, 172] and len(several) == 2 + 7  # tail rows share a pass
    assert "circuit_var" in split_logs[1][1] and all("circuit_var" not in logs for _, logs in split_logs[2:])
    assert sum(logs["loss"] for _, logs in split_logs) == pytest.approx(
        sum(logs["loss"] for _, logs in one_logs), rel=1e-5
    )
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)  # float32 sums in another order


def _tail_batch_passes(method, model, data, mask, rows):
    builder = BatchBuilder(model, data, mask)
    return builder, builder.chunks(rows, None, method.example_weights, tail_together=True)


def test_gradient_shares_are_each_terms_norm_over_their_sum(planted, planted_circuits_file, tmp_path):
    data, mask, circuits = planted
    target = planted_circuits_file[1]
    logs = {}
    for weight in (5.0, 10.0):
        cart = CartConfig(target_circuits=(target,), aug_candidates=4, circuit_reg_weight=weight, grad_norm_every=2)
        model = planted_model()
        method = get_method("cart", TrainConfig(method="cart", cart=cart))
        method.setup(model, data, TrainingContext(mask, total_steps=10, output_dir=tmp_path, circuits=circuits))
        _, chunks = _tail_batch_passes(method, model, data, mask, [0, 1, 2, 170, 171])
        augmented, batch = method.passes(chunks, step=1)
        model.model.zero_grad()
        with model.eval_mode():  # no dropout: the same forward every call
            aug_loss, _ = method.loss(model.model, augmented, step=1)
            aug_loss.backward()
            aug_norm = math.sqrt(sum(float((p.grad**2).sum()) for p in model.model.parameters() if p.grad is not None))
            _, logs[weight] = method.loss(model.model, batch, step=1)
            assert not any(k.startswith("grad_") for k in method.loss(model.model, batch, step=0)[1])  # not logged
        assert logs[weight]["grad_norm/aug"] == pytest.approx(aug_norm, rel=1e-4)
    terms = ("preference", "circuit", "aug")
    total = sum(logs[5.0][f"grad_norm/{t}"] for t in terms)
    for term in terms:
        assert logs[5.0][f"grad_share/{term}"] == pytest.approx(logs[5.0][f"grad_norm/{term}"] / total)
    assert logs[10.0]["grad_norm/circuit"] == pytest.approx(2 * logs[5.0]["grad_norm/circuit"], rel=1e-4)  # λ·∇Var
    assert logs[10.0]["grad_norm/preference"] == pytest.approx(logs[5.0]["grad_norm/preference"], rel=1e-4)


def test_drop_features_zeroes_the_given_features_of_the_dropped_rows():
    from cartrm.capture.hooks import drop_features

    keep = torch.tensor([[True, False], [False, True]])
    out = drop_features(torch.tensor([1, 3]), keep)(torch.ones(2, 3, 4), torch.ones(2, 3))
    expected = torch.ones(2, 3, 4)
    expected[0, :, 3], expected[1, :, 1] = 0, 0
    torch.testing.assert_close(out, expected)


def test_circuit_dropout_drops_whole_circuits_of_tail_pairs_only(planted, planted_circuits_file, tmp_path):
    data, mask, circuits = planted
    ids = tuple(c.id for c in circuits.circuits[:2])
    cart = CartConfig(target_circuits=ids, augmentation=False, circuit_reg=False, circuit_dropout=0.5)
    model = planted_model()
    method = get_method("cart", TrainConfig(method="cart", cart=cart))
    method.setup(model, data, TrainingContext(mask, total_steps=10, output_dir=tmp_path, circuits=circuits))
    _, chunks = _tail_batch_passes(method, model, data, mask, [0, 1, 2, 170, 171, 172])
    batch = method.passes(chunks, step=0)[0]
    is_tail = batch.is_tail.bool()
    dropped = []
    for step in range(200):
        for site, intervene in method._circuit_dropout(batch, step).items():
            width = max(int(i.max()) for t in method.targets for i in [t.by_site.get(site, np.zeros(1, int))]) + 1
            out = intervene(torch.ones(2 * len(is_tail), 2, width), torch.ones(2 * len(is_tail), 2))[:, 0, :]
            chosen, rejected = out[: len(is_tail)], out[len(is_tail) :]
            torch.testing.assert_close(chosen, rejected)  # a pair's two texts lose the same circuits
            assert bool((chosen[~is_tail] == 1).all())  # head pairs are never touched
            for target in method.targets:
                if site in target.by_site:
                    values = chosen[is_tail][:, torch.as_tensor(target.by_site[site])]
                    assert bool(((values == 0).all(dim=1) | (values == 1).all(dim=1)).all())  # whole circuits
                    dropped += (values == 0).all(dim=1).tolist()
    assert 0.45 < np.mean(dropped) < 0.55
    with pytest.raises(ValueError, match="replaces the circuit regulariser"):
        CartConfig(circuit_dropout=0.5)


def test_cart_trains_with_circuit_dropout_and_random_per_group_augmentations(planted, planted_circuits_file, tmp_path):
    """Random selection (the control for eq. 10's argmax) and per-group replacement words, with k-means groups
    on data without a group column; circuit dropout instead of the regulariser."""
    data, mask, circuits = planted
    cart = CartConfig(
        target_circuits=(planted_circuits_file[1],),
        circuit_reg=False,
        circuit_dropout=0.3,
        aug_candidates=3,
        aug_vocabulary="per_group",
        aug_selection="random",
        grad_norm_every=1,
    )
    config = TrainConfig(method="cart", max_steps=2, batch_size=16, logging_steps=1, cart=cart)
    result = train(planted_model(), data, config, tmp_path / "rm", tail=TailSplit(mask, "t"), circuits=circuits)
    lines = (tmp_path / "rm" / "cart" / "step-0" / "augmented.jsonl").read_text().splitlines()
    sources = [json.loads(line)["source"] for line in lines]
    assert set(sources) <= set(np.flatnonzero(mask).tolist()) and len(sources) == len(set(sources))
    assert all(
        sum(v for k, v in entry.items() if k.startswith("grad_share/")) == pytest.approx(1.0)
        for entry in result.history
    )
    assert result.tail == "t"


def test_circuit_invariance_is_eq_12_s_invariance_form_on_a_known_case():
    from cartrm.training.methods.cart import circuit_invariance

    pooled = {"s": torch.tensor([[1.0, 4.0], [2.0, 0.0], [0.0, 0.0], [0.0, 2.0]])}  # edited rows, then originals
    one = TargetCircuit("c0", np.array([0]), {"s": np.array([0])})
    two = TargetCircuit("c1", np.array([0, 1]), {"s": np.array([0, 1])})
    assert float(circuit_invariance(pooled, [one])) == pytest.approx((1 + 4) / 2)
    assert float(circuit_invariance(pooled, [one, two])) == pytest.approx(2.5 + (2.5**2 + 0**2) / 2)


def test_the_invariance_form_adds_its_penalty_to_the_augmentation_pass(planted, planted_circuits_file, tmp_path):
    data, mask, circuits = planted
    target = planted_circuits_file[1]
    losses = {}
    for form, weight in (("pooled", 0.0), ("invariance", 0.0), ("invariance", 3.0)):
        cart = CartConfig(target_circuits=(target,), aug_candidates=4, circuit_reg_form=form, circuit_reg_weight=weight)
        model = planted_model()
        method = get_method("cart", TrainConfig(method="cart", cart=cart))
        method.setup(model, data, TrainingContext(mask, total_steps=10, output_dir=tmp_path, circuits=circuits))
        _, chunks = _tail_batch_passes(method, model, data, mask, [0, 1, 2, 170, 171])
        augmented, batch = method.passes(chunks, step=1)
        sides = 4 if form == "invariance" else 2
        assert len(augmented.input_ids) == sides * len(augmented.index)
        with model.eval_mode():  # no dropout: the same forward every call
            loss, logs = method.loss(model.model, augmented, step=1)
            assert ("circuit_var" in method.loss(model.model, batch, step=1)[1]) == (form == "pooled")
        losses[form, weight] = float(loss), logs.get("circuit_invariance")
    assert losses["invariance", 0.0][0] == pytest.approx(losses["pooled", 0.0][0], rel=1e-5)  # same L_aug
    penalty = losses["invariance", 3.0][1]
    assert penalty > 0 and losses["invariance", 3.0][0] == pytest.approx(
        losses["pooled", 0.0][0] + 3.0 * penalty, rel=1e-4
    )
    with pytest.raises(ValueError, match="turn augmentation on"):
        CartConfig(circuit_reg_form="invariance", augmentation=False)


def test_decisive_targets_are_one_circuit_found_on_the_model_being_trained(planted, tmp_path):
    data, mask, circuits = planted
    cart = CartConfig(augmentation=False, targets_from="decisive", decisive_neurons=1, discovery_pairs=120)
    method = get_method("cart", TrainConfig(method="cart", cart=cart))
    method.setup(planted_model(), data, TrainingContext(mask, total_steps=4, output_dir=tmp_path, circuits=circuits))
    assert [t.id for t in method.targets] == ["decisive"]
    assert [int(i) for i in method.targets[0].by_site["blocks.0.mlp.hook_post"]] == [PLANTED]
    saved = Circuits.load(tmp_path / "cart" / "step-0" / "circuits.json")
    assert [c.id for c in saved.circuits] == [c.id for c in circuits.circuits] + ["decisive"]
    assert json.loads((tmp_path / "cart" / "step-0" / "targets.json").read_text()) == ["decisive"]
    with pytest.raises(ValueError, match="choose one"):
        CartConfig(targets_from="decisive", target_circuits=("c0",))


def test_self_discovery_with_decisive_targets_needs_no_discovered_circuit(planted, tmp_path):
    data, mask, _ = planted
    cart = CartConfig(augmentation=False, warmup_steps=2, discovery_pairs=120, targets_from="decisive")
    cart = cart.model_copy(update={"circuit_reg": False, "circuit_dropout": 0.3, "decisive_neurons": 1})
    train(
        planted_model(),
        data,
        TrainConfig(method="cart", max_steps=3, batch_size=16, cart=cart),
        tmp_path,
        tail=TailSplit(mask, "is_tail"),
        progress=False,
    )
    assert json.loads((tmp_path / "cart" / "step-2" / "targets.json").read_text()) == ["decisive"]
    assert not (tmp_path / "cart" / "step-2" / "vulnerability.json").exists()


def test_random_targets_replace_each_circuits_neurons_by_layer_matched_random_ones(planted, tmp_path):
    data, mask, circuits = planted
    cart = CartConfig(augmentation=False, targets_from="random")
    method = get_method("cart", TrainConfig(method="cart", seed=3, cart=cart))
    method.setup(planted_model(), data, TrainingContext(mask, total_steps=4, output_dir=tmp_path, circuits=circuits))
    by_id = {c.id: c for c in circuits.circuits}
    features = FeatureIndex(tuple(list_sites(planted_model().model, circuits.config.sites)))
    assert [t.id for t in method.targets] == [c.id for c in circuits.circuits[:3]]
    saved = json.loads((tmp_path / "cart" / "step-0" / "random_targets.json").read_text())
    for target in method.targets:
        real = {m.feature for m in by_id[target.id].members}
        assert not real & set(target.members.tolist()) and len(target.members) == len(real)
        real_by_site = features.by_site(sorted(real))  # layer-matched: as many per site as the circuit has
        assert {k: len(v) for k, v in target.by_site.items()} == {k: len(v) for k, v in real_by_site.items()}
        assert saved[target.id] == target.members.tolist()
