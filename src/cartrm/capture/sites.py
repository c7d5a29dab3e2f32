"""Activation sites named as in TransformerLens, mapped onto Hugging Face module paths per architecture.

Names: ``blocks.{L}.mlp.hook_post`` (MLP hidden units after the activation function — the "neurons"; for
gated MLPs ``act(gate) * up``), ``blocks.{L}.attn.hook_z`` (the concatenated per-head outputs, before the
attention output projection) and ``blocks.{L}.hook_resid_post`` (the residual stream after block L).

Adding an architecture: add an :class:`Architecture` to ``ARCHITECTURES`` under the config's ``model_type``,
giving the path of the layer list inside ``model.base_model`` and, per site kind, the sub-module path inside
a layer and whether the activation is that module's ``output`` or its first ``input``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cartrm.errors import CartError

SITE_KINDS = ("mlp", "attn", "resid")
HOOK_NAMES = {
    "mlp": "blocks.{layer}.mlp.hook_post",
    "attn": "blocks.{layer}.attn.hook_z",
    "resid": "blocks.{layer}.hook_resid_post",
}


@dataclass(frozen=True)
class Architecture:
    layers: str
    modules: dict[str, tuple[str, str]]  # site kind -> (module path inside a layer, "output" | "input")


BERT_LIKE = Architecture(
    layers="encoder.layer",
    modules={"mlp": ("intermediate", "output"), "attn": ("attention.output.dense", "input"), "resid": ("", "output")},
)
GPT2_LIKE = Architecture(
    layers="h", modules={"mlp": ("mlp.c_proj", "input"), "attn": ("attn.c_proj", "input"), "resid": ("", "output")}
)
LLAMA_LIKE = Architecture(
    layers="layers",
    modules={"mlp": ("mlp.down_proj", "input"), "attn": ("self_attn.o_proj", "input"), "resid": ("", "output")},
)
ARCHITECTURES: dict[str, Architecture] = {
    "bert": BERT_LIKE,
    "roberta": BERT_LIKE,
    "xlm-roberta": BERT_LIKE,
    "electra": BERT_LIKE,
    "gpt2": GPT2_LIKE,
    "llama": LLAMA_LIKE,
    "mistral": LLAMA_LIKE,
    "qwen2": LLAMA_LIKE,
    "qwen3": LLAMA_LIKE,
}


@dataclass(frozen=True)
class Site:
    """One hook point: its TransformerLens-style name, layer, kind, HF module and feature width."""

    name: str
    layer: int
    kind: str
    module_path: str
    direction: str
    width: int


def architecture_of(model: Any) -> Architecture:
    model_type = getattr(model.config, "model_type", "?")
    if model_type not in ARCHITECTURES:
        raise CartError(
            f"activation capture does not know architecture '{model_type}'; "
            f"supported: {', '.join(sorted(ARCHITECTURES))}. "
            "Add one to cartrm.capture.sites.ARCHITECTURES (layer list path and per-site module paths)."
        )
    return ARCHITECTURES[model_type]


def parse_site_kinds(text: str | Sequence[str]) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in (text.split(",") if isinstance(text, str) else text) if k.strip())
    unknown = [k for k in kinds if k not in SITE_KINDS]
    if unknown or not kinds:
        raise CartError(f"unknown site kind(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SITE_KINDS)}")
    return kinds


def list_sites(model: Any, kinds: Sequence[str] = ("mlp",), layers: Sequence[int] | None = None) -> list[Site]:
    """Every site of the requested kinds (ordered by layer, then kind) in ``model``."""
    architecture = architecture_of(model)
    base = model.base_model
    layer_list = base.get_submodule(architecture.layers)
    chosen_layers = range(len(layer_list)) if layers is None else layers
    sites = []
    for layer in chosen_layers:
        for kind in parse_site_kinds(kinds):
            inner, direction = architecture.modules[kind]
            path = f"{architecture.layers}.{layer}" + (f".{inner}" if inner else "")
            module = base.get_submodule(path)
            sites.append(
                Site(
                    HOOK_NAMES[kind].format(layer=layer),
                    layer,
                    kind,
                    path,
                    direction,
                    _width(module, kind, direction, model),
                )
            )
    return sites


def _width(module: Any, kind: str, direction: str, model: Any) -> int:
    if kind == "resid":
        return int(model.config.hidden_size)
    if direction == "input":
        return int(getattr(module, "in_features", None) or module.weight.shape[0])  # GPT-2's Conv1D stores (in, out)
    return int(module.dense.out_features)
