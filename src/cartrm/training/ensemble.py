"""Circuit-aware ensembling (eq. 14–15): ``R_ens(x) = Σ_k α_k R_k(x)`` with α on the probability simplex.

Members differ in seed and, for ``cart``, in the slice of the vulnerable circuits ``C_v`` their regulariser
targets (:func:`split_targets`), so their tail circuits should differ. How much they differ is measured, not
assumed: :func:`circuit_overlap` is the mean pairwise Jaccard index of the members' strongest tail neurons and
the *complementarity* is ``1 − overlap`` (0: every member leans on the same neurons, 1: no two share any).
α is fit on held-out tail data (eq. 15) by minimising the pairwise loss (or squared error for pointwise data).

An ensemble folder holds ``ensemble.json`` and ``member-0/``, ``member-1/``, … (plain HF folders); it loads with
:meth:`EnsembleRewardModel.load` or, together with plain model folders and built-in names, :func:`load_reward_model`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cartrm.circuits.discover import DiscoveryConfig, balanced_subset, discover
from cartrm.circuits.result import Circuits
from cartrm.data.dataset import PointwiseDataset
from cartrm.data.tail import TailSplit
from cartrm.errors import CartError
from cartrm.evaluation.metrics import pairwise_correct
from cartrm.io import atomic_directory, write_json_atomic
from cartrm.models.reward_model import RewardModel
from cartrm.training.config import TrainConfig
from cartrm.training.methods import get_method
from cartrm.training.trainer import train

ENSEMBLE_SCHEMA_VERSION = 1
ENSEMBLE_FILE = "ensemble.json"
SIMPLEX_TOLERANCE = 1e-6


# --- eq. 15: weights on the simplex -------------------------------------------------------------------------


def fit_simplex_weights(chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """α on the simplex minimising the mean of ``−log σ(Σ_k α_k (r_c^k − r_r^k))`` over the N pairs (eq. 15).

    ``chosen`` and ``rejected`` are (K, N): member k's rewards of pair n's chosen and rejected response.
    """
    chosen, rejected = _member_matrix(chosen, "chosen"), _member_matrix(rejected, "rejected")
    if chosen.shape != rejected.shape:
        raise CartError(f"chosen {chosen.shape} and rejected {rejected.shape} rewards differ in shape")
    margins = chosen - rejected
    return _minimise_on_simplex(lambda a: _pairwise_loss(a, margins), lambda a: _pairwise_gradient(a, margins), len(margins))


def fit_simplex_weights_pointwise(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """α on the simplex minimising the mean squared error of ``Σ_k α_k s_k(x)`` against ``targets`` (eq. 15)."""
    scores = _member_matrix(scores, "scores")
    targets = np.asarray(targets, dtype=np.float64)
    if targets.shape != scores.shape[1:]:
        raise CartError(f"{scores.shape[1]} scores per member but targets of shape {targets.shape}")
    if not np.isfinite(targets).all():
        raise CartError("targets contain NaN or infinite values")
    return _minimise_on_simplex(
        lambda a: _squared_loss(a, scores, targets), lambda a: 2.0 * scores @ (a @ scores - targets) / len(targets), len(scores)
    )


def _member_matrix(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise CartError(f"{name} must be a non-empty (members, examples) array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise CartError(f"{name} contain NaN or infinite values")
    return values


def _pairwise_loss(alpha: np.ndarray, margins: np.ndarray) -> float:
    return float(np.logaddexp(0.0, -(alpha @ margins)).mean())


def _pairwise_gradient(alpha: np.ndarray, margins: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return -(margins @ expit(-(alpha @ margins))) / margins.shape[1]


def _squared_loss(alpha: np.ndarray, scores: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean((alpha @ scores - targets) ** 2))


def _minimise_on_simplex(objective: Callable, gradient: Callable, k: int) -> np.ndarray:
    """SLSQP from the uniform point with bounds ``[0, 1]`` and ``Σ α = 1``; both objectives are convex, so a
    local minimum is global. The answer is projected onto the simplex to remove the solver's last rounding."""
    from scipy.optimize import minimize

    result = minimize(
        objective, np.full(k, 1.0 / k), jac=gradient, method="SLSQP", bounds=[(0.0, 1.0)] * k,
        constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1.0, "jac": lambda a: np.ones_like(a)}],
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    return _project_to_simplex(result.x)


def _project_to_simplex(values: np.ndarray) -> np.ndarray:
    """The Euclidean projection onto ``{α ≥ 0, Σ α = 1}`` (Duchi et al. 2008)."""
    values = np.asarray(values, dtype=np.float64)
    ordered = np.sort(values)[::-1]
    cumulative = np.cumsum(ordered) - 1.0
    last = np.flatnonzero(ordered - cumulative / np.arange(1, len(values) + 1) > 0)[-1]
    alpha = np.maximum(values - cumulative[last] / (last + 1), 0.0)
    return alpha / alpha.sum()


def _check_simplex(alpha: Sequence[float], n_members: int, where: str) -> np.ndarray:
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.shape != (n_members,):
        raise CartError(f"{where}: {alpha.size} ensemble weights for {n_members} members")
    if not np.isfinite(alpha).all() or (alpha < 0).any() or abs(alpha.sum() - 1.0) > SIMPLEX_TOLERANCE:
        raise CartError(f"{where}: ensemble weights {alpha.tolist()} are not on the simplex (non-negative, summing to 1)")
    return alpha


# --- eq. 14: the ensemble as a reward model -----------------------------------------------------------------


class EnsembleRewardModel:
    """``Σ_k α_k R_k`` with the reward-model interface that scoring and evaluation use.

    Each member scores (and renders chat data) with its own tokenizer; ``tokenizer``, ``embed`` and
    ``max_length`` are the first member's. Members with α_k = 0 are not run.
    """

    def __init__(
        self, members: Sequence[RewardModel], alpha: Sequence[float], *, method: str | None = None,
        complementarity: float | None = None, name: str = "",
    ) -> None:
        if not members:
            raise CartError("an ensemble needs at least one member")
        self.members = list(members)
        self.alpha = _check_simplex(alpha, len(self.members), "ensemble")
        self.method = method
        self.complementarity = complementarity
        self.name = name or f"ensemble({', '.join(m.name for m in self.members)})"

    @property
    def tokenizer(self) -> Any:
        return self.members[0].tokenizer

    @property
    def max_length(self) -> int:
        return self.members[0].max_length

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.members[0].embed(texts, batch_size)

    def _weighted(self) -> list[tuple[float, RewardModel]]:
        return [(float(w), m) for w, m in zip(self.alpha, self.members) if w > 0]

    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return sum(w * m.score(prompts, responses, batch_size, progress) for w, m in self._weighted())  # eq. 14

    def score_pairs(self, dataset: Any, batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        chosen, rejected = 0.0, 0.0
        for w, member in self._weighted():
            c, r = member.score_pairs(dataset, batch_size, progress)
            chosen, rejected = chosen + w * c, rejected + w * r  # eq. 14
        return chosen, rejected

    def fingerprint(self) -> str:
        """SHA-256 of the members' fingerprints and α."""
        content = {"members": [m.fingerprint() for m in self.members], "alpha": self.alpha.tolist()}
        return hashlib.sha256(json.dumps(content).encode()).hexdigest()

    def save(self, path: str | Path) -> None:
        """Write ``ensemble.json`` and one plain HF folder per member, all at once (atomic rename)."""
        names = [f"member-{i}" for i in range(len(self.members))]
        manifest = {
            "schema_version": ENSEMBLE_SCHEMA_VERSION, "alpha": self.alpha.tolist(), "members": names,
            "method": self.method, "complementarity": self.complementarity,
        }
        with atomic_directory(path) as tmp:
            for name, member in zip(names, self.members):
                member.save_into(tmp / name)
            (tmp / ENSEMBLE_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, *, max_length: int | None = None) -> EnsembleRewardModel:
        path = Path(path)
        manifest = _read_manifest(path)
        members = [RewardModel.load(path / name, max_length=max_length) for name in manifest["members"]]
        return cls(members, manifest["alpha"], method=manifest.get("method"), complementarity=manifest.get("complementarity"), name=str(path))


def _read_manifest(path: Path) -> dict:
    file = path / ENSEMBLE_FILE
    if not file.is_file():
        raise CartError(f"{path}: no {ENSEMBLE_FILE}; not an ensemble folder")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CartError(f"{file}: cannot read the ensemble manifest ({exc})") from exc
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != ENSEMBLE_SCHEMA_VERSION:
        raise CartError(f"{file}: ensemble schema version {version!r}, this cartrm reads {ENSEMBLE_SCHEMA_VERSION}")
    members = manifest.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(m, str) and m and Path(m).name == m for m in members):
        raise CartError(f"{file}: 'members' must be a non-empty list of member folder names")
    for name in members:
        if not (path / name).is_dir():
            raise CartError(f"{file}: member folder '{name}' is missing")
    alpha = manifest.get("alpha")
    if not isinstance(alpha, list) or not all(isinstance(a, (int, float)) for a in alpha):
        raise CartError(f"{file}: 'alpha' must be a list of numbers")
    _check_simplex(alpha, len(members), str(file))
    return manifest


def is_ensemble_folder(path: str | Path) -> bool:
    return (Path(path) / ENSEMBLE_FILE).is_file()


def load_reward_model(name_or_path: str | Path, max_length: int | None = None, seed: int = 0) -> RewardModel | EnsembleRewardModel:
    """An :class:`EnsembleRewardModel` for an ensemble folder, else :meth:`RewardModel.load`."""
    if is_ensemble_folder(name_or_path):
        return EnsembleRewardModel.load(name_or_path, max_length=max_length)
    return RewardModel.load(name_or_path, max_length=max_length, seed=seed)


# --- complementarity and targets ----------------------------------------------------------------------------


def circuit_overlap(neuron_sets: Sequence[set[int]]) -> float:
    """Mean pairwise Jaccard index ``|A ∩ B| / |A ∪ B|`` of the members' neuron sets (two empty sets count 1).

    Complementarity is ``1 − overlap``.
    """
    if len(neuron_sets) < 2:
        raise CartError(f"circuit overlap needs at least two neuron sets, got {len(neuron_sets)}")
    return float(np.mean([len(a & b) / len(a | b) if a | b else 1.0 for a, b in combinations(map(set, neuron_sets), 2)]))


def top_tail_neurons(circuits: Circuits, k: int) -> set[int]:
    """Global feature ids of the ``k`` neurons with the largest |tail-vs-head effect size|."""
    if k < 1:
        raise CartError(f"top_tail_neurons needs k >= 1, got {k}")
    ranked = sorted(circuits.neurons, key=lambda n: (-abs(n.effect_size), n.feature))
    return {n.feature for n in ranked[:k]}


def split_targets(target_ids: Sequence[str], k: int) -> list[tuple[str, ...]]:
    """Give member i the targets ``target_ids[i::k]`` (round-robin), so members regularise different slices of
    ``C_v`` and together cover all of it. With fewer targets than members, member i targets
    ``target_ids[i mod len(target_ids)]``: every member gets one, some share it (they still differ in seed)."""
    if k < 1:
        raise CartError(f"cannot split targets among {k} members")
    if not target_ids:
        raise CartError("no target circuits to split among the ensemble members")
    if len(target_ids) < k:
        return [(target_ids[i % len(target_ids)],) for i in range(k)]
    return [tuple(target_ids[i::k]) for i in range(k)]


# --- training -----------------------------------------------------------------------------------------------


class EnsembleConfig(BaseModel):
    """An ensemble run. The ``ensemble-mean`` baseline is ``method="bt", weighting="uniform"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    members: int = Field(3, ge=2, description="K")
    method: str = Field("cart", description="training method of every member (any registered method)")
    weighting: Literal["fit", "uniform"] = Field("fit", description="fit: α by eq. 15 on the validation tail; uniform: 1/K")
    seed: int = Field(0, description="member i trains with seed + i")
    train: TrainConfig = Field(default_factory=TrainConfig)
    top_neurons: int = Field(64, ge=2, description="strongest tail neurons per member compared by circuit_overlap")
    discovery_pairs: int = Field(256, ge=2, description="training pairs used to discover each member's tail neurons")


class EnsembleResult(BaseModel):
    """What ``train_ensemble`` writes to ``ensemble_result.json``.

    Validation-tail accuracies and losses are measured on the pairs α was fit on, so the ensemble's are
    in-sample (optimistic); evaluate the saved ensemble on a test split for an unbiased number. Accuracies
    are pairwise and ``None`` for pointwise validation data; losses are the eq. 15 objective.
    """

    model_config = ConfigDict(extra="forbid")

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

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | Path) -> EnsembleResult:
        return cls.model_validate(json.loads(Path(path).read_text()))


def train_ensemble(
    base_model: str,
    dataset: Any,
    tail_mask: np.ndarray,
    validation: Any,
    validation_tail_mask: np.ndarray,
    config: EnsembleConfig,
    output_dir: str | Path,
    *,
    targets: Sequence[str] | None = None,
    progress: bool = True,
) -> EnsembleResult:
    """Train K members from ``base_model``, measure their circuit overlap, fit α and save the ensemble.

    Layout of ``output_dir``: ``members/member-i`` (training output folders), ``circuits/member-i.json``
    (each member's cheap tail discovery, pairwise data only), ``ensemble/`` (the ensemble folder) and
    ``ensemble_result.json``. ``targets`` (circuit ids of ``C_v``) are split among the members for ``cart``
    and ignored by other methods.
    """
    started = time.time()
    get_method(config.method, config.train)  # an unknown method fails before any training
    tail_mask = _mask_for(tail_mask, dataset, "tail_mask")
    validation_tail = validation.select(np.flatnonzero(_mask_for(validation_tail_mask, validation, "validation_tail_mask")))
    if len(validation_tail) == 0:
        raise CartError("the validation data has no tail examples to fit and measure the ensemble on (eq. 15)")
    slices = split_targets(list(targets), config.members) if targets and config.method == "cart" else None
    out = Path(output_dir)
    members = [_train_member(base_model, dataset, tail_mask, config, i, slices[i] if slices else None, out, progress) for i in range(config.members)]
    overlap = None if isinstance(dataset, PointwiseDataset) else circuit_overlap(_tail_neuron_sets(members, dataset, tail_mask, config, out, progress))
    tail_scores = _TailScores.of(members, validation_tail)
    alpha = tail_scores.fit() if config.weighting == "fit" else np.full(config.members, 1.0 / config.members)
    complementarity = None if overlap is None else 1.0 - overlap
    ensemble = EnsembleRewardModel(members, alpha, method=config.method, complementarity=complementarity, name=str(out / "ensemble"))
    ensemble.save(out / "ensemble")
    one_hot = np.eye(config.members)
    result = EnsembleResult(
        output_dir=str(out), ensemble_dir=str(out / "ensemble"), method=config.method, weighting=config.weighting,
        alpha=alpha.tolist(), member_dirs=[str(out / "members" / f"member-{i}") for i in range(config.members)],
        target_circuits=[list(s) for s in slices] if slices else None, overlap=overlap, complementarity=complementarity,
        n_validation_tail=len(validation_tail),
        member_tail_accuracy=[tail_scores.accuracy(e) for e in one_hot] if tail_scores.pairwise else None,
        ensemble_tail_accuracy=tail_scores.accuracy(alpha) if tail_scores.pairwise else None,
        member_tail_loss=[tail_scores.loss(e) for e in one_hot], ensemble_tail_loss=tail_scores.loss(alpha),
        seconds=time.time() - started,
    )
    result.save(out / "ensemble_result.json")
    return result


def _mask_for(mask: np.ndarray, dataset: Any, name: str) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (len(dataset),):
        raise CartError(f"{name} has {mask.size} entries for {len(dataset)} examples")
    return mask


def member_train_config(config: EnsembleConfig, i: int, targets: tuple[str, ...] | None = None) -> TrainConfig:
    """Member i's training configuration: ``config.train`` with seed ``config.seed + i``, the ensemble's method
    and, when given, ``targets`` as the circuits its CART regulariser targets."""
    update: dict[str, Any] = {"seed": config.seed + i, "method": config.method}
    if targets is not None:
        update["cart"] = config.train.cart.model_copy(update={"target_circuits": targets})
    return config.train.model_copy(update=update)


def _train_member(base_model: str, dataset: Any, tail_mask: np.ndarray, config: EnsembleConfig, i: int,
                  targets: tuple[str, ...] | None, out: Path, progress: bool) -> RewardModel:
    member_config = member_train_config(config, i, targets)
    model = RewardModel.load(base_model, max_length=config.train.max_length, seed=member_config.seed)
    train(model, dataset, member_config, out / "members" / f"member-{i}", tail_mask=tail_mask, progress=progress)
    return model


def _tail_neuron_sets(members: list[RewardModel], dataset: Any, tail_mask: np.ndarray, config: EnsembleConfig,
                      out: Path, progress: bool) -> list[set[int]]:
    """Each member's strongest tail neurons from a cheap discovery (no patching, no permutations) on the same
    training subset, saved to ``circuits/member-i.json``."""
    subset = balanced_subset(tail_mask, config.discovery_pairs, config.seed)
    tail = TailSplit(mask=tail_mask[subset], description=f"training tail ({tail_mask[subset].sum()} of {len(subset)} pairs)")
    discovery = DiscoveryConfig(top_k=config.top_neurons, patch_pairs=0, n_permutations=0, coherence_null_shuffles=0, seed=config.seed)
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
            return _pairwise_loss(alpha, self.first - self.second)
        return _squared_loss(alpha, self.first, self.second)

    def accuracy(self, alpha: np.ndarray) -> float:
        return float(pairwise_correct(alpha @ self.first, alpha @ self.second).mean())
