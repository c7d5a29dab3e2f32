"""Activation capture: named sites, hooks that read/write, pooling over response tokens. Submodules load on first use
(they need torch), so the ``cart`` command starts fast."""

from typing import TYPE_CHECKING

from cartrm.lazy import lazy_attributes

_LAZY = {
    "POOLINGS": "cartrm.capture.hooks",
    "ActivationCapture": "cartrm.capture.hooks",
    "patch_response_tokens": "cartrm.capture.hooks",
    "pool": "cartrm.capture.hooks",
    "pooling_mask": "cartrm.capture.hooks",
    "shift_response_tokens": "cartrm.capture.hooks",
    "ARCHITECTURES": "cartrm.capture.sites",
    "SITE_KINDS": "cartrm.capture.sites",
    "Site": "cartrm.capture.sites",
    "list_sites": "cartrm.capture.sites",
    "parse_site_kinds": "cartrm.capture.sites",
}

__all__ = [
    "ARCHITECTURES",
    "ActivationCapture",
    "POOLINGS",
    "SITE_KINDS",
    "Site",
    "list_sites",
    "parse_site_kinds",
    "patch_response_tokens",
    "pool",
    "pooling_mask",
    "shift_response_tokens",
]

if TYPE_CHECKING:
    from cartrm.capture.hooks import (
        POOLINGS,
        ActivationCapture,
        patch_response_tokens,
        pool,
        pooling_mask,
        shift_response_tokens,
    )
    from cartrm.capture.sites import ARCHITECTURES, SITE_KINDS, Site, list_sites, parse_site_kinds


__getattr__ = lazy_attributes(__name__, _LAZY)
