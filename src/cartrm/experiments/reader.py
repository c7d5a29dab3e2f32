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
from cartrm.experiments.stages.evaluation import HeldOutPairs, correctness
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

    def test_pairs(self, seed: int) -> HeldOutPairs:
        """Seed ``seed``'s test split: its tail mask, gold margins (None without a gold reward) and conflict pairs
        (benchmark runs). Runs made before these were saved beside the data have them rebuilt from
        ``config.yaml``, as the run built them."""
        path = self.layout.seed(seed).test_pairs
        saved = json.loads(path.read_text()) if path.exists() else {}
        if not saved or ("conflict" not in saved and self.config.uses_benchmark):
            return self._rebuilt_test_pairs(seed)
        gold, conflict = saved["gold_margin"], saved.get("conflict")
        return HeldOutPairs(
            np.asarray(saved["is_tail"], dtype=bool),
            None if gold is None else np.asarray(gold, dtype=float),
            None if conflict is None else np.asarray(conflict, dtype=bool),
        )

    def _rebuilt_test_pairs(self, seed: int) -> HeldOutPairs:
        from cartrm.datasets import conflict_pairs
        from cartrm.evaluation.metrics import gold_margin_of
        from cartrm.experiments.seed_data import SeedData

        data = SeedData.prepare(self.config, seed, progress=False)
        test = data.splits["test"]
        return HeldOutPairs(
            data.tails["test"].mask, gold_margin_of(test), conflict_pairs(test) if self.config.uses_benchmark else None
        )

    def correctness(self, seed: int, method: str) -> dict[str, np.ndarray]:
        """Per test pair of seed ``seed``, whether ``method``'s saved scores order it as labelled and as the gold
        rule does (``head_accuracy``, ``tail_accuracy``, ``head_gold_accuracy``, ``tail_gold_accuracy``)."""
        scores = self.layout.seed(seed).scores(method)
        if not scores.exists():
            found = ", ".join(self.methods(seed)) or "none"
            raise CartError(f"{self.root}: seed {seed} has no test scores of '{method}' (scored: {found})")
        return correctness(scores, *self.test_pairs(seed))
