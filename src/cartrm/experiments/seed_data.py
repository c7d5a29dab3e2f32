"""One seed's data: the train / validation / test splits (the embedded benchmark drawn with the seed, or the user's
file split by it) and each split's tail, fitted on the training split."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from cartrm.data import load_preferences
from cartrm.data.tail import Embedder, LabelTail, TailSplit, memoised, parse_tail_spec
from cartrm.datasets import make_longtail_dataset
from cartrm.errors import CartError, DataError
from cartrm.experiments.run_config import RunConfig, UserSplit
from cartrm.models import RewardModel

SPLITS = ("train", "validation", "test")


@dataclass
class SeedData:
    """The splits (``train``, ``validation``, ``test``) and their tails; ``benchmark`` is the whole generated
    benchmark when the run uses it (saved with the seed), else None."""

    splits: dict[str, Any]
    tails: dict[str, TailSplit]
    benchmark: Any = None

    @classmethod
    def prepare(cls, config: RunConfig, seed: int, progress: bool) -> SeedData:
        benchmark = None
        if config.uses_benchmark:
            benchmark = make_longtail_dataset(config.benchmark.model_copy(update={"seed": seed}))
            splits = {name: benchmark.split(name) for name in SPLITS}
        else:
            dataset = load_preferences(config.data)
            strata = fitted_tail(config, dataset, progress).transform(dataset).mask  # training refits on train
            splits = user_splits(dataset, seed, strata, config.user_split)
        spec = fitted_tail(config, splits["train"], progress)
        return cls(splits, {name: spec.transform(split) for name, split in splits.items()}, benchmark)


def fitted_tail(config: RunConfig, data: Any, progress: bool) -> Any:
    spec = parse_tail_spec(config.tail_by)
    if isinstance(spec, LabelTail):
        return spec.fit(data)
    tokenizer, embedder = tail_probe(config.model, config.train.max_length, progress)
    return spec.fit(data, tokenizer=tokenizer, embedder=embedder)  # rarity: tokens; density: embeddings


@functools.lru_cache(maxsize=2)
def tail_probe(model: str, max_length: int, progress: bool) -> tuple[Any, Embedder]:
    """The base model's tokenizer (for ``rarity:``) and embeddings (for ``density:``), loaded once per process and
    memoised by text: each seed splits the same data and refits on its training split."""
    probe = RewardModel.load(model, max_length=max_length)
    return probe.tokenizer, memoised(functools.partial(probe.embed, progress=progress))


def _named_splits(dataset: Any) -> set[str]:
    """The values of the data's ``split`` column (empty without one), which must name train and test and may name
    validation: any other value, or a missing train or test, would be trained on or dropped without a word."""
    if not dataset.has_column("split"):
        return set()
    present = {str(v) for v in dataset.column("split")}
    unknown, missing = present - set(SPLITS), {"train", "test"} - present
    if unknown or missing:
        found = f"values {', '.join(sorted(unknown))} are not train, validation or test" if unknown else ""
        lacking = f"no {' or '.join(sorted(missing))} rows" if missing else ""
        raise DataError(
            f"{'; '.join(p for p in (found, lacking) if p)}: name the rows train / validation / test, or drop the "
            "column to let cart run split the data",
            file=dataset.source,
            field="split",
        )
    return present


def user_splits(dataset: Any, seed: int, tail: np.ndarray, split: UserSplit) -> dict:
    """The data's own train/validation/test when its ``split`` column has them (validation carved from train
    when only train/test exist); else a seeded split of head and tail pairs separately (:class:`UserSplit`)."""
    present = _named_splits(dataset)
    if present:
        train_split, test = dataset.split("train"), dataset.split("test")
        if "validation" in present:
            return {"train": train_split, "validation": dataset.split("validation"), "test": test}
        order = np.random.default_rng(seed).permutation(len(train_split))
        cut = max(1, int(len(order) * split.validation_share))
        return {
            "train": train_split.select(np.sort(order[cut:])),
            "validation": train_split.select(np.sort(order[:cut])),
            "test": test,
        }
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {name: [] for name in SPLITS}
    for is_tail in (False, True):
        order = rng.permutation(np.flatnonzero(tail == is_tail))
        n_test = round(len(order) * split.test_share)
        if is_tail:
            n_test = max(n_test, min(split.min_tail_test, len(order) // 2))
        n_validation = round(len(order) * split.validation_share)
        parts["test"] += order[:n_test].tolist()
        parts["validation"] += order[n_test : n_test + n_validation].tolist()
        parts["train"] += order[n_test + n_validation :].tolist()
    empty = [name for name in ("train", "test") if not parts[name]]
    if empty:
        raise CartError(
            f"{dataset.source}: test share {split.test_share} and validation share {split.validation_share} of "
            f"{len(dataset)} pairs leave the {' and '.join(empty)} split empty; change --test-share or use more data"
        )
    return {name: dataset.select(np.sort(np.asarray(rows, dtype=int))) for name, rows in parts.items()}
