"""Settings of the ensemble, bound-sweep and audit experiments (light: the CLI builds its options from them)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cartrm.circuits.config import DiscoveryConfig
from cartrm.training.config import TrainConfig
from cartrm.vulnerability.config import AssessConfig

MAX_TAIL_PAIRS = 10_000  # the bound sweep's largest tail training set (each point trains one model)


class EnsembleConfig(BaseModel):
    """An ensemble run. The ``ensemble-mean`` baseline is ``method="bt", weighting="uniform"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    members: int = Field(3, ge=2, description="K")
    method: str = Field("cart", description="training method of every member (any registered method)")
    weighting: Literal["fit", "uniform"] = Field(
        "fit", description="fit: α by eq. 15 on the validation tail; uniform: 1/K"
    )
    min_tail_to_fit: int = Field(
        100,
        ge=0,
        description="fit α only with at least this many validation tail examples; fewer: uniform weights and a "
        "warning (an α fit on a handful of pairs picks members by noise)",
    )
    seed: int = Field(0, ge=0, description="member i trains with seed + i")
    train: TrainConfig = Field(default_factory=TrainConfig)
    top_neurons: int = Field(64, ge=2, description="strongest tail neurons per member compared by circuit_overlap")
    overlap_pairs: int = Field(256, ge=2, description="training pairs on which each member's tail neurons are found")


class BoundSweepConfig(BaseModel):
    """``cart bound``: one benchmark, a Bradley–Terry model per tail size, the bound's terms (eq. 4–5) per point."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str = Field("minilm", description="base model: built-in name or model folder")
    tail_sizes: tuple[int, ...] = Field(
        (25, 50, 100, 200), description="numbers of tail training pairs, one model each"
    )
    n_head: int = Field(600, gt=0, description="head training pairs (the same at every point)")
    n_test_head: int = Field(300, gt=0, description="head pairs in the shared test split")
    n_test_tail: int = Field(600, gt=0, description="tail pairs in the shared test split")
    delta: float = Field(0.05, gt=0, lt=1, description="δ of the bound's complexity term sqrt(|C|·log(1/δ)/N)")
    seed: int = Field(0, ge=0, description="benchmark, tail order, training and discovery seed")
    train: TrainConfig = TrainConfig(epochs=1, learning_rate=1e-4, max_length=128)

    @field_validator("tail_sizes")
    @classmethod
    def _sizes_to_train(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        """Each point trains on that many tail pairs: at least one, at most MAX_TAIL_PAIRS, each size once."""
        bad = [n for n in sizes if not 1 <= n <= MAX_TAIL_PAIRS]
        if not sizes or bad or len(set(sizes)) != len(sizes):
            shown = ", ".join(map(str, bad)) if bad else ", ".join(map(str, sizes))
            raise ValueError(f"tail sizes are distinct numbers from 1 to {MAX_TAIL_PAIRS}, not {shown or '(none)'}")
        return sizes

    discovery: DiscoveryConfig = DiscoveryConfig(patch_pairs=0, n_permutations=0)


class AuditConfig(BaseModel):
    """What ``cart audit`` computes (its options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    analysis_pairs: int = Field(400, ge=16, description="pairs (up to half tail) for discovery and assessment")
    vuln_flag: float = Field(0.5, ge=0, le=1, description="Vuln above which the summary calls a circuit exploitable")
    seed: int = Field(0, ge=0, description="seeds the analysis subset, discovery, assessment and the intervals")
    discovery: DiscoveryConfig = Field(default_factory=lambda: DiscoveryConfig(patch_pairs=16, max_validated=5))
    assessment: AssessConfig = Field(default_factory=AssessConfig)
