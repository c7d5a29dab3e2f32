"""The concentration diagnostic on a model whose tail reward runs through one planted neuron."""

import numpy as np
import pytest

from cartrm.capture.sites import list_sites
from cartrm.capture.stream import FeatureIndex
from cartrm.circuits.concentration import Concentration, concentration
from cartrm.circuits.config import DiscoveryConfig
from cartrm.errors import CartError
from tests.helpers import CONSTANT, PARTNER, PLANTED, planted_data, planted_model

CONFIG = DiscoveryConfig(sites=("mlp",), batch_size=16)


def _measure(first: int) -> Concentration:
    """The diagnostic with layer-0 neuron ``first`` ranked most tail-specific."""
    model, data = planted_model(), planted_data()
    tail = np.array(data.column("is_tail"), dtype=bool)
    features = FeatureIndex(tuple(list_sites(model.model, CONFIG.sites)))
    top = features.offset_of(features.sites[0].name) + first
    ranked = np.array([top, *[i for i in range(features.size) if i != top]])
    groups = {"tail": tail, "head": ~tail}
    return concentration(model, data, groups, ranked, CONFIG, sizes=(1, 4), n_pairs=30, random_sets=3, seed=0)


@pytest.fixture(scope="module")
def measured():
    return _measure(PLANTED)


def test_the_planted_neuron_carries_the_tail_margin(measured):
    # on tail texts the planted neuron writes the reward: patching it to its head mean moves the tail margins
    # far more than patching a random layer-matched neuron does
    tail = measured.row("tail", 1)
    assert tail.share > 0.5 and tail.ratio > 5
    assert measured.pairs == {"tail": 30, "head": 30}
    assert "top 1:" in measured.summary() and "head ×" in measured.summary()


def test_a_neuron_that_fires_the_same_on_every_input_carries_nothing():
    constant = _measure(CONSTANT)  # its head mean is its value everywhere: patching changes no reward
    assert constant.row("tail", 1).share == pytest.approx(0.0, abs=1e-6)
    assert constant.row("head", 1).share == pytest.approx(0.0, abs=1e-6)
    assert constant.row("tail", 4).share > 0  # the next three ranked neurons do fire


def test_the_diagnostic_is_an_artifact_and_needs_head_pairs(measured, tmp_path):
    measured.save(tmp_path / "concentration.json")
    assert Concentration.load(tmp_path / "concentration.json") == measured
    with pytest.raises(CartError, match="no concentration row"):
        measured.row("conflict", 1)
    data = planted_data()
    tail = np.array(data.column("is_tail"), dtype=bool)
    with pytest.raises(CartError, match="needs head pairs"):
        concentration(planted_model(), data, {"tail": tail}, np.arange(4), CONFIG)


def test_the_planted_neurons_rank_most_tail_specific():
    from cartrm.circuits.concentration import tail_specific_ranking

    model, data = planted_model(), planted_data()
    tail = np.array(data.column("is_tail"), dtype=bool)
    ranked = tail_specific_ranking(model, data, tail, CONFIG)
    features = FeatureIndex(tuple(list_sites(model.model, CONFIG.sites)))
    assert sorted(ranked.tolist()) == list(range(features.size))
    assert ranked[0] in {PLANTED, PARTNER}  # layer-0 neurons fire on the tail token alone (site 0 offset 0)
    assert set(ranked[:2].tolist()) == {PLANTED, PARTNER}


def test_cart_run_measures_the_baselines_concentration_on_validation_pairs(tmp_path):
    from cartrm.experiments.pipeline import RunConfig, run_experiment
    from tests.helpers import TINY

    config = RunConfig(
        name="k",
        out_root=tmp_path,
        methods=("bt",),
        seeds=(0,),
        concentration_pairs=6,
        **{**TINY, "bon_prompts": 0},
    )
    results = run_experiment(config, progress=False)
    saved = Concentration.load(config.directory / "seed-0" / "concentration" / "concentration.json")
    assert results.concentration == {"0": saved}
    assert set(saved.pairs) == {"tail", "head", "conflict"} and saved.pairs["head"] == 6
    assert [r.neurons for r in saved.rows if r.group == "tail"] == [10]  # 100 fills over half of a 64-neuron site
    assert any(note.startswith("seed 0: share of the tail margin") for note in results.notes)
