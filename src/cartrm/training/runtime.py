"""What a run sets up around the model: the process's allocator, the model's storage type, dropout, adapters and
checkpointing, the optimizer's parameter groups and the flat hyper-parameters the trackers record."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cartrm.errors import CartError
from cartrm.models.lora import add_lora, trainable_share
from cartrm.models.reward_model import default_device, model_max_positions

if TYPE_CHECKING:
    from cartrm.training.config import TrainConfig

M_MMAP_THRESHOLD, MMAP_THRESHOLD = -3, 4 * 2**20  # glibc's mallopt parameter number, and the value we set


def return_freed_buffers_to_the_os(threshold: int = MMAP_THRESHOLD) -> None:
    """Fix glibc's mmap threshold so that freed activation buffers leave the process (and trim the heaps now).

    glibc serves allocations below the threshold from heaps that keep freed memory, and it raises the threshold
    (up to 32 MiB) whenever a large buffer is freed, so after the first step most activations of a forward pass
    live in heaps that only grow. With the threshold fixed at 4 MiB, training MiniLM on 320 HH-RLHF pairs peaked
    at 1.47 GB instead of 1.74 GB resident (``bench/vs_trl.py``). A no-op where libc has no ``mallopt``.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, threshold)
        gc.collect()
        libc.malloc_trim(0)  # and hand back what earlier work in this process left free in the heaps
    except (OSError, AttributeError):
        return


def hparams(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flat ``{name: scalar}`` for TensorBoard's hparams (nested configs become ``cart.x``; None is dropped)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(hparams(value, f"{prefix}{key}."))
        elif value is not None:
            flat[prefix + key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and normalisation weights (the usual AdamW practice)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def check_length(reward_model: Any, config: Any) -> None:
    """A token limit beyond the model's position embeddings fails mid-training (an index error): refused first."""
    positions = model_max_positions(reward_model.model)
    if config.max_length and config.max_length > positions:
        raise CartError(
            f"--max-length {config.max_length} is beyond the {positions} positions {reward_model.name or 'the model'} "
            "embeds; use at most that"
        )


def cast_weights(model: torch.nn.Module, dtype: str) -> None:
    """Store ``model``'s weights in ``dtype``: ``bf16`` halves their memory, ``fp32`` leaves them as loaded."""
    if dtype == "bf16":
        model.to(torch.bfloat16)


def shape_model(model: Any, config: TrainConfig, progress: bool) -> None:
    """What training changes on the model before the optimizer sees it, in this order: the weights' storage type,
    dropout off, LoRA adapters (their own dropout kept), gradient checkpointing."""
    cast_weights(model, config.dtype)
    if config.disable_dropout:
        disable_dropout(model)
    lora = config.lora()
    if lora is not None:
        add_lora(model, lora)
        if progress:
            trained, total = trainable_share(model)
            print(
                f"LoRA r={lora.r}: {trained:,} of {total:,} weights train (adapters and reward head)", file=sys.stderr
            )
    if config.gradient_checkpointing:
        checkpointing(model, True)


def check_checkpointing(config: TrainConfig, method: Any) -> None:
    """A method whose loss hooks activations cannot recompute them: its hooks are gone by the backward pass, so
    the recomputed layers would miss its interventions (refused before anything is written)."""
    if config.gradient_checkpointing and method.hooks_activations:
        raise CartError(
            f"--gradient-checkpointing: method '{config.method}' reads and patches activations with hooks in its "
            "loss, which the backward pass's recomputation would not replay; train it without checkpointing (LoRA, "
            "--lora-r, or a smaller --batch-size also saves memory)"
        )


def checkpointing(model: Any, on: bool) -> None:
    """Turn activation (gradient) checkpointing on or off; the non-reentrant form, which frozen inputs (LoRA)
    need no workaround for."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise CartError(f"--gradient-checkpointing: {type(model).__name__} does not support it")
    modern = hasattr(model, "activation_checkpointing_enable")  # transformers >= 5 renamed it
    if on and modern:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        (model.activation_checkpointing_disable if modern else model.gradient_checkpointing_disable)()


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability of ``model`` to 0, as TRL's ``disable_dropout`` does for reward models.

    Covers ``nn.Dropout`` modules (BERT, GPT-2: their attention reads the module's ``p``) and the float
    ``attention_dropout`` attribute of Llama-style attention. Without dropout, training is deterministic given
    the order and PyTorch can use its fused attention kernels. The saved config keeps its dropout values.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            setattr(module, "attention_dropout", 0.0)  # noqa: B010  (nn.Module types its attributes as tensors)


def trackers(names: tuple[str, ...]) -> list[str] | None:
    """accelerate's ``log_with`` for ``report_to``; a tracker whose package is missing is one line (accelerate
    would drop it with a warning, and the run would go unlogged)."""
    import accelerate.utils

    if names == ("none",):
        return None
    for name in names:
        if not getattr(accelerate.utils, f"is_{name}_available", lambda: True)():
            raise CartError(f"--report-to {name}: the {name} package is not installed (pip install {name})")
    return list(names)


def tracker_names(config: TrainConfig, out: Path) -> dict[str, dict[str, str]]:
    """Each tracker's run named after the output folder (TensorBoard's logs are already in it)."""
    named = {"wandb": {"name": out.name}, "mlflow": {"run_name": out.name}, "comet_ml": {"experiment_name": out.name}}
    return {name: kwargs for name, kwargs in named.items() if name in config.report_to}


def mixed_precision(setting: str) -> str:
    """``auto``: bf16 autocast on a CUDA GPU that supports it (weights and optimizer stay float32), else none.
    CPUs without native bf16 instructions run bf16 several times slower than float32, so ``auto`` keeps them in
    float32."""
    if setting != "auto":
        return setting
    return "bf16" if default_device().type == "cuda" and torch.cuda.is_bf16_supported() else "no"
