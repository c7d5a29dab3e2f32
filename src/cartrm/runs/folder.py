"""An output folder belongs to one training run.

``run.json`` holds the run's identity (every setting that changes the result, digests of the data, the tail
mask and the analysis inputs, the starting model's weight fingerprint), written when training starts. While a
process trains into the folder it holds an exclusive lock on ``.lock``, so a second writer stops with one
line instead of replacing the first one's model. A folder that already holds files is only reused by
``resume`` (which checks the identity first) or ``overwrite`` (which clears it).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

from cartrm.errors import CartError
from cartrm.io import write_json_atomic
from cartrm.runs.identity import differences

IDENTITY_FILE = "run.json"
LOCK_FILE = ".lock"
RUN_MARKERS = (IDENTITY_FILE, "train_config.json", "train_result.json", "checkpoints")
"""Files only cartrm training writes: ``--overwrite`` clears a folder holding one of them, never a folder that
merely holds a model (it may be the user's base model)."""


def lock_folder(path: Path, doing: str) -> int:
    """Create ``path`` if needed and take an exclusive lock on its ``.lock``; returns the descriptor, whose
    closing (or the process's end, a kill included) releases it. A folder locked by another process is one
    line naming what that process is ``doing``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CartError(f"--out {path}: cannot write there ({exc.strerror})") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise CartError(f"--out {path}: another process is {doing} this folder; wait for it or pick another") from None
    return descriptor


class RunFolder:
    """Context manager around training into ``path``: checks and claims the folder on entry (before any
    expensive work), releases the lock on exit. Only the process that writes (rank 0) should enter it."""

    def __init__(self, path: str | Path, identity: dict[str, Any], *, resume: bool = False, overwrite: bool = False):
        if resume and overwrite:
            raise CartError("--resume continues the run in the folder and --overwrite starts over: pick one")
        self.path, self.identity, self.resume, self.overwrite = Path(path), identity, resume, overwrite
        self._lock: int | None = None
        self._created = False

    def __enter__(self) -> RunFolder:
        if self.path.exists() and not self.path.is_dir():
            raise CartError(f"--out {self.path}: is a file, not a folder")
        self._created = not self.path.exists()
        self._lock = lock_folder(self.path, "training into")
        try:
            self._claim()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, error_type: type | None, *exc: object) -> None:
        if error_type is not None and not self.resume and not (self.path / "checkpoints").exists():
            self._remove_claim()  # nothing of this run worth keeping: leave no half-started folder behind
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def _remove_claim(self) -> None:
        if self._created:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            (self.path / IDENTITY_FILE).unlink(missing_ok=True)
            shutil.rmtree(self.path / "logs", ignore_errors=True)

    def _claim(self) -> None:
        for stale in [*self.path.glob(".*.tmp"), *self.path.glob("checkpoints/.*.tmp")]:  # a killed run's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        contents = [p for p in self.path.iterdir() if p.name != LOCK_FILE]
        if self.resume:
            self._check_resume()
        elif contents:
            if not self.overwrite:
                raise CartError(
                    f"--out {self.path}: the folder is not empty; --resume continues the run in it, --overwrite "
                    "replaces it"
                )
            if not any((self.path / marker).exists() for marker in RUN_MARKERS):
                raise CartError(
                    f"--out {self.path}: --overwrite only clears a folder that holds a cartrm model or run, and "
                    "this one holds other files; pick an empty folder"
                )
            for path in contents:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        write_json_atomic(self.path / IDENTITY_FILE, self.identity)

    def _check_resume(self) -> None:
        recorded_file = self.path / IDENTITY_FILE
        if not recorded_file.exists():
            raise CartError(f"--resume: {self.path} holds no run to continue ({IDENTITY_FILE} is missing)")
        try:
            recorded = json.loads(recorded_file.read_text())
        except (OSError, ValueError) as exc:
            raise CartError(f"--resume: {recorded_file} is unreadable ({exc})") from None
        found = differences(recorded, self.identity)
        if found:
            shown = "; ".join(found[:4]) + (f"; and {len(found) - 4} more" if len(found) > 4 else "")
            raise CartError(
                f"--resume: this command differs from the run in {self.path} ({shown}); resume with the same "
                "settings and inputs, or start over with --overwrite"
            )
