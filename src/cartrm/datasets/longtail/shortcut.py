"""How much a reward model rests on the planted shortcut (``BenchmarkConfig.tail_shortcut``): the reward its
chosen responses gain from the shortcut sentence, measured by scoring each one with and without it."""

from __future__ import annotations

from typing import Any

import numpy as np

from cartrm.datasets.longtail.tables import SHORTCUT_SENTENCE
from cartrm.errors import CartError

PLANTED = " " + SHORTCUT_SENTENCE  # as ``with_shortcut`` appends it


def without_shortcut(text: str) -> str:
    """``text`` with the planted shortcut sentence taken out (refuses a text that does not carry it)."""
    if PLANTED not in text:
        raise CartError(f"the text does not carry the planted shortcut ({SHORTCUT_SENTENCE!r}): {text[:60]!r}…")
    return text.replace(PLANTED, "", 1)


def shortcut_gains(reward_model: Any, dataset: Any, batch_size: int = 64) -> np.ndarray:
    """R(x, y⁺) − R(x, y⁺ without the shortcut) for every pair of ``dataset`` (a benchmark split) whose chosen
    response carries the shortcut, in dataset order; empty when none does. Near 0: the model ignores the
    shortcut; the larger, the more of the reward it earns from a sentence the gold reward never reads."""
    if not dataset.has_column("shortcut_on"):
        return np.zeros(0)
    rows = [i for i, on in enumerate(dataset.column("shortcut_on")) if on == "chosen"]
    if not rows:
        return np.zeros(0)
    pairs = dataset.render(reward_model.tokenizer)
    prompts = [pairs[i].prompt for i in rows]
    planted = [pairs[i].chosen for i in rows]
    rewards = reward_model.score(prompts * 2, planted + [without_shortcut(t) for t in planted], batch_size)
    return rewards[: len(rows)] - rewards[len(rows) :]
