"""Pooled activations cached on disk for re-use by later phases.

A cache folder holds ``meta.json`` and one safetensors shard per batch (``activations`` (B, D) float32,
``rewards`` (B,), ``indices`` (B,) example ids), read back memory-mapped one shard at a time, so neither
writing nor reading holds more than a batch in memory. The folder is written under a temporary name and
renamed when complete; a cache is only reused when model fingerprint, sites, pooling and the tokenised texts match.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from cartrm.capture.stream import ExampleSet, PooledBatch

META = "meta.json"


class ActivationCache:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / META).read_text())

    @staticmethod
    def describe(fingerprint: str, site_names: list[str], pooling: str, examples: ExampleSet) -> dict:
        texts = hashlib.sha256(
            json.dumps([examples.encoded.input_ids, examples.encoded.response_mask]).encode()
        ).hexdigest()
        return {
            "model_fingerprint": fingerprint,
            "sites": site_names,
            "pooling": pooling,
            "n_examples": len(examples),
            "texts": texts,
        }

    @classmethod
    def open_matching(cls, folder: str | Path, description: dict) -> ActivationCache | None:
        """The cache at ``folder`` if it is complete and was made for ``description``, else None."""
        if not (Path(folder) / META).is_file():
            return None
        cache = cls(folder)
        return cache if {k: cache.meta.get(k) for k in description} == description else None

    @classmethod
    def write(cls, folder: str | Path, description: dict, batches: Iterator[PooledBatch]) -> Iterator[PooledBatch]:
        """Pass ``batches`` through while storing them; the cache appears at ``folder`` once all are written."""
        folder = Path(folder)
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for number, batch in enumerate(batches):
                save_file(
                    {
                        "activations": batch.activations.astype(np.float32),
                        "rewards": batch.rewards,
                        "indices": batch.indices.astype(np.int64),
                    },
                    str(tmp / f"shard-{number:06d}.safetensors"),
                )
                yield batch
            (tmp / META).write_text(json.dumps(description))
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def __iter__(self) -> Iterator[PooledBatch]:
        for shard in sorted(self.folder.glob("shard-*.safetensors")):
            with safe_open(str(shard), framework="numpy") as handle:
                yield PooledBatch(
                    indices=handle.get_tensor("indices"),
                    activations=handle.get_tensor("activations").astype(np.float64),
                    rewards=handle.get_tensor("rewards"),
                )
