"""Read records from JSONL / JSON / CSV / Parquet files (optionally gzip-compressed), with their line numbers."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cartrm.errors import DataError

FORMATS = ("jsonl", "json", "csv", "parquet")


def detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1].lstrip(".") if suffixes else ""
    ext = {"ndjson": "jsonl"}.get(ext, ext)
    if ext not in FORMATS:
        raise DataError(
            f"unsupported file type '{''.join(path.suffixes) or '(none)'}'; "
            "use .jsonl, .json, .csv or .parquet (optionally .gz)",
            file=path,
        )
    return ext


def read_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line, record)``; ``line`` is the 1-based line (JSONL, CSV), item (JSON) or row (Parquet)."""
    path = Path(path)
    fmt = detect_format(path)
    if not path.is_file():
        raise DataError("file not found" if not path.exists() else "not a regular file", file=path)
    try:
        if fmt == "parquet":
            yield from _read_parquet(path)
            return
        with _open_text(path) as handle:
            yield from {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv}[fmt](handle, path)
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error, csv.Error) as exc:
        raise DataError(f"cannot read file: {exc}", file=path) from exc


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _read_jsonl(handle: io.TextIOBase, path: Path) -> Iterator[tuple[int, dict]]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON ({exc.msg} at column {exc.colno})", file=path, line=number) from exc
        except (RecursionError, ValueError) as exc:  # nesting too deep, an integer of thousands of digits
            raise DataError(f"unreadable JSON value ({_reason(exc)})", file=path, line=number) from None
        yield number, _require_object(record, path, number)


def _read_json(handle: io.TextIOBase, path: Path) -> Iterator[tuple[int, dict]]:
    try:
        data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg} at column {exc.colno})", file=path, line=exc.lineno) from exc
    except (RecursionError, ValueError) as exc:
        raise DataError(f"unreadable JSON value ({_reason(exc)})", file=path) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError('a JSON file must hold a list of records (or {"data": [...]})', file=path)
    for number, record in enumerate(data, start=1):
        yield number, _require_object(record, path, number)


def _reason(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _read_csv(handle: io.TextIOBase, path: Path) -> Iterator[tuple[int, dict]]:
    reader = csv.DictReader(handle)
    for record in reader:
        if None in record:
            raise DataError("row has more values than the header", file=path, line=reader.line_num)
        yield (
            reader.line_num,
            {key: (_parse_csv_cell(value) if value is not None else None) for key, value in record.items()},
        )


def _parse_csv_cell(value: str) -> Any:
    """CSV cells are strings; conversational columns are accepted as JSON lists of messages."""
    stripped = value.strip()
    if stripped.startswith("[{") and stripped.endswith("}]"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return value
    return value


def _read_parquet(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    source = io.BytesIO(gzip.decompress(path.read_bytes())) if path.suffix.lower() == ".gz" else path
    try:
        table = pq.read_table(source)
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
        raise DataError(f"cannot read Parquet file: {exc}", file=path) from exc
    yield from enumerate(table.to_pylist(), start=1)


def _require_object(record: Any, path: Path, number: int) -> dict:
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}", file=path, line=number)
    return record
