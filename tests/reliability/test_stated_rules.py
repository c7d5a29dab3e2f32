"""Rules that used to be applied silently are stated: click's own errors are one line; a split column names train
and test; --eval-split needs a split column and --eval-steps; tail values that never occur and pairs that differ only
in whitespace are named; training never writes into the model folder it starts from."""

import json

import numpy as np
import pytest

from cartrm.cli import main
from cartrm.data import PreferenceDataset
from cartrm.data.tail import parse_tail_spec
from cartrm.errors import DataError
from cartrm.experiments.run_config import UserSplit
from cartrm.experiments.seed_data import user_splits
from cartrm.models import RewardModel
from cartrm.training import TrainConfig
from tests.reliability.test_bad_inputs import GOOD_ROWS, assert_one_line_error, invoke, write_jsonl


def run_main(args, capsys) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as stopped:
        main([str(a) for a in args])
    return stopped.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "--epochs", "abc", "--data", "d", "--out", "o"], "Invalid value for '--epochs'"),
        (["train", "--data", "d"], "Missing option '--out'"),
        (["no-such-command"], "No such command"),
    ],
)
def test_the_command_line_s_own_errors_are_one_line(args, fragment, capsys):
    status, lines = run_main(args, capsys)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]


def test_a_bad_config_file_is_one_line(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("lr: [1\n")
    status, lines = run_main(["train", "--config", config, "--data", "d", "--out", tmp_path / "o"], capsys)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and str(config) in lines[0]


@pytest.mark.parametrize(
    ("splits", "fragment"),
    [(("train", "eval"), "values eval are not train, validation or test"), (("train", "validation"), "no test rows")],
)
def test_a_split_column_must_name_train_and_test(splits, fragment):
    rows = [{"prompt": f"q{i}", "chosen": f"a {i}", "rejected": f"b {i}", "split": splits[i % 2]} for i in range(20)]
    data = PreferenceDataset.from_records(rows, source="mine.jsonl")
    with pytest.raises(DataError, match=fragment) as raised:
        user_splits(data, 0, np.zeros(len(data), dtype=bool), UserSplit())
    assert "mine.jsonl" in str(raised.value) and "split" in str(raised.value)


def test_eval_split_needs_eval_steps_and_a_split_column(tmp_path):
    with_split = write_jsonl(tmp_path / "with.jsonl", GOOD_ROWS)
    without = write_jsonl(tmp_path / "without.jsonl", [{k: v for k, v in r.items() if k != "split"} for r in GOOD_ROWS])
    common = ["--model", "tiny-bert", "--max-steps", 1]
    out = tmp_path / "a"
    result = invoke("train", "--data", with_split, "--out", out, "--eval-split", "validation", *common)
    assert_one_line_error(result, "give --eval-steps", out)
    out = tmp_path / "b"
    result = invoke("train", "--data", without, "--out", out, "--eval-split", "validation", "--eval-steps", 1, *common)
    assert_one_line_error(result, "has no 'split' column", out)


def test_tail_values_that_never_occur_are_named():
    rows = [
        {"prompt": "q", "chosen": f"a {i}", "rejected": "b", "domain": ("travel", "cooking")[i % 2]} for i in range(6)
    ]
    data = PreferenceDataset.from_records(rows, source="mine.jsonl")
    with pytest.warns(UserWarning, match="no row of mine.jsonl has domain = typo"):
        parse_tail_spec("label:domain=typo,travel").fit(data)


def test_pairs_that_differ_only_in_whitespace_are_dropped_with_a_count():
    rows = [
        {"prompt": "q", "chosen": "the same  answer", "rejected": "the same answer\n"},
        {"prompt": "q", "chosen": "a good answer", "rejected": "a bad answer"},
    ]
    with pytest.warns(UserWarning, match="dropped 1 of 2 pairs .*identical .*whitespace aside"):
        data = PreferenceDataset.from_records(rows, source="mine.jsonl")
    assert list(data.chosen) == ["a good answer"]


def test_training_never_writes_into_the_model_folder_it_starts_from(tmp_path):
    model, data = tmp_path / "model", write_jsonl(tmp_path / "d.jsonl", GOOD_ROWS)
    assert invoke("train", "--data", data, "--model", "tiny-bert", "--out", model, "--max-steps", 1).exit_code == 0
    before = sorted(p.name for p in model.iterdir())
    result = invoke("train", "--data", data, "--model", model, "--out", model, "--overwrite", "--max-steps", 1)
    assert result.exit_code == 1 and "is also --out" in result.output
    assert sorted(p.name for p in model.iterdir()) == before
    assert json.loads((model / "config.json").read_text())


@pytest.mark.parametrize("weights", [(0, 0, 0), (-1, 1, 1), (float("nan"), 1, 1)])
def test_vuln_weights_are_non_negative_with_a_positive_sum(weights):
    from cartrm.vulnerability.config import AssessConfig

    with pytest.raises(ValueError, match="weights|finite"):
        AssessConfig(weights=weights)
    with pytest.raises(ValueError, match="finite"):
        AssessConfig(eps=float("inf"))


@pytest.mark.parametrize("sizes", [(-5, 5), (5, 100_000), (5, 5)])
def test_bound_tail_sizes_are_distinct_and_trainable(sizes):
    from cartrm.experiments.config import BoundSweepConfig

    with pytest.raises(ValueError, match="tail sizes are distinct numbers"):
        BoundSweepConfig(tail_sizes=sizes)


def test_a_circuit_listing_a_neuron_twice_is_refused_at_load(tmp_path):
    from cartrm.circuits.discover import DiscoveryConfig, discover
    from cartrm.circuits.result import Circuits
    from cartrm.errors import CartError
    from tests.helpers import planted_data, planted_model

    data = planted_data(40, 20)
    tail = parse_tail_spec("label:is_tail").fit_transform(data)
    found = discover(planted_model(), data, tail, DiscoveryConfig(patch_pairs=0, n_permutations=20), progress=False)
    path = tmp_path / "circuits.json"
    found.save(path)
    saved = json.loads(path.read_text())
    circuit = next(c for c in saved["circuits"] if c["members"])
    circuit["members"].append(circuit["members"][0])
    path.write_text(json.dumps(saved))
    with pytest.raises(CartError, match="more than once") as raised:
        Circuits.load(path)
    assert str(path) in str(raised.value)


def test_an_alias_works_in_a_config_file_as_on_the_command_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("lr: 0.003\nmin-tail: 2\n")
    data, out = write_jsonl(tmp_path / "d.jsonl", GOOD_ROWS), tmp_path / "out"
    result = invoke("train", "--config", config, "--data", data, "--model", "tiny-bert", "--out", out, "--max-steps", 1)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["learning_rate"] == 0.003 and saved["cart"]["min_tail_per_batch"] == 2


@pytest.mark.parametrize(("test_share", "empty"), [(0.9, "train"), (0.01, "test")])
def test_shares_that_empty_a_split_are_named_before_anything_runs(test_share, empty):
    from cartrm.errors import CartError

    rows = [{"prompt": f"q{i}", "chosen": f"a {i}", "rejected": f"b {i}"} for i in range(12)]
    data = PreferenceDataset.from_records(rows, source="mine.jsonl")
    tail = np.arange(12) % 4 == 0
    with pytest.raises(CartError, match=f"leave the {empty} split empty"):
        user_splits(data, 0, tail, UserSplit(test_share=test_share, min_tail_test=0))


def test_a_hugging_face_dataset_trains_and_evaluates_as_the_readme_says(tmp_path):
    import datasets

    from cartrm.evaluation import evaluate
    from cartrm.training import train

    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in GOOD_ROWS]
    hf = datasets.Dataset.from_list(rows)
    model = RewardModel.load("tiny-bert")
    result = train(model, hf, TrainConfig(max_steps=1, batch_size=8), tmp_path / "m", progress=False)
    assert result.global_step == 1
    assert evaluate(model, hf).overall.n == len(rows)


def test_a_hub_id_says_models_load_from_local_folders():
    from cartrm.errors import CartError

    with pytest.raises(CartError, match="local folders only .*huggingface-cli download Skywork/RM"):
        RewardModel.load("Skywork/RM")


def test_evaluate_never_writes_into_the_model_folder(tmp_path):
    model, data = tmp_path / "model", write_jsonl(tmp_path / "d.jsonl", GOOD_ROWS)
    RewardModel.load("tiny-bert").save(model)
    result = invoke("evaluate", "--model", model, "--data", data, "--out", model)
    assert result.exit_code == 1 and "is the model folder" in result.output
    assert not (model / "metrics.json").exists()
