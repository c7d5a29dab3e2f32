"""Every path of a ``cart run`` folder, named once.

``RUN/``: ``config.yaml`` (``cart run --config`` reproduces the run), ``versions.json``, ``run.log``,
``results.json``, ``report.html``, ``plots/`` and, per seed, ``seed-<s>/``: ``data/`` (the data used and the test
split's tail mask and gold margins), ``models/<method>/`` (plain HF folders; ensembles hold ``members/`` and
``ensemble/``; tuned methods ``variants/<i>/`` and ``tuning.json``), ``analysis/`` (the baseline's
``circuits.json``, ``vulnerability.json`` and their plots), ``eval/<method>/`` (``metrics.json``, ``scores.json``),
``bon/<method>/curves.json`` and ``stability/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SEED_FOLDER = re.compile(r"seed-(\d+)")


@dataclass(frozen=True)
class SeedLayout:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def benchmark(self) -> Path:
        return self.data / "benchmark.jsonl"

    @property
    def test_pairs(self) -> Path:
        """The test split's tail mask and gold margins: what reading per-pair scores needs."""
        return self.data / "test_pairs.json"

    def model(self, method: str) -> Path:
        return self.root / "models" / method

    def variant(self, method: str, index: int) -> Path:
        return self.model(method) / "variants" / str(index)

    def tuning(self, method: str) -> Path:
        return self.model(method) / "tuning.json"

    def validation(self, method: str) -> Path:
        return self.model(method) / "validation.json"

    def train_result(self, method: str) -> Path:
        return self.model(method) / "train_result.json"

    def eval(self, method: str) -> Path:
        return self.root / "eval" / method

    def metrics(self, method: str) -> Path:
        return self.eval(method) / "metrics.json"

    def scores(self, method: str) -> Path:
        return self.eval(method) / "scores.json"

    def bon(self, method: str) -> Path:
        return self.root / "bon" / method

    def shortcut(self, method: str) -> Path:
        """The reward ``method`` gains from the planted shortcut on validation pairs (``shortcut.json``)."""
        return self.root / "shortcut" / method

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    @property
    def circuits(self) -> Path:
        return self.analysis / "circuits.json"

    @property
    def vulnerability(self) -> Path:
        return self.analysis / "vulnerability.json"

    @property
    def stability(self) -> Path:
        return self.root / "stability"

    @property
    def concentration(self) -> Path:
        """The baseline's concentration diagnostic (``concentration.json``)."""
        return self.root / "concentration"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def versions(self) -> Path:
        return self.root / "versions.json"

    @property
    def log(self) -> Path:
        return self.root / "run.log"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def seed(self, seed: int) -> SeedLayout:
        return SeedLayout(self.root / f"seed-{seed}")

    def seeds_present(self) -> list[int]:
        """The seeds with a folder in the run, in order."""
        found = (SEED_FOLDER.fullmatch(p.name) for p in self.root.glob("seed-*") if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)
