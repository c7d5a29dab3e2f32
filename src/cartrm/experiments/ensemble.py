"""Training a circuit-aware ensemble (eq. 14–15): ``R_ens(x) = Σ_k α_k R_k(x)`` with α on the probability simplex.

Members differ in seed and, for ``cart``, in the slice of the vulnerable circuits ``C_v`` their regulariser
targets (:func:`split_targets`), so their tail circuits should differ. How much they differ is measured, not
assumed: :func:`circuit_overlap` is the mean pairwise Jaccard index of the members' strongest tail neurons and
the *complementarity* is ``1 − overlap`` (0: every member leans on the same neurons, 1: no two share any).
α is fit on held-out tail data (eq. 15) by minimising the pairwise loss (or squared error for pointwise data).

An ensemble folder holds ``ensemble.json`` and ``member-0/``, ``member-1/``, … (plain HF folders); it loads with
:meth:`EnsembleRewardModel.load` or, together with plain model folders and built-in names, :func:`load_reward_model`.
"""

from __future__ import annotations

import functools
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cartrm.circuits.compare import circuit_overlap, top_tail_neurons
from cartrm.circuits.discover import DiscoveryConfig, balanced_subset, discover
from cartrm.circuits.result import Circuits
from cartrm.data.dataset import PointwiseDataset
from cartrm.data.tail import TailSplit
from cartrm.errors import CartError
from cartrm.evaluation.metrics import pairwise_correct
from cartrm.experiments.config import EnsembleConfig
from cartrm.io import Artifact
from cartrm.models.ensemble import ENSEMBLE_SCHEMA_VERSION, EnsembleRewardModel
from cartrm.models.reward_model import RewardModel
from cartrm.training.checkpoints import checkpoints
from cartrm.training.config import TrainConfig
from cartrm.training.ensemble import (
    ensemble_pairwise_loss,
    ensemble_squared_loss,
    fit_simplex_weights,
    fit_simplex_weights_pointwise,
    split_targets,
)
from cartrm.training.methods import get_method
from cartrm.training.trainer import train


class EnsembleResult(Artifact):
    """What ``train_ensemble`` writes to ``ensemble_result.json``.

    Validation-tail accuracies and losses are measured on the pairs α was fit on, so the ensemble's are
    in-sample (optimistic); evaluate the saved ensemble on a test split for an unbiased number. Accuracies
    are pairwise and ``None`` for pointwise validation data; losses are the eq. 15 objective.
    """

    kind = "ensemble result"

    schema_version: int = ENSEMBLE_SCHEMA_VERSION
    output_dir: str
    ensemble_dir: str
    method: str
    weighting: str
    alpha: list[float]
    member_dirs: list[str]
    target_circuits: list[list[str]] | None
    overlap: float | None
    complementarity: float | None
    n_validation_tail: int
    member_tail_accuracy: list[float] | None
    ensemble_tail_accuracy: float | None
    member_tail_loss: list[float]
    ensemble_tail_loss: float
    seconds: float


def train_ensemble(
    base_model: str,
    dataset: Any,
    tail: TailSplit,
    validation: Any,
    validation_tail: TailSplit,
    config: EnsembleConfig,
    output_dir: str | Path,
    *,
    circuits: Circuits | None = None,
    targets: Sequence[str] | None = None,
    trained: Mapping[int, str | Path] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> EnsembleResult:
    """Train K members from ``base_model``, measure their circuit overlap, fit α and save the ensemble.

    Layout of ``output_dir``: ``members/member-i`` (training output folders), ``circuits/member-i.json``
    (each member's cheap tail discovery, pairwise data only), ``ensemble/`` (the ensemble folder) and
    ``ensemble_result.json``. ``targets`` (circuit ids of ``C_v`` among ``circuits``) are split among the members
    for ``cart``; other methods ignore both. ``trained`` maps a member's index to a folder where a model was
    already trained from ``base_model`` on ``dataset`` with exactly that member's settings
    (:func:`member_train_config`; e.g. a run's bt model is ``ensemble-mean``'s member 0): it is copied, not
    retrained. ``overwrite`` replaces members an earlier run left in ``output_dir``; ``resume`` keeps the members an
    earlier run of the same settings finished and continues an interrupted one from its last checkpoint.
    """
    started = time.time()
    get_method(config.method, config.train)  # an unknown method fails before any training
    tail_mask = _mask_for(tail, dataset, "the tail split")
    validation_tail_pairs = validation.select(
        np.flatnonzero(_mask_for(validation_tail, validation, "the validation tail split"))
    )
    if len(validation_tail_pairs) == 0:
        raise CartError("the validation data has no tail examples to fit and measure the ensemble on (eq. 15)")
    slices = split_targets(list(targets), config.members) if targets and config.method == "cart" else None
    out = Path(output_dir)
    trained = trained or {}
    member = functools.partial(_train_member, base_model, dataset, tail, config, circuits=circuits, out=out)
    members = [
        _copied_member(Path(trained[i]), out / "members" / f"member-{i}", overwrite or resume)
        if i in trained
        else member(i, slices[i] if slices else None, overwrite_or_resume=(overwrite, resume), progress=progress)
        for i in range(config.members)
    ]
    overlap = (
        None
        if isinstance(dataset, PointwiseDataset)
        else circuit_overlap(_tail_neuron_sets(members, dataset, tail_mask, config, out, progress))
    )
    tail_scores = _TailScores.of(members, validation_tail_pairs)
    weighting = _weighting(config, len(validation_tail_pairs))
    alpha = tail_scores.fit() if weighting == "fit" else np.full(config.members, 1.0 / config.members)
    complementarity = None if overlap is None else 1.0 - overlap
    ensemble = EnsembleRewardModel(
        members, alpha, method=config.method, complementarity=complementarity, name=str(out / "ensemble")
    )
    ensemble.save(out / "ensemble")
    one_hot = np.eye(config.members)
    result = EnsembleResult(
        output_dir=str(out),
        ensemble_dir=str(out / "ensemble"),
        method=config.method,
        weighting=weighting,
        alpha=alpha.tolist(),
        member_dirs=[str(out / "members" / f"member-{i}") for i in range(config.members)],
        target_circuits=[list(s) for s in slices] if slices else None,
        overlap=overlap,
        complementarity=complementarity,
        n_validation_tail=len(validation_tail_pairs),
        member_tail_accuracy=[tail_scores.accuracy(e) for e in one_hot] if tail_scores.pairwise else None,
        ensemble_tail_accuracy=tail_scores.accuracy(alpha) if tail_scores.pairwise else None,
        member_tail_loss=[tail_scores.loss(e) for e in one_hot],
        ensemble_tail_loss=tail_scores.loss(alpha),
        seconds=time.time() - started,
    )
    result.save(out / "ensemble_result.json")
    return result


def _weighting(config: EnsembleConfig, n_validation_tail: int) -> str:
    """The weighting used: ``fit`` only when the validation tail is large enough to fit α on."""
    if config.weighting == "fit" and n_validation_tail < config.min_tail_to_fit:
        warnings.warn(
            f"only {n_validation_tail} validation tail examples (fewer than min_tail_to_fit = "
            f"{config.min_tail_to_fit}): the ensemble uses uniform weights instead of fitting α",
            stacklevel=3,
        )
        return "uniform"
    return config.weighting


def _mask_for(split: TailSplit, dataset: Any, name: str) -> np.ndarray:
    mask = np.asarray(split.mask, dtype=bool)
    if mask.shape != (len(dataset),):
        raise CartError(f"{name} has {mask.size} entries for {len(dataset)} examples")
    return mask


def member_train_config(config: EnsembleConfig, i: int, targets: tuple[str, ...] | None = None) -> TrainConfig:
    """Member i's training configuration: ``config.train`` with seed ``config.seed + i``, the ensemble's method
    and, when given, ``targets`` as the circuits its CART regulariser targets."""
    member = config.train.model_copy(update={"seed": config.seed + i, "method": config.method})
    return member if targets is None else member.with_settings("cart", target_circuits=targets)


def _copied_member(source: Path, target: Path, overwrite: bool) -> RewardModel:
    """A member trained elsewhere, copied with its training record (files whose names start with a dot, such as
    a pipeline's stage marker, stay behind)."""
    if target.exists() and not overwrite:
        raise CartError(f"{target}: the folder is not empty; overwrite=True replaces it")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".*", "validation.json"))
    return RewardModel.load(target)


def _train_member(
    base_model: str,
    dataset: Any,
    tail: TailSplit,
    config: EnsembleConfig,
    i: int,
    targets: tuple[str, ...] | None,
    circuits: Circuits | None,
    out: Path,
    overwrite_or_resume: tuple[bool, bool],
    progress: bool,
) -> RewardModel:
    """Member i trained into ``members/member-i``; resuming, a member with a checkpoint continues (or, finished, is
    kept) and one killed before its first checkpoint starts over."""
    overwrite, resume = overwrite_or_resume
    member_config = member_train_config(config, i, targets)
    folder = out / "members" / f"member-{i}"
    resumes = resume and bool(checkpoints(folder))
    if resume and not resumes:
        shutil.rmtree(folder, ignore_errors=True)
    model = RewardModel.load(base_model, max_length=config.train.max_length, seed=member_config.seed)
    train(
        model,
        dataset,
        member_config,
        folder,
        tail=tail,
        circuits=circuits if config.method == "cart" else None,
        resume=resumes,
        overwrite=overwrite,
        progress=progress,
    )
    return model


def _tail_neuron_sets(
    members: list[RewardModel], dataset: Any, tail_mask: np.ndarray, config: EnsembleConfig, out: Path, progress: bool
) -> list[set[int]]:
    """Each member's strongest tail neurons from a cheap discovery (no patching, no permutations) on the same
    training subset, saved to ``circuits/member-i.json``."""
    subset = balanced_subset(tail_mask, config.overlap_pairs, config.seed)
    tail = TailSplit(
        mask=tail_mask[subset], description=f"training tail ({tail_mask[subset].sum()} of {len(subset)} pairs)"
    )
    discovery = DiscoveryConfig(
        top_k=config.top_neurons, patch_pairs=0, n_permutations=0, coherence_null_shuffles=0, seed=config.seed
    )
    sets = []
    for i, member in enumerate(members):
        circuits = discover(member, dataset.select(subset), tail, discovery, progress=progress)
        circuits.save(out / "circuits" / f"member-{i}.json")
        sets.append(top_tail_neurons(circuits, config.top_neurons))
    return sets


@dataclass
class _TailScores:
    """The members' rewards on the validation tail in the form eq. 15 uses: pairwise ``first`` = chosen and
    ``second`` = rejected rewards, both (K, N); pointwise ``first`` = scores (K, N) and ``second`` = targets (N,)."""

    first: np.ndarray
    second: np.ndarray
    pairwise: bool

    @classmethod
    def of(cls, members: list[RewardModel], data: Any) -> _TailScores:
        if isinstance(data, PointwiseDataset):
            rendered = [data.render(m.tokenizer) for m in members]
            scores = [m.score([p for p, _ in r], [x for _, x in r]) for m, r in zip(members, rendered)]
            return cls(np.stack(scores), np.asarray(data.score, dtype=np.float64), pairwise=False)
        chosen, rejected = zip(*(m.score_pairs(data) for m in members))
        return cls(np.stack(chosen), np.stack(rejected), pairwise=True)

    def fit(self) -> np.ndarray:
        if self.pairwise:
            return fit_simplex_weights(self.first, self.second)
        return fit_simplex_weights_pointwise(self.first, self.second)

    def loss(self, alpha: np.ndarray) -> float:
        if self.pairwise:
            return ensemble_pairwise_loss(alpha, self.first - self.second)
        return ensemble_squared_loss(alpha, self.first, self.second)

    def accuracy(self, alpha: np.ndarray) -> float:
        return float(pairwise_correct(alpha @ self.first, alpha @ self.second).mean())
