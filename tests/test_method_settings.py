"""Each method's own settings: read by the method, spelled as earlier versions wrote them, located in errors."""

import pydantic
import pytest

from cartrm.errors import CartError
from cartrm.runs import key_dump
from cartrm.training import TrainConfig, get_method, registry
from cartrm.training.methods import METHODS, BradleyTerry, register
from cartrm.training.settings import SETTINGS, CartConfig, MethodSettings, ReweightSettings


def test_each_method_reads_its_own_settings_from_the_flat_spelling():
    config = TrainConfig(label_smoothing=0.2, tail_weight=3.0, hidden_reg_weight=0.5, cart={"aug_keep": 2})
    assert get_method("label-smoothing", config).settings.label_smoothing == 0.2
    assert get_method("reweight", config).settings.tail_weight == 3.0
    assert get_method("hidden-reg", config).settings.hidden_reg_weight == 0.5
    assert get_method("cart", config).settings.aug_keep == 2
    assert get_method("bt", config).settings == MethodSettings()


def test_the_dump_keeps_the_spelling_earlier_versions_wrote_and_loads_back():
    config = TrainConfig(label_smoothing=0.2, cart=CartConfig(aug_keep=2))
    dumped = config.model_dump(mode="json")
    assert dumped["label_smoothing"] == 0.2 and dumped["tail_weight"] is None and dumped["cart"]["aug_keep"] == 2
    assert "settings" not in dumped
    assert TrainConfig.model_validate(dumped) == config
    assert TrainConfig.model_validate(config.model_dump()) == config


def test_a_bad_setting_is_named_as_the_file_spells_it():
    with pytest.raises(pydantic.ValidationError) as caught:
        TrainConfig(label_smoothing=0.7, cart={"aug_kep": 1})
    located = {tuple(e["loc"]) for e in caught.value.errors()}
    assert located == {("label_smoothing",), ("cart", "aug_kep")}
    with pytest.raises(pydantic.ValidationError, match="augmentation"):  # CART's own cross-field rule still runs
        TrainConfig(cart={"circuit_reg_form": "invariance", "augmentation": False})


def test_with_settings_changes_one_method_and_validates():
    config = TrainConfig(label_smoothing=0.2)
    changed = config.with_settings("cart", circuit_reg_weight=0.5)
    assert changed.settings_of("cart").circuit_reg_weight == 0.5 and changed.settings_of("label-smoothing") == (
        config.settings_of("label-smoothing")
    )
    with pytest.raises(pydantic.ValidationError):
        config.with_settings("reweight", tail_weight=-1.0)


def test_only_settings_of_resets_every_other_method():
    config = TrainConfig(label_smoothing=0.2, cart={"aug_keep": 2})
    kept = config.only_settings_of("cart")
    assert kept.settings_of("cart").aug_keep == 2 and kept.settings_of("label-smoothing").label_smoothing == 0.1
    assert key_dump(kept) != key_dump(config) and key_dump(config.only_settings_of("bt")) == key_dump(TrainConfig())


def test_a_new_method_brings_its_settings_in_its_own_file():
    class DoubleSettings(MethodSettings):
        double_weight: float = pydantic.Field(2.0, gt=0, description="a test knob")

    @register
    class Doubled(BradleyTerry):
        name = "test-doubled"
        Settings = DoubleSettings

    try:
        assert get_method("test-doubled", TrainConfig(double_weight=4.0)).settings.double_weight == 4.0
        assert TrainConfig(double_weight=4.0).model_dump()["double_weight"] == 4.0
    finally:
        _unregister("test-doubled")

    class Clashing(MethodSettings):
        tail_weight: float = 1.0

    with pytest.raises(CartError, match="tail_weight are another method's"):

        @register
        class Clash(BradleyTerry):
            name = "test-clash"
            Settings = Clashing

    _unregister("test-clash")


def test_a_subclass_reads_the_settings_of_the_method_it_extends():
    @register
    class Heavier(get_method("reweight", TrainConfig()).__class__):
        name = "test-heavier-reweight"

    assert Heavier.Settings is ReweightSettings and "test-heavier-reweight" not in SETTINGS
    assert get_method("test-heavier-reweight", TrainConfig(tail_weight=5.0)).settings.tail_weight == 5.0
    _unregister("test-heavier-reweight")


def _unregister(name: str) -> None:
    for table in (METHODS, registry.DESIGNS, SETTINGS):
        table.pop(name, None)
