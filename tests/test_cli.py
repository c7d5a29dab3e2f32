import json
import sys

import pytest
from typer.testing import CliRunner

from cartrm.cli import app
from cartrm.errors import CartError

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def benchmark_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.jsonl"
    result = invoke(
        "data",
        "make-benchmark",
        "--out",
        path,
        "--n-train",
        64,
        "--n-validation",
        40,
        "--n-test-head",
        24,
        "--n-test-tail",
        24,
    )
    assert result.exit_code == 0, result.output
    return path


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["run"], ["data", "make-benchmark"]])
def test_every_command_has_help(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


def test_make_benchmark_writes_trl_records_with_gold_columns(benchmark_file):
    rows = [json.loads(line) for line in benchmark_file.read_text().splitlines()]
    assert len(rows) == 64 + 40 + 48
    assert {"prompt", "chosen", "rejected", "domain", "is_tail", "gold_chosen", "gold_rejected", "split"} <= set(
        rows[0]
    )


def test_train_then_evaluate_writes_the_contracted_metrics(benchmark_file, tmp_path):
    model_dir = tmp_path / "rm"
    result = invoke(
        "train",
        "--data",
        benchmark_file,
        "--model",
        "tiny-bert",
        "--out",
        model_dir,
        "--max-steps",
        2,
        "--batch-size",
        8,
        "--tail-by",
        "label:is_tail",
    )
    assert result.exit_code == 0, result.output
    assert "tail:" in result.output and (model_dir / "config.json").exists()
    result = invoke(
        "evaluate",
        "--model",
        model_dir,
        "--data",
        benchmark_file,
        "--tail-by",
        "label:is_tail",
        "--by",
        "domain",
        "--out",
        tmp_path / "eval",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for group in ("overall", "head", "tail"):
        assert {"accuracy", "ci_low", "ci_high", "n"} <= set(metrics[group])
    assert metrics["head"]["n"] == 24 and metrics["tail"]["n"] == 24  # the test split by default
    assert metrics["by"]["domain"]


def test_bad_data_is_a_one_line_error_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"chosen": "a", "rejected": "b"}\n{"chosen": "a", \n')
    result = invoke("evaluate", "--model", "tiny-bert", "--data", bad, "--out", tmp_path / "eval")
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert f"{bad}:2" in result.output and "invalid JSON" in result.output
    assert not (tmp_path / "eval").exists()


def test_bad_options_are_one_line_errors(benchmark_file, tmp_path):
    result = invoke(
        "evaluate", "--model", "tiny-bert", "--data", benchmark_file, "--tail-by", "wrong", "--out", tmp_path / "e"
    )
    assert result.exit_code == 1 and "invalid --tail-by" in result.output
    result = invoke("train", "--data", benchmark_file, "--out", tmp_path / "m", "--model", "tiny-bert", "--epochs", -1)
    assert result.exit_code == 1 and "epochs" in result.output
    result = invoke(
        "evaluate", "--model", "tiny-bert", "--data", benchmark_file, "--by", "nope", "--out", tmp_path / "e"
    )
    assert result.exit_code == 1 and "no column 'nope'" in result.output


def test_run_from_a_config_file_then_report_rerenders(tmp_path):
    from cartrm.experiments.run_config import RunConfig
    from tests.helpers import TINY

    planted = {**TINY, "benchmark": TINY["benchmark"].model_copy(update={"tail_shortcut": 1.0})}
    config = RunConfig(name="c", out_root=tmp_path, methods=("bt",), **planted)
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    result = invoke("run", "--config", tmp_path / "config.yaml")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "c" / "results.json").read_text())
    assert results["methods"]["bt"]["tail_accuracy"]["values"] == [
        json.loads((tmp_path / "c" / "seed-0" / "eval" / "bt" / "metrics.json").read_text())["tail"]["accuracy"]
    ]
    bt = results["methods"]["bt"]
    gold = f"head {bt['head_gold_accuracy']['mean']:.3f}, tail {bt['tail_gold_accuracy']['mean']:.3f}"
    assert f"[bt] gold accuracy: {gold} (on the noisy labels: head " in result.output  # gold, named as such
    gains = json.loads((tmp_path / "c" / "seed-0" / "shortcut" / "bt" / "shortcut.json").read_text())["gains"]
    assert len(gains) > 0 and bt["shortcut_gain"]["values"] == [pytest.approx(sum(gains) / len(gains))]
    assert "shortcut reward gain (validation)" in (tmp_path / "c" / "report.html").read_text()
    (tmp_path / "c" / "report.html").unlink()
    result = invoke("report", tmp_path / "c")
    assert result.exit_code == 0 and (tmp_path / "c" / "report.html").exists()
    result = invoke("report", tmp_path / "nothing")
    assert result.exit_code == 1 and "results.json" in result.output


def test_out_moves_a_run_reproduced_from_its_config_file(tmp_path, monkeypatch):
    import cartrm.experiments.pipeline
    from cartrm.experiments.run_config import RunConfig

    taken = []
    monkeypatch.setattr(
        cartrm.experiments.pipeline, "run_experiment", lambda config: taken.append(config) or sys.exit(0)
    )
    config = RunConfig(name="c", out_root=tmp_path / "old", seeds=(3,))
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    assert invoke("run", "--config", tmp_path / "config.yaml", "--out", tmp_path / "new" / "here").exit_code == 0
    assert taken[-1].directory == tmp_path / "new" / "here" and taken[-1].seeds == (3,)
    assert invoke("run", "--config", tmp_path / "config.yaml").exit_code == 0
    assert taken[-1].directory == tmp_path / "old" / "c"


def test_seeds_picks_the_seeds_of_a_run_reproduced_from_its_config_file(tmp_path, monkeypatch):
    import cartrm.experiments.pipeline
    from cartrm.experiments.run_config import RunConfig

    taken = []
    monkeypatch.setattr(
        cartrm.experiments.pipeline, "run_experiment", lambda config: taken.append(config) or sys.exit(0)
    )
    config = RunConfig(name="c", out_root=tmp_path / "old", seeds=(0, 1, 2), methods=("bt", "cart"))
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    assert invoke("run", "--config", tmp_path / "config.yaml", "--seeds", "2,5").exit_code == 0
    assert taken[-1] == config.model_copy(update={"seeds": (2, 5)})
    for bad in ("1,1", "-1", "0.5", "a,b"):
        result = invoke("run", "--config", tmp_path / "config.yaml", "--seeds", bad)
        assert result.exit_code == 1 and "--seeds expects distinct non-negative integers" in result.output, bad
    assert len(taken) == 1


def test_train_records_a_learning_curve_on_a_split_of_the_data(benchmark_file, tmp_path):
    common = ["train", "--data", benchmark_file, "--model", "tiny-bert", "--max-steps", 2, "--tail-by", "label:is_tail"]
    result = invoke(*common, "--eval-steps", 1, "--eval-split", "validation", "--out", tmp_path / "rm")
    assert result.exit_code == 0, result.output
    curve = json.loads((tmp_path / "rm" / "train_result.json").read_text())["curve"]
    assert [p["step"] for p in curve] == [0, 1, 2]
    assert {"head_gold_accuracy", "tail_gold_accuracy"} <= set(curve[-1])
    result = invoke(*common, "--eval-steps", 1, "--out", tmp_path / "rm2")
    assert result.exit_code == 1 and "--eval-split" in result.output


def test_init_from_continues_a_trained_model_with_a_fresh_optimizer(benchmark_file, tmp_path):
    from cartrm.models import RewardModel

    common = ["train", "--data", benchmark_file, "--max-steps", 2, "--batch-size", 8]
    assert invoke(*common, "--model", "tiny-bert", "--out", tmp_path / "bt").exit_code == 0
    start = RewardModel.load(tmp_path / "bt").fingerprint()
    result = invoke(*common, "--init-from", tmp_path / "bt", "--out", tmp_path / "continued")
    assert result.exit_code == 0, result.output
    assert "continuing from" in result.output
    assert json.loads((tmp_path / "continued" / "run.json").read_text())["model"] == start
    assert RewardModel.load(tmp_path / "continued").fingerprint() != start
    result = invoke(*common, "--init-from", tmp_path / "bt", "--out", tmp_path / "bt", "--overwrite")
    assert result.exit_code == 1 and "is also --out" in result.output
    result = invoke(*common, "--init-from", tmp_path / "nothing", "--out", tmp_path / "x")
    assert result.exit_code == 1 and "not a model folder" in result.output


def test_run_takes_the_user_split_for_user_data_only(tmp_path, benchmark_file, monkeypatch):
    import cartrm.experiments.pipeline

    taken = []
    monkeypatch.setattr(
        cartrm.experiments.pipeline, "run_experiment", lambda config: taken.append(config) or sys.exit(0)
    )
    data = ["--data", benchmark_file, "--tail-by", "label:is_tail"]
    result = invoke("run", *data, "--test-share", 0.2, "--min-tail-test", 50, "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert taken[0].user_split.test_share == 0.2 and taken[0].user_split.min_tail_test == 50
    result = invoke("run", "--quick", "--test-share", 0.2, "--out", tmp_path / "q")
    assert result.exit_code == 1 and "apply to --data" in result.output


def test_run_takes_tuning_grids_and_ablations_from_yaml_files(tmp_path, monkeypatch):
    import cartrm.experiments.pipeline

    taken = []
    monkeypatch.setattr(
        cartrm.experiments.pipeline, "run_experiment", lambda config: taken.append(config) or sys.exit(0)
    )
    grids = tmp_path / "grid.yaml"
    grids.write_text(
        "bt-continued:\n  - {learning_rate: 5.0e-5}\n  - {learning_rate: 1.0e-4}\ncart:\n"
        "  - {cart: {circuit_reg_weight: 0.1}}\n  - {cart: {circuit_reg_weight: 1.0}}\n"
    )
    result = invoke("run", "--preset", "standard", "--tune", grids, "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert taken[0].tune["cart"][0] == {"cart": {"circuit_reg_weight": 0.1}}
    grids.write_text("cart:\n  - {cart: {circuit_reg_weight: 0.1}}\n")
    result = invoke("run", "--preset", "standard", "--tune", grids, "--out", tmp_path / "r2")
    assert result.exit_code == 1 and "missing bt-continued" in result.output
    ablations = tmp_path / "ablations.yaml"
    ablations.write_text("no-aug: {cart: {augmentation: false}}\ncold: {warm_start: false}\n")
    result = invoke("run", "--preset", "standard", "--ablate", ablations, "--out", tmp_path / "r3")
    assert result.exit_code == 0, result.output
    assert list(taken[-1].ablated_methods) == ["cart-no-aug", "cart-cold"]
    result = invoke("run", "--preset", "standard", "--ablate", tmp_path / "missing.yaml", "--out", tmp_path / "r4")
    assert result.exit_code == 1 and "--ablate" in result.output and "no such file" in result.output


def test_run_rejects_data_without_a_tail_spec(tmp_path, benchmark_file):
    result = invoke("run", "--data", benchmark_file, "--out", tmp_path / "run")
    assert result.exit_code == 1 and "--tail-by" in result.output
    assert not any(tmp_path.iterdir())


def test_run_rejects_quick_and_full_together(tmp_path):
    result = invoke("run", "--quick", "--full", "--out", tmp_path / "run")
    assert result.exit_code == 1 and "--quick, --full and --preset are alternatives" in result.output
    assert not any(tmp_path.iterdir())


def test_run_takes_every_method_and_the_ensemble_size_from_the_command_line(tmp_path, monkeypatch):
    import cartrm.experiments.pipeline
    from cartrm.experiments.run_config import ALL_METHODS, RunConfig

    taken = []
    monkeypatch.setattr(
        cartrm.experiments.pipeline, "run_experiment", lambda config: taken.append(config) or sys.exit(0)
    )
    result = invoke(
        "run", "--quick", "--methods", "all", "--members", "2", "--seeds", "0,1,2", "--out", tmp_path / "run"
    )
    assert result.exit_code == 0, result.output
    assert set(taken[0].methods) == {*ALL_METHODS, "bt-continued"}  # quick warm-starts cart: its control joins
    assert taken[0].ensemble_members == 2 and taken[0].seeds == (0, 1, 2)
    assert taken[0].benchmark.n_train == RunConfig.preset("quick").benchmark.n_train
    result = invoke("run", "--quick", "--members", "1", "--out", tmp_path / "run")
    assert result.exit_code == 1 and "ensemble_members" in result.output


def test_the_full_preset_on_cpu_warns_how_long_it_takes(tmp_path, monkeypatch):
    import cartrm.cli.experiment
    import cartrm.experiments.pipeline

    monkeypatch.setattr(cartrm.experiments.pipeline, "run_experiment", lambda config: sys.exit(0))
    monkeypatch.setattr(cartrm.cli.experiment, "_has_gpu", lambda: False)
    assert "tens of hours" in invoke("run", "--full", "--out", tmp_path / "run").stderr
    assert "tens of hours" not in invoke("run", "--quick", "--out", tmp_path / "run").stderr
    refused = invoke("run", "--out", tmp_path / "run")  # no preset on a CPU: the 40-hour run is not the default
    assert refused.exit_code == 1 and "choose --quick" in refused.output
    monkeypatch.setattr(cartrm.cli.experiment, "_has_gpu", lambda: True)
    assert "tens of hours" not in invoke("run", "--full", "--out", tmp_path / "run").stderr


def test_quick_preset_is_one_seed_of_warm_cart_against_both_controls_and_full_is_the_research_table():
    from cartrm.experiments.run_config import ALL_METHODS, RunConfig

    quick, full = RunConfig.preset("quick"), RunConfig.preset("full")
    assert quick.seeds == (0,) and quick.methods == ("bt", "bt-continued", "tail-upsample", "cart")
    assert quick.warm_started("cart") and quick.train.settings_of("cart").recipe == "best"
    assert quick.benchmark.n_train < full.benchmark.n_train
    assert len(full.seeds) >= 3 and set(full.methods) == set(ALL_METHODS)
    with pytest.raises(CartError, match="unknown preset 'huge'"):
        RunConfig.preset("huge")


def test_the_standard_preset_warm_starts_cart_against_its_control_over_five_seeds(tmp_path, monkeypatch):
    import cartrm.experiments.pipeline
    from cartrm.datasets import make_longtail_dataset

    taken = []
    monkeypatch.setattr(
        cartrm.experiments.pipeline, "run_experiment", lambda config: taken.append(config) or sys.exit(0)
    )
    assert invoke("run", "--preset", "standard", "--out", tmp_path / "run").exit_code == 0
    standard = taken[0]
    assert standard.continue_steps > 0 and len(standard.seeds) >= 5
    assert set(standard.methods) == {"bt", "bt-continued", "tail-upsample", "cart"}
    validation = make_longtail_dataset(standard.benchmark).split("validation")
    assert sum(validation.column("is_tail")) >= 100  # tail pairs to tune on
    assert invoke("run", "--preset", "standard", "--quick").exit_code == 1


def test_discover_writes_circuits_and_plots(benchmark_file, tmp_path):
    result = invoke(
        "discover",
        "--model",
        "tiny-bert",
        "--data",
        benchmark_file,
        "--tail-by",
        "label:is_tail",
        "--out",
        tmp_path / "d",
        "--top-k",
        8,
        "--patch-pairs",
        4,
        "--n-null",
        3,
        "--max-validated",
        1,
    )
    assert result.exit_code == 0, result.output
    circuits = json.loads((tmp_path / "d" / "circuits.json").read_text())
    assert circuits["schema_version"] == 1 and circuits["n_examples"] == 2 * 64
    effects = [abs(n["effect_size"]) for n in circuits["neurons"]]
    assert effects == sorted(effects, reverse=True)
    assert {"site", "layer", "index", "delta", "effect_size", "p_value", "q_value"} <= set(circuits["neurons"][0])
    for name in ("delta_hist.png", "coherence_graph.png"):
        assert (tmp_path / "d" / name).read_bytes()[:4] == b"\x89PNG"


def test_discover_rejects_unknown_site_kinds(benchmark_file, tmp_path):
    result = invoke(
        "discover",
        "--model",
        "tiny-bert",
        "--data",
        benchmark_file,
        "--tail-by",
        "label:is_tail",
        "--out",
        tmp_path / "d",
        "--sites",
        "mlp,foo",
    )
    assert result.exit_code == 1 and "unknown site kind" in result.output
    assert not (tmp_path / "d").exists()


def test_discover_then_assess_on_a_planted_model(tmp_path):
    from tests.helpers import planted_data, planted_model

    planted_model().save(tmp_path / "rm")
    planted_data().save(tmp_path / "data.jsonl")
    common = ["--model", tmp_path / "rm", "--data", tmp_path / "data.jsonl", "--tail-by", "label:is_tail"]
    (tmp_path / "discover.yaml").write_text("top_k: 8\npatch_pairs: 0\nn_permutations: 50\n")
    result = invoke("discover", *common, "--out", tmp_path / "d", "--config", tmp_path / "discover.yaml")
    assert result.exit_code == 0, result.output
    discovered = json.loads((tmp_path / "d" / "circuits.json").read_text())["config"]
    assert (discovered["top_k"], discovered["patch_pairs"], discovered["n_permutations"]) == (8, 0, 50)
    (tmp_path / "assess.yaml").write_text("sensitivity_examples: 8\nweights: [0.2, 0.5, 0.3]\nvuln_threshold: 0.0\n")
    result = invoke(
        "assess",
        *common,
        "--circuits",
        tmp_path / "d" / "circuits.json",
        "--out",
        tmp_path / "a",
        "--config",
        tmp_path / "assess.yaml",
        "--threshold",
        -1.0,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "a" / "vulnerability.json").read_text())
    assert report["targets"] and report["config"]["weights"] == [0.2, 0.5, 0.3]
    assert report["config"]["sensitivity_examples"] == 8 and report["config"]["vuln_threshold"] == -1.0
    assert {"consistency", "sensitivity_exact", "sensitivity_first_order", "coverage", "vuln", "rank"} <= set(
        report["circuits"][0]
    )
    assert (tmp_path / "a" / "vulnerability.png").read_bytes()[:4] == b"\x89PNG"
    result = invoke(
        "assess", *common, "--circuits", tmp_path / "d" / "circuits.json", "--out", tmp_path / "b", "--weights", "1,2"
    )
    assert result.exit_code == 1 and "invalid option weights" in result.output and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_bound_sweep_on_a_tiny_model(tmp_path):
    (tmp_path / "bound.yaml").write_text("model: tiny-bert\ntail_sizes: [8, 16, 32]\nn_head: 32\nepochs: 1\n")
    result = invoke("bound", "--out", tmp_path / "b", "--config", tmp_path / "bound.yaml", "--n-test-tail", 40)
    assert result.exit_code == 0, result.output
    sweep = json.loads((tmp_path / "b" / "bound.json").read_text())
    assert [p["n_tail"] for p in sweep["points"]] == [8, 16, 32]
    for point in sweep["points"]:
        assert point["gap"] == pytest.approx(point["l_tail"] - point["l_head"])
        assert point["l_head"] > 0 and point["l_tail"] > 0
    assert (tmp_path / "b" / "bound.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "b" / "n_tail_8" / "circuits.json").exists()


def test_ensemble_trains_members_and_saves_a_loadable_ensemble(benchmark_file, tmp_path):
    from cartrm.models import load_reward_model

    settings = (
        "model: tiny-bert\nmethod: bt\nmembers: 2\nmax_steps: 2\nbatch_size: 8\nmax_length: 32\noverlap_pairs: 16\n"
    )
    (tmp_path / "ensemble.yaml").write_text(settings)
    result = invoke(
        "ensemble",
        "--data",
        benchmark_file,
        "--out",
        tmp_path / "e",
        "--tail-by",
        "label:is_tail",
        "--config",
        tmp_path / "ensemble.yaml",
    )
    assert result.exit_code == 0, result.output
    member = json.loads((tmp_path / "e" / "members" / "member-1" / "train_config.json").read_text())
    assert (member["max_steps"], member["batch_size"], member["seed"], member["method"]) == (2, 8, 1, "bt")
    ensemble = load_reward_model(tmp_path / "e" / "ensemble")
    assert len(ensemble.members) == 2 and abs(sum(ensemble.alpha) - 1) < 1e-9
    result = invoke(
        "evaluate",
        "--model",
        tmp_path / "e" / "ensemble",
        "--data",
        benchmark_file,
        "--tail-by",
        "label:is_tail",
        "--out",
        tmp_path / "ev",
    )
    assert result.exit_code == 0, result.output


def test_cart_training_from_the_command_line_runs_its_own_discovery(benchmark_file, tmp_path):
    result = invoke(
        "train",
        "--data",
        benchmark_file,
        "--out",
        tmp_path / "m",
        "--model",
        "tiny-bert",
        "--method",
        "cart",
        "--tail-by",
        "label:is_tail",
        "--max-steps",
        3,
        "--batch-size",
        8,
        "--max-length",
        32,
        "--warmup-steps",
        1,
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "config.json").exists()
    result = invoke(
        "train",
        "--data",
        benchmark_file,
        "--out",
        tmp_path / "r",
        "--model",
        "tiny-bert",
        "--method",
        "reweight",
        "--max-steps",
        1,
    )
    assert result.exit_code == 1 and "--tail-by" in result.output
