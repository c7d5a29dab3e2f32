"""Preference data: loading, validation, rendering and tail definitions."""

from cartrm.data.dataset import (
    PointwiseDataset,
    PreferenceDataset,
    RenderedPair,
    load_dataset,
    load_preferences,
)
from cartrm.data.tail import TailDefinition, TailSplit, parse_tail_spec

__all__ = [
    "PointwiseDataset",
    "PreferenceDataset",
    "RenderedPair",
    "TailDefinition",
    "TailSplit",
    "load_dataset",
    "load_preferences",
    "parse_tail_spec",
]
