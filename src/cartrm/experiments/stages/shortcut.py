"""On benchmark runs with a planted shortcut (``benchmark.tail_shortcut`` > 0): per method, the reward its chosen
responses gain from the shortcut sentence on the validation pairs that carry it
(:func:`cartrm.datasets.longtail.shortcut.shortcut_gains`), the direct measure of whether a method unlearned it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from cartrm.datasets.longtail.shortcut import shortcut_gains
from cartrm.experiments.stages.context import SCORING_VERSION, SeedContext, logged
from cartrm.io import write_json_atomic
from cartrm.runs import stage_key
from cartrm.runs.stage import Stage

OUTPUT = "shortcut.json"


def shortcut_gain(ctx: SeedContext, method: str, model: Any) -> float | None:
    """``method``'s mean shortcut gain, measured unless a finished stage has it; None without a planted shortcut
    (or without validation pairs that carry it)."""
    config, layout = ctx.config, ctx.layout
    if not config.uses_benchmark or not config.benchmark.tail_shortcut:
        return None
    folder = layout.shortcut(method)
    stage = Stage(folder, stage_key(Stage.key_of(layout.model(method)), OUTPUT, SCORING_VERSION), outputs=(OUTPUT,))
    if not stage.done():
        stage.begin()
        with logged(f"seed {ctx.seed}: the shortcut's reward gain for {method}"):
            gains = shortcut_gains(model, ctx.splits["validation"])
        write_json_atomic(folder / OUTPUT, {"pairs": len(gains), "gains": gains.tolist()})
        stage.finish()
    gains = np.asarray(json.loads((folder / OUTPUT).read_text())["gains"])
    return float(gains.mean()) if len(gains) else None
