"""Options made from the configs (one per field, its description as help) and ``--config FILE`` for every command."""

import json

import click
import pytest
import typer
import yaml
from typer.testing import CliRunner

from cartrm.circuits.config import DiscoveryConfig
from cartrm.cli import app
from cartrm.cli.experiment import _run_folder
from cartrm.datasets.longtail import BenchmarkConfig
from cartrm.experiments.config import BoundSweepConfig, EnsembleConfig
from cartrm.training.config import CartConfig, TrainConfig
from cartrm.training.settings import SETTINGS
from cartrm.vulnerability.config import AssessConfig
from tests.helpers import planted_pairs

runner = CliRunner()
COMMAND = typer.main.get_command(app)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def options_of(*path: str) -> dict[str, click.Parameter]:
    command = COMMAND
    for name in path:
        command = command.commands[name]
    return {p.name: p for p in command.params}


def test_cart_train_has_an_option_for_every_training_and_cart_setting():
    options = options_of("train")
    fields = {
        **TrainConfig.model_fields,
        **{n: f for model in SETTINGS.values() for n, f in model.model_fields.items()},
    }
    for name, field in fields.items():
        if name == "settings":
            continue
        assert name in options, name
        assert options[name].help == (field.description or ""), name
        assert "--" + name.replace("_", "-") in options[name].opts, name
    assert "--lr" in options["learning_rate"].opts and "--lambda" in options["circuit_reg_weight"].opts
    assert "tail_by" in options  # the tail is an input of training, not a setting


@pytest.mark.parametrize(
    ("path", "configs"),
    [
        (("discover",), [(DiscoveryConfig, ())]),
        (("assess",), [(AssessConfig, ())]),
        (
            ("ensemble",),
            [(EnsembleConfig, ("train",)), (TrainConfig, ("settings", "method", "seed")), (CartConfig, ())],
        ),
        (("bound",), [(BoundSweepConfig, ("train", "discovery")), (TrainConfig, ("settings", "seed"))]),
        (("data", "make-benchmark"), [(BenchmarkConfig, ())]),
    ],
)
def test_every_command_has_an_option_per_setting_with_its_description(path, configs):
    """(The excluded fields are set by the command: the members' method and seeds come from the ensemble's.)"""
    options = options_of(*path)
    for config, excluded in configs:
        for name, field in config.model_fields.items():
            if name in excluded:
                continue
            assert name in options, (path, name)
            assert field.description and options[name].help == field.description, (path, name)
            assert "--" + name.replace("_", "-") in options[name].opts, (path, name)


def test_generated_defaults_are_the_configs_own():
    assert options_of("bound")["learning_rate"].default == BoundSweepConfig().train.learning_rate  # not TrainConfig's
    assert options_of("assess")["weights"].default == ",".join(map(str, AssessConfig().weights))
    assert "--threshold" in options_of("assess")["vuln_threshold"].opts  # the earlier spelling still works


def test_a_config_saved_with_the_recorded_tail_still_loads():
    assert TrainConfig(tail_by="label:is_tail", max_steps=3) == TrainConfig(max_steps=3)


@pytest.mark.parametrize(
    "path",
    [(name,) for name in ("train", "ensemble", "evaluate", "discover", "assess", "bound", "run", "report", "compare")]
    + [("data", "make-benchmark")],
)
def test_every_command_takes_a_config_file(path):
    assert "--config" in {opt for p in options_of(*path).values() for opt in p.opts}


def test_train_reads_its_settings_from_a_config_file_and_the_command_line_wins(tmp_path):
    data = tmp_path / "pairs.jsonl"
    planted_pairs(16).save(data)
    config = {
        "model": "tiny-bert",
        "max_steps": 1,
        "batch_size": 4,
        "learning_rate": 3e-3,
        "seed": 5,
        "cart": {"aug_keep": 2, "aug_transforms": ["reorder", "format"]},
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    result = invoke("train", "--config", tmp_path / "train.yaml", "--data", data, "--out", tmp_path / "a", "--seed", 7)
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "a" / "train_config.json").read_text())
    assert (saved["batch_size"], saved["learning_rate"], saved["seed"]) == (4, 3e-3, 7)
    assert saved["cart"]["aug_keep"] == 2 and saved["cart"]["aug_transforms"] == ["reorder", "format"]
    again = invoke(
        "train",
        "--config",
        tmp_path / "a" / "train_config.json",
        "--model",
        "tiny-bert",
        "--data",
        data,
        "--out",
        tmp_path / "b",
    )
    assert again.exit_code == 0, again.output  # a saved train_config.json is a config file too
    assert json.loads((tmp_path / "b" / "train_config.json").read_text()) == saved


def test_an_unknown_setting_in_a_config_file_is_refused_by_name(tmp_path):
    (tmp_path / "c.yaml").write_text("n_train: 10\nlerning_rate: 0.1\n")
    result = invoke("data", "make-benchmark", "--config", tmp_path / "c.yaml", "--out", tmp_path / "b.jsonl")
    assert result.exit_code == 2 and "lerning_rate" in result.output
    assert not (tmp_path / "b.jsonl").exists()


def test_make_benchmark_takes_its_sizes_from_a_config_file(tmp_path):
    (tmp_path / "c.yaml").write_text(
        f"out: {tmp_path / 'b.jsonl'}\nn-train: 10\nn_validation: 4\nn_test_head: 3\nn_test_tail: 5\n"
    )
    result = invoke("data", "make-benchmark", "--config", tmp_path / "c.yaml")
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 10 + 4 + 3 + 5


def test_run_out_is_the_run_folder_and_out_root_is_deprecated(tmp_path):
    assert _run_folder(tmp_path / "my-run", None, "quick") == {"out_root": tmp_path, "name": "my-run"}
    with pytest.warns(FutureWarning, match="--out-root is deprecated"):
        assert _run_folder(None, tmp_path, "quick") == {"out_root": tmp_path, "name": "quick"}
