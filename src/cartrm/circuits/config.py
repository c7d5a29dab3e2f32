"""Settings of circuit discovery (phase 1), recorded in every ``circuits.json``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cartrm.capture.sites import parse_site_kinds


class DiscoveryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sites: tuple[str, ...] = ("mlp",)
    pooling: Literal["mean", "max", "last"] = "mean"
    top_k: int = Field(64, gt=1)
    fdr: float = Field(0.05, gt=0, lt=1)
    tau: float | None = Field(None, description="eq. 3 threshold on E_tail|a| − E_head|a|; default a quantile")
    tau_quantile: float = Field(0.95, gt=0, lt=1)
    n_permutations: int = Field(1000, ge=0)
    mi_estimator: Literal["binned", "gaussian"] = "binned"
    mi_bins: int = Field(8, ge=2)
    community: Literal["louvain", "components"] = "louvain"
    coherence_null_shuffles: int = Field(20, ge=0, description="label shuffles setting the coherence edge threshold")
    ridge_alpha: float = Field(1.0, gt=0)
    patch_pairs: int = Field(16, ge=0, description="tail pairs used for causal validation (0 skips it)")
    max_validated: int = Field(5, ge=0, description="circuits given exact patching and a null, largest first")
    n_null: int = Field(20, ge=1)
    null_mode: Literal["zero", "head_mean", "resample"] = "resample"
    batch_size: int = Field(32, gt=0)
    seed: int = 0

    @field_validator("sites")
    @classmethod
    def _known_sites(cls, sites: tuple[str, ...]) -> tuple[str, ...]:
        return parse_site_kinds(sites)
