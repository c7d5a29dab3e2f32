"""What the tail-separability dial does to the data, read off the data alone: per dial setting, how well a
word-count model fitted on the gold order ranks the tail's conflict pairs (the best any word-level rule can do),
and the same model told the prompt's domain (the interaction a tail-specific computation has to learn)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cartrm.datasets import BenchmarkConfig, conflict_pairs, make_longtail_dataset
from cartrm.evaluation.anchor import BagOfWordsReward
from cartrm.evaluation.metrics import gold_correct

CEILING_REGULARISATION = 100.0  # weak: the ceiling models are fitted on plenty of noise-free (gold) pairs


@dataclass(frozen=True)
class SeparabilityRow:
    """One dial setting: the test split's conflict pairs and the two gold-fitted models' gold accuracy."""

    separability: float
    tail_pairs: int
    conflict_pairs: int
    words: dict[str, float]  # head, tail, conflict: the word-count model
    words_by_domain: dict[str, float]  # the same, one model per prompt domain


def _accuracies(model: BagOfWordsReward, train, test, groups: dict[str, np.ndarray]) -> dict[str, float]:
    chosen, rejected = model.fit(train).score_pairs(test)
    right = gold_correct(chosen - rejected, test.numeric_column("gold_chosen") - test.numeric_column("gold_rejected"))
    return {name: float(right[mask].mean()) for name, mask in groups.items()}


def separability_table(config: BenchmarkConfig, values: Sequence[float]) -> list[SeparabilityRow]:
    """The benchmark ``config`` at each dial value in ``values``, the ceiling models fitted on its training
    split and read on its test split."""
    rows = []
    for value in values:
        data = make_longtail_dataset(config.model_copy(update={"tail_separability": value}))
        train, test = data.split("train"), data.split("test")
        tail = np.asarray(test.column("is_tail"), dtype=bool)
        conflict = conflict_pairs(test)
        assert conflict is not None  # the benchmark's own data always has them
        groups = {"head": ~tail, "tail": tail, "conflict": conflict}
        rows.append(
            SeparabilityRow(
                separability=value,
                tail_pairs=int(tail.sum()),
                conflict_pairs=int(conflict.sum()),
                words=_accuracies(BagOfWordsReward("gold", regularisation=CEILING_REGULARISATION), train, test, groups),
                words_by_domain=_accuracies(
                    BagOfWordsReward("gold", per_group="domain", regularisation=CEILING_REGULARISATION),
                    train,
                    test,
                    groups,
                ),
            )
        )
    return rows


def separability_text(rows: Sequence[SeparabilityRow]) -> str:
    """The rows as a plain-text table, gold accuracy in percent."""
    lines = ["S     tail  conflict  words: head  tail  conflict  words by domain: head  tail  conflict"]
    for r in rows:
        w, d = r.words, r.words_by_domain
        lines.append(
            f"{r.separability:<5} {r.tail_pairs:<5} {r.conflict_pairs:<9} "
            f"{100 * w['head']:11.1f} {100 * w['tail']:5.1f} {100 * w['conflict']:9.1f} "
            f"{100 * d['head']:21.1f} {100 * d['tail']:5.1f} {100 * d['conflict']:9.1f}"
        )
    return "\n".join(lines)
