"""Causal validation of circuits by activation patching on tail inputs, exact and first-order.

Patch modes set a circuit's member features, at every pooled (response) token of a tail example, to:
``zero``; ``head_mean`` (the member's mean pooled activation over head examples); ``resample`` (the member's
pooled activation on a randomly drawn head example, one donor per tail example). With mean pooling the
example's pooled activation then equals the patch value exactly.

Exact patching runs the model with the patch and measures the mean |ΔR| over the tail texts and the change in
tail pairwise accuracy. Attribution patching estimates ΔR to first order for every feature at once:
``c_j(x) = Σ_t (v_j − a_tj(x)) ∂R/∂a_tj(x)`` over pooled tokens, from one forward + one backward per batch; a
set's estimate is the sum of its members' ``c_j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from cartrm.capture.hooks import ActivationCapture, patch_response_tokens, pooling_mask
from cartrm.capture.sites import Site
from cartrm.capture.stream import ExampleSet, FeatureIndex, pooled_batches
from cartrm.models.reward_model import RewardModel, reward_forward

PATCH_MODES = ("zero", "head_mean", "resample")


@dataclass
class PatchBench:
    """Everything needed to patch any feature set on a fixed sample of tail pairs."""

    reward_model: RewardModel
    examples: ExampleSet
    features: FeatureIndex
    pairs: np.ndarray
    head_mean: np.ndarray
    donors: np.ndarray
    pooling: str = "mean"
    batch_size: int = 32
    clean_rewards: np.ndarray = field(init=False)
    contributions: dict[str, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self.row_of = {int(e): r for r, e in enumerate(self.texts)}
        self.clean_rewards = self._rewards(None)
        self.contributions = self._attribution()

    @property
    def texts(self) -> np.ndarray:
        n = len(self.examples) // 2
        return np.concatenate([self.pairs, self.pairs + n])

    @property
    def sites(self) -> Sequence[Site]:
        return self.features.sites

    def values(self, mode: str, features: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if mode == "zero":
            return np.zeros((len(rows), len(features)))
        if mode == "head_mean":
            return np.repeat(self.head_mean[features][None, :], len(rows), axis=0)
        if mode == "resample":
            return self.donors[np.ix_(rows, features)]
        raise ValueError(f"unknown patch mode '{mode}'; choose from {', '.join(PATCH_MODES)}")

    def exact(self, features: np.ndarray, mode: str) -> tuple[float, float]:
        """(mean |ΔR| over tail texts, change of tail pairwise accuracy) when ``features`` are patched."""
        patched = self.patched_rewards(features, mode)
        half = len(self.pairs)
        clean_acc = np.mean(self.clean_rewards[:half] > self.clean_rewards[half:])
        patched_acc = np.mean(patched[:half] > patched[half:])
        return float(np.abs(patched - self.clean_rewards).mean()), float(patched_acc - clean_acc)

    def patched_rewards(self, features: np.ndarray, mode: str) -> np.ndarray:
        """Rewards of the bench's texts (chosen texts, then rejected, as :attr:`clean_rewards`) with ``features``
        patched."""
        return self._rewards((np.asarray(features), mode))

    def attribution(self, features: np.ndarray, mode: str) -> float:
        return float(np.abs(self.contributions[mode][:, features].sum(axis=1)).mean())

    def _rewards(self, patch: tuple[np.ndarray, str] | None) -> np.ndarray:
        rewards = np.empty(len(self.texts))
        sites, interventions = self.sites, None
        if patch is not None:
            features, mode = patch
            by_site = self.features.by_site(features)
            sites = [s for s in self.sites if s.name in by_site]

            def interventions(indices: np.ndarray):
                rows = np.array([self.row_of[int(i)] for i in indices])
                return {
                    site: patch_response_tokens(
                        torch.as_tensor(local),
                        torch.as_tensor(self.values(mode, local + self.features.offset_of(site), rows)),
                    )
                    for site, local in by_site.items()
                }

        for batch in pooled_batches(
            self.reward_model,
            self.examples,
            sites,
            pooling=self.pooling,
            batch_size=self.batch_size,
            subset=self.texts,
            interventions=interventions,
        ):
            rewards[[self.row_of[int(i)] for i in batch.indices]] = batch.rewards
        return rewards

    def _attribution(self) -> dict[str, np.ndarray]:
        """Per-feature first-order ΔR for every mode, from one forward + backward per batch."""
        out = {mode: np.zeros((len(self.texts), self.features.size)) for mode in PATCH_MODES}
        model = self.reward_model
        with model.eval_mode(), torch.enable_grad():
            for start in range(0, len(self.texts), self.batch_size):
                rows = np.arange(start, min(start + self.batch_size, len(self.texts)))
                batch = model.collate(self.examples.encoded, self.texts[rows])
                mask = pooling_mask(batch)
                with ActivationCapture(model.model, self.sites, self.pooling, retain_token_grad=True) as capture:
                    capture.set_mask(mask)
                    reward_forward(model.model, batch).sum().backward()
                model.model.zero_grad(set_to_none=True)
                for site, offset in zip(self.sites, self.features.offsets[:-1]):
                    tokens = capture.tokens[site.name]
                    assert tokens.grad is not None  # retain_token_grad kept it through backward
                    grad, acts = tokens.grad.double(), tokens.detach().double()
                    weights = mask.to(acts.device).unsqueeze(-1).double()
                    columns = slice(int(offset), int(offset) + site.width)
                    for mode in PATCH_MODES:
                        target = torch.as_tensor(
                            self.values(mode, np.arange(columns.start, columns.stop), rows), device=acts.device
                        ).unsqueeze(1)
                        out[mode][rows, columns] = ((target - acts) * grad * weights).sum(1).cpu().numpy()
        return out


def random_feature_sets(
    features: FeatureIndex, members: np.ndarray, n_sets: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Random feature sets with the same number of features per site (hence per layer) as ``members``."""
    widths = {s.name: s.width for s in features.sites}
    per_site = {site: len(local) for site, local in features.by_site(members).items()}
    excluded = {int(m) for m in members}
    sets = []
    for _ in range(n_sets):
        chosen = []
        for site, count in per_site.items():
            start = features.offset_of(site)
            pool_ids = np.array([start + i for i in range(widths[site]) if start + i not in excluded])
            chosen.append(rng.choice(pool_ids, size=count, replace=False))
        sets.append(np.sort(np.concatenate(chosen)))
    return sets
