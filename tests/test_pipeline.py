"""``cart run`` as a library call on a tiny model: artifacts, results vs metrics, stage skipping, config.yaml,
and the user-data mode."""

import json

import numpy as np
import pytest

import cartrm.experiments.seed_data as seed_data
import cartrm.experiments.stages.single as single
import cartrm.experiments.stages.tuning as tuning_stage
from cartrm.circuits.result import Circuits
from cartrm.datasets import BenchmarkConfig, make_longtail_dataset
from cartrm.errors import CartError
from cartrm.experiments.pipeline import run_experiment
from cartrm.experiments.run_config import RunConfig
from cartrm.experiments.seed_run import SeedRun
from cartrm.report.results import RunResults
from cartrm.runs.layout import SeedLayout
from cartrm.runs.stage import STAGE_MARKER
from cartrm.training import TrainConfig
from tests.helpers import TINY


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    # a lenient FDR: 20 permutations cannot reach 5% after correction, and the test of CART's augmentation audit
    # needs circuits on the tiny 2-step bt
    settings = {**TINY, "discovery": TINY["discovery"].model_copy(update={"fdr": 0.5})}
    config = RunConfig(
        name="t", out_root=tmp_path_factory.mktemp("runs"), methods=("bt", "cart"), seeds=(0, 1), **settings
    )
    return config, run_experiment(config, progress=False)


def _no_training(*args, **kwargs):
    raise AssertionError("a finished training stage was redone")


def _copy_of(config: RunConfig, out_root) -> RunConfig:
    """The finished run copied under ``out_root``, and its config pointing there."""
    import shutil

    copied = config.model_copy(update={"out_root": out_root})
    shutil.copytree(config.directory, copied.directory)
    return copied


@pytest.mark.slow
def test_run_writes_every_artifact(finished):
    config, _ = finished
    root = config.directory
    for path in ("config.yaml", "versions.json", "run.log", "results.json", "report.html"):
        assert (root / path).exists(), path
    assert "data splits and tails of seed(s) 0, 1: ready in" in (root / "run.log").read_text().splitlines()[0]
    for seed in (0, 1):
        seed_dir = root / f"seed-{seed}"
        assert (seed_dir / "models" / "bt" / "config.json").exists() and (
            seed_dir / "models" / "cart" / "config.json"
        ).exists()
        assert (seed_dir / "analysis" / "circuits.json").exists()
        assert (seed_dir / "eval" / "cart" / "metrics.json").exists()
        assert set(json.loads((seed_dir / "bon" / "bt" / "curves.json").read_text())) == {"head", "tail"}


def test_results_match_the_per_seed_metrics(finished):
    config, results = finished
    stored = RunResults.load(config.directory / "results.json")
    assert stored == results
    tails = [
        json.loads((config.directory / f"seed-{s}" / "eval" / "cart" / "metrics.json").read_text())["tail"]["accuracy"]
        for s in (0, 1)
    ]
    assert results.methods["cart"].tail_accuracy.values == tails
    assert results.methods["cart"].tail_accuracy.mean == pytest.approx(np.mean(tails))
    assert {c.metric for c in results.comparisons} == {
        "tail_accuracy",
        "head_accuracy",
        "tail_gold_accuracy",
        "head_gold_accuracy",
        "conflict_gold_accuracy",
    }
    assert results.verdict and results.verdict[0].startswith("cart ")
    assert results.methods["bt"].bon["tail"].curves[0].n[-1] == 8
    assert results.methods["cart"].n_pairs["tail"] == [24, 24]  # n next to every figure


def test_cart_s_kept_augmentations_are_audited_against_the_gold_rules(finished):
    config, results = finished
    audits = results.methods["cart"].augmentation
    kept = [
        sum(
            1
            for path in (config.directory / f"seed-{s}" / "models" / "cart").rglob("augmented.jsonl")
            for line in path.read_text().splitlines()
            if line.strip()
        )
        for s in (0, 1)
    ]
    assert [a["seed"] for a in audits] == [s for s in (0, 1) if kept[s]] and sum(kept) > 0
    for audit, n in zip(audits, [k for k in kept if k]):
        assert sum(t["n"] for t in audit["transforms"].values()) == n
        assert all(0 <= t["gold_agreement"] <= 1 and 0 <= t["foreign_word"] <= 1 for t in audit["transforms"].values())
    assert "<h2>Augmentations</h2>" in (config.directory / "report.html").read_text()


def test_a_finished_run_is_read_without_regenerating_its_data(finished, monkeypatch):
    """The reader gives the per-pair correctness the run compared, from saved files alone."""
    from cartrm.experiments.reader import FinishedRun

    config, _ = finished
    run = FinishedRun(config.directory)
    expected = {s: SeedRun(config, s, False).test_correctness("cart") for s in (0, 1)}
    monkeypatch.setattr(seed_data, "make_longtail_dataset", _no_training)  # nothing may be generated again
    assert run.seeds() == [0, 1] and run.methods(0) == ["bt", "cart"] and run.config == config
    for seed in (0, 1):
        read = run.correctness(seed, "cart")
        assert read.keys() == expected[seed].keys()
        assert all(np.array_equal(read[k], expected[seed][k]) for k in read)
    with pytest.raises(CartError, match="no test scores of 'reweight'.*scored: bt, cart"):
        run.correctness(0, "reweight")


def test_config_yaml_reproduces_the_run_config(finished):
    config, _ = finished
    assert RunConfig.from_yaml(config.directory / "config.yaml") == config


def test_rerun_skips_finished_stages_and_reruns_changed_ones(finished, monkeypatch):
    config, results = finished
    monkeypatch.setattr(single, "train", _no_training)
    again = run_experiment(config, progress=False)
    assert again.methods["cart"].tail_accuracy == results.methods["cart"].tail_accuracy
    changed = config.model_copy(update={"bon_candidates": 4})
    assert run_experiment(changed, progress=False).methods["bt"].bon["head"].curves[0].n[-1] == 4


def test_a_moved_run_folder_still_skips_its_finished_stages(finished, tmp_path, monkeypatch):
    config, results = finished
    moved = _copy_of(config, tmp_path / "elsewhere")
    monkeypatch.setattr(single, "train", _no_training)
    assert run_experiment(moved, progress=False).methods["cart"].tail_accuracy == results.methods["cart"].tail_accuracy


def test_a_changed_cart_setting_retrains_only_cart(finished, tmp_path, monkeypatch):
    config = _copy_of(finished[0], tmp_path)  # leaves the shared finished run as it was
    changed = config.model_copy(update={"train": config.train.with_settings("cart", min_tail_per_batch=0)})
    trained = []
    original = single.train
    monkeypatch.setattr(
        single,
        "train",
        lambda model, data, training, *a, **k: (
            trained.append(training.method) or original(model, data, training, *a, **k)
        ),
    )
    run_experiment(changed, progress=False)
    assert trained == ["cart", "cart"]  # one per seed; bt and the analysis are reused


def test_user_data_without_gold_runs_and_skips_gold_parts(tmp_path):
    records = make_longtail_dataset(
        BenchmarkConfig(n_train=120, n_validation=0, n_test_head=0, n_test_tail=0)
    ).to_records()
    path = tmp_path / "mine.jsonl"
    path.write_text(
        "".join(json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected", "is_tail")}) + "\n" for r in records)
    )
    config = RunConfig(name="u", out_root=tmp_path, methods=("bt",), data=str(path), tail_by="label:is_tail", **TINY)
    results = run_experiment(config, progress=False)
    assert results.methods["bt"].tail_gold_accuracy is None and not results.methods["bt"].bon
    assert any("no gold reward" in note for note in results.notes)
    assert results.methods["bt"].tail_accuracy.n_seeds == 1


def test_a_density_tail_embeds_each_text_once_across_seeds(tmp_path, monkeypatch):
    """Every seed splits the same data by the tail and refits it on its training split: the base model is loaded
    once and each text embedded once, and the splits are as with a fresh embedder per call."""
    from cartrm.models import RewardModel

    records = make_longtail_dataset(BenchmarkConfig(n_train=60, n_validation=0, n_test_head=0, n_test_tail=0))
    path = tmp_path / "mine.jsonl"
    rows = ({k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records.to_records())
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = RunConfig(name="d", out_root=tmp_path, methods=("bt",), data=str(path), tail_by="density:0.2", **TINY)
    embedded: list[str] = []
    embed = RewardModel.embed

    def recorded(self, texts, **kwargs):
        embedded.extend(texts)
        return embed(self, texts, **kwargs)

    monkeypatch.setattr(RewardModel, "embed", recorded)
    seed_data.tail_probe.cache_clear()
    memo_splits = [SeedRun(config.model_copy(update={"seeds": (s,)}), s, False) for s in (0, 1)]
    assert seed_data.tail_probe.cache_info().misses == 1
    assert sorted(embedded) == sorted(set(records.plain_texts()))
    monkeypatch.setattr(seed_data, "memoised", lambda embedder: embedder)
    seed_data.tail_probe.cache_clear()
    for seed, run in enumerate(memo_splits):
        fresh = SeedRun(config, seed, False)
        for name in seed_data.SPLITS:
            assert fresh.splits[name].to_records() == run.splits[name].to_records()
            assert fresh.tails[name].mask.tolist() == run.tails[name].mask.tolist()
    seed_data.tail_probe.cache_clear()


def test_eval_steps_record_each_model_s_learning_curve_on_the_validation_split(tmp_path):
    settings = {**TINY, "train": TINY["train"].model_copy(update={"eval_steps": 1})}
    config = RunConfig(name="c", out_root=tmp_path, methods=("bt",), **{**settings, "bon_prompts": 0})
    results = run_experiment(config, progress=False)
    result = json.loads((config.directory / "seed-0" / "models" / "bt" / "train_result.json").read_text())
    assert [point["step"] for point in result["curve"]] == [0, 1, 2]
    assert {"head_gold_accuracy", "tail_gold_accuracy"} <= set(result["curve"][0])
    assert results.methods["bt"].learning_curves == [result["curve"]]  # in results.json, and drawn in the report
    assert (config.directory / "plots" / "learning_curve.png").exists()
    assert 'alt="learning_curve"' in (config.directory / "report.html").read_text()


def test_user_data_is_split_by_group_and_the_tail_test_set_is_raised_where_the_data_allow():
    from cartrm.data import PreferenceDataset
    from cartrm.experiments.run_config import UserSplit
    from cartrm.experiments.seed_data import user_splits as _user_splits

    data = PreferenceDataset.from_records(
        [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "row": i} for i in range(400)]
    )
    tail = np.arange(400) % 10 == 0  # 40 tail pairs
    split = UserSplit(test_share=0.1, validation_share=0.1, min_tail_test=100)
    splits = _user_splits(data, 0, tail, split)
    rows = {name: part.column("row") for name, part in splits.items()}
    assert sorted(sum(rows.values(), [])) == list(range(400))  # disjoint and complete
    tail_counts = {name: int(tail[r].sum()) for name, r in rows.items()}
    assert tail_counts == {"train": 16, "validation": 4, "test": 20}  # the tail test raised to half of 40
    assert len(rows["test"]) == 36 + 20 and len(rows["validation"]) == 36 + 4
    assert _user_splits(data, 0, tail, split)["test"].column("row") == rows["test"]  # the seed fixes it
    plain = _user_splits(data, 0, tail, UserSplit(min_tail_test=0))["test"].column("row")
    assert tail[plain].sum() == 4  # the stratified share alone


def test_unknown_methods_are_refused():
    with pytest.raises(ValueError, match="unknown method"):
        RunConfig(methods=("bt", "magic"))
    assert RunConfig(methods=("cart",), data_controls=False).methods == ("bt", "cart")


def test_a_warm_started_cart_brings_its_compute_matched_control_and_its_data_control():
    assert RunConfig(methods=("cart",), continue_steps=5).methods == ("bt", "bt-continued", "tail-upsample", "cart")
    with_reweight = RunConfig(methods=("reweight", "cart"), continue_steps=5, data_controls=False)
    assert with_reweight.methods == ("bt", "bt-continued", "reweight", "cart")
    continued = RunConfig(methods=("reweight-continued",), continue_steps=5)
    assert continued.methods == ("bt", "bt-continued", "reweight-continued")
    assert continued.warm_started("reweight-continued") and not with_reweight.warm_started("reweight")
    assert RunConfig(methods=("cart",)).methods == ("bt", "tail-upsample", "cart")  # cold: bt is the control
    grid = {"bt-continued": [{}], "cart": [{}]}  # a tuned run's config from before tail-upsample runs as it did
    assert RunConfig(methods=("cart",), continue_steps=5, tune=grid).methods == ("bt", "bt-continued", "cart")
    grid["tail-upsample"] = [{}]
    assert "tail-upsample" in RunConfig(methods=("cart",), continue_steps=5, tune=grid).methods
    for control in ("bt-continued", "reweight-continued"):
        with pytest.raises(ValueError, match=f"{control} continue bt .* continue_steps > 0"):
            RunConfig(methods=("bt", control))


def test_the_continued_controls_start_from_the_seed_s_bt_model_for_continue_steps(tmp_path, monkeypatch):
    from cartrm.models import RewardModel

    settings = {**TINY, "bon_prompts": 0}
    methods = ("bt-continued", "reweight-continued")
    config = RunConfig(name="w", out_root=tmp_path, methods=methods, continue_steps=3, **settings)
    started = {}
    original = single.train

    def recording(model, data, training, out, *args, **kwargs):
        started[out.name] = (model.fingerprint(), training.method, training.max_steps)
        return original(model, data, training, out, *args, **kwargs)

    monkeypatch.setattr(single, "train", recording)
    run_experiment(config, progress=False)
    models = config.directory / "seed-0" / "models"
    assert started["bt"][1:] == ("bt", TINY["train"].max_steps)
    bt = RewardModel.load(models / "bt").fingerprint()
    assert started["bt-continued"] == (bt, "bt", 3)
    assert started["reweight-continued"] == (bt, "reweight", 3)
    for method in methods:
        assert json.loads((models / method / "train_result.json").read_text())["global_step"] == 3
        assert RewardModel.load(models / method).max_length == TINY["train"].max_length  # scored as trained


def test_cart_stage_on_planted_circuits_records_stability(tmp_path):
    from tests.helpers import planted_data, planted_model

    planted_model().save(tmp_path / "planted")
    path = tmp_path / "planted.jsonl"
    planted_data().save(path)
    tiny = {
        **TINY,
        "model": str(tmp_path / "planted"),
        "train": TrainConfig(max_steps=3, batch_size=16, max_length=48, learning_rate=1e-3),
    }
    config = RunConfig(
        name="p",
        out_root=tmp_path,
        methods=("bt", "cart"),
        data=str(path),
        tail_by="label:is_tail",
        analysis_pairs=180,
        **{k: v for k, v in tiny.items() if k != "analysis_pairs"},
    )
    results = run_experiment(config, progress=False)
    seed = results.stability.per_seed[0]
    assert seed.targets and set(seed.vuln_before) == set(seed.targets) == set(seed.vuln_after)
    assert 0.0 <= seed.baseline_vs_cart_jaccard <= 1.0
    patched = {
        c.id
        for c in Circuits.load(config.directory / "seed-0" / "analysis" / "circuits.json").circuits
        if c.patch_effect is not None
    }
    assert seed.effect_share and set(seed.effect_share) == patched & set(seed.targets)
    assert all(share > 0 for share in seed.effect_share.values())
    assert (config.directory / "seed-0" / "models" / "cart" / "cart" / "step-0" / "augmented.jsonl").exists()
    assert not list(config.directory.rglob(".activations*"))  # the scratch activation caches are removed


def test_variant_settings_update_nested_cart_settings():
    from cartrm.experiments.run_config import variant_config

    base = TrainConfig(learning_rate=5e-5)
    variant = variant_config(base, {"learning_rate": 1e-4, "cart": {"circuit_reg_weight": 0.1}})
    assert variant.learning_rate == 1e-4 and variant.settings_of("cart").circuit_reg_weight == 0.1
    assert (
        variant.settings_of("cart").augmentation == base.settings_of("cart").augmentation
    )  # the rest of CART's settings stay


def test_selection_takes_the_best_tail_among_variants_that_keep_the_head():
    from cartrm.experiments.stages.tuning import select_variant

    control = {"head_gold_accuracy": 0.95, "tail_gold_accuracy": 0.80}
    variants = [
        {"head_gold_accuracy": 0.95, "tail_gold_accuracy": 0.81},
        {"head_gold_accuracy": 0.90, "tail_gold_accuracy": 0.90},  # best tail, but the head drops 5 points
        {"head_gold_accuracy": 0.945, "tail_gold_accuracy": 0.83},  # within 1 point of the control's head
    ]
    assert select_variant(variants, control, tolerance=0.01) == 2
    assert select_variant(variants, control, tolerance=0.10) == 1
    assert select_variant(variants[1:2], control, tolerance=0.01) == 0  # none qualifies: all compete


def test_tuning_grids_must_give_every_method_the_same_budget():
    grid = [{"learning_rate": 1e-4}, {"learning_rate": 5e-5}]
    config = RunConfig(methods=("cart",), continue_steps=5, tune={"bt-continued": grid, "cart": grid})
    assert config.tune["cart"] == grid
    with pytest.raises(ValueError, match="same number of variants"):
        RunConfig(methods=("reweight", "cart"), tune={"reweight": grid, "cart": grid[:1]})
    with pytest.raises(ValueError, match="missing reweight"):
        RunConfig(methods=("reweight", "cart"), tune={"cart": grid})
    with pytest.raises(ValueError, match="'bt' cannot be tuned"):
        RunConfig(methods=("bt",), tune={"bt": grid})
    with pytest.raises(ValueError, match="'ensemble-mean' cannot be tuned"):
        RunConfig(methods=("ensemble-mean",), tune={"ensemble-mean": grid})
    with pytest.raises(ValueError, match="batch_size"):
        RunConfig(methods=("reweight",), tune={"reweight": [{"batch_size": 0}]})


class _Untouchable:
    """Stands in for the test split while tuning runs: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the test split was read during tuning ({name})")

    def __len__(self):
        raise AssertionError("the test split was read during tuning (len)")


def _without_the_test_split(tuned):
    def guarded(self, *args, **kwargs):
        kept = self.splits["test"], self.tails["test"]
        self.splits["test"], self.tails["test"] = _Untouchable(), _Untouchable()
        try:
            return tuned(self, *args, **kwargs)
        finally:
            self.splits["test"], self.tails["test"] = kept

    return guarded


def test_a_tuned_method_trains_its_grid_selects_on_validation_and_tests_only_the_choice(tmp_path, monkeypatch):
    from cartrm.models import RewardModel

    grid = [{"learning_rate": 1e-5}, {"learning_rate": 3e-3}]
    settings = {**TINY, "bon_prompts": 0}
    config = RunConfig(name="t", out_root=tmp_path, methods=("bt", "reweight"), tune={"reweight": grid}, **settings)
    monkeypatch.setattr(tuning_stage, "tuned", _without_the_test_split(tuning_stage.tuned))
    results = run_experiment(config, progress=False)
    folder = config.directory / "seed-0" / "models" / "reweight"
    tuning = json.loads((folder / "tuning.json").read_text())
    assert tuning["control"] == "bt" and [v["settings"] for v in tuning["variants"]] == grid
    assert all({"head_gold_accuracy", "tail_gold_accuracy"} <= set(v["validation"]) for v in tuning["variants"])
    chosen = RewardModel.load(folder / "variants" / str(tuning["chosen"])).fingerprint()
    assert RewardModel.load(folder).fingerprint() == chosen  # the tested model is the selected variant
    assert results.methods["reweight"].tuning[0]["chosen"] == tuning["chosen"]
    assert "Tuning (validation)" in (config.directory / "report.html").read_text()
    monkeypatch.setattr(single, "train", _no_training)
    assert run_experiment(config, progress=False).methods["reweight"].tuning == results.methods["reweight"].tuning


def test_the_documented_tuning_grid_is_a_valid_budget_for_the_standard_preset():
    from pathlib import Path

    from cartrm.experiments.run_config import variant_config
    from cartrm.io import read_yaml_mapping

    grid = read_yaml_mapping(Path(__file__).parents[1] / "docs" / "experiments" / "cart-tuned-grid.yaml", "--tune", "")
    config = RunConfig.preset("standard", methods=("bt", "reweight-continued", "ensemble-mean", "cart"), tune=grid)
    assert set(config.tune) == {"bt-continued", "reweight-continued", "cart"}
    assert {len(g) for g in config.tune.values()} == {4}
    variants = [variant_config(config.train, overrides) for overrides in config.tune["cart"]]
    assert {v.settings_of("cart").circuit_reg_form for v in variants} == {"within_sides", "invariance"}
    assert all(
        v.settings_of("cart").tail_sampling == "add" and v.settings_of("cart").aug_vocabulary == "per_group"
        for v in variants
    )


def test_the_documented_real_text_grid_is_the_benchmark_grids_first_variant_for_each_method():
    from pathlib import Path

    from cartrm.io import read_yaml_mapping

    docs = Path(__file__).parents[1] / "docs" / "experiments"
    hh = read_yaml_mapping(docs / "cart-hh.yaml", "--tune", "")
    benchmark = read_yaml_mapping(docs / "cart-tuned-grid.yaml", "--tune", "")
    config = RunConfig.preset("standard", methods=("bt", "bt-continued", "cart"), tune=hh)
    assert dict(config.tune) == {m: benchmark[m][:1] for m in hh}


@pytest.mark.slow
def test_ablations_change_one_setting_of_the_selected_cart_and_start_where_cart_starts(tmp_path, monkeypatch):
    from cartrm.models import RewardModel

    grid = {
        "bt-continued": [{"learning_rate": 1e-3}, {"learning_rate": 2e-3}],
        "cart": [{"cart": {"circuit_reg_weight": 0.5}}, {"cart": {"circuit_reg_weight": 2.0}}],
    }
    ablations = {"no-aug": {"cart": {"augmentation": False}}, "same": {}, "cold": {"warm_start": False}}
    settings = {**TINY, "bon_prompts": 0}
    config = RunConfig(
        name="a", out_root=tmp_path, methods=("cart",), continue_steps=3, tune=grid, ablations=ablations, **settings
    )
    started = {}
    original = single.train

    def recording(model, data, training, out, *args, **kwargs):
        started[out.name] = (model.fingerprint(), training)
        return original(model, data, training, out, *args, **kwargs)

    monkeypatch.setattr(single, "train", recording)
    results = run_experiment(config, progress=False)
    models = config.directory / "seed-0" / "models"
    chosen = json.loads((models / "cart" / "tuning.json").read_text())["chosen"]
    cart = started[str(chosen)][1]  # the selected variant's settings
    bt_start = RewardModel.load(models / "bt").fingerprint()
    assert cart.settings_of("cart").circuit_reg_weight == grid["cart"][chosen]["cart"]["circuit_reg_weight"]
    start, no_aug = started["cart-no-aug"]
    assert start == bt_start and no_aug.settings_of("cart").augmentation is False
    assert no_aug.with_settings("cart", augmentation=True) == cart
    start, cold = started["cart-cold"]
    assert start != bt_start and start == RewardModel.load("tiny-bert", seed=0).fingerprint()  # the base model
    assert cold.max_steps == TINY["train"].max_steps + 3  # bt's steps plus the continued ones
    assert "cart-same" not in started  # cart's own settings: cart's model, not a retraining
    assert RewardModel.load(models / "cart-same").fingerprint() == RewardModel.load(models / "cart").fingerprint()
    assert {"cart-no-aug", "cart-same", "cart-cold"} <= set(results.methods)
    assert not results.methods["cart-no-aug"].bon and results.methods["cart-no-aug"].n_pairs["tail"] == [24]
    assert {(c.method, c.baseline) for c in results.comparisons} >= {("cart", "cart-no-aug"), ("cart", "cart-cold")}
    assert "cart-no-aug" in results.setup["ablations"]
    monkeypatch.setattr(single, "train", _no_training)
    assert run_experiment(config, progress=False).methods["cart-cold"] == results.methods["cart-cold"]


def test_ablations_are_checked_before_anything_runs():
    ok = RunConfig(methods=("cart",), continue_steps=2, ablations={"no-aug": {"cart": {"augmentation": False}}})
    assert ok.ablated_methods == {"cart-no-aug": {"cart": {"augmentation": False}}}
    with pytest.raises(ValueError, match="add cart"):
        RunConfig(methods=("bt",), ablations={"no-aug": {"cart": {"augmentation": False}}})
    with pytest.raises(ValueError, match="not a method's"):
        RunConfig(methods=("cart",), ablations={"ensemble": {}})  # cart-ensemble is a method
    with pytest.raises(ValueError, match="not a method's"):
        RunConfig(methods=("cart",), ablations={"No Aug": {}})
    with pytest.raises(ValueError, match="warm-started cart"):
        RunConfig(methods=("cart",), ablations={"cold": {"warm_start": False}})
    with pytest.raises(ValueError, match="true or false"):
        RunConfig(methods=("cart",), continue_steps=2, ablations={"cold": {"warm_start": "no"}})
    with pytest.raises(ValueError, match="augmentaton"):
        RunConfig(methods=("cart",), ablations={"typo": {"cart": {"augmentaton": False}}})
    invariance = [{"cart": {"circuit_reg_form": "invariance"}}]
    with pytest.raises(ValueError, match="turn augmentation on"):  # checked against every variant cart may select
        RunConfig(
            methods=("cart",),
            continue_steps=2,
            tune={"bt-continued": [{}], "cart": invariance},
            ablations={"no-aug": {"cart": {"augmentation": False}}},
        )


def test_the_documented_ablations_each_change_the_tuned_cart(tmp_path):
    from pathlib import Path

    from cartrm.experiments.run_config import variant_config
    from cartrm.io import read_yaml_mapping

    docs = Path(__file__).parents[1] / "docs" / "experiments"
    grid = read_yaml_mapping(docs / "cart-tuned-grid.yaml", "--tune", "")
    ablations = read_yaml_mapping(docs / "cart-ablations.yaml", "--ablate", "")
    config = RunConfig.preset("standard", tune=grid, methods=("bt", "reweight-continued", "cart"), ablations=ablations)
    variants = [variant_config(config.train, overrides) for overrides in grid["cart"]]  # each valid (RunConfig)
    for name, change in ablations.items():
        if name == "cold":
            assert change == {"warm_start": False}
            continue
        assert any(variant_config(v, change) != v for v in variants), name  # removes something some variant has


def test_a_tuned_cart_s_audit_reads_the_selected_variant_s_augmentations(tmp_path):
    from types import SimpleNamespace

    data = make_longtail_dataset(BenchmarkConfig(n_train=20, n_validation=4, n_test_head=4, n_test_tail=4))
    train = data.split("train")
    folder = tmp_path / "models" / "cart"
    for variant, rows in (("0", [0, 1, 2]), ("1", [3])):
        step = folder / "variants" / variant / "cart" / "step-0"
        step.mkdir(parents=True)
        pairs = train.render(None)
        lines = [
            json.dumps(
                {
                    "transform": "rare_token",
                    "prompt": pairs[i].prompt,
                    "chosen": pairs[i].chosen,
                    "rejected": pairs[i].rejected,
                    "source": i,
                }
            )
            for i in rows
        ]
        (step / "augmented.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "tuning.json").write_text(json.dumps({"chosen": 1}))
    seed = SimpleNamespace(layout=SeedLayout(tmp_path), splits={"train": train})
    audit = SeedRun.augmentation_audit(seed, "cart")
    assert sum(t["n"] for t in audit.values()) == 1  # variant 1's one augmentation, not all four


def test_an_option_added_later_enters_stage_keys_only_when_set():
    """Options marked KEYED_WHEN_SET leave the key while at their default (finished stages of earlier versions
    stay valid), and change it once set."""
    from cartrm.runs import digest
    from cartrm.runs import stage_key as _digest

    training = TrainConfig(method="cart")
    dumped = training.model_dump(mode="json")
    for later in ("targets_from", "decisive_neurons", "recipe"):
        del dumped["cart"][later]
    for later in (
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
        "gradient_checkpointing",
        "dtype",
        "report_to",
    ):
        del dumped[later]
    assert _digest(training) == digest([dumped])
    assert _digest(training.model_copy(update={"lora_r": 8})) != _digest(training)
    assert _digest(training.with_settings("cart", recipe="paper")) != _digest(training)
    decisive = training.with_settings("cart", targets_from="decisive")
    assert _digest(decisive) != _digest(training)
    assert _digest(training.with_settings("cart", decisive_neurons=3)) != _digest(training)


def test_a_stage_made_from_other_inputs_is_reported_before_it_is_redone(tmp_path, caplog):
    from cartrm.runs.stage import Stage

    assert not Stage(tmp_path / "models" / "bt", "key-a").done()
    Stage(tmp_path, "key-a").finish()
    with caplog.at_level("WARNING", logger="cartrm.run"):
        assert Stage(tmp_path, "key-a").done()
        assert not caplog.records
        assert not Stage(tmp_path, "key-b").done()
    assert "made from other inputs" in caplog.text and str(tmp_path) in caplog.text


KEYED_OPTIONS = {  # every option that enters the stage keys whatever its value (as finished run folders hold them)
    "TrainConfig": "batch_size center_rewards_coefficient disable_dropout epochs eval_steps "
    "gradient_accumulation_steps group_by_length learning_rate logging_steps max_batch_tokens max_grad_norm "
    "max_length max_steps method mixed_precision save_steps seed settings warmup_ratio weight_decay",
    "LabelSmoothingSettings": "label_smoothing",
    "ReweightSettings": "tail_weight",
    "HiddenRegSettings": "hidden_reg_weight",
    "CartConfig": "aug_candidates aug_group_column aug_keep aug_scaling aug_selection aug_transforms aug_vocabulary "
    "aug_weight augmentation circuit_dropout circuit_reg circuit_reg_form circuit_reg_weight discovery_pairs "
    "generator grad_norm_every min_tail_per_batch progressive progressive_eta progressive_ramp rediscover_every "
    "tail_sampling target_circuits top_targets w_max warmup_steps",
    "DiscoveryConfig": "batch_size coherence_null_shuffles community fdr max_validated mi_bins mi_estimator n_null "
    "n_permutations null_mode patch_pairs pooling ridge_alpha seed sites tau tau_quantile top_k",
    "AssessConfig": "batch_size bound_delta coverage_quantile eps groups_column max_circuits min_group_size norm "
    "pgd_steps seed sensitivity_examples top_targets vuln_threshold weights",
    "BenchmarkConfig": "alpha label_noise_temperature n_test_head n_test_tail n_train n_validation seed zipf_exponent",
}


def test_a_new_option_of_a_keyed_config_is_marked_keyed_when_set():
    """A new option that entered every stage key would make every finished run folder redo its stages (and remove
    their models) the first time it runs with the new version: mark it ``json_schema_extra=KEYED_WHEN_SET``, or
    list it above if finished stages really must be redone."""
    from cartrm.circuits.config import DiscoveryConfig
    from cartrm.runs import keyed_when_set
    from cartrm.training.settings import SETTINGS
    from cartrm.vulnerability.config import AssessConfig

    for config in (TrainConfig, *SETTINGS.values(), DiscoveryConfig, AssessConfig, BenchmarkConfig):
        always = {name for name, info in config.model_fields.items() if not keyed_when_set(info)}
        assert always == set(KEYED_OPTIONS[config.__name__].split()), config.__name__


def test_ensemble_mean_takes_the_seed_s_bt_model_as_its_first_member(tmp_path, monkeypatch):
    import cartrm.experiments.ensemble as ensemble_module

    trained = []
    for module in (single, ensemble_module):
        original = module.train
        monkeypatch.setattr(
            module,
            "train",
            lambda m, d, c, *a, _original=original, **k: (
                trained.append((c.method, c.seed)) or _original(m, d, c, *a, **k)
            ),
        )
    config = RunConfig(
        name="e", out_root=tmp_path, methods=("bt", "ensemble-mean"), ensemble_members=2, **{**TINY, "bon_prompts": 0}
    )
    run_experiment(config, progress=False)
    assert trained == [("bt", 0), ("bt", 1)]  # bt, then only the ensemble's second member
    models = config.directory / "seed-0" / "models"
    weights = "model.safetensors"
    member_0 = models / "ensemble-mean" / "members" / "member-0"
    assert (member_0 / weights).read_bytes() == (models / "bt" / weights).read_bytes()
    assert not (member_0 / STAGE_MARKER).exists()


def test_a_run_whose_discovery_finds_no_causal_circuit_says_so_in_its_verdict(finished):
    """The tiny bt has no tail circuit that passes discovery: the verdict and the notes say CART's targets were
    untested; a circuit whose patch p-value passes removes the caveat, one that fails keeps it."""
    from cartrm.circuits.result import CircuitRecord
    from cartrm.vulnerability.diagnostics import no_causal_circuit

    config, results = finished
    circuits = Circuits.load(SeedLayout(config.directory / "seed-0").circuits)
    assert no_causal_circuit(circuits) is not None
    caveat = "Caveat (seed 0, seed 1): no circuit passed its causal test"
    assert any(line.startswith(caveat) for line in results.verdict)
    assert any(note.startswith("seed 0: ") for note in results.notes)
    record = dict(id="c0", members=[], coherence=0, tail_delta=0, tail_effect_size=0, divergence=0)
    for p_value, warned in ((0.01, False), (0.45, True)):
        found = [CircuitRecord(**record, decomposition_weight=0, patch_p_value=p_value)]
        said = no_causal_circuit(circuits.model_copy(update={"circuits": found}))
        assert (said is not None) == warned and (not warned or "1 of 1 patched, smallest patch p = 0.45" in said)


def test_the_documented_upsample_controls_are_ablations_of_cart_without_its_circuit_terms():
    from pathlib import Path

    from cartrm.experiments.run_config import variant_config, without_start
    from cartrm.io import read_yaml_mapping

    path = Path(__file__).parents[1] / "docs" / "experiments" / "upsample-controls.yaml"
    config = RunConfig.preset("standard", ablations=read_yaml_mapping(path, "--ablate", ""))
    assert "tail-upsample" in config.methods
    for name, overrides in config.ablated_methods.items():
        cart = variant_config(config.train, without_start(overrides)).settings_of("cart")
        assert cart.augmentation and not (cart.circuit_reg or cart.circuit_dropout or cart.progressive), name
        assert cart.tail_sampling == "add" and cart.min_tail_per_batch == 4  # tail-upsample's added pairs
    random = variant_config(config.train, config.ablated_methods["cart-random-augmented"]).settings_of("cart")
    assert random.aug_selection == "random"
