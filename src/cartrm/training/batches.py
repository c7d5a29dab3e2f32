"""Training batches: the dataset tokenised once, row indices turned into padded batches, and batches split into
forward passes of bounded size whose losses sum to the whole batch's."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cartrm.data.dataset import PointwiseDataset, PreferenceDataset
from cartrm.errors import CartError
from cartrm.models.reward_model import RewardModel, TokenBatch


@dataclass(frozen=True)
class TrainBatch(TokenBatch):
    """One forward pass of training examples: pairs (chosen rows stacked over rejected rows, ``margin`` per pair) or
    scored examples (``score``), their dataset rows ``index``, ``weight`` and ``is_tail`` per example. A pass of a
    batch split into several carries the whole batch's ``normaliser`` (its summed weights, as the method weighs
    them) and ``count`` of examples, so that the passes' losses sum to the whole batch's."""

    index: torch.Tensor
    weight: torch.Tensor
    is_tail: torch.Tensor
    margin: torch.Tensor | None = None
    score: torch.Tensor | None = None
    normaliser: torch.Tensor | None = None
    count: int | None = None

    @property
    def scored(self) -> bool:
        return self.score is not None

    def examples(self) -> int:
        """Examples in the whole batch (more than this pass's when the batch is split)."""
        return len(self.weight) if self.count is None else self.count


@dataclass(frozen=True)
class AugmentedBatch(TokenBatch):
    """CART's L_aug pass (eq. 10-11): the kept augmentations of a batch's tail pairs, chosen over rejected rows, with
    ``index`` their augmentation rows and the ``normaliser`` of the batch they belong to. ``with_sources``: the
    source pairs' texts follow (chosen, rejected), for the invariance form of eq. 12."""

    index: torch.Tensor
    margin: torch.Tensor
    normaliser: torch.Tensor
    with_sources: bool = False


Weigh = Callable[[TrainBatch], torch.Tensor]


class BatchBuilder:
    """Tokenises the dataset once; turns a list of row indices into a padded batch.

    Pairwise batches stack the chosen rows over the rejected rows (2B sequences); ``is_tail`` marks the
    tail pairs (all False without a tail mask).
    """

    def __init__(
        self,
        reward_model: RewardModel,
        dataset: PreferenceDataset | PointwiseDataset,
        tail_mask: np.ndarray | None = None,
        max_length: int | None = None,
    ) -> None:
        self.model = reward_model
        self.n = len(dataset)
        self.is_tail = np.zeros(self.n, dtype=bool) if tail_mask is None else np.asarray(tail_mask, dtype=bool)
        self.pairwise = isinstance(dataset, PreferenceDataset)
        self.weight = dataset.numeric_column("weight") if dataset.has_column("weight") else np.ones(self.n)
        if (self.weight < 0).any() or self.weight.sum() <= 0:
            raise CartError(f"{dataset.source}: column 'weight' must be non-negative with a positive sum")
        self.encoded = reward_model.encode(*_prompts_and_responses(reward_model, dataset), max_length)
        if isinstance(dataset, PreferenceDataset):
            self.margin = dataset.numeric_column("margin") if dataset.has_column("margin") else np.zeros(self.n)
        else:
            self.score = np.asarray(dataset.score, dtype=np.float64)

    @functools.cached_property
    def _lengths(self) -> np.ndarray:
        tokens = np.array([len(ids) for ids in self.encoded.input_ids])
        return np.maximum(tokens[: self.n], tokens[self.n :]) if self.pairwise else tokens

    def lengths(self) -> np.ndarray:
        """Tokens per example as batched: a pair pads to the longer of its two texts."""
        return self._lengths

    def chunks(
        self, indices: list[int], max_tokens: int | None, weigh: Weigh | None = None, tail_together: bool = False
    ) -> list[TrainBatch]:
        """The batch of ``indices`` as forward passes of at most ``max_tokens`` padded tokens each (at least one
        example per pass), consecutive in ``indices``; ``weigh`` (a method's ``example_weights``) gives the whole
        batch's ``normaliser`` and every pass carries it with the batch's ``count`` of examples, so that summing
        the passes' losses gives exactly the whole batch's loss. With ``tail_together`` a split batch runs its tail
        rows as one pass, whatever their length, and splits the head rows."""
        groups = [list(indices)] if not max_tokens else self._split(list(indices), max_tokens)
        if max_tokens and len(groups) > 1 and tail_together:
            tail = [i for i in indices if self.is_tail[i]]
            head = [i for i in indices if not self.is_tail[i]]
            groups = ([tail] if tail else []) + (self._split(head, max_tokens) if head else [])
        if len(groups) == 1:
            return [self(groups[0])]
        whole = self(list(indices), tokens=False)
        normaliser = (weigh(whole) if weigh else whole.weight).sum()
        return [self(group, normaliser=normaliser, count=len(indices)) for group in groups]

    def _split(self, indices: list[int], max_tokens: int) -> list[list[int]]:
        rows_per_example = 2 if self.pairwise else 1
        lengths = self.lengths()
        groups: list[list[int]] = [[]]
        widest = 0
        for i in indices:
            wider = max(widest, int(lengths[i]))
            if groups[-1] and wider * rows_per_example * (len(groups[-1]) + 1) > max_tokens:
                groups.append([])
                wider = int(lengths[i])
            groups[-1].append(i)
            widest = wider
        return groups

    def __call__(
        self,
        indices: list[int],
        *,
        tokens: bool = True,
        normaliser: torch.Tensor | None = None,
        count: int | None = None,
    ) -> TrainBatch:
        """The batch of ``indices``; without ``tokens`` its texts are left empty (the per-example values only)."""
        rows = list(indices) + [i + self.n for i in indices] if self.pairwise else list(indices)
        empty = torch.zeros((len(rows), 0), dtype=torch.long)
        text = self.model.collate(self.encoded, rows) if tokens else TokenBatch(empty, empty, empty)
        return TrainBatch(
            input_ids=text.input_ids,
            attention_mask=text.attention_mask,
            response_mask=text.response_mask,
            index=torch.tensor(indices, dtype=torch.long),
            weight=torch.tensor(self.weight[indices], dtype=torch.float32),
            is_tail=torch.tensor(self.is_tail[indices], dtype=torch.bool),
            margin=torch.tensor(self.margin[indices], dtype=torch.float32) if self.pairwise else None,
            score=None if self.pairwise else torch.tensor(self.score[indices], dtype=torch.float32),
            normaliser=normaliser,
            count=count,
        )


def fit_max_length(
    reward_model: RewardModel, dataset: PreferenceDataset | PointwiseDataset, limit: int
) -> tuple[int, int]:
    """The longest training text in tokens, up to ``limit``, and how many texts are longer than ``limit``."""
    lengths = reward_model.token_lengths(*_prompts_and_responses(reward_model, dataset))
    return min(int(lengths.max()), limit), int((lengths > limit).sum())


def _prompts_and_responses(
    reward_model: RewardModel, dataset: PreferenceDataset | PointwiseDataset
) -> tuple[list[str], list[str]]:
    """The texts as the model reads them; for pairs, every chosen text, then every rejected one."""
    if isinstance(dataset, PreferenceDataset):
        pairs = dataset.render(reward_model.tokenizer)
        return [p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs]
    rendered = dataset.render(reward_model.tokenizer)
    return [p for p, _ in rendered], [r for _, r in rendered]
