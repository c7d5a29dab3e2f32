"""Settings of circuit discovery (phase 1), recorded in every ``circuits.json``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cartrm.capture.sites import parse_site_kinds


class DiscoveryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sites: tuple[str, ...] = Field(("mlp",), description="site kinds whose neurons are tested: mlp, attn, resid")
    pooling: Literal["mean", "max", "last"] = Field("mean", description="how response tokens are pooled per neuron")
    top_k: int = Field(64, gt=1, description="candidate neurons: the largest |effect size| passing FDR")
    fdr: float = Field(0.05, gt=0, lt=1, description="Benjamini–Hochberg false discovery rate")
    tau: float | None = Field(None, description="eq. 3 threshold on E_tail|a| − E_head|a|; default a quantile")
    tau_quantile: float = Field(
        0.95, gt=0, lt=1, description="quantile of the eq. 3 statistic used as τ when tau is unset"
    )
    n_permutations: int = Field(
        1000,
        ge=0,
        description="label permutations re-testing the candidate neurons (0: keep the Welch t-test p-values)",
    )
    mi_estimator: Literal["binned", "gaussian"] = Field(
        "binned", description="mutual information: binned (Miller–Madow) or gaussian"
    )
    mi_bins: int = Field(8, ge=2, description="bins per neuron of the binned MI estimator")
    community: Literal["louvain", "components"] = Field(
        "louvain", description="circuits as louvain communities or connected components of the coherence graph"
    )
    coherence_null_shuffles: int = Field(20, ge=0, description="label shuffles setting the coherence edge threshold")
    ridge_alpha: float = Field(1.0, gt=0, description="ridge penalty of the reward decomposition over circuits")
    patch_pairs: int = Field(16, ge=0, description="tail pairs used for causal validation (0 skips it)")
    max_validated: int = Field(5, ge=0, description="circuits given exact patching and a null, largest first")
    n_null: int = Field(20, ge=1, description="random neuron sets in the patching null distribution")
    null_mode: Literal["zero", "head_mean", "resample"] = Field(
        "resample", description="patch mode tested against the null: zero, head_mean, resample"
    )
    batch_size: int = Field(32, gt=0, description="sequences per forward pass")
    seed: int = Field(0, ge=0, description="fixes the pair subset, permutations, nulls and patching pairs")

    @field_validator("sites")
    @classmethod
    def _known_sites(cls, sites: tuple[str, ...]) -> tuple[str, ...]:
        return parse_site_kinds(sites)
