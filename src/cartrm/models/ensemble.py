"""Ensembles of reward models as one reward model (eq. 14): ``R_ens(x) = Σ_k α_k R_k(x)``, α on the simplex.

An ensemble folder holds ``ensemble.json`` and ``member-0/``, ``member-1/``, … (plain HF folders); it loads with
:meth:`EnsembleRewardModel.load` or, together with plain model folders and built-in names, :func:`load_reward_model`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cartrm.errors import CartError
from cartrm.io import atomic_directory
from cartrm.models.reward_model import RewardModel

ENSEMBLE_SCHEMA_VERSION = 1
ENSEMBLE_FILE = "ensemble.json"
SIMPLEX_TOLERANCE = 1e-6


def check_simplex(alpha: Sequence[float] | np.ndarray, n_members: int, where: str) -> np.ndarray:
    """``alpha`` as an array, refused unless it has one non-negative weight per member summing to 1."""
    weights = np.asarray(alpha, dtype=np.float64)
    if weights.shape != (n_members,):
        raise CartError(f"{where}: {weights.size} ensemble weights for {n_members} members")
    if not np.isfinite(weights).all() or (weights < 0).any() or abs(weights.sum() - 1.0) > SIMPLEX_TOLERANCE:
        raise CartError(
            f"{where}: ensemble weights {weights.tolist()} are not on the simplex (non-negative, summing to 1)"
        )
    return weights


# --- eq. 14: the ensemble as a reward model -----------------------------------------------------------------


class EnsembleRewardModel:
    """``Σ_k α_k R_k`` with the reward-model interface that scoring and evaluation use.

    Each member scores (and renders chat data) with its own tokenizer; ``tokenizer``, ``embed`` and
    ``max_length`` are the first member's. Members with α_k = 0 are not run.
    """

    def __init__(
        self,
        members: Sequence[RewardModel],
        alpha: Sequence[float] | np.ndarray,
        *,
        method: str | None = None,
        complementarity: float | None = None,
        name: str = "",
    ) -> None:
        if not members:
            raise CartError("an ensemble needs at least one member")
        self.members = list(members)
        self.alpha = check_simplex(alpha, len(self.members), "ensemble")
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

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        weighted = [w * m.score(prompts, responses, batch_size, progress) for w, m in self._weighted()]
        return np.sum(weighted, axis=0)  # eq. 14

    def score_pairs(self, dataset: Any, batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        scored = [(w, member.score_pairs(dataset, batch_size, progress)) for w, member in self._weighted()]
        chosen = np.sum([w * c for w, (c, _) in scored], axis=0)  # eq. 14
        rejected = np.sum([w * r for w, (_, r) in scored], axis=0)
        return chosen, rejected

    def fingerprint(self) -> str:
        """SHA-256 of the members' fingerprints and α."""
        content = {"members": [m.fingerprint() for m in self.members], "alpha": self.alpha.tolist()}
        return hashlib.sha256(json.dumps(content).encode()).hexdigest()

    def save(self, path: str | Path) -> None:
        """Write ``ensemble.json`` and one plain HF folder per member, all at once (atomic rename)."""
        names = [f"member-{i}" for i in range(len(self.members))]
        manifest = {
            "schema_version": ENSEMBLE_SCHEMA_VERSION,
            "alpha": self.alpha.tolist(),
            "members": names,
            "method": self.method,
            "complementarity": self.complementarity,
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
        return cls(
            members,
            manifest["alpha"],
            method=manifest.get("method"),
            complementarity=manifest.get("complementarity"),
            name=str(path),
        )


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
    if (
        not isinstance(members, list)
        or not members
        or not all(isinstance(m, str) and m and Path(m).name == m for m in members)
    ):
        raise CartError(f"{file}: 'members' must be a non-empty list of member folder names")
    for name in members:
        if not (path / name).is_dir():
            raise CartError(f"{file}: member folder '{name}' is missing")
    alpha = manifest.get("alpha")
    if not isinstance(alpha, list) or not all(isinstance(a, (int, float)) for a in alpha):
        raise CartError(f"{file}: 'alpha' must be a list of numbers")
    check_simplex(alpha, len(members), str(file))
    return manifest


def is_ensemble_folder(path: str | Path) -> bool:
    return (Path(path) / ENSEMBLE_FILE).is_file()


def load_reward_model(
    name_or_path: str | Path, max_length: int | None = None, seed: int = 0
) -> RewardModel | EnsembleRewardModel:
    """An :class:`EnsembleRewardModel` for an ensemble folder, else :meth:`RewardModel.load`."""
    if is_ensemble_folder(name_or_path):
        return EnsembleRewardModel.load(name_or_path, max_length=max_length)
    return RewardModel.load(name_or_path, max_length=max_length, seed=seed)
