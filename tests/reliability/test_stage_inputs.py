"""`cart run` stages notice what they depend on: the content of the data, outputs that went missing, seeds run
earlier into the same folder; and run settings that would count one result twice or mislabel one are refused."""

import json

import pytest

import cartrm.experiments.stages.single as single
from cartrm.datasets import BenchmarkConfig, make_longtail_dataset
from cartrm.experiments.pipeline import run_experiment
from cartrm.experiments.run_config import RunConfig
from cartrm.report.results import RunResults
from tests.helpers import TINY

QUICK = {**TINY, "bon_prompts": 0}


def _counting_training(monkeypatch) -> list[str]:
    trained, real = [], single.train
    monkeypatch.setattr(
        single, "train", lambda m, d, c, out, *a, **k: trained.append(out.name) or real(m, d, c, out, *a, **k)
    )
    return trained


def test_a_seed_listed_twice_is_refused():
    with pytest.raises(ValueError, match="seeds are distinct"):
        RunConfig(seeds=(0, 0))
    with pytest.raises(ValueError, match="seeds are distinct"):
        RunConfig(seeds=(-1,))


def test_a_tuning_variant_or_an_ablation_cannot_change_the_method():
    with pytest.raises(ValueError, match="'method' cannot be changed"):
        RunConfig(methods=("bt", "cart"), tune={"cart": [{"method": "bt"}]})
    with pytest.raises(ValueError, match="'method' cannot be changed"):
        RunConfig(methods=("cart",), continue_steps=2, ablations={"x": {"method": "reweight"}})


def test_editing_the_data_file_retrains_what_depends_on_it(tmp_path, monkeypatch):
    records = make_longtail_dataset(BenchmarkConfig(n_train=60, n_validation=0, n_test_head=0, n_test_tail=0))
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records.to_records()]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = RunConfig(name="d", out_root=tmp_path, methods=("bt",), data=str(path), tail_by="density:0.2", **QUICK)
    run_experiment(config, progress=False)
    trained = _counting_training(monkeypatch)
    run_experiment(config, progress=False)
    assert trained == []  # same content: nothing to redo
    swapped = [{**row, "chosen": row["rejected"], "rejected": row["chosen"]} for row in rows]
    path.write_text("".join(json.dumps(row) + "\n" for row in swapped))
    run_experiment(config, progress=False)
    assert trained == ["bt"]


def test_a_stage_whose_outputs_went_missing_or_were_cut_short_is_redone(tmp_path, monkeypatch):
    config = RunConfig(name="m", out_root=tmp_path, methods=("bt",), **QUICK)
    run_experiment(config, progress=False)
    evaluated = config.directory / "seed-0" / "eval" / "bt"
    kept = {name: (evaluated / name).read_text() for name in ("scores.json", "metrics.json")}
    (evaluated / "scores.json").unlink()
    trained = _counting_training(monkeypatch)
    run_experiment(config, progress=False)
    assert (evaluated / "scores.json").read_text() == kept["scores.json"] and trained == []  # from the kept model
    (evaluated / "metrics.json").write_text(kept["metrics.json"][:40])  # truncated
    run_experiment(config, progress=False)
    assert (evaluated / "metrics.json").read_text() == kept["metrics.json"] and trained == []


def test_running_more_seeds_into_a_run_folder_adds_them_to_its_results(tmp_path, monkeypatch):
    first = RunConfig(name="s", out_root=tmp_path, methods=("bt",), seeds=(0,), **QUICK)
    run_experiment(first, progress=False)
    trained = _counting_training(monkeypatch)
    results = run_experiment(first.model_copy(update={"seeds": (1,)}), progress=False)
    assert results.seeds == [0, 1] and trained == ["bt"]  # seed 0 kept, not retrained
    assert RunResults.load(first.directory / "results.json").seeds == [0, 1]
    assert RunConfig.from_yaml(first.directory / "config.yaml").seeds == (0, 1)
    other = first.model_copy(update={"seeds": (2,), "bon_candidates": 4})  # other settings: a run of its own
    assert run_experiment(other, progress=False).seeds == [2]


def test_an_interrupted_bound_sweep_resumes_at_its_first_unfinished_point(tmp_path, monkeypatch):
    import cartrm.experiments.sweep as sweep
    from cartrm.errors import CartError
    from cartrm.experiments.config import BoundSweepConfig

    config = BoundSweepConfig(model="tiny-bert", tail_sizes=(8, 16), n_head=32, n_test_tail=40)
    config = config.model_copy(update={"train": config.train.model_copy(update={"max_steps": 2, "max_length": 48})})
    real_point, points = sweep._point, []

    def second_dies(*args, **kwargs):
        points.append(args[4].name)
        if len(points) == 2:
            raise KeyboardInterrupt
        return real_point(*args, **kwargs)

    monkeypatch.setattr(sweep, "_point", second_dies)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_bound_sweep(config, tmp_path / "b", progress=False)
    with pytest.raises(CartError, match="--resume continues the sweep"):
        sweep.run_bound_sweep(config, tmp_path / "b", progress=False)
    monkeypatch.setattr(sweep, "_point", lambda *a, **k: points.append(a[4].name) or real_point(*a, **k))
    resumed = sweep.run_bound_sweep(config, tmp_path / "b", progress=False, resume=True)
    assert points == ["n_tail_8", "n_tail_16", "n_tail_16"] and [p.n_tail for p in resumed.points] == [8, 16]
    again = sweep.run_bound_sweep(config, tmp_path / "b", progress=False, resume=True)
    assert again == resumed and len(points) == 3  # a finished sweep's resume reads it back
