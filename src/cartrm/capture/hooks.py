"""Read and write activations at named sites with forward hooks, pooled per example over response tokens.

Pooling (over the tokens of the response; over all tokens when an example has no response token):
``mean`` (default), ``max`` or ``last`` (the last response token).

Writing: an intervention is a function ``(activations (B, T, D), response_mask (B, T)) -> activations`` run
inside the hook before pooling, so patched values flow on through the model and into the pooled result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from cartrm.capture.sites import Site
from cartrm.errors import CartError

if TYPE_CHECKING:
    from cartrm.models.reward_model import TokenBatch

POOLINGS = ("mean", "max", "last")
Intervention = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pool(activations: torch.Tensor, response_mask: torch.Tensor, method: str = "mean") -> torch.Tensor:
    """Pool token activations (B, T, D) into (B, D) over response tokens."""
    mask = response_mask.to(activations.device).bool()
    empty = ~mask.any(dim=1)
    if empty.any():
        raise CartError("pooling needs at least one token per example (got an all-zero mask)")
    weights = mask.unsqueeze(-1)
    if method == "mean":
        return (activations * weights).sum(1) / weights.sum(1).to(activations.dtype)
    if method == "max":
        return activations.masked_fill(~weights, float("-inf")).amax(1)
    if method == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask, positions, -1).amax(1)
        return activations[torch.arange(activations.shape[0], device=activations.device), last]
    raise CartError(f"unknown pooling '{method}'; choose from {', '.join(POOLINGS)}")


def pooling_mask(batch: TokenBatch) -> torch.Tensor:
    """Response tokens, or all attended tokens for examples without response tokens."""
    response, attention = batch.response_mask, batch.attention_mask
    has_response = response.bool().any(dim=1, keepdim=True)
    return torch.where(has_response, response, attention)


class ActivationCapture:
    """Hooks on ``sites`` of ``model``; after each forward, ``pooled[site.name]`` holds (B, width).

    Use as a context manager: hooks are removed on exit, also when an exception escapes. Set the batch's
    pooling mask with :meth:`set_mask` before each forward. ``keep_grad`` keeps the autograd graph of the
    pooled activations (for regularisers); ``retain_token_grad`` keeps token activations and their
    gradients (for attribution patching).
    """

    def __init__(
        self,
        model: Any,
        sites: Sequence[Site],
        pooling: str = "mean",
        *,
        interventions: dict[str, Intervention] | None = None,
        keep_grad: bool = False,
        retain_token_grad: bool = False,
    ) -> None:
        if pooling not in POOLINGS:
            raise CartError(f"unknown pooling '{pooling}'; choose from {', '.join(POOLINGS)}")
        self.model, self.sites, self.pooling = model, list(sites), pooling
        self.interventions = dict(interventions or {})
        unknown = set(self.interventions) - {s.name for s in self.sites}
        if unknown:
            raise CartError(f"interventions on sites that are not captured: {', '.join(sorted(unknown))}")
        self.keep_grad, self.retain_token_grad = keep_grad, retain_token_grad
        self.pooled: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, torch.Tensor] = {}
        self._mask: torch.Tensor | None = None
        self._handles: list[Any] = []

    def set_mask(self, mask: torch.Tensor) -> None:
        self._mask = mask

    def __enter__(self) -> ActivationCapture:
        try:
            base = self.model.base_model
            for site in self.sites:
                module = base.get_submodule(site.module_path)
                if site.direction == "input":
                    self._handles.append(module.register_forward_pre_hook(self._pre_hook(site)))
                else:
                    self._handles.append(module.register_forward_hook(self._post_hook(site)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def _process(self, site: Site, activations: torch.Tensor) -> torch.Tensor:
        if self._mask is None:
            raise CartError("ActivationCapture.set_mask must be called before the forward pass")
        if site.name in self.interventions:
            activations = self.interventions[site.name](activations, self._mask)
        if self.retain_token_grad and activations.requires_grad:
            activations.retain_grad()
            self.tokens[site.name] = activations
        pooled = pool(activations, self._mask, self.pooling)
        self.pooled[site.name] = pooled if self.keep_grad else pooled.detach()
        return activations

    def _pre_hook(self, site: Site) -> Callable:
        def hook(module: Any, args: tuple) -> tuple:
            return (self._process(site, args[0]), *args[1:])

        return hook

    def _post_hook(self, site: Site) -> Callable:
        def hook(module: Any, args: tuple, output: Any) -> Any:
            if isinstance(output, tuple):
                return (self._process(site, output[0]), *output[1:])
            return self._process(site, output)

        return hook


def patch_response_tokens(indices: torch.Tensor, values: torch.Tensor) -> Intervention:
    """An intervention setting features ``indices`` to ``values`` (B, k) at every pooled token.

    With mean pooling this makes the pooled activation of those features exactly ``values``.
    """

    def intervene(activations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        patched = activations.clone()
        where = mask.to(activations.device).bool().unsqueeze(-1)
        current = patched[..., indices]
        target = values.to(activations.device, activations.dtype).unsqueeze(1).expand_as(current)
        patched[..., indices] = torch.where(where, target, current)
        return patched

    return intervene


def drop_features(indices: torch.Tensor, keep: torch.Tensor) -> Intervention:
    """An intervention zeroing features ``indices`` at every token of the rows where ``keep`` (B, k) is False."""

    def intervene(activations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        dropped = activations.clone()
        scale = keep.to(activations.device, activations.dtype).unsqueeze(1)
        dropped[..., indices.to(activations.device)] = dropped[..., indices.to(activations.device)] * scale
        return dropped

    return intervene


def shift_response_tokens(indices: torch.Tensor, shift: torch.Tensor) -> Intervention:
    """An intervention adding ``shift`` (B, k) to features ``indices`` at every pooled token (differentiable).

    With mean pooling this moves the pooled activation of those features by exactly ``shift``.
    """

    def intervene(activations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        offset = torch.zeros(
            activations.shape[0], activations.shape[-1], dtype=activations.dtype, device=activations.device
        )
        offset = offset.index_copy(1, indices.to(activations.device), shift.to(activations.device, activations.dtype))
        where = mask.to(activations.device, activations.dtype).unsqueeze(-1)
        return activations + where * offset.unsqueeze(1)

    return intervene
