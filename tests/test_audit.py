"""``cart audit`` on a model someone already has: a cartrm model, a folder saved the way TRL's RewardTrainer saves
(``save_pretrained`` of the model and its tokenizer), a decoder; and bad ``--candidates`` files."""

import json

import pytest
from typer.testing import CliRunner

from cartrm.cli import app
from cartrm.report.audit import Audit

runner = CliRunner()
AUDIT = ["--tail-by", "label:is_tail", "--analysis-pairs", "40", "--by", "domain"]


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit")
    data, candidates = folder / "bench.jsonl", folder / "candidates.jsonl"
    sizes = ["--n-train", "64", "--n-validation", "20", "--n-test-head", "24", "--n-test-tail", "24"]
    made = runner.invoke(
        app,
        [
            "data",
            "make-benchmark",
            "--out",
            str(data),
            *sizes,
            "--candidates",
            str(candidates),
            "--candidate-prompts",
            "2",
            "--candidates-per-prompt",
            "8",
        ],
    )
    assert made.exit_code == 0, made.output
    from cartrm.experiments.audit import read_candidates

    rows = read_candidates(candidates)  # the benchmark's own candidates, with their gold rewards
    assert [r.group for r in rows] == ["head", "head", "tail", "tail"] and all(len(r.gold) == 8 for r in rows)
    return data, candidates


def _audit(model, data, out, *extra):
    return runner.invoke(app, ["audit", "--model", str(model), "--data", str(data), "--out", str(out), *AUDIT, *extra])


def _trl_style_folder(path):
    """What RewardTrainer.save_model writes: the model's and the tokenizer's save_pretrained, no cartrm files."""
    from cartrm.models import RewardModel

    probe = RewardModel.load("tiny-bert", seed=3)
    probe.model.save_pretrained(path)
    probe.tokenizer.save_pretrained(path)
    return path


def test_audit_of_a_cartrm_model_writes_audit_json_a_page_and_a_plain_summary(benchmark, tmp_path):
    import cartrm

    data, candidates = benchmark
    model = cartrm.load_reward_model("tiny-bert")
    from cartrm.data import load_dataset

    pairs = load_dataset(data).split("train")
    cartrm.train(model, pairs, cartrm.TrainConfig(max_steps=2, batch_size=8, max_length=48), tmp_path / "rm")
    result = _audit(tmp_path / "rm", data, tmp_path / "audit", "--candidates", candidates)
    assert result.exit_code == 0, result.output
    audit = Audit.load(tmp_path / "audit" / "audit.json")
    assert audit.evaluation.tail.n > 0 and audit.evaluation.head.n > 0 and "domain" in audit.evaluation.by
    assert audit.summary[0].startswith("tail accuracy ") and "points" in audit.summary[0]
    assert any(line.startswith("against the gold reward") for line in audit.summary)
    assert {p.group for p in audit.pressure} == {"head", "tail"} and all(p.curve for p in audit.pressure)
    assert any("best-of-8 on 2 tail prompts" in line for line in audit.summary)
    page = (tmp_path / "audit" / "report.html").read_text()
    assert audit.summary[0] in page and "<h3>By domain</h3>" in page and "Best-of-n pressure" in page
    assert "tail accuracy" in result.output


@pytest.mark.parametrize("kind", ["trl-folder", "tiny-llama"])
def test_audit_reads_a_trl_saved_folder_and_a_decoder(benchmark, tmp_path, kind):
    data, _ = benchmark
    model = _trl_style_folder(tmp_path / "trl") if kind == "trl-folder" else "tiny-llama"
    result = _audit(model, data, tmp_path / "audit")
    assert result.exit_code == 0, result.output
    audit = Audit.load(tmp_path / "audit" / "audit.json")
    assert audit.pressure == [] and audit.evaluation.overall.n == audit.evaluation.head.n + audit.evaluation.tail.n
    circuits_line = next(line for line in audit.summary if "tail circuits" in line)
    assert circuits_line.startswith(f"{len(audit.circuits)} tail circuits")


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"prompt": "p"}, "field 'responses'"),
        ({"prompt": "p", "responses": ["only one"]}, "field 'responses'"),
        ({"prompt": "p", "responses": ["a", "b"], "gold": [1.0]}, "field 'gold'"),
        ({"prompt": "p", "responses": ["a", "b"], "score": 1}, "field 'score'"),
    ],
)
def test_a_bad_candidates_file_is_one_line_naming_file_line_and_field_and_writes_nothing(
    benchmark, tmp_path, row, field
):
    data, _ = benchmark
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "responses": ["x", "y"]}) + "\n" + json.dumps(row) + "\n")
    result = _audit("tiny-bert", data, tmp_path / "audit", "--candidates", bad)
    assert result.exit_code == 1 and f"{bad}:2" in result.output and field in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "audit").exists()


def test_candidates_of_one_group_need_as_many_responses(benchmark, tmp_path):
    data, _ = benchmark
    bad = tmp_path / "uneven.jsonl"
    bad.write_text("".join(json.dumps({"prompt": f"q{i}", "responses": ["x"] * (2 + i)}) + "\n" for i in range(2)))
    result = _audit("tiny-bert", data, tmp_path / "audit", "--candidates", bad)
    assert result.exit_code == 1 and f"{bad}:2" in result.output and "same number of candidates" in result.output


def test_audit_of_a_folder_trained_and_saved_by_trl_reward_trainer(benchmark, tmp_path):
    """The bench extra's TRL: RewardTrainer trains tiny-bert 2 steps and save_model writes the folder audited."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from cartrm.data import load_preferences
    from cartrm.models import RewardModel

    data, candidates = benchmark
    probe = RewardModel.load("tiny-bert", seed=2)
    pairs = load_preferences(data, split="train").render(probe.tokenizer)
    rows = {
        "chosen_ids": [probe.tokenizer(p.prompt + p.chosen)["input_ids"][:48] for p in pairs],
        "rejected_ids": [probe.tokenizer(p.prompt + p.rejected)["input_ids"][:48] for p in pairs],
    }
    args = RewardConfig(
        output_dir=str(tmp_path / "trl-out"),
        per_device_train_batch_size=8,
        max_steps=2,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        bf16=False,
        max_length=48,
    )
    trainer = RewardTrainer(
        model=probe.model, args=args, train_dataset=Dataset.from_dict(rows), processing_class=probe.tokenizer
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "trl"))
    result = _audit(tmp_path / "trl", data, tmp_path / "audit", "--candidates", candidates)
    assert result.exit_code == 0, result.output
    audit = Audit.load(tmp_path / "audit" / "audit.json")
    assert audit.evaluation.tail.n > 0 and {p.group for p in audit.pressure} == {"head", "tail"}
