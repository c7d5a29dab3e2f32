"""One stage of ``cart run``: a folder of outputs made from inputs whose content address is the stage's key.

A finished stage holds ``.stage.json`` with its key (and what it recorded, e.g. its seconds); a stage whose key
matches and whose outputs are all there is skipped, so an interrupted run resumes at the first unfinished stage
and a changed setting redoes exactly what depends on it. A stage that started leaves ``.<folder>.pending.json``
beside its folder (so the folder itself holds only the stage's outputs) with its key until it finishes: a
resumable stage (training, which checkpoints) started again from the same inputs continues from what it left
instead of starting over.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cartrm.errors import CartError
from cartrm.io import write_json_atomic

STAGE_MARKER = ".stage.json"
log = logging.getLogger("cartrm.run")


class Stage:
    """The stage whose outputs live in ``folder``; ``outputs`` are the files (relative to ``folder``) a finished
    stage must hold, so a stage whose outputs went missing is redone."""

    def __init__(self, folder: Path, key: str, outputs: Sequence[str] = ()) -> None:
        self.folder, self.key, self.outputs = Path(folder), key, tuple(outputs)
        self.pending = self.folder.parent / f".{self.folder.name}.pending.json"

    @staticmethod
    def key_of(folder: Path) -> str:
        """The key of the finished stage in ``folder`` (an upstream input of the stages that read its outputs)."""
        marker = Path(folder) / STAGE_MARKER
        try:
            return json.loads(marker.read_text())["key"]
        except (OSError, ValueError, KeyError):
            raise CartError(f"{marker}: the stage it marks has not finished (missing or unreadable)") from None

    @staticmethod
    def finished(folder: Path) -> bool:
        return (Path(folder) / STAGE_MARKER).exists()

    def done(self) -> bool:
        """Whether the folder holds this stage made from these inputs. One made from other inputs (a changed setting
        or upstream stage) or with missing outputs is about to be redone, so that is logged."""
        marker = self.folder / STAGE_MARKER
        if not marker.exists():
            return False
        if json.loads(marker.read_text()).get("key") != self.key:
            log.warning(
                "%s was made from other inputs (a setting or an upstream stage changed): it is redone", self.folder
            )
            return False
        broken = [name for name in self.outputs if not _readable(self.folder / name)]
        if broken:
            log.warning("%s: %s missing or unreadable: it is redone", self.folder, ", ".join(broken))
            return False
        return True

    def record(self) -> dict[str, Any]:
        """What the finished stage recorded with its key."""
        return json.loads((self.folder / STAGE_MARKER).read_text())

    def begin(self, *, resumable: bool = False) -> bool:
        """Start the stage: clear what an earlier attempt left, unless ``resumable`` and that attempt had these
        inputs (then its partial outputs stay, and True says to continue them)."""
        resumes = resumable and self.pending.exists() and json.loads(self.pending.read_text()).get("key") == self.key
        if not resumes:
            self.restart()
        return resumes

    def restart(self) -> None:
        """Clear what an earlier attempt left (partial outputs that are not continued)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        write_json_atomic(self.pending, {"key": self.key})

    def finish(self, **recorded: Any) -> None:
        write_json_atomic(self.folder / STAGE_MARKER, {"key": self.key, **recorded})
        self.pending.unlink(missing_ok=True)


def _readable(path: Path) -> bool:
    """Whether an output is there and, for JSON, whole (a file cut short by a full disk or a copy is redone)."""
    if not path.exists():
        return False
    if path.suffix != ".json":
        return True
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True
