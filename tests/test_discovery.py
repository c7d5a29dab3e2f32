"""Circuit discovery on a tiny GPT-2 with planted tail neurons (known answers)."""

import pytest

from cartrm.capture.sites import list_sites
from cartrm.circuits.discover import DiscoveryConfig, discover
from cartrm.circuits.result import Circuits
from cartrm.data import parse_tail_spec
from cartrm.errors import CartError
from tests.helpers import CONSTANT, PARTNER, PLANTED, planted_data, planted_model


@pytest.fixture(scope="module")
def found():
    data = planted_data()
    tail = parse_tail_spec("label:is_tail").fit_transform(data)
    config = DiscoveryConfig(
        top_k=8, patch_pairs=16, n_null=20, max_validated=3, null_mode="zero", n_permutations=200, seed=0
    )
    return discover(planted_model(), data, tail, config, progress=False)


def feature_of(circuits: Circuits, layer: int, index: int) -> int:
    return next(n.feature for n in circuits.neurons if n.layer == layer and n.index == index)


def test_planted_neuron_is_ranked_first_and_significant(found):
    top = found.neurons[0]
    assert (top.site, top.index) in {("blocks.0.mlp.hook_post", PLANTED), ("blocks.0.mlp.hook_post", PARTNER)}
    ranked = [(n.layer, n.index) for n in found.neurons[:2]]
    assert set(ranked) == {(0, PLANTED), (0, PARTNER)}
    planted = next(n for n in found.neurons if n.layer == 0 and n.index == PLANTED)
    assert planted.delta > 0 and planted.q_value < 1e-6 and planted.permutation_p_value == pytest.approx(1 / 201)


def test_a_neuron_identical_on_head_and_tail_is_not_significant(found):
    assert all(not (n.layer == 0 and n.index == CONSTANT) for n in found.neurons)  # listed = FDR-passing + candidates
    assert found.n_significant < found.n_features


def test_co_firing_tail_neurons_form_one_circuit(found):
    planted, partner = feature_of(found, 0, PLANTED), feature_of(found, 0, PARTNER)
    circuit = next(c for c in found.circuits if planted in {m.feature for m in c.members})
    assert partner in {m.feature for m in circuit.members}
    assert circuit.tail_delta > 0 and circuit.coherence > 0


def test_zero_patching_the_reward_carrying_circuit_moves_the_reward_with_a_small_p_value(found):
    planted = feature_of(found, 0, PLANTED)
    circuit = next(c for c in found.circuits if planted in {m.feature for m in c.members})
    zero = circuit.patch["zero"]
    assert zero.mean_abs_delta_reward > 1.0
    assert zero.p_value == pytest.approx(1 / 21)
    assert max(zero.null_mean_abs_delta_reward) < zero.mean_abs_delta_reward
    # the score reads a saturated LayerNorm, so first-order magnitudes are far too small; the ranking holds
    assert zero.attribution_mean_abs_delta_reward > 0
    assert found.attribution_rank_correlation is not None and found.attribution_rank_correlation > 0.5


def test_decomposition_explains_the_planted_reward(found):
    planted = feature_of(found, 0, PLANTED)
    circuit = next(c for c in found.circuits if planted in {m.feature for m in c.members})
    assert found.decomposition is not None and found.decomposition.r2 > 0.5  # eq. 1; the score saturates
    assert circuit.decomposition_weight > 0


def test_circuits_file_round_trips_and_rejects_other_schema(found, tmp_path):
    found.save(tmp_path / "circuits.json")
    assert Circuits.load(tmp_path / "circuits.json") == found
    text = (tmp_path / "circuits.json").read_text().replace('"schema_version": 1', '"schema_version": 99')
    (tmp_path / "old.json").write_text(text)
    with pytest.raises(CartError, match="schema version 99"):
        Circuits.load(tmp_path / "old.json")


def test_discovery_is_reproducible(found):
    data = planted_data()
    tail = parse_tail_spec("label:is_tail").fit_transform(data)
    config = found.config
    again = discover(planted_model(), data, tail, config, progress=False)
    assert again.model_dump() == found.model_dump()


def test_hooks_are_removed_when_discovery_fails(monkeypatch):
    import cartrm.capture.stream as stream

    model = planted_model()
    data = planted_data(20, 10)
    tail = parse_tail_spec("label:is_tail").fit_transform(data)

    def broken(*args, **kwargs):
        raise RuntimeError("forward failed")

    monkeypatch.setattr(stream, "reward_forward", broken)
    with pytest.raises(RuntimeError, match="forward failed"):
        discover(model, data, tail, DiscoveryConfig(patch_pairs=0), progress=False)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.model.modules())
    assert len(list_sites(model.model, ("mlp",))) == 2


def test_tau_specialisation_flags_the_planted_neurons(found):
    planted = next(n for n in found.neurons if n.layer == 0 and n.index == PLANTED)
    assert planted.tau_specialised and planted.tau_score > found.tau  # eq. 3
    assert 0 < found.n_tau_specialised < found.n_features


def test_circuit_records_carry_the_contracted_causal_fields(found):
    validated = [c for c in found.circuits if c.patch]
    assert validated
    for circuit in validated:
        assert circuit.patch_effect == circuit.patch["zero"].mean_abs_delta_reward
        assert circuit.patch_p_value == circuit.patch["zero"].p_value
        assert circuit.attribution_effect == circuit.patch["zero"].attribution_mean_abs_delta_reward


def test_activation_cache_is_reused_and_gives_the_same_result(found, tmp_path, monkeypatch):
    import cartrm.circuits.discover as discovery

    data = planted_data()
    tail = parse_tail_spec("label:is_tail").fit_transform(data)
    config = found.config
    first = discover(planted_model(), data, tail, config, progress=False, cache_dir=tmp_path / "acts")
    assert (tmp_path / "acts" / "meta.json").exists() and list((tmp_path / "acts").glob("shard-*.safetensors"))
    model_passes = []
    original = discovery.pooled_batches
    monkeypatch.setattr(
        discovery, "pooled_batches", lambda *a, **k: model_passes.append(k.get("subset")) or original(*a, **k)
    )
    second = discover(planted_model(), data, tail, config, progress=False, cache_dir=tmp_path / "acts")
    assert all(subset is not None for subset in model_passes)  # no full pass: both statistics passes read the cache
    assert second.model_dump() == first.model_dump()
    assert [n.feature for n in first.neurons[:2]] == [n.feature for n in found.neurons[:2]]


def test_patched_rewards_are_the_rewards_exact_patching_reads():
    import numpy as np

    from cartrm.capture.stream import ExampleSet, FeatureIndex
    from cartrm.circuits.patching import PatchBench

    model, data = planted_model(), planted_data()
    tail = parse_tail_spec("label:is_tail").fit_transform(data)
    features = FeatureIndex(tuple(list_sites(model.model, ("mlp",))))
    examples = ExampleSet.from_pairs(model, data, tail.mask)
    pairs = np.flatnonzero(tail.mask)[:8]
    bench = PatchBench(model, examples, features, pairs, np.zeros(features.size), np.zeros((16, features.size)))
    planted = np.array([features.offset_of("blocks.0.mlp.hook_post") + PLANTED])
    patched = bench.patched_rewards(planted, "zero")
    effect, accuracy_change = bench.exact(planted, "zero")
    assert patched.shape == bench.clean_rewards.shape
    assert effect == pytest.approx(np.abs(patched - bench.clean_rewards).mean()) and effect > 1.0
    clean_accuracy = np.mean(bench.clean_rewards[:8] > bench.clean_rewards[8:])
    assert accuracy_change == pytest.approx(np.mean(patched[:8] > patched[8:]) - clean_accuracy)


def test_the_decisive_circuit_is_the_neuron_the_tail_reward_rests_on():
    """PLANTED and PARTNER both fire only on tail texts, but only PLANTED writes the reward: the decisive circuit
    (ranked by first-order ΔR, not by tail-vs-head difference) is PLANTED, its exact patch effect is what patching
    it on the tail pairs moves, and its activation is higher on the tail."""
    import numpy as np

    from cartrm.capture.stream import ExampleSet, FeatureIndex, pooled_batches
    from cartrm.circuits.decisive import decisive_circuit
    from cartrm.circuits.patching import PatchBench

    model, data = planted_model(), planted_data()
    tail = parse_tail_spec("label:is_tail").fit_transform(data)
    config = DiscoveryConfig(patch_pairs=0)
    circuit = decisive_circuit(model, data, tail, config, size=1)
    features = FeatureIndex(tuple(list_sites(model.model, ("mlp",))))
    planted = features.offset_of("blocks.0.mlp.hook_post") + PLANTED
    assert circuit.id == "decisive" and [m.feature for m in circuit.members] == [planted]
    assert circuit.members[0].layer == 0 and circuit.members[0].index == PLANTED
    assert circuit.tail_delta > 0 and circuit.tail_effect_size > 1

    examples = ExampleSet.from_pairs(model, data, tail.mask)
    head_texts = np.flatnonzero(~examples.is_tail)
    head_mean = np.zeros(features.size)
    for batch in pooled_batches(model, examples, features.sites, subset=head_texts):
        head_mean += batch.activations.sum(axis=0) / len(head_texts)
    pairs = np.flatnonzero(tail.mask)
    bench = PatchBench(model, examples, features, pairs, head_mean, np.zeros((2 * len(pairs), features.size)))
    assert circuit.patch_effect == pytest.approx(bench.exact(np.array([planted]), "head_mean")[0], rel=1e-6)
    assert circuit.patch_effect > 1.0

    three = decisive_circuit(model, data, tail, config, size=3)
    assert planted in {m.feature for m in three.members} and len(three.members) == 3
