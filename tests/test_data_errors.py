"""Bad input data → one-line DataError naming file, line and field; failed writes leave nothing behind."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from cartrm.data import PointwiseDataset, PreferenceDataset, load_dataset
from cartrm.errors import CartError, DataError

GOOD = {"prompt": "p", "chosen": "good", "rejected": "bad"}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def jsonl(path: Path, records: list) -> Path:
    return write_lines(path, [json.dumps(r) for r in records])


def load_error(path_or_data, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        load_dataset(path_or_data, **kwargs)
    exc = info.value
    assert isinstance(exc, CartError) and isinstance(exc, ValueError)
    message = str(exc)
    assert "\n" not in message and "\r" not in message, message
    if exc.file is not None:
        assert message.startswith(exc.file)
    if exc.line is not None:
        assert f":{exc.line}:" in message
    if exc.field is not None:
        assert f"'{exc.field}'" in message
    return exc


# --------------------------------------------------------------------------- files


def test_missing_file(tmp_path):
    exc = load_error(tmp_path / "absent.jsonl")
    assert exc.file == str(tmp_path / "absent.jsonl")
    assert exc.line is None and exc.field is None
    assert "not found" in exc.reason


def test_directory_is_not_a_regular_file(tmp_path):
    (tmp_path / "folder.jsonl").mkdir()
    exc = load_error(tmp_path / "folder.jsonl")
    assert exc.file == str(tmp_path / "folder.jsonl")
    assert "not a regular file" in exc.reason


@pytest.mark.parametrize("name", ["data.txt", "data", "data.gz", "data.xlsx.gz"])
def test_unsupported_extension(name, tmp_path):
    path = tmp_path / name
    path.write_text("{}")
    exc = load_error(path)
    assert exc.file == str(path)
    assert "unsupported file type" in exc.reason
    assert ".jsonl" in exc.reason


@pytest.mark.parametrize("name", ["corrupt.jsonl.gz", "corrupt.csv.gz", "corrupt.parquet.gz"])
def test_corrupt_gzip_is_unreadable(name, tmp_path):
    path = tmp_path / name
    path.write_bytes(b"this is not gzip data at all")
    exc = load_error(path)
    assert exc.file == str(path)
    assert "cannot read" in exc.reason


def test_truncated_gzip_is_unreadable(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(GOOD) + "\n").encode() * 200)[:60])
    exc = load_error(path)
    assert "cannot read" in exc.reason


def test_invalid_utf8_is_unreadable(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"chosen": "caf\xe9", "rejected": "x"}\n')
    exc = load_error(path)
    assert exc.file == str(path)
    assert "cannot read" in exc.reason


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 but not really")
    exc = load_error(path)
    assert exc.file == str(path)
    assert "Parquet" in exc.reason


def test_empty_file_has_no_records(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    exc = load_error(path)
    assert exc.file == str(path)
    assert "no records" in exc.reason


# --------------------------------------------------------------------------- JSON syntax


def test_invalid_json_line_number_is_exact(tmp_path):
    path = write_lines(
        tmp_path / "bad.jsonl",
        [json.dumps(GOOD), "", json.dumps(GOOD), '{"chosen": "a", "rejected": ', json.dumps(GOOD)],
    )
    exc = load_error(path)
    assert exc.file == str(path)
    assert exc.line == 4
    assert exc.field is None
    assert "invalid JSON" in exc.reason


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = write_lines(tmp_path / "list.jsonl", [json.dumps(GOOD), json.dumps(GOOD), "[1, 2]"])
    exc = load_error(path)
    assert exc.line == 3
    assert "expected a JSON object" in exc.reason


def test_invalid_json_file_reports_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"chosen": "a", "rejected": "b"},\n  {"chosen": "a" "rejected": "b"}\n]\n')
    exc = load_error(path)
    assert exc.line == 3
    assert "invalid JSON" in exc.reason


@pytest.mark.parametrize("content", ['{"rows": []}', '"just a string"', '{"data": {"chosen": "a"}}'])
def test_json_file_must_hold_a_list(content, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(content)
    exc = load_error(path)
    assert "list of records" in exc.reason


def test_json_item_that_is_not_an_object_is_numbered(tmp_path):
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"data": [GOOD, GOOD, "oops"]}))
    exc = load_error(path)
    assert exc.line == 3


# --------------------------------------------------------------------------- preference fields


@pytest.mark.parametrize(
    ("bad_record", "field", "reason"),
    [
        ({"prompt": "p", "rejected": "bad"}, "chosen", "missing required column"),
        ({"prompt": "p", "chosen": "good"}, "rejected", "missing required column"),
        ({"prompt": "p", "chosen": None, "rejected": "bad"}, "chosen", "missing required column"),
        ({"prompt": "p", "chosen": "", "rejected": "bad"}, "chosen", "empty string"),
        ({"prompt": "p", "chosen": "good", "rejected": "   "}, "rejected", "empty string"),
        ({"prompt": "p", "chosen": 3, "rejected": "bad"}, "chosen", "expected text or a list of messages"),
        ({"prompt": 7, "chosen": "good", "rejected": "bad"}, "prompt", "expected text"),
        (
            {"chosen": [{"role": "assistant"}], "rejected": [{"role": "assistant", "content": "x"}]},
            "chosen",
            "message 0",
        ),
        ({"chosen": [{"role": "assistant", "content": "x"}], "rejected": ["hello"]}, "rejected", "message 0"),
        (
            {
                "chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": 5}],
                "rejected": [{"role": "user", "content": "a"}],
            },
            "chosen",
            "message 1",
        ),
        ({"chosen": [], "rejected": [{"role": "assistant", "content": "x"}]}, "chosen", "empty conversation"),
        (
            {
                "prompt": "p",
                "chosen": [{"role": "assistant", "content": " "}],
                "rejected": [{"role": "assistant", "content": "x"}],
            },
            "chosen",
            "only empty messages",
        ),
        ({"prompt": [{"content": "hi"}], "chosen": "good", "rejected": "bad"}, "prompt", "message 0"),
        ({"chosen": "\n\nHuman: hi\n\nAssistant: yes", "rejected": "plain no"}, "rejected", "HH-RLHF"),
        ({"prompt": "p", "chosen": "good", "rejected": "bad", "margin": "large"}, "margin", "expected a number"),
        ({"prompt": "p", "chosen": "good", "rejected": "bad", "margin": True}, "margin", "expected a number"),
        ({"prompt": "p", "chosen": "good", "rejected": "bad", "weight": "NaN"}, "weight", "finite"),
    ],
)
def test_bad_preference_row_names_file_line_and_field(bad_record, field, reason, tmp_path):
    records = [GOOD, GOOD, bad_record, GOOD]
    if "margin" in bad_record or "weight" in bad_record:
        records = [{**GOOD, field: 1.0}, {**GOOD, field: 2}, bad_record, {**GOOD, field: "3.5"}]
    path = jsonl(tmp_path / "pairs.jsonl", records)
    exc = load_error(path)
    assert exc.file == str(path)
    assert exc.line == 3
    assert exc.field == field
    assert reason in exc.reason


def test_margin_error_names_the_file_line_after_blank_lines(tmp_path):
    path = write_lines(
        tmp_path / "gaps.jsonl",
        ["", json.dumps({**GOOD, "margin": 1}), "", "", json.dumps({**GOOD, "margin": "n/a"})],
    )
    exc = load_error(path)
    assert (exc.line, exc.field) == (5, "margin")


def test_csv_margin_error_counts_the_header_line(tmp_path):
    path = write_lines(tmp_path / "pairs.csv", ["prompt,chosen,rejected,margin", "p,a,b,1", "p,a,b,0.5", "p,a,b,lots"])
    exc = load_error(path)
    assert (exc.file, exc.line, exc.field) == (str(path), 4, "margin")
    assert "'lots'" in exc.reason


def test_numeric_column_error_after_select_names_the_source_line(tmp_path):
    path = jsonl(tmp_path / "pairs.jsonl", [{**GOOD, "gold": 1}, {**GOOD, "gold": 2}, {**GOOD, "gold": "x"}])
    dataset = load_dataset(path)
    subset = dataset.select([2, 0])
    with pytest.raises(DataError) as info:
        subset.numeric_column("gold")
    assert (info.value.file, info.value.line, info.value.field) == (str(path), 3, "gold")
    np.testing.assert_array_equal(dataset.select([1, 0]).numeric_column("gold"), [2.0, 1.0])


def test_split_filtered_rows_keep_their_file_lines(tmp_path):
    path = jsonl(
        tmp_path / "split.jsonl",
        [
            {**GOOD, "split": "test", "gold": 1},
            {**GOOD, "split": "train", "gold": 1},
            {**GOOD, "split": "test", "gold": "?"},
        ],
    )
    test = load_dataset(path, split="test")
    with pytest.raises(DataError) as info:
        test.numeric_column("gold")
    assert info.value.line == 3


def test_csv_row_with_too_many_values(tmp_path):
    path = write_lines(tmp_path / "wide.csv", ["chosen,rejected", "a,b", "a,b,c"])
    exc = load_error(path)
    assert (exc.line, exc.field) == (3, None)
    assert "more values than the header" in exc.reason


def test_csv_missing_required_column(tmp_path):
    path = write_lines(tmp_path / "narrow.csv", ["prompt,chosen", "p,a"])
    exc = load_error(path)
    assert (exc.line, exc.field) == (2, "rejected")


def test_csv_malformed_message_list(tmp_path):
    path = tmp_path / "conv.csv"
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["chosen", "rejected"])
        writer.writerow(
            [json.dumps([{"role": "assistant", "content": "x"}]), json.dumps([{"role": "assistant", "content": "y"}])]
        )
        writer.writerow(
            [json.dumps([{"role": "assistant", "text": "x"}]), json.dumps([{"role": "assistant", "content": "y"}])]
        )
    exc = load_error(path)
    assert (exc.line, exc.field) == (3, "chosen")


def test_oversized_csv_field_is_a_data_error(tmp_path):
    path = write_lines(tmp_path / "huge.csv", ["chosen,rejected", '"' + "x" * 200_000 + '",b'])
    exc = load_error(path)
    assert exc.file == str(path)
    assert "cannot read" in exc.reason


def test_error_in_memory_records_is_numbered_by_row():
    with pytest.raises(DataError) as info:
        PreferenceDataset.from_records([GOOD, {"chosen": "x"}], source="<list>")
    assert (info.value.file, info.value.line, info.value.field) == ("<list>", 2, "rejected")
    assert (
        str(info.value)
        == "<list>:2: field 'rejected': missing required column (a preference row needs 'chosen' and 'rejected')"
    )


def test_hf_dataset_errors_are_numbered_by_row():
    import datasets

    data = datasets.Dataset.from_list([GOOD, {**GOOD, "chosen": ""}])
    exc = load_error(data)
    assert (exc.file, exc.line, exc.field) == ("<Dataset>", 2, "chosen")


def test_message_text_with_newlines_stays_on_one_line(tmp_path):
    path = jsonl(tmp_path / "nl.jsonl", [{**GOOD, "margin": "one\ntwo"}])
    exc = load_error(path)
    assert exc.field == "margin"


# --------------------------------------------------------------------------- pointwise fields


@pytest.mark.parametrize(
    ("bad_record", "field", "reason"),
    [
        ({"text": "t", "score": "high"}, "score", "expected a number"),
        ({"text": "t", "score": None}, "score", "expected a number"),
        ({"text": "t", "score": float("inf")}, "score", "finite"),
        ({"text": "", "score": 1}, "text", "empty string"),
        ({"prompt": "p", "score": 1}, "response", "'text' or 'prompt' + 'response'"),
        ({"prompt": "p", "response": [{"role": "assistant"}], "score": 1}, "response", "message 0"),
        ({"text": "t"}, "score", "missing required column"),
    ],
)
def test_bad_pointwise_row(bad_record, field, reason, tmp_path):
    path = jsonl(tmp_path / "scores.jsonl", [{"text": "ok", "score": 1.0}, bad_record])
    exc = load_error(path)
    assert (exc.file, exc.line, exc.field) == (str(path), 2, field)
    assert reason in exc.reason


def test_csv_non_numeric_score(tmp_path):
    path = write_lines(tmp_path / "scores.csv", ["text,score", "fine,1", "also fine,-0.5", "bad,ten"])
    exc = load_error(path)
    assert (exc.file, exc.line, exc.field) == (str(path), 4, "score")
    assert "'ten'" in exc.reason


def test_csv_empty_score_cell(tmp_path):
    path = write_lines(tmp_path / "scores.csv", ["prompt,response,score", "p,r,1", "p,r,"])
    exc = load_error(path)
    assert (exc.line, exc.field) == (3, "score")


def test_valid_pointwise_csv_still_loads(tmp_path):
    path = write_lines(tmp_path / "scores.csv", ["text,score", "fine,1", "also fine,-0.5"])
    dataset = load_dataset(path)
    assert isinstance(dataset, PointwiseDataset)
    assert dataset.score == [1.0, -0.5]


# --------------------------------------------------------------------------- nothing is written on failure

DATASET = PreferenceDataset.from_records([GOOD, {**GOOD, "chosen": "another good answer"}])


def _fail_mid_write(monkeypatch):
    """Make every text/gzip write put half its data on disk and then fail."""
    real_write_text = Path.write_text

    def half_then_fail(self, data, *args, **kwargs):
        real_write_text(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_fail)

    real_gzip_write = gzip.GzipFile.write

    def gzip_half_then_fail(self, data):
        real_gzip_write(self, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gzip.GzipFile, "write", gzip_half_then_fail)


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_failed_save_leaves_no_file(name, tmp_path, monkeypatch):
    _fail_mid_write(monkeypatch)
    target = tmp_path / name
    with pytest.raises(OSError, match="No space"):
        DATASET.save(target)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_failed_save_keeps_the_previous_file(name, tmp_path, monkeypatch):
    target = tmp_path / name
    PreferenceDataset.from_records([GOOD]).save(target)
    before = target.read_bytes()
    _fail_mid_write(monkeypatch)
    with pytest.raises(OSError):
        DATASET.save(target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == [name]
    monkeypatch.undo()
    assert load_dataset(target).chosen == ["good"]


def test_unserialisable_extra_column_writes_nothing(tmp_path):
    dataset = PreferenceDataset.from_records([{**GOOD, "meta": {1, 2}}])
    with pytest.raises(TypeError):
        dataset.save(tmp_path / "out.jsonl")
    assert os.listdir(tmp_path) == []


def test_failed_load_writes_nothing(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", ["{"])
    load_error(path)
    assert os.listdir(tmp_path) == ["bad.jsonl"]


def test_atomic_writes_get_the_usual_file_permissions(tmp_path):
    import os
    import stat

    from cartrm.io import atomic_directory, write_text_atomic

    write_text_atomic(tmp_path / "a.txt", "x")
    with atomic_directory(tmp_path / "d") as folder:
        (folder / "f").write_text("y")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask
