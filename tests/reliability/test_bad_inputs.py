"""Every command, every kind of bad input: exit 1, one line naming what is wrong, no traceback, nothing in --out."""

import json

import pytest
from typer.testing import CliRunner

from cartrm.cli import app
from cartrm.models import RewardModel
from cartrm.training import register
from cartrm.training.methods import BradleyTerry

runner = CliRunner()
GOOD_ROWS = [
    {
        "prompt": f"q{i}",
        "chosen": f"good answer {i}",
        "rejected": f"bad {i}",
        "is_tail": i % 4 == 0,
        "split": ("train", "validation", "test")[min(i // 12, 2)],
    }
    for i in range(36)
]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def write_jsonl(path, rows):
    path.write_text("".join((json.dumps(r) if isinstance(r, dict) else r) + "\n" for r in rows))
    return path


BAD_DATA = {
    "missing file": (None, "not found"),
    "invalid JSONL": (['{"chosen": "a", "rejected": "b"}', '{"chosen": '], ":2"),
    "missing rejected": ([{"chosen": "a"}], "'rejected'"),
    "empty string": ([{"chosen": "", "rejected": "b"}], "empty string"),
    "all identical": ([{"chosen": "same", "rejected": "same"}], "identical"),
}


def data_commands(data, out):
    """Each command that reads --data, with the other arguments valid."""
    common = ["--data", data, "--out", out]
    return {
        "train": ["train", *common, "--model", "tiny-bert", "--max-steps", 1],
        "evaluate": ["evaluate", *common, "--model", "tiny-bert"],
        "discover": ["discover", *common, "--model", "tiny-bert", "--tail-by", "label:is_tail"],
        "ensemble": [
            "ensemble",
            *common,
            "--model",
            "tiny-bert",
            "--tail-by",
            "label:is_tail",
            "--method",
            "bt",
            "--max-steps",
            1,
        ],
        "run": ["run", "--data", data, "--tail-by", "label:is_tail", "--out", out / "run", "--model", "tiny-bert"],
    }


def assert_one_line_error(result, fragment, out):
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.output.strip().endswith(errors[0]), result.output
    assert fragment in errors[0], result.output
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir()), f"{out} was written to"


@pytest.mark.parametrize("case", sorted(BAD_DATA))
@pytest.mark.parametrize("command", ["train", "evaluate", "discover", "ensemble", "run"])
def test_bad_data_files(command, case, tmp_path):
    rows, fragment = BAD_DATA[case]
    data = tmp_path / "data.jsonl" if rows is None else write_jsonl(tmp_path / "data.jsonl", rows)
    out = tmp_path / "out"
    assert_one_line_error(invoke(*data_commands(data, out)[command]), fragment, out)


@pytest.mark.parametrize("case", ["truncated gzip", "a folder"])
@pytest.mark.parametrize("command", ["train", "evaluate", "discover", "ensemble", "run"])
def test_unreadable_data_files(command, case, tmp_path):
    if case == "a folder":
        data, fragment = tmp_path / "folder", "unsupported file type"
        data.mkdir()
    else:
        data, fragment = tmp_path / "data.jsonl.gz", "cannot read file"
        data.write_bytes(b"\x1f\x8b\x08 not really gzip")
    out = tmp_path / "out"
    assert_one_line_error(invoke(*data_commands(data, out)[command]), fragment, out)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("nonsense", "invalid --tail-by"),
        ("label:missing_column", "missing_column"),
        ("label:is_tail=nope", "tail"),
        ("label:split=train,validation,test", "head empty"),
    ],
)
@pytest.mark.parametrize("command", ["train", "evaluate", "discover", "run"])
def test_bad_tail_specs(command, spec, fragment, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", GOOD_ROWS)
    args = data_commands(data, tmp_path / "out")[command]
    if "--tail-by" in args:
        args[args.index("--tail-by") + 1] = spec
    else:
        args += ["--tail-by", spec]
    assert_one_line_error(invoke(*args), fragment, tmp_path / "out")


def test_non_numeric_scores(tmp_path):
    data = write_jsonl(tmp_path / "scores.jsonl", [{"text": "a", "score": 1.0}, {"text": "b", "score": "high"}])
    assert_one_line_error(
        invoke("train", "--data", data, "--out", tmp_path / "out", "--model", "tiny-bert"),
        "scores.jsonl:2",
        tmp_path / "out",
    )


@pytest.mark.parametrize("command", ["train", "evaluate", "discover"])
def test_model_path_that_is_not_a_model(command, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", GOOD_ROWS)
    (tmp_path / "notamodel").mkdir()
    (tmp_path / "notamodel" / "readme.txt").write_text("hello")
    args = data_commands(data, tmp_path / "out")[command]
    args[args.index("--model") + 1] = tmp_path / "notamodel"
    assert_one_line_error(invoke(*args), "cannot load a reward model", tmp_path / "out")


def test_model_and_tokenizer_that_do_not_belong_together(tmp_path):
    model = RewardModel.load("tiny-bert")
    model.model.resize_token_embeddings(100)
    model.model.save_pretrained(tmp_path / "mixed")
    model.tokenizer.save_pretrained(tmp_path / "mixed")
    data = write_jsonl(tmp_path / "data.jsonl", GOOD_ROWS)
    result = invoke("evaluate", "--model", tmp_path / "mixed", "--data", data, "--out", tmp_path / "out")
    assert_one_line_error(result, "do not belong together", tmp_path / "out")


@pytest.mark.parametrize(
    "option, value, fragment",
    [
        ("--epochs", -1, "epochs"),
        ("--lr", 0, "learning_rate"),
        ("--batch-size", 0, "batch_size"),
        ("--lambda", -1, "circuit_reg_weight"),
        ("--w-max", 0, "w_max"),
    ],
)
def test_out_of_range_hyperparameters(option, value, fragment, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", GOOD_ROWS)
    result = invoke("train", "--data", data, "--out", tmp_path / "out", "--model", "tiny-bert", option, value)
    assert_one_line_error(result, fragment, tmp_path / "out")


def test_debug_shows_the_traceback(tmp_path):
    result = runner.invoke(
        app,
        [
            "--debug",
            "evaluate",
            "--model",
            "tiny-bert",
            "--data",
            str(tmp_path / "missing.jsonl"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code != 0 and result.exception is not None


def test_identical_pairs_are_dropped_with_a_counted_warning(tmp_path):
    rows = [*GOOD_ROWS, {"prompt": "p", "chosen": "same", "rejected": "same", "is_tail": False, "split": "train"}]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.warns(UserWarning, match=r"dropped 1 of 37 pairs whose chosen and rejected are identical \(lines 37\)"):
        result = invoke("evaluate", "--model", "tiny-bert", "--data", data, "--split", "all", "--out", tmp_path / "e")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["overall"]["n"] == 36


def test_circuits_from_another_model_or_schema_are_refused(tmp_path):
    from cartrm.circuits.discover import DiscoveryConfig, discover
    from cartrm.data.tail import TailSplit
    from tests.helpers import planted_data, planted_model

    data = planted_data(60, 30)
    data.save(tmp_path / "planted.jsonl")
    model = planted_model()
    model.save(tmp_path / "planted")
    import numpy as np

    circuits = discover(
        model,
        data,
        TailSplit(np.array(data.column("is_tail"), dtype=bool), "is_tail"),
        DiscoveryConfig(top_k=4, patch_pairs=0, n_permutations=10),
        progress=False,
    )
    circuits.save(tmp_path / "circuits.json")
    common = [
        "--circuits",
        tmp_path / "circuits.json",
        "--data",
        tmp_path / "planted.jsonl",
        "--tail-by",
        "label:is_tail",
        "--out",
        tmp_path / "out",
    ]
    assert_one_line_error(invoke("assess", "--model", "tiny-gpt2", *common), "fingerprint", tmp_path / "out")
    stale = json.loads((tmp_path / "circuits.json").read_text()) | {"schema_version": 0}
    (tmp_path / "circuits.json").write_text(json.dumps(stale))
    assert_one_line_error(invoke("assess", "--model", tmp_path / "planted", *common), "schema", tmp_path / "out")


@register
class NaNAtStepThree(BradleyTerry):
    """Bradley–Terry whose loss turns NaN at optimizer step 3 (as a diverging run would)."""

    name = "test-nan-at-step-3"

    def loss(self, module, batch, step):
        loss, logs = super().loss(module, batch, step)
        return (loss * float("nan") if step == 2 else loss), logs


def test_a_non_finite_loss_stops_training_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", GOOD_ROWS)
    result = invoke(
        "train",
        "--data",
        data,
        "--out",
        tmp_path / "out",
        "--model",
        "tiny-bert",
        "--method",
        NaNAtStepThree.name,
        "--batch-size",
        2,
        "--save-steps",
        1,
        "--max-steps",
        6,
    )
    assert_one_line_error_allowing_output(result, "step 3: the loss is nan")
    assert "checkpoints/step-2" in result.output
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == ["step-1", "step-2"]
    assert not (tmp_path / "out" / "config.json").exists()


def assert_one_line_error_allowing_output(result, fragment):
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0] and "Traceback" not in result.output, result.output
