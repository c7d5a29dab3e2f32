"""Atomic writes (an artifact is either complete or absent, never half-written), the base class of saved results,
and the versions recorded with them."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from cartrm.errors import CartError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; artifacts get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` (a directory) only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            backup = path.with_name(f".{path.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(path, backup)
            os.replace(tmp, path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def read_yaml_mapping(path: str | Path, flag: str, holding: str) -> dict[str, Any]:
    """A YAML (or JSON) file that holds a mapping (of ``holding``), or one line naming ``flag``, the file and the
    fault."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CartError(f"{flag} {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CartError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise CartError(f"{path}: expected a mapping of {holding}")
    return values


def versions() -> dict[str, str]:
    """Python and the versions of the packages a result depends on."""
    import platform
    from importlib.metadata import version

    packages = ("cartrm", "torch", "transformers", "accelerate", "numpy", "scipy", "scikit-learn")
    return {"python": platform.python_version(), **{name: version(name) for name in packages}}


class Record(BaseModel):
    """A typed part of a saved result; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class Artifact(Record):
    """A result saved as one JSON file: written atomically; read back with its ``schema_version`` checked and its
    fields validated, every problem one line naming the file. Subclasses set ``kind`` (for messages) and the
    default of ``schema_version`` (the version this cartrm writes and reads)."""

    kind: ClassVar[str] = "result"
    schema_version: int = 1

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | Path) -> Self:
        path = Path(path)
        if not path.is_file():
            raise CartError(f"{path}: no such {cls.kind} file")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CartError(f"{path}: cannot read the {cls.kind} file ({exc})") from exc
        expected = cls.model_fields["schema_version"].default
        version = raw.get("schema_version") if isinstance(raw, dict) else None
        if version != expected:
            raise CartError(f"{path}: {cls.kind} schema version {version!r}, this cartrm reads {expected}")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise CartError(f"{path}: field '{where}': {first['msg']}") from None
