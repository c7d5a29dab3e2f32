"""Content addresses: the identity of a training run and the keys of ``cart run``'s stages.

A key is a SHA-256 of everything a result depends on (settings, digests of inputs); a stage or a run whose key
matches is not redone. Options added to a config after run folders recorded their keys are marked
:data:`KEYED_WHEN_SET` and leave the key while at their default, so a new option does not redo finished work.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, SerializationInfo
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonDict

KEYED_WHEN_SET: JsonDict = {"keyed_when_set": True}  # Field(..., json_schema_extra=KEYED_WHEN_SET)
RESUMABLE_SETTINGS = frozenset({"logging_steps", "save_steps", "eval_steps", "max_batch_tokens", "report_to"})
"""Settings that may change on ``--resume``: how often to log, checkpoint and score the evaluation data, where the
logs go, and how a batch is split into passes (the same gradient)."""


def keyed_when_set(info: FieldInfo) -> bool:
    """Whether a config field is marked ``KEYED_WHEN_SET``."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return KEYED_WHEN_SET.items() <= extra.items()


def digest(value: Any) -> str:
    """SHA-256 of a JSON-able value (arrays as lists), for run identities."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def run_identity(settings: dict[str, Any], **inputs: Any) -> dict[str, Any]:
    """The identity of a training run: ``settings`` without :data:`RESUMABLE_SETTINGS`, and ``inputs`` (names to
    digests or fingerprints, ``None`` for an input not given)."""
    kept = {name: value for name, value in settings.items() if name not in RESUMABLE_SETTINGS}
    return {"settings": json.loads(json.dumps(kept, default=str)), **inputs}


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two identities, as ``name: recorded → current`` (settings by their own name)."""
    found = []
    old_settings, new_settings = recorded.get("settings", {}), current.get("settings", {})
    for name in sorted(set(old_settings) | set(new_settings)):
        if old_settings.get(name) != new_settings.get(name):
            found.append(f"{name}: {old_settings.get(name)!r} → {new_settings.get(name)!r}")
    for name in sorted((set(recorded) | set(current)) - {"settings"}):
        if recorded.get(name) != current.get(name):
            found.append(f"{name} differs")
    return found


STAGE_KEY = {"stage_key": True}  # the serialisation context of a stage key's dump


def for_stage_key(info: SerializationInfo) -> bool:
    """Whether a model is being dumped for a stage key (a serializer that places fields itself reads this)."""
    return isinstance(info.context, dict) and info.context.get("stage_key") is True


def without_keyed_defaults(config: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    """``dumped`` (``config``'s dump) without the options marked ``KEYED_WHEN_SET`` that are at their default."""
    fields = type(config).model_fields
    return {
        name: value
        for name, value in dumped.items()
        if not (name in fields and keyed_when_set(fields[name]) and getattr(config, name) == fields[name].default)
    }


def key_dump(config: BaseModel) -> dict[str, Any]:
    """``config`` as a stage key reads it: options marked ``KEYED_WHEN_SET`` are left out while at their default,
    in nested configs too."""
    dumped = without_keyed_defaults(config, config.model_dump(mode="json", context=STAGE_KEY))
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, BaseModel) and name in dumped:
            dumped[name] = key_dump(value)
    return dumped


def stage_key(*parts: Any) -> str:
    """A content address of a stage's inputs (pydantic configs as :func:`key_dump` reads them; paths as strings)."""
    return digest([key_dump(p) if isinstance(p, BaseModel) else p for p in parts])


def content_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (names and contents, in name order): what a stage that
    reads ``path`` depends on, wherever the file or folder lies."""
    path = Path(path)
    if path.is_file():
        hasher = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(2**20), b""):
                hasher.update(block)
        return hasher.hexdigest()
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return digest([[str(p.relative_to(path)), content_digest(p)] for p in files])


def source_identity(source: str) -> str:
    """A model or data source as a stage key reads it: a built-in name as itself, a file or folder by content
    (hashed once per process while its files' sizes and times stay the same: every stage key of a run reads it)."""
    path = Path(source)
    if not path.exists():
        return source
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return _cached_digest(str(path.resolve()), tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@functools.lru_cache(maxsize=8)
def _cached_digest(path: str, signature: tuple[tuple[str, int, int], ...]) -> str:
    return content_digest(path)
