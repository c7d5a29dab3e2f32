"""A finished ``cart run`` opened for reading, without regenerating its data or refitting its tails: its config,
its seeds and, per seed and method, the saved test scores and what they get right."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from cartrm.errors import CartError
from cartrm.experiments.run_config import RunConfig
from cartrm.experiments.stages.evaluation import correctness
from cartrm.report.results import RunResults
from cartrm.runs.layout import RunLayout


@dataclass(frozen=True)
class FinishedRun:
    root: Path

    @cached_property
    def layout(self) -> RunLayout:
        if not (self.root / "config.yaml").exists():
            raise CartError(f"{self.root}: not a finished cart run (config.yaml is missing)")
        return RunLayout(Path(self.root))

    @cached_property
    def config(self) -> RunConfig:
        """The run's ``config.yaml``, pointed at the folder wherever it now lies."""
        config = RunConfig.from_yaml(self.layout.config)
        return config.model_copy(update={"out_root": Path(self.root).parent, "name": Path(self.root).name})

    def results(self) -> RunResults:
        return RunResults.load(self.layout.results)

    def seeds(self) -> list[int]:
        """The seeds with saved test scores."""
        return [s for s in self.layout.seeds_present() if self.methods(s)]

    def methods(self, seed: int) -> list[str]:
        """The methods (and ablations) scored on seed ``seed``'s test split."""
        folder = self.layout.seed(seed).root / "eval"
        return sorted(p.name for p in folder.iterdir() if (p / "scores.json").exists()) if folder.is_dir() else []

    def test_pairs(self, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Seed ``seed``'s test split: its tail mask and gold margins (None without a gold reward). Runs made before
        they were saved beside the data have them rebuilt from ``config.yaml``, as the run built them."""
        path = self.layout.seed(seed).test_pairs
        if not path.exists():
            from cartrm.evaluation.metrics import gold_margin_of
            from cartrm.experiments.seed_data import SeedData

            data = SeedData.prepare(self.config, seed, progress=False)
            return data.tails["test"].mask, gold_margin_of(data.splits["test"])
        saved = json.loads(path.read_text())
        gold = saved["gold_margin"]
        return np.asarray(saved["is_tail"], dtype=bool), None if gold is None else np.asarray(gold, dtype=float)

    def correctness(self, seed: int, method: str) -> dict[str, np.ndarray]:
        """Per test pair of seed ``seed``, whether ``method``'s saved scores order it as labelled and as the gold
        rule does (``head_accuracy``, ``tail_accuracy``, ``head_gold_accuracy``, ``tail_gold_accuracy``)."""
        scores = self.layout.seed(seed).scores(method)
        if not scores.exists():
            found = ", ".join(self.methods(seed)) or "none"
            raise CartError(f"{self.root}: seed {seed} has no test scores of '{method}' (scored: {found})")
        return correctness(scores, *self.test_pairs(seed))
