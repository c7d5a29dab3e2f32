"""Embedded datasets: the seeded long-tail preference benchmark with a known gold reward (:mod:`.longtail`)."""

from cartrm.data.dataset import PreferenceDataset
from cartrm.datasets.longtail import BenchmarkConfig, generate_benchmark


def make_longtail_dataset(config: BenchmarkConfig | None = None) -> PreferenceDataset:
    """The long-tail benchmark (all splits, ``split`` column) as a :class:`PreferenceDataset`."""
    config = config or BenchmarkConfig()
    return PreferenceDataset.from_records(generate_benchmark(config), source=f"longtail-benchmark(seed={config.seed})")


__all__ = ["BenchmarkConfig", "generate_benchmark", "make_longtail_dataset"]
