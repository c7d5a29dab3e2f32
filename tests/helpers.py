"""Small planted-preference datasets shared by the tests."""

from __future__ import annotations

import random

from cartrm.data import PreferenceDataset

WORDS = ["apple", "river", "stone", "cloud", "music", "paper", "garden", "window", "light", "table", "bread", "horse"]


def planted_pairs(n: int, seed: int = 0, marker: str = "thanks") -> PreferenceDataset:
    """Pairs whose chosen response is the rejected one plus ``marker``: a preference a model can learn."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        base = " ".join(rng.choice(WORDS) for _ in range(6))
        records.append(
            {"prompt": f"Say something about item {i}.", "chosen": f"{base} {marker}", "rejected": base, "group": i % 3}
        )
    return PreferenceDataset.from_records(records)
