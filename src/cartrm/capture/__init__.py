"""Activation capture: named sites, hooks that read/write, pooling over response tokens."""

from cartrm.capture.hooks import (
    POOLINGS,
    ActivationCapture,
    patch_response_tokens,
    pool,
    pooling_mask,
    shift_response_tokens,
)
from cartrm.capture.sites import ARCHITECTURES, SITE_KINDS, Site, list_sites, parse_site_kinds

__all__ = [
    "ARCHITECTURES",
    "POOLINGS",
    "SITE_KINDS",
    "ActivationCapture",
    "Site",
    "list_sites",
    "parse_site_kinds",
    "patch_response_tokens",
    "pool",
    "pooling_mask",
    "shift_response_tokens",
]
