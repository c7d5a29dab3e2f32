"""Circuit-aware ensembling (eq. 14–15): simplex weights, the ensemble reward model, its folder, training."""

import json
import shutil

import numpy as np
import pytest
from transformers import AutoModelForSequenceClassification

from cartrm.circuits.compare import circuit_overlap, top_tail_neurons
from cartrm.circuits.result import Circuits
from cartrm.data import PointwiseDataset
from cartrm.data.tail import TailSplit
from cartrm.errors import CartError
from cartrm.experiments.ensemble import EnsembleConfig, EnsembleResult, member_train_config, train_ensemble
from cartrm.models import EnsembleRewardModel, RewardModel, is_ensemble_folder, load_reward_model
from cartrm.training import TrainConfig
from cartrm.training.ensemble import fit_simplex_weights, fit_simplex_weights_pointwise, split_targets
from tests.helpers import planted_pairs


def assert_on_simplex(alpha, k):
    assert alpha.shape == (k,)
    assert (alpha >= 0).all()
    assert alpha.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_fitted_weights_stay_on_the_simplex(k):
    rng = np.random.default_rng(k)
    chosen, rejected = rng.normal(size=(k, 40)) * 3, rng.normal(size=(k, 40)) * 3
    assert_on_simplex(fit_simplex_weights(chosen, rejected), k)
    assert_on_simplex(fit_simplex_weights_pointwise(rng.normal(size=(k, 40)), rng.normal(size=40)), k)


def test_weights_fit_is_deterministic_and_no_worse_than_uniform():
    rng = np.random.default_rng(0)
    chosen, rejected = rng.normal(size=(4, 50)), rng.normal(size=(4, 50))
    alpha = fit_simplex_weights(chosen, rejected)
    np.testing.assert_array_equal(alpha, fit_simplex_weights(chosen, rejected))

    def loss(a):
        return np.logaddexp(0, -(a @ (chosen - rejected))).mean()

    assert loss(alpha) <= loss(np.full(4, 0.25)) + 1e-12


def test_weight_goes_to_the_member_that_is_right_on_the_tail():
    rng = np.random.default_rng(1)
    n = 60
    rejected = rng.normal(size=(3, n))
    chosen = rejected.copy()
    chosen[0] += 4.0 + rng.uniform(size=n)  # member 0 ranks every tail pair right with a large margin
    chosen[1] -= 2.0  # member 1 ranks every pair wrong
    chosen[2] += rng.normal(size=n)  # member 2 is noise
    alpha = fit_simplex_weights(chosen, rejected)
    assert alpha[0] > 0.9


def test_pointwise_weights_recover_the_member_that_equals_the_targets():
    scores = np.random.default_rng(2).normal(size=(3, 50))
    alpha = fit_simplex_weights_pointwise(scores, scores[1])
    np.testing.assert_allclose(alpha, [0.0, 1.0, 0.0], atol=1e-4)


@pytest.mark.parametrize(
    "call",
    [
        lambda: fit_simplex_weights(np.zeros((0, 5)), np.zeros((0, 5))),
        lambda: fit_simplex_weights(np.zeros((2, 0)), np.zeros((2, 0))),
        lambda: fit_simplex_weights(np.zeros((2, 5)), np.zeros((2, 4))),
        lambda: fit_simplex_weights_pointwise(np.zeros((0, 5)), np.zeros(5)),
        lambda: fit_simplex_weights_pointwise(np.zeros((2, 5)), np.zeros(4)),
        lambda: fit_simplex_weights(np.full((2, 3), np.nan), np.zeros((2, 3))),
    ],
)
def test_weights_fit_rejects_empty_or_mismatched_input(call):
    with pytest.raises(CartError):
        call()


@pytest.fixture(scope="module")
def two_members():
    return [RewardModel.load("tiny-gpt2", seed=0), RewardModel.load("tiny-gpt2", seed=1)]


def test_uniform_ensemble_scores_the_members_average(two_members):
    data = planted_pairs(8)
    ensemble = EnsembleRewardModel(two_members, [0.5, 0.5])
    chosen, rejected = ensemble.score_pairs(data)
    (c0, r0), (c1, r1) = (m.score_pairs(data) for m in two_members)
    assert not np.allclose(c0, c1)  # the members differ, so the average is a real test
    np.testing.assert_array_equal(chosen, (c0 + c1) / 2)
    np.testing.assert_array_equal(rejected, (r0 + r1) / 2)
    texts = ["a b c", "hello there"]
    np.testing.assert_array_equal(
        ensemble.score(["", ""], texts),
        (two_members[0].score(["", ""], texts) + two_members[1].score(["", ""], texts)) / 2,
    )


def test_ensemble_rejects_weights_off_the_simplex(two_members):
    with pytest.raises(CartError, match="not on the simplex"):
        EnsembleRewardModel(two_members, [0.7, 0.7])
    with pytest.raises(CartError, match="2 ensemble weights for 1 members"):
        EnsembleRewardModel(two_members[:1], [0.5, 0.5])


def test_fingerprint_depends_on_alpha(two_members):
    a, b = EnsembleRewardModel(two_members, [0.5, 0.5]), EnsembleRewardModel(two_members, [0.25, 0.75])
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == EnsembleRewardModel(two_members, [0.5, 0.5]).fingerprint()


def test_save_load_round_trip_gives_identical_scores(two_members, tmp_path):
    data = planted_pairs(6)
    ensemble = EnsembleRewardModel(two_members, [0.25, 0.75], method="bt", complementarity=0.4)
    ensemble.save(tmp_path / "ens")
    assert is_ensemble_folder(tmp_path / "ens") and not is_ensemble_folder(tmp_path)
    manifest = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert manifest["members"] == ["member-0", "member-1"] and manifest["complementarity"] == 0.4
    loaded = load_reward_model(tmp_path / "ens")
    assert isinstance(loaded, EnsembleRewardModel)
    np.testing.assert_array_equal(loaded.alpha, [0.25, 0.75])
    np.testing.assert_allclose(loaded.score_pairs(data), ensemble.score_pairs(data), rtol=0, atol=1e-6)
    assert loaded.method == "bt" and loaded.fingerprint() == ensemble.fingerprint()
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ens" / "member-1")
    assert plain.config.num_labels == 1
    assert isinstance(load_reward_model("tiny-bert"), RewardModel)


@pytest.fixture(scope="module")
def saved_ensemble(two_members, tmp_path_factory):
    path = tmp_path_factory.mktemp("ensembles") / "ens"
    EnsembleRewardModel(two_members, [0.5, 0.5]).save(path)
    return path


def rewrite_manifest(path, **changes):
    file = path / "ensemble.json"
    file.write_text(json.dumps(json.loads(file.read_text()) | changes))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"schema_version": 99}, "schema version 99"),
        ({"alpha": [0.9, 0.9]}, "not on the simplex"),
        ({"alpha": [-0.5, 1.5]}, "not on the simplex"),
        ({"alpha": [1.0]}, "1 ensemble weights for 2 members"),
        ({"members": ["member-0", "../elsewhere"]}, "member folder names"),
        ({"members": ["member-0", "member-7"]}, "'member-7' is missing"),
    ],
)
def test_load_rejects_a_bad_manifest_with_a_clear_message(saved_ensemble, tmp_path, changes, message):
    copy = tmp_path / "ens"
    shutil.copytree(saved_ensemble, copy)
    rewrite_manifest(copy, **changes)
    with pytest.raises(CartError, match=message):
        EnsembleRewardModel.load(copy)


def test_load_without_manifest_says_it_is_not_an_ensemble(tmp_path):
    with pytest.raises(CartError, match="no ensemble.json"):
        EnsembleRewardModel.load(tmp_path)


def test_circuit_overlap_is_mean_pairwise_jaccard():
    assert circuit_overlap([{1, 2, 3}, {1, 2, 3}]) == 1.0
    assert circuit_overlap([{1, 2}, {3, 4}, {5}]) == 0.0
    assert circuit_overlap([{1, 2, 3}, {2, 3, 4}]) == pytest.approx(0.5)  # |{2,3}| / |{1,2,3,4}|
    assert circuit_overlap([{1, 2}, {1, 2}, {3}]) == pytest.approx(1 / 3)  # pairs: 1, 0, 0
    with pytest.raises(CartError):
        circuit_overlap([{1}])


@pytest.mark.parametrize(
    "targets, k, expected",
    [
        (["c0", "c1", "c2", "c3", "c4"], 2, [("c0", "c2", "c4"), ("c1", "c3")]),
        (["c0", "c1", "c2"], 3, [("c0",), ("c1",), ("c2",)]),
        (["c0", "c1"], 3, [("c0",), ("c1",), ("c0",)]),
        (["c0"], 2, [("c0",), ("c0",)]),
    ],
)
def test_split_targets(targets, k, expected):
    assert split_targets(targets, k) == expected


def test_member_config_sets_seed_method_and_target_slice():
    config = EnsembleConfig(members=2, seed=10, train=TrainConfig(learning_rate=1e-3, cart={"circuit_reg_weight": 0.5}))
    member = member_train_config(config, 1, ("c1", "c3"))
    assert (member.seed, member.method, member.learning_rate) == (11, "cart", 1e-3)
    assert (
        member.settings_of("cart").target_circuits == ("c1", "c3")
        and member.settings_of("cart").circuit_reg_weight == 0.5
    )
    assert member_train_config(config, 0).settings_of("cart").target_circuits is None


def test_split_targets_needs_targets():
    with pytest.raises(CartError):
        split_targets([], 2)


def tail_marked_pairs(n, seed):
    data = planted_pairs(n, seed=seed)
    return data, TailSplit(np.arange(n) % 3 == 0, "every third pair")


def test_train_ensemble_end_to_end(tmp_path):
    data, tail = tail_marked_pairs(24, seed=0)
    validation, validation_tail = tail_marked_pairs(12, seed=1)
    config = EnsembleConfig(
        members=2,
        method="bt",
        train=TrainConfig(max_steps=2, batch_size=4, max_length=32, learning_rate=3e-3),
        top_neurons=8,
        min_tail_to_fit=4,
    )
    result = train_ensemble("tiny-bert", data, tail, validation, validation_tail, config, tmp_path, progress=False)
    assert result.weighting == "fit"
    alpha = np.array(result.alpha)
    assert_on_simplex(alpha, 2)
    loaded = load_reward_model(result.ensemble_dir)
    assert isinstance(loaded, EnsembleRewardModel)
    np.testing.assert_array_equal(loaded.alpha, alpha)
    assert result.n_validation_tail == 4 and len(result.member_tail_accuracy) == 2
    assert result.ensemble_tail_loss <= min(result.member_tail_loss) + 1e-9  # members are vertices of the simplex
    sets = [top_tail_neurons(Circuits.load(tmp_path / "circuits" / f"member-{i}.json"), 8) for i in range(2)]
    assert all(len(s) == 8 for s in sets)
    assert result.overlap == pytest.approx(circuit_overlap(sets)) and result.complementarity == pytest.approx(
        1 - result.overlap
    )
    assert EnsembleResult.load(tmp_path / "ensemble_result.json") == result
    member_config = json.loads((tmp_path / "members" / "member-1" / "train_config.json").read_text())
    assert member_config["seed"] == 1 and member_config["method"] == "bt"


def test_train_ensemble_rejects_an_empty_validation_tail(tmp_path):
    data, tail = tail_marked_pairs(8, seed=0)
    config = EnsembleConfig(members=2, method="bt", train=TrainConfig(max_steps=1, batch_size=4))
    with pytest.raises(CartError, match="no tail examples"):
        train_ensemble(
            "tiny-bert", data, tail, data, TailSplit(np.zeros(8, bool), "none"), config, tmp_path, progress=False
        )
    with pytest.raises(CartError, match="unknown training method"):
        train_ensemble("tiny-bert", data, tail, data, tail, EnsembleConfig(method="nope"), tmp_path, progress=False)


def test_pointwise_validation_fits_by_squared_error(tmp_path):
    """Also trains with ``reweight``, which fails without the tail mask: the mask reaches the trainer."""
    data, tail = tail_marked_pairs(16, seed=0)
    records = [{"prompt": "Rate this.", "response": f"answer {i}", "score": float(i % 4)} for i in range(8)]
    validation = PointwiseDataset.from_records(records)
    config = EnsembleConfig(
        members=2,
        method="reweight",
        train=TrainConfig(max_steps=1, batch_size=4, max_length=32),
        top_neurons=4,
        min_tail_to_fit=0,
    )
    result = train_ensemble(
        "tiny-bert", data, tail, validation, TailSplit(np.ones(8, bool), "all"), config, tmp_path, progress=False
    )
    assert_on_simplex(np.array(result.alpha), 2)
    assert result.member_tail_accuracy is None and result.ensemble_tail_loss <= min(result.member_tail_loss) + 1e-9


def test_too_few_validation_tail_pairs_give_uniform_weights_and_a_warning(tmp_path):
    data, tail = tail_marked_pairs(8, seed=0)
    validation, validation_tail = tail_marked_pairs(12, seed=1)
    config = EnsembleConfig(members=2, method="bt", train=TrainConfig(max_steps=1, batch_size=4, max_length=32))
    with pytest.warns(UserWarning, match="only 4 validation tail examples"):
        result = train_ensemble("tiny-bert", data, tail, validation, validation_tail, config, tmp_path, progress=False)
    assert result.weighting == "uniform" and result.alpha == [0.5, 0.5]


def test_a_member_trained_elsewhere_is_copied_not_retrained(tmp_path, monkeypatch):
    import cartrm.experiments.ensemble as ensemble_module

    data, tail = tail_marked_pairs(24, seed=0)
    validation, validation_tail = tail_marked_pairs(12, seed=1)
    config = EnsembleConfig(
        members=2, method="bt", train=TrainConfig(max_steps=2, batch_size=4, max_length=32), min_tail_to_fit=4
    )
    args = ("tiny-bert", data, tail, validation, validation_tail, config)
    full = train_ensemble(*args, tmp_path / "full", progress=False)
    trained_members = []
    original = ensemble_module.train
    monkeypatch.setattr(
        ensemble_module, "train", lambda m, d, c, *a, **k: trained_members.append(c.seed) or original(m, d, c, *a, **k)
    )
    member_0 = tmp_path / "full" / "members" / "member-0"
    reused = train_ensemble(*args, tmp_path / "reused", trained={0: member_0}, progress=False)
    assert trained_members == [1]  # only member 1 was trained
    weights = "model.safetensors"
    assert (member_0 / weights).read_bytes() == (tmp_path / "reused" / "members" / "member-0" / weights).read_bytes()
    assert reused.alpha == full.alpha and reused.member_tail_loss == pytest.approx(full.member_tail_loss)
    with pytest.raises(CartError, match="member-0: the folder is not empty"):
        train_ensemble(*args, tmp_path / "reused", trained={0: member_0}, progress=False)
