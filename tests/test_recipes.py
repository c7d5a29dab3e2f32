"""CART's recipes: ``best`` is the default, ``paper`` is the earlier default exactly, a set option wins."""

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

import cartrm.training
from cartrm.cli import app
from cartrm.experiments.run_config import variant_config
from cartrm.training import TrainConfig
from cartrm.training.settings import RECIPES, CartConfig

EARLIER = Path(__file__).parents[1] / "docs" / "runs" / "house-reproduction-2026-12-03" / "config.yaml"


def test_paper_is_the_default_an_earlier_version_recorded_and_best_is_the_default_now():
    recorded = yaml.safe_load(EARLIER.read_text())["train"]["cart"]  # every CART setting, as the old default wrote them
    assert CartConfig(recipe="paper").model_dump(mode="json") == {"recipe": "paper", **recorded}
    best = CartConfig()
    assert best.recipe == "best" and all(getattr(best, k) == v for k, v in RECIPES["best"].items())
    assert RECIPES["best"] == {
        "tail_sampling": "add",
        "aug_scaling": "batch_share",
        "circuit_reg_form": "within_sides",
        "aug_vocabulary": "per_group",
    }


def test_a_setting_given_wins_over_the_recipe_and_an_old_record_loads_as_it_ran():
    assert CartConfig(tail_sampling="swap").tail_sampling == "swap"
    assert CartConfig(tail_sampling="swap").aug_scaling == "batch_share"
    recorded = yaml.safe_load(EARLIER.read_text())["train"]["cart"]
    assert CartConfig(**recorded).model_dump(exclude={"recipe"}) == CartConfig(recipe="paper").model_dump(
        exclude={"recipe"}
    )


def test_a_grid_variant_naming_a_recipe_takes_its_settings():
    base = TrainConfig(cart={"circuit_reg_weight": 0.5})
    paper = variant_config(base, {"cart": {"recipe": "paper"}}).settings_of("cart")
    assert paper.tail_sampling == "swap" and paper.circuit_reg_weight == 1.0
    kept = variant_config(base, {"cart": {"aug_keep": 2}}).settings_of("cart")
    assert kept.circuit_reg_weight == 0.5 and kept.tail_sampling == "add"


def test_cart_train_trains_the_best_recipe_unless_told_and_records_every_resolved_setting(tmp_path, monkeypatch):
    taken = []
    monkeypatch.setattr(cartrm.training, "train", lambda model, data, config, *a, **k: taken.append(config) or _Done())
    data = tmp_path / "d.jsonl"
    rows = [{"prompt": "p", "chosen": "a b", "rejected": "c", "is_tail": tail} for tail in (True, False)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    runner = CliRunner()
    common = ["train", "--data", str(data), "--model", "tiny-bert", "--method", "cart", "--tail-by", "label:is_tail"]
    for extra in ([], ["--recipe", "paper"], ["--recipe", "paper", "--tail-sampling", "add"]):
        result = runner.invoke(app, [*common, "--out", str(tmp_path / f"m{len(taken)}"), *extra])
        assert result.exit_code == 0, result.output
    best, paper, mixed = (c.settings_of("cart") for c in taken)
    assert (best.recipe, best.tail_sampling, best.circuit_reg_form) == ("best", "add", "within_sides")
    assert paper == CartConfig(recipe="paper")
    assert (mixed.tail_sampling, mixed.aug_scaling) == ("add", "separate_mean")


class _Done:
    global_step, seconds, final_loss = 1, 0.0, 0.0
