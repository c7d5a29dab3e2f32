"""Preference and pointwise datasets in TRL's column conventions.

Preference rows: ``chosen``, ``rejected`` and an optional ``prompt``, each plain text or a conversation
(a list of ``{"role", "content"}`` messages); HH-RLHF transcripts (``"\\n\\nHuman: …\\n\\nAssistant: …"``)
in ``chosen``/``rejected`` are split into prompt and response. Pointwise rows: ``text`` (or ``prompt`` +
``response``) and a numeric ``score``. Every other column (``domain``, ``group``, ``margin``, ``weight``,
``split``, ``gold_*`` …) is kept as an extra column.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cartrm.data.conversation import (
    HH_ASSISTANT,
    Turns,
    is_hh_transcript,
    render,
    split_hh_transcript,
    split_implicit_prompt,
    validate_messages,
)
from cartrm.data.readers import detect_format, read_records
from cartrm.errors import DataError
from cartrm.io import atomic_path

PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")
POINTWISE_FIELDS = ("prompt", "response", "text", "score")


@dataclass(frozen=True)
class RenderedPair:
    """A pair as the model reads it: ``prompt + chosen`` and ``prompt + rejected``."""

    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True, eq=False)
class _Table:
    """Shared behaviour of the two dataset kinds: extra columns, selection, saving."""

    columns: dict[str, list] = field(default_factory=dict)
    source: str = "<memory>"
    lines: list[int] | None = None  # 1-based source line of each row (row number when None)

    def __post_init__(self) -> None:
        lengths = {len(getattr(self, name)) for name in self._core_fields()} | {len(v) for v in self.columns.values()}
        if self.lines is not None:
            lengths.add(len(self.lines))
        if len(lengths) > 1:
            raise ValueError(f"all columns of a {type(self).__name__} must have the same length")

    def __len__(self) -> int:
        raise NotImplementedError

    def line_of(self, index: int) -> int:
        return self.lines[index] if self.lines is not None else index + 1

    def has_column(self, name: str) -> bool:
        return name in self.columns

    def column(self, name: str) -> list:
        if name not in self.columns:
            available = ", ".join(sorted(self.columns)) or "none"
            raise DataError(f"no column '{name}' (extra columns available: {available})", file=self.source, field=name)
        return self.columns[name]

    def numeric_column(self, name: str) -> np.ndarray:
        values = self.column(name)
        out = np.empty(len(values), dtype=np.float64)
        for i, value in enumerate(values):
            out[i] = _as_float(value, self.source, self.line_of(i), name)
        return out

    def select(self, indices: Sequence[int] | np.ndarray):
        indices = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        core = {name: [getattr(self, name)[i] for i in indices] for name in self._core_fields()}
        extras = {name: [values[i] for i in indices] for name, values in self.columns.items()}
        lines = [self.line_of(i) for i in indices]
        return type(self)(**core, columns=extras, source=self.source, lines=lines)

    def split(self, name: str | None):
        """Rows whose ``split`` column equals ``name``; the whole dataset when there is no such column or name is
        None."""
        if name is None or "split" not in self.columns:
            return self
        keep = [i for i, value in enumerate(self.columns["split"]) if value == name]
        if not keep:
            found = ", ".join(sorted({str(v) for v in self.columns["split"]}))
            raise DataError(f"no rows with split '{name}' (splits present: {found})", file=self.source, field="split")
        return self.select(keep)

    def to_records(self) -> list[dict[str, Any]]:
        names = self._core_fields()
        return [
            {**{n: getattr(self, n)[i] for n in names}, **{c: v[i] for c, v in self.columns.items()}}
            for i in range(len(self))
        ]

    def save(self, path: str | Path) -> None:
        """Write JSON Lines atomically (``.gz`` compresses)."""
        import gzip

        path = Path(path)
        if detect_format(path) != "jsonl":
            raise DataError("datasets are saved as JSON Lines; use a .jsonl or .jsonl.gz file name", file=path)
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.to_records())
        with atomic_path(path) as tmp:
            if path.suffix == ".gz":
                with gzip.open(tmp, "wt", encoding="utf-8") as handle:
                    handle.write(lines)
            else:
                tmp.write_text(lines, encoding="utf-8")

    @classmethod
    def _core_fields(cls) -> tuple[str, ...]:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class PreferenceDataset(_Table):
    """Pairs (prompt, chosen, rejected); ``prompt`` is ``""`` when the data has none."""

    prompt: list[Turns] = field(default_factory=list)
    chosen: list[Turns] = field(default_factory=list)
    rejected: list[Turns] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.chosen)

    @classmethod
    def _core_fields(cls) -> tuple[str, ...]:
        return PREFERENCE_FIELDS

    def render(self, tokenizer: Any = None) -> list[RenderedPair]:
        pairs = []
        for prompt, chosen, rejected in zip(self.prompt, self.chosen, self.rejected):
            prompt_text, chosen_text = render(prompt, chosen, tokenizer)
            _, rejected_text = render(prompt, rejected, tokenizer)
            pairs.append(RenderedPair(prompt_text, chosen_text, rejected_text))
        return pairs

    def plain_texts(self) -> list[str]:
        """Prompt and chosen response as plain text: what tail definitions look at."""
        return [p.prompt + p.chosen for p in self.render(None)]

    @classmethod
    def from_records(
        cls, records: Iterable[dict] | Iterable[tuple[int, dict]], source: str = "<memory>"
    ) -> PreferenceDataset:
        rows = list(_numbered(records))
        if not rows:
            raise DataError("no records", file=source)
        prompts, chosen, rejected, kept, identical = [], [], [], [], []
        for line, record in rows:
            p, c, r = _parse_preference(record, source, line)
            if _same_response(c, r):
                identical.append(line)
                continue
            prompts.append(p)
            chosen.append(c)
            rejected.append(r)
            kept.append((line, record))
        if identical:
            _warn_identical(source, identical, len(rows))
        rows = kept
        extras = _extra_columns(rows, PREFERENCE_FIELDS)
        lines = [line for line, _ in rows]
        dataset = cls(prompt=prompts, chosen=chosen, rejected=rejected, columns=extras, source=source, lines=lines)
        for name in ("margin", "weight"):
            if name in extras:
                dataset.numeric_column(name)
        return dataset


def _check_unicode(value: Any, source: str, line: int, name: str) -> None:
    """JSON can spell a lone UTF-16 surrogate ("\\ud800") that no tokenizer can read: refused where it is."""
    messages = value if isinstance(value, list) else []
    texts = [value] if isinstance(value, str) else [m.get("content") for m in messages if isinstance(m, dict)]
    for text in texts:
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise DataError(
                    f"invalid Unicode: an unpaired surrogate at character {exc.start}",
                    file=source,
                    line=line,
                    field=name,
                ) from None


def _same_response(chosen: Any, rejected: Any) -> bool:
    """Whether two responses are the same text, up to whitespace (a pair that differs only there is no preference a
    reward model should learn; tokenizers mostly read it as the same text)."""
    if isinstance(chosen, str) and isinstance(rejected, str):
        return chosen.split() == rejected.split()
    return chosen == rejected


def _warn_identical(source: str, lines: list[int], total: int) -> None:
    """Pairs whose chosen and rejected are the same carry no preference: they are dropped, with a count."""
    shown = ", ".join(map(str, lines[:5])) + (", …" if len(lines) > 5 else "")
    if len(lines) == total:
        raise DataError(
            f"all {total} pairs have identical chosen and rejected responses (up to whitespace); nothing to learn from",
            file=source,
        )
    warnings.warn(
        f"{source}: dropped {len(lines)} of {total} pairs whose chosen and rejected are identical (lines {shown}), "
        "whitespace aside",
        stacklevel=3,
    )


@dataclass(frozen=True, eq=False)
class PointwiseDataset(_Table):
    """Scored examples (prompt, response, score) for the squared-error objective."""

    prompt: list[Turns] = field(default_factory=list)
    response: list[Turns] = field(default_factory=list)
    score: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.response)

    @classmethod
    def _core_fields(cls) -> tuple[str, ...]:
        return ("prompt", "response", "score")

    def render(self, tokenizer: Any = None) -> list[tuple[str, str]]:
        return [render(p, r, tokenizer) for p, r in zip(self.prompt, self.response)]

    def plain_texts(self) -> list[str]:
        return ["".join(pair) for pair in self.render(None)]

    @classmethod
    def from_records(
        cls, records: Iterable[dict] | Iterable[tuple[int, dict]], source: str = "<memory>"
    ) -> PointwiseDataset:
        rows = list(_numbered(records))
        if not rows:
            raise DataError("no records", file=source)
        prompts, responses, scores = [], [], []
        extras = _extra_columns(rows, POINTWISE_FIELDS)
        for line, record in rows:
            prompt, response = _parse_pointwise_text(record, source, line)
            prompts.append(prompt)
            responses.append(response)
            scores.append(_as_float(record.get("score"), source, line, "score"))
        lines = [line for line, _ in rows]
        return cls(prompt=prompts, response=responses, score=scores, columns=extras, source=source, lines=lines)


def load_dataset(data: str | Path | Any, split: str | None = None) -> PreferenceDataset | PointwiseDataset:
    """Load a file (JSONL / JSON / CSV / Parquet, optionally .gz) or a Hugging Face ``datasets.Dataset``.

    The kind is decided by the columns: ``chosen``/``rejected`` → pairs; ``score`` → pointwise.
    ``split`` keeps only rows of that ``split`` column value (when the column exists).
    """
    if isinstance(data, (str, Path)):
        source = str(data)
        rows = list(read_records(data))
    else:
        source = f"<{type(data).__name__}>"
        rows = list(enumerate(_hf_rows(data), start=1))
    if not rows:
        raise DataError("no records", file=source)
    first = rows[0][1]
    dataset: PreferenceDataset | PointwiseDataset
    if "score" in first and "chosen" not in first:
        dataset = PointwiseDataset.from_records(rows, source)
    else:
        dataset = PreferenceDataset.from_records(rows, source)
    return dataset.split(split)


def load_preferences(data: str | Path | Any, split: str | None = None) -> PreferenceDataset:
    dataset = load_dataset(data, split)
    if not isinstance(dataset, PreferenceDataset):
        raise DataError(
            "expected preference pairs with 'chosen' and 'rejected' columns, found pointwise 'score' data",
            file=dataset.source,
        )
    return dataset


def _hf_rows(dataset: Any) -> Iterable[dict]:
    if not hasattr(dataset, "column_names"):
        raise DataError(f"cannot load data from a {type(dataset).__name__}; give a file path or a datasets.Dataset")
    return iter(dataset)


def _numbered(records: Iterable) -> Iterable[tuple[int, dict]]:
    for i, item in enumerate(records, start=1):
        yield item if isinstance(item, tuple) else (i, item)


def _extra_columns(rows: list[tuple[int, dict]], core: tuple[str, ...]) -> dict[str, list]:
    names: dict[str, None] = {}
    for _, record in rows:
        names.update(dict.fromkeys(k for k in record if k not in core))
    return {name: [record.get(name) for _, record in rows] for name in names}


def _parse_preference(record: dict, source: str, line: int) -> tuple[Turns, Turns, Turns]:
    for name in ("chosen", "rejected"):
        if name not in record or record[name] is None:
            raise DataError(
                "missing required column (a preference row needs 'chosen' and 'rejected')",
                file=source,
                line=line,
                field=name,
            )
    prompt = record.get("prompt")
    prompt = "" if prompt is None else _parse_turns(prompt, source, line, "prompt", allow_empty=True)
    # an already-split HH-RLHF row (e.g. one written by ``save``) may have an empty final turn, like the source data
    hh_prompt = isinstance(prompt, str) and is_hh_transcript(prompt) and prompt.endswith(HH_ASSISTANT)
    chosen = _parse_turns(record["chosen"], source, line, "chosen", allow_empty=hh_prompt)
    rejected = _parse_turns(record["rejected"], source, line, "rejected", allow_empty=hh_prompt)
    if prompt == "" and isinstance(chosen, str) and isinstance(rejected, str) and is_hh_transcript(chosen):
        return _split_hh(chosen, rejected, source, line)
    if prompt == "" and isinstance(chosen, list) and isinstance(rejected, list):
        return split_implicit_prompt(chosen, rejected)
    return prompt, chosen, rejected


def _split_hh(chosen: str, rejected: str, source: str, line: int) -> tuple[str, str, str]:
    """Split HH-RLHF transcripts into the shared dialogue and the two final Assistant turns.

    A final turn may be empty (the public data has such rows); when the two transcripts do not share
    their dialogue, both are kept whole with an empty prompt so no text is lost.
    """
    if not is_hh_transcript(rejected):
        raise DataError(
            "'chosen' is an HH-RLHF transcript but 'rejected' is not", file=source, line=line, field="rejected"
        )
    prompt, chosen_response = split_hh_transcript(chosen)
    rejected_prompt, rejected_response = split_hh_transcript(rejected)
    if prompt != rejected_prompt:
        return "", chosen, rejected
    return prompt, chosen_response, rejected_response


def _parse_turns(value: Any, source: str, line: int, name: str, allow_empty: bool = False) -> Turns:
    _check_unicode(value, source, line, name)
    if isinstance(value, list):
        try:
            return validate_messages(value, name)
        except ValueError as exc:
            raise DataError(str(exc), file=source, line=line, field=name) from exc
    if not isinstance(value, str):
        raise DataError(
            f"expected text or a list of messages, got {type(value).__name__}", file=source, line=line, field=name
        )
    if not allow_empty and not value.strip():
        raise DataError("empty string", file=source, line=line, field=name)
    return value


def _parse_pointwise_text(record: dict, source: str, line: int) -> tuple[Turns, Turns]:
    if "score" not in record:
        raise DataError("missing required column", file=source, line=line, field="score")
    if record.get("text") is not None:
        return "", _parse_turns(record["text"], source, line, "text")
    if record.get("response") is None:
        raise DataError(
            "a pointwise row needs 'text' or 'prompt' + 'response'", file=source, line=line, field="response"
        )
    prompt = record.get("prompt")
    prompt = "" if prompt is None else _parse_turns(prompt, source, line, "prompt", allow_empty=True)
    return prompt, _parse_turns(record["response"], source, line, "response")


def _as_float(value: Any, source: str, line: int, name: str) -> float:
    if isinstance(value, bool) or value is None:
        raise DataError(f"expected a number, got {value!r}", file=source, line=line, field=name)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"expected a number, got {value!r}", file=source, line=line, field=name) from None
    if not math.isfinite(number):
        raise DataError(f"expected a finite number, got {value!r}", file=source, line=line, field=name)
    return number
