"""LoRA adapters on a reward model, through ``peft`` (the optional ``lora`` extra: ``pip install "cartrm[lora]"``).

Adapters are injected in place (``peft.inject_adapter_in_model``), so the model stays the Hugging Face model it
was: activation sites keep their module paths (:mod:`cartrm.capture.sites` hooks an adapted ``down_proj`` as it
hooks a plain one) and CART's hooks and terms see the adapted model. The reward head (every weight outside
``model.base_model``, as the loader's strict check names it) is trained in full, as TRL does with peft's
``modules_to_save``; all other weights are frozen.

At the end of training the adapter is saved in peft's own layout (``adapter/``, which
``PeftModel.from_pretrained(base_model, folder)`` loads onto the starting model) and then merged into the weights,
so the model folder stays a plain one that ``AutoModelForSequenceClassification.from_pretrained`` loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cartrm.errors import CartError

LORA_INSTALL = 'pip install "cartrm[lora]"'
ADAPTER = "default"  # peft's adapter name
PEFT_PREFIX = "base_model.model."  # how peft's saved adapters name the wrapped model's weights


@dataclass(frozen=True)
class LoraSettings:
    """LoRA's hyper-parameters: rank ``r``, scale ``alpha / r``, dropout on the adapter's input, and the modules
    adapted (names or ``all-linear``; None: peft's choice for the architecture, its query and value projections)."""

    r: int
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None


def _peft() -> Any:
    try:
        import peft
        import peft.functional
    except ImportError:
        raise CartError(f"LoRA (--lora-r) needs peft, an optional extra: {LORA_INSTALL}") from None
    return peft


def add_lora(model: Any, settings: LoraSettings) -> None:
    """Inject rank-``settings.r`` adapters into ``model`` in place; only they and the reward head stay trainable."""
    peft = _peft()
    targets = settings.target_modules
    config = peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=(targets[0] if targets == ("all-linear",) else list(targets)) if targets else None,
        task_type="SEQ_CLS",  # keeps "all-linear" off the reward head
        fan_in_fan_out=getattr(model.config, "model_type", "") == "gpt2",  # GPT-2's Conv1D stores (in, out)
    )
    try:
        peft.inject_adapter_in_model(config, model, adapter_name=ADAPTER)
        peft.functional.cast_adapter_dtype(model, ADAPTER)  # float32 adapters on bf16 weights, as peft's own models
    except ValueError as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CartError(f"--lora-target-modules: {reason}") from None
    for name, parameter in model.named_parameters():
        if name in head_parameters(model):
            parameter.requires_grad_(True)


def head_parameters(model: Any) -> set[str]:
    """Names of the reward head's weights: those outside ``model.base_model``."""
    body = model.base_model_prefix + "."
    return {name for name, _ in model.named_parameters() if not name.startswith(body)}


def has_lora(model: Any) -> bool:
    return bool(_lora_layers(model))


def _lora_layers(model: Any) -> dict[str, Any]:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return {}
    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def save_adapter(model: Any, folder: Path, base: str) -> None:
    """The adapter and the trained reward head in peft's layout (``adapter_config.json``,
    ``adapter_model.safetensors``), ``base`` (the starting model) recorded as the model they go on."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    config = model.peft_config[ADAPTER]
    head = head_parameters(model)
    modules = sorted({name.split(".")[0] for name in head})
    weights = {PEFT_PREFIX + k: v for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER).items()}
    state = model.state_dict()
    weights.update({PEFT_PREFIX + name: state[name] for name in head})
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, folder / "adapter_model.safetensors")
    saved = config.to_dict()
    saved.update(base_model_name_or_path=base, modules_to_save=modules)
    saved = {k: sorted(v) if isinstance(v, set) else v for k, v in saved.items()}
    (folder / "adapter_config.json").write_text(json.dumps(saved, indent=2, default=str))


def merge_lora(model: Any) -> Any:
    """``model`` with each adapter merged into the weight it adapts and replaced by that plain layer (in place,
    also returned); every weight is trainable again, as in a model that never had adapters."""
    for name, layer in sorted(_lora_layers(model).items(), key=lambda item: -item[0].count(".")):
        layer.merge(safe_merge=True)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def trainable_share(model: Any) -> tuple[int, int]:
    """Trainable and total parameters (for the progress line)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
