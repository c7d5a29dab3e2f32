"""Loading preference / pointwise data from every supported format and text form."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from cartrm.data import PointwiseDataset, PreferenceDataset, RenderedPair, load_dataset, load_preferences
from cartrm.errors import DataError

PLAIN_RECORDS = [
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "domain": "math", "group": "a", "margin": 1.5},
    {
        "prompt": "Name a colour.",
        "chosen": "Blue, like the sky.",
        "rejected": "Seven",
        "domain": "general",
        "group": "b",
        "margin": 0.25,
    },
    {
        "prompt": 'Say "hi", politely',
        "chosen": "Hello, nice to meet you!",
        "rejected": "go away",
        "domain": "chat",
        "group": "a",
        "margin": 2.0,
    },
]

CONVERSATION_RECORDS = [
    {
        "prompt": [{"role": "user", "content": "Hi there"}],
        "chosen": [{"role": "assistant", "content": "Hello! How can I help?"}],
        "rejected": [{"role": "assistant", "content": "What."}],
        "domain": "chat",
    },
    {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
        ],
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "Lyon, I think."}],
        "domain": "geo",
    },
]


# --------------------------------------------------------------------------- writers


def _open_write(path: Path, mode: str = "wt"):
    if path.suffix == ".gz":
        return gzip.open(path, mode, encoding="utf-8", newline="") if "t" in mode else gzip.open(path, mode)
    return open(path, mode, encoding="utf-8", newline="") if "t" in mode else open(path, mode)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    with _open_write(path) as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return path


def write_json(path: Path, records: list[dict], wrapped: bool = False) -> Path:
    with _open_write(path) as handle:
        json.dump({"data": records} if wrapped else records, handle, indent=2)
    return path


def write_csv(path: Path, records: list[dict]) -> Path:
    names = list(dict.fromkeys(k for r in records for k in r))
    with _open_write(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for record in records:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in record.items()})
    return path


def write_parquet(path: Path, records: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(records)
    if path.suffix == ".gz":
        plain = path.with_suffix("")
        pq.write_table(table, plain)
        path.write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    else:
        pq.write_table(table, path)
    return path


def hf_dataset(records: list[dict]):
    import datasets

    return datasets.Dataset.from_list(records)


def make_source(kind: str, tmp_path: Path, records: list[dict]):
    """Write ``records`` in format ``kind``; return what ``load_dataset`` takes."""
    if kind == "hf":
        return hf_dataset(records)
    if kind.startswith("json-data"):
        name = "data." + kind[len("json-data-") :] if kind != "json-data" else "data.json"
        return write_json(tmp_path / name, records, wrapped=True)
    path = tmp_path / f"data.{kind}"
    base = kind.removesuffix(".gz")
    writer = {
        "jsonl": write_jsonl,
        "ndjson": write_jsonl,
        "json": write_json,
        "csv": write_csv,
        "parquet": write_parquet,
    }[base]
    return writer(path, records)


FILE_KINDS = ["jsonl", "jsonl.gz", "ndjson", "json", "json.gz", "json-data", "csv", "csv.gz", "parquet", "parquet.gz"]
ALL_KINDS = FILE_KINDS + ["hf"]


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_plain_records_load_identically_from_every_format(kind, tmp_path):
    source = make_source(kind, tmp_path, PLAIN_RECORDS)
    dataset = load_dataset(source)

    assert isinstance(dataset, PreferenceDataset)
    assert len(dataset) == len(PLAIN_RECORDS)
    assert dataset.prompt == [r["prompt"] for r in PLAIN_RECORDS]
    assert dataset.chosen == [r["chosen"] for r in PLAIN_RECORDS]
    assert dataset.rejected == [r["rejected"] for r in PLAIN_RECORDS]
    assert set(dataset.columns) == {"domain", "group", "margin"}
    assert dataset.column("domain") == [r["domain"] for r in PLAIN_RECORDS]
    assert dataset.column("group") == [r["group"] for r in PLAIN_RECORDS]
    # CSV cells are text; the numeric view is the same for every format
    np.testing.assert_allclose(dataset.numeric_column("margin"), [r["margin"] for r in PLAIN_RECORDS])
    if kind != "hf":
        assert dataset.source == str(source)


@pytest.mark.parametrize("kind", ["jsonl", "json-data", "csv.gz", "parquet", "hf"])
def test_conversational_records_load_identically_from_every_format(kind, tmp_path):
    dataset = load_dataset(make_source(kind, tmp_path, CONVERSATION_RECORDS))

    assert isinstance(dataset, PreferenceDataset)
    assert dataset.prompt == [r["prompt"] for r in CONVERSATION_RECORDS]
    assert dataset.chosen == [r["chosen"] for r in CONVERSATION_RECORDS]
    assert dataset.rejected == [r["rejected"] for r in CONVERSATION_RECORDS]
    assert dataset.column("domain") == ["chat", "geo"]


def test_prompt_column_is_optional(tmp_path):
    records = [{"chosen": "good answer", "rejected": "bad answer"}, {"chosen": "yes", "rejected": "no"}]
    dataset = load_dataset(write_jsonl(tmp_path / "p.jsonl", records))
    assert dataset.prompt == ["", ""]
    assert dataset.columns == {}
    pairs = dataset.render()
    assert pairs[0] == RenderedPair("", "good answer", "bad answer")


def test_extra_columns_missing_in_some_rows_are_none(tmp_path):
    records = [
        {"chosen": "a", "rejected": "b", "domain": "x"},
        {"chosen": "c", "rejected": "d", "group": 3},
    ]
    dataset = load_dataset(write_jsonl(tmp_path / "e.jsonl", records))
    assert dataset.column("domain") == ["x", None]
    assert dataset.column("group") == [None, 3]
    with pytest.raises(DataError) as info:
        dataset.column("nope")
    assert info.value.field == "nope"
    assert "domain" in str(info.value)


def test_csv_with_byte_order_mark_keeps_first_column(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffchosen,rejected,domain\ngood,bad,x\n".encode())
    dataset = load_dataset(path)
    assert dataset.chosen == ["good"]
    assert set(dataset.columns) == {"domain"}


def test_non_dataset_object_is_rejected():
    with pytest.raises(DataError, match="datasets.Dataset"):
        load_dataset({"chosen": ["a"], "rejected": ["b"]})


# --------------------------------------------------------------------------- conversational form


def test_implicit_prompt_is_the_shared_leading_messages():
    shared = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Tell me a joke"},
    ]
    good = {"role": "assistant", "content": "Why did the chicken cross the road?"}
    bad = {"role": "assistant", "content": "No."}
    dataset = PreferenceDataset.from_records([{"chosen": shared + [good], "rejected": shared + [bad], "domain": "d"}])
    assert dataset.prompt == [shared]
    assert dataset.chosen == [[good]]
    assert dataset.rejected == [[bad]]
    assert dataset.column("domain") == ["d"]


def test_implicit_prompt_keeps_a_non_empty_response_when_one_side_is_a_prefix():
    user = {"role": "user", "content": "Question?"}
    answer = {"role": "assistant", "content": "Answer."}
    more = {"role": "assistant", "content": "And more."}
    dataset = PreferenceDataset.from_records([{"chosen": [user, answer, more], "rejected": [user, answer]}])
    assert dataset.prompt == [[user]]
    assert dataset.chosen == [[answer, more]]
    assert dataset.rejected == [[answer]]


def test_implicit_prompt_with_nothing_shared_is_empty():
    dataset = PreferenceDataset.from_records(
        [{"chosen": [{"role": "user", "content": "A"}], "rejected": [{"role": "user", "content": "B"}]}]
    )
    assert dataset.prompt == [[]]
    assert dataset.render()[0] == RenderedPair("", "User: A", "User: B")


def test_messages_keep_only_role_and_content():
    messages = [{"role": "assistant", "content": "x", "name": "bot", "weight": 1}]
    dataset = PreferenceDataset.from_records(
        [{"prompt": "q", "chosen": messages, "rejected": [{"role": "assistant", "content": "y"}]}]
    )
    assert dataset.chosen == [[{"role": "assistant", "content": "x"}]]


@pytest.mark.parametrize("use_tokenizer", [False, True])
def test_conversation_renders_as_plain_roles_without_a_chat_template(use_tokenizer, tiny_bert_tokenizer):
    tokenizer = tiny_bert_tokenizer if use_tokenizer else None
    if tokenizer is not None:
        assert not getattr(tokenizer, "chat_template", None)
    dataset = PreferenceDataset.from_records(CONVERSATION_RECORDS)
    pairs = dataset.render(tokenizer)
    assert pairs[0] == RenderedPair("User: Hi there\n\n", "Assistant: Hello! How can I help?", "Assistant: What.")
    assert pairs[1].prompt == "System: Be brief.\n\nUser: Capital of France?\n\n"
    assert pairs[1].chosen == "Assistant: Paris."


def test_conversation_renders_with_the_chat_template(tiny_llama_tokenizer):
    tokenizer = tiny_llama_tokenizer
    assert tokenizer.chat_template
    dataset = PreferenceDataset.from_records(CONVERSATION_RECORDS)
    pairs = dataset.render(tokenizer)
    for record, pair in zip(CONVERSATION_RECORDS, pairs):
        expected_prompt = tokenizer.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
        assert pair.prompt == expected_prompt
        assert pair.prompt + pair.chosen == tokenizer.apply_chat_template(
            record["prompt"] + record["chosen"], tokenize=False
        )
        assert pair.prompt + pair.rejected == tokenizer.apply_chat_template(
            record["prompt"] + record["rejected"], tokenize=False
        )
        assert record["chosen"][0]["content"] in pair.chosen
        assert record["prompt"][-1]["content"] not in pair.chosen
    assert pairs[0].prompt.startswith("<|user|> Hi there")


def test_string_prompt_with_conversational_responses(tiny_llama_tokenizer):
    record = {
        "prompt": "Hi",
        "chosen": [{"role": "assistant", "content": "Hello"}],
        "rejected": [{"role": "assistant", "content": "Bye"}],
    }
    dataset = PreferenceDataset.from_records([record])
    assert dataset.render(None)[0] == RenderedPair("User: Hi\n\n", "Assistant: Hello", "Assistant: Bye")
    templated = dataset.render(tiny_llama_tokenizer)[0]
    assert templated.prompt + templated.chosen == tiny_llama_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}, record["chosen"][0]], tokenize=False
    )


@pytest.mark.parametrize("with_template", [False, True])
def test_plain_text_renders_prompt_newline_response_with_any_tokenizer(
    with_template, tiny_llama_tokenizer, tiny_bert_tokenizer
):
    tokenizer = tiny_llama_tokenizer if with_template else tiny_bert_tokenizer
    dataset = PreferenceDataset.from_records(PLAIN_RECORDS)
    assert dataset.render(tokenizer)[0] == RenderedPair("What is 2+2?\n", "4", "5")
    assert dataset.plain_texts()[1] == "Name a colour.\nBlue, like the sky."


# --------------------------------------------------------------------------- HH-RLHF transcripts

HH_DIALOGUE = "\n\nHuman: Hi\n\nAssistant: Hello, how can I help?\n\nHuman: Tell me a joke."


def test_hh_transcripts_split_into_shared_prompt_and_final_responses(tmp_path):
    record = {
        "chosen": HH_DIALOGUE + "\n\nAssistant: Why did the chicken cross the road?",
        "rejected": HH_DIALOGUE + "\n\nAssistant: No.",
        "domain": "hh",
    }
    dataset = load_dataset(write_jsonl(tmp_path / "hh.jsonl", [record]))
    assert dataset.prompt == [HH_DIALOGUE + "\n\nAssistant:"]
    assert dataset.chosen == ["Why did the chicken cross the road?"]
    assert dataset.rejected == ["No."]
    assert dataset.column("domain") == ["hh"]
    pair = dataset.render()[0]
    assert pair.prompt.endswith("Assistant:\n")
    assert pair.chosen == "Why did the chicken cross the road?"


def test_hh_transcripts_with_different_dialogues_are_kept_whole():
    chosen = "\n\nHuman: A?\n\nAssistant: yes"
    rejected = "\n\nHuman: B?\n\nAssistant: no"
    dataset = PreferenceDataset.from_records([{"chosen": chosen, "rejected": rejected}])
    assert dataset.prompt == [""]
    assert dataset.chosen == [chosen]
    assert dataset.rejected == [rejected]


def test_hh_empty_final_turn_is_accepted_and_round_trips(tmp_path):
    record = {"chosen": HH_DIALOGUE + "\n\nAssistant: Sure: knock knock.", "rejected": HH_DIALOGUE + "\n\nAssistant:"}
    dataset = PreferenceDataset.from_records([record])
    assert dataset.rejected == [""]
    path = tmp_path / "hh_saved.jsonl"
    dataset.save(path)
    again = load_dataset(path)
    assert again.prompt == dataset.prompt and again.chosen == dataset.chosen and again.rejected == [""]


def test_shared_hh_rlhf_sample(shared_data_dir, tmp_path):
    path = shared_data_dir / "hh-rlhf-harmless-base-1500.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    dataset = load_preferences(path)
    assert len(dataset) == 1500
    assert all(isinstance(p, str) for p in dataset.prompt)
    well_formed = [p for p in dataset.prompt if p.strip() and p.endswith("Assistant:")]
    assert len(well_formed) >= 0.95 * len(dataset)
    assert all(p.startswith("\n\nHuman:") for p in well_formed)
    # responses are the final turns only
    assert sum("\n\nHuman:" in c for c, p in zip(dataset.chosen, dataset.prompt) if p) == 0
    # the whole sample survives a save / load round trip
    saved = tmp_path / "hh.jsonl.gz"
    dataset.save(saved)
    again = load_preferences(saved)
    assert again.prompt == dataset.prompt and again.chosen == dataset.chosen and again.rejected == dataset.rejected


# --------------------------------------------------------------------------- pointwise

POINTWISE_RECORDS = [
    {"prompt": "Rate me", "response": "A careful answer.", "score": 0.9, "domain": "a"},
    {"prompt": "Rate me", "response": "meh", "score": -1, "domain": "b"},
    {"prompt": "Other", "response": "Fine.", "score": 0.0, "domain": "a"},
]


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet", "hf"])
def test_pointwise_prompt_response_score(kind, tmp_path):
    dataset = load_dataset(make_source(kind, tmp_path, POINTWISE_RECORDS))
    assert isinstance(dataset, PointwiseDataset)
    assert dataset.prompt == ["Rate me", "Rate me", "Other"]
    assert dataset.response == ["A careful answer.", "meh", "Fine."]
    assert dataset.score == [0.9, -1.0, 0.0]
    assert all(isinstance(s, float) for s in dataset.score)
    assert dataset.column("domain") == ["a", "b", "a"]
    assert dataset.render()[0] == ("Rate me\n", "A careful answer.")


def test_pointwise_text_column(tmp_path):
    records = [{"text": "whole text one", "score": "1.5"}, {"text": "whole text two", "score": 2}]
    dataset = load_dataset(write_csv(tmp_path / "pw.csv", records))
    assert isinstance(dataset, PointwiseDataset)
    assert dataset.prompt == ["", ""]
    assert dataset.response == ["whole text one", "whole text two"]
    assert dataset.score == [1.5, 2.0]
    assert dataset.plain_texts() == ["whole text one", "whole text two"]


def test_load_preferences_rejects_pointwise_data(tmp_path):
    path = write_jsonl(tmp_path / "pw.jsonl", POINTWISE_RECORDS)
    with pytest.raises(DataError, match="pointwise") as info:
        load_preferences(path)
    assert info.value.file == str(path)


# --------------------------------------------------------------------------- split / select / save

SPLIT_RECORDS = [
    {"chosen": f"good {i}", "rejected": f"bad {i}", "split": "train" if i % 3 else "test", "margin": i}
    for i in range(7)
]


@pytest.mark.parametrize("kind", ["jsonl", "csv", "hf"])
def test_split_column_filters_rows(kind, tmp_path):
    source = make_source(kind, tmp_path, SPLIT_RECORDS)
    train = load_dataset(source, split="train")
    test = load_dataset(source, split="test")
    assert train.chosen == ["good 1", "good 2", "good 4", "good 5"]
    assert test.chosen == ["good 0", "good 3", "good 6"]
    assert set(train.column("split")) == {"train"}
    np.testing.assert_array_equal(test.numeric_column("margin"), [0, 3, 6])
    assert len(load_dataset(source)) == 7


def test_unknown_split_names_the_splits_present(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", SPLIT_RECORDS)
    with pytest.raises(DataError) as info:
        load_dataset(path, split="validation")
    assert info.value.field == "split"
    assert "test, train" in str(info.value)


def test_split_without_split_column_is_the_whole_dataset(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", PLAIN_RECORDS)
    assert load_dataset(path, split="train").chosen == [r["chosen"] for r in PLAIN_RECORDS]


def test_select_reorders_every_column():
    dataset = PreferenceDataset.from_records(PLAIN_RECORDS, source="mem")
    picked = dataset.select(np.array([2, 0]))
    assert isinstance(picked, PreferenceDataset)
    assert picked.chosen == ["Hello, nice to meet you!", "4"]
    assert picked.prompt == [PLAIN_RECORDS[2]["prompt"], PLAIN_RECORDS[0]["prompt"]]
    assert picked.column("domain") == ["chat", "math"]
    assert picked.source == "mem"
    assert len(dataset) == 3  # the original is untouched
    assert len(dataset.select([])) == 0


@pytest.mark.parametrize("name", ["out.jsonl", "nested/dir/out.jsonl.gz"])
def test_save_round_trip(name, tmp_path):
    plain = [{k: v for k, v in r.items() if k != "margin"} for r in PLAIN_RECORDS]
    dataset = PreferenceDataset.from_records(plain + CONVERSATION_RECORDS[:1] + [{"chosen": "ü ✓", "rejected": "x"}])
    path = tmp_path / name
    dataset.save(path)
    if name.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    else:
        assert len(path.read_text(encoding="utf-8").splitlines()) == len(dataset)
    again = load_dataset(path)
    assert again.to_records() == dataset.to_records()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old contents\n")
    PreferenceDataset.from_records(PLAIN_RECORDS[:1]).save(path)
    assert load_dataset(path).chosen == ["4"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_pointwise_save_round_trip(tmp_path):
    dataset = PointwiseDataset.from_records(POINTWISE_RECORDS)
    dataset.save(tmp_path / "pw.jsonl")
    again = load_dataset(tmp_path / "pw.jsonl")
    assert isinstance(again, PointwiseDataset)
    assert again.to_records() == dataset.to_records()
