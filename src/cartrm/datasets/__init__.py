"""Embedded datasets: the seeded long-tail preference benchmark with a known gold reward (:mod:`.longtail`)."""

import numpy as np

from cartrm.data.dataset import PreferenceDataset
from cartrm.datasets.longtail import DOMAIN_BY_NAME, BenchmarkConfig, generate_benchmark, head_rule_margin


def make_longtail_dataset(config: BenchmarkConfig | None = None) -> PreferenceDataset:
    """The long-tail benchmark (all splits, ``split`` column) as a :class:`PreferenceDataset`."""
    config = config or BenchmarkConfig()
    return PreferenceDataset.from_records(generate_benchmark(config), source=f"longtail-benchmark(seed={config.seed})")


def conflict_pairs(dataset: PreferenceDataset) -> np.ndarray | None:
    """Per pair of benchmark data, whether it is a *conflict pair*: a tail pair that the head's rules order
    wrongly or tie (:func:`~cartrm.datasets.longtail.head_rule_margin`), so that only the tail's own rules order it
    right. None for data that is not the benchmark's (no ``domain``, ``is_tail`` and gold columns)."""
    needed = ("domain", "is_tail", "gold_chosen", "gold_rejected")
    if not all(dataset.has_column(c) for c in needed) or not set(dataset.column("domain")) <= set(DOMAIN_BY_NAME):
        return None
    gold = dataset.numeric_column("gold_chosen") - dataset.numeric_column("gold_rejected")
    pairs = dataset.render(None)
    head = np.array([head_rule_margin(p.chosen, p.rejected, d) for p, d in zip(pairs, dataset.column("domain"))])
    return np.asarray(dataset.column("is_tail"), dtype=bool) & (head * np.sign(gold) <= 0)


__all__ = ["BenchmarkConfig", "conflict_pairs", "generate_benchmark", "make_longtail_dataset"]
