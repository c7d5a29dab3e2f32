"""CART's glue to circuit-guided augmentation (eq. 10-11): making the augmented pairs when targets are set,
encoding them, and the L_aug pass of a batch's tail pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cartrm.capture.stream import FeatureIndex
from cartrm.circuits.result import Circuits
from cartrm.training.batches import AugmentedBatch
from cartrm.training.config import CartConfig, TrainConfig
from cartrm.training.methods.base import TrainingContext
from cartrm.training.methods.cart.objective import TargetCircuit

AUG_CLUSTER_SIZE, AUG_MAX_CLUSTERS = 20, 10  # per_group replacement words on data without a group column


class Augmentation:
    """The kept augmentations of the tail pairs for the current targets C_v (a part of CART's method)."""

    config: TrainConfig
    settings: CartConfig
    reward_model: Any
    dataset: Any
    context: TrainingContext
    augmented: list[Any]
    aug_rows: dict[int, list[int]]
    aug_encoded: Any
    with_sources: bool  # the invariance form of eq. 12: L_aug's pass also holds the source pairs

    def _use_augmented(self, augmented: list[Any]) -> None:
        """Index and encode ``augmented`` (with their sources' texts after them for the invariance form)."""
        self.augmented = augmented
        self.aug_rows = {}
        for row, pair in enumerate(augmented):
            self.aug_rows.setdefault(pair.source, []).append(row)
        if augmented:
            prompts = [a.prompt for a in augmented] * 2
            responses = [a.chosen for a in augmented] + [a.rejected for a in augmented]
            if self.with_sources:
                rendered = self.dataset.render(self.reward_model.tokenizer)
                sources = [rendered[a.source] for a in augmented]
                prompts += [p.prompt for p in sources] * 2
                responses += [p.chosen for p in sources] + [p.rejected for p in sources]
            self.aug_encoded = self.reward_model.encode(prompts, responses)

    def _augmentation_batch(self, tail_indices: torch.Tensor, normaliser: torch.Tensor) -> AugmentedBatch | None:
        """The kept augmentations (eq. 10) of these tail pairs as one pass, or None when they have none."""
        if not (self.settings.augmentation and self.augmented):
            return None
        rows = [r for s in tail_indices.tolist() for r in self.aug_rows.get(int(s), [])]
        if not rows:
            return None
        n = len(self.augmented)
        sides = 4 if self.with_sources else 2  # augmented chosen, rejected (and their sources' chosen, rejected)
        text = self.reward_model.collate(self.aug_encoded, [r + side * n for side in range(sides) for r in rows])
        return AugmentedBatch(
            input_ids=text.input_ids,
            attention_mask=text.attention_mask,
            response_mask=text.response_mask,
            index=torch.tensor(rows),
            margin=torch.zeros(len(rows)),
            normaliser=normaliser,
            with_sources=self.with_sources,
        )

    def _augment(self, circuits: Circuits, targets: list[TargetCircuit], features: FeatureIndex) -> list[Any]:
        from cartrm.training.augment import LMRewriter, augment_tail_pairs

        cart = self.settings
        rewriter = LMRewriter(cart.generator, seed=self.config.seed) if cart.generator else None
        return augment_tail_pairs(
            self.reward_model,
            self.dataset,
            self.context.tail_mask,
            [t.members for t in targets],
            features,
            circuits.config.pooling,
            n_candidates=cart.aug_candidates,
            keep=cart.aug_keep,
            seed=self.config.seed,
            rewriter=rewriter,
            transforms=cart.aug_transforms,
            groups=self._augmentation_groups() if cart.aug_vocabulary == "per_group" else None,
            selection=cart.aug_selection,
        )

    def _augmentation_groups(self) -> np.ndarray:
        """Each pair's group for per_group replacement words: the ``aug_group_column`` value where the data has
        that column (the benchmark's domain), else the k-means cluster of the tail pair's embedding."""
        from cartrm.vulnerability.metrics import semantic_groups

        column = self.settings.aug_group_column
        if self.dataset.has_column(column):
            return np.array([str(v) for v in self.dataset.column(column)], dtype=object)
        tail = np.flatnonzero(self.context.tail_mask)
        pairs = self.dataset.render(self.reward_model.tokenizer)
        embeddings = self.reward_model.embed([pairs[i].prompt + pairs[i].chosen for i in tail])
        groups = np.full(len(pairs), "head", dtype=object)
        clusters = semantic_groups(embeddings, AUG_CLUSTER_SIZE, self.config.seed, max_clusters=AUG_MAX_CLUSTERS)
        groups[tail] = [f"cluster-{c}" for c in clusters]
        return groups


def read_augmented(path: Path) -> list[Any]:
    from cartrm.training.augment import AugmentedPair

    return [AugmentedPair(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
