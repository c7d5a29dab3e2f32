"""The data loader never crashes with anything but DataError, whatever the bytes or JSON it is given."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cartrm.data import load_dataset
from cartrm.errors import DataError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
fields = st.sampled_from(
    ["prompt", "chosen", "rejected", "score", "text", "response", "margin", "weight", "split", "other"]
)
records = st.dictionaries(fields, values, max_size=6)


def load_or_data_error(path) -> None:
    try:
        load_dataset(path)
    except DataError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(content=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".jsonl.gz", ".parquet"]))
def test_random_bytes(tmp_path_factory, content, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"data{suffix}"
    path.write_bytes(content)
    load_or_data_error(path)


@FUZZ
@given(body=st.binary(max_size=400), flags=st.integers(0, 255))
def test_corrupt_gzip_streams(tmp_path_factory, body, flags):
    """Bytes behind a valid gzip magic number: exercises the decompressor's own errors (zlib.error, EOFError)."""
    path = tmp_path_factory.mktemp("fuzz") / "data.jsonl.gz"
    path.write_bytes(b"\x1f\x8b\x08" + bytes([flags]) + body)
    load_or_data_error(path)


@FUZZ
@given(rows=st.lists(records, max_size=5))
def test_random_json_records(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("fuzz") / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    load_or_data_error(path)


@FUZZ
@given(document=values)
def test_random_json_documents(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("fuzz") / "data.json"
    path.write_text(json.dumps(document))
    load_or_data_error(path)
