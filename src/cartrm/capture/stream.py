"""Streaming passes over a dataset: pooled activations of all sites, one batch at a time.

Every pair gives two examples (prompt + chosen, prompt + rejected), both carrying the pair's tail flag.
Batches are formed in order of token length (less padding); each batch reports the example indices it
holds, so consumers can map results back. Nothing here keeps per-example activations: memory depends on
the batch size and the number of features, not on the number of examples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cartrm.capture.hooks import ActivationCapture, Intervention, pooling_mask
from cartrm.capture.sites import Site
from cartrm.models.reward_model import EncodedTexts, RewardModel, reward_forward


@dataclass(frozen=True)
class FeatureIndex:
    """Maps the concatenated feature axis (all sites side by side) to (site, index within site)."""

    sites: tuple[Site, ...]

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([s.width for s in self.sites])])

    @property
    def size(self) -> int:
        return int(self.offsets[-1])

    def offset_of(self, site_name: str) -> int:
        """Position of a site's first feature on the concatenated axis."""
        names = [s.name for s in self.sites]
        return int(self.offsets[names.index(site_name)])

    def locate(self, feature: int) -> tuple[Site, int]:
        position = int(np.searchsorted(self.offsets, feature, side="right") - 1)
        return self.sites[position], int(feature - self.offsets[position])

    def layers(self) -> np.ndarray:
        return np.concatenate([np.full(s.width, s.layer) for s in self.sites])

    def by_site(self, features: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Group global feature ids into per-site local indices."""
        grouped: dict[str, list[int]] = {}
        for feature in features:
            site, local = self.locate(int(feature))
            grouped.setdefault(site.name, []).append(local)
        return {name: np.asarray(indices) for name, indices in grouped.items()}


@dataclass(frozen=True)
class ExampleSet:
    """The texts a capture pass reads: two per pair, with the pair's index and tail flag."""

    encoded: EncodedTexts
    pair: np.ndarray
    is_chosen: np.ndarray
    is_tail: np.ndarray

    @classmethod
    def from_pairs(cls, reward_model: RewardModel, dataset, tail_mask: np.ndarray) -> ExampleSet:
        pairs = dataset.render(reward_model.tokenizer)
        n = len(pairs)
        prompts = [p.prompt for p in pairs]
        encoded = reward_model.encode(prompts * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs])
        index = np.arange(n)
        return cls(
            encoded, np.concatenate([index, index]), np.repeat([True, False], n), np.concatenate([tail_mask, tail_mask])
        )

    def __len__(self) -> int:
        return len(self.encoded)


@dataclass(frozen=True)
class PooledBatch:
    indices: np.ndarray
    activations: np.ndarray
    rewards: np.ndarray


def pooled_batches(
    reward_model: RewardModel,
    examples: ExampleSet,
    sites: Sequence[Site],
    *,
    pooling: str = "mean",
    batch_size: int = 32,
    subset: np.ndarray | None = None,
    interventions: Callable[[np.ndarray], dict[str, Intervention]] | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> Iterator[PooledBatch]:
    """Yield pooled activations (B, total width) and rewards for ``examples`` (or ``subset`` of them).

    ``interventions`` maps the batch's example indices to per-site write hooks (for patching).
    """
    chosen = np.arange(len(examples)) if subset is None else np.asarray(subset)
    order = chosen[np.argsort([len(examples.encoded.input_ids[i]) for i in chosen], kind="stable")]
    starts = range(0, len(order), batch_size)
    with reward_model.eval_mode(), torch.inference_mode():
        for start in progress(starts) if progress else starts:
            indices = order[start : start + batch_size]
            batch = reward_model.collate(examples.encoded, indices)
            writes = interventions(indices) if interventions else None
            with ActivationCapture(reward_model.model, sites, pooling, interventions=writes) as capture:
                capture.set_mask(pooling_mask(batch))
                rewards = reward_forward(reward_model.model, batch)
            activations = torch.cat([capture.pooled[s.name] for s in sites], dim=1)
            yield PooledBatch(indices, activations.double().cpu().numpy(), rewards.double().cpu().numpy())
