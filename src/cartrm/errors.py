"""Errors that reach the user as one clear line."""

from __future__ import annotations

from pathlib import Path


class CartError(Exception):
    """Base class of every error the CLI reports as a one-line message (no traceback)."""


class DataError(CartError, ValueError):
    """Bad input data; the message names the file, the line (1-based) and the field when known."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.reason = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.file or "<data>"
        if self.line is not None:
            where += f":{self.line}"
        field = f" field '{self.field}':" if self.field else ""
        return f"{where}:{field} {self.reason}"
