"""Matplotlib without a display, and figures written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cartrm.io import atomic_path  # noqa: E402


def save_figure(figure, path: str | Path) -> None:
    """Write ``figure`` to ``path`` whole or not at all; a failed write (a full disk) names ``path``."""
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    finally:
        plt.close(figure)
