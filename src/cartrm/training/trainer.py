"""The training loop: PyTorch + accelerate (so ``accelerate launch`` / torchrun DDP work unchanged).

Layout of ``output_dir`` after training: the final reward model as a plain HF folder at the top level
(``config.json``, ``model.safetensors``, tokenizer files), ``train_config.json``, ``train_result.json``,
``checkpoints/step-N`` (accelerate state: model, optimizer, scheduler, RNG) and ``logs/`` (TensorBoard).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cartrm.circuits.result import Circuits
from cartrm.data.dataset import PointwiseDataset, PreferenceDataset
from cartrm.data.tail import TailSplit
from cartrm.errors import CartError
from cartrm.io import Artifact, write_json_atomic
from cartrm.models.reward_model import RewardModel, default_device, model_max_positions
from cartrm.runs import RunFolder, digest, run_identity
from cartrm.training.batches import BatchBuilder, TrainBatch, fit_max_length
from cartrm.training.config import TrainConfig
from cartrm.training.methods import TrainingContext, TrainingMethod, get_method
from cartrm.vulnerability.result import VulnerabilityReport

CHECKPOINTS_KEPT = 2
M_MMAP_THRESHOLD, MMAP_THRESHOLD = -3, 4 * 2**20  # glibc's mallopt parameter number, and the value we set


class TrainResult(Artifact):
    """What training writes to ``train_result.json`` next to the model."""

    kind = "train result"
    output_dir: str
    method: str
    global_step: int
    total_steps: int
    final_loss: float
    seconds: float
    history: list[dict[str, float]] = []
    curve: list[dict[str, float]] = []  # the evaluation callback's scores at step 0 and every eval_steps
    max_length: int | None = None  # the token limit training used
    truncated: int = 0  # training texts longer than max_length (cut from the left)
    tail: str | None = None  # how the tail split was made (TailSplit.description)


def train(
    reward_model: RewardModel,
    dataset: PreferenceDataset | PointwiseDataset,
    config: TrainConfig,
    output_dir: str | Path,
    *,
    tail: TailSplit | None = None,
    circuits: Circuits | None = None,
    vulnerability: VulnerabilityReport | None = None,
    resume: bool = False,
    overwrite: bool = False,
    evaluate: Callable[[RewardModel], dict[str, float]] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``reward_model`` in place on ``dataset`` and save it to ``output_dir``.

    ``tail`` marks the tail examples (a :class:`TailSplit` of ``dataset``, e.g. from
    ``parse_tail_spec(...).fit_transform(dataset)``); methods that use the head/tail split (``cart``,
    ``reweight``) require it; its description is recorded in ``train_result.json``. ``circuits`` (from
    :func:`cartrm.discover`) and ``vulnerability`` (from :func:`cartrm.assess`, whose targets are C_v) are CART's
    inputs; without them CART discovers circuits itself after a warm-up.
    ``output_dir`` belongs to this run (:mod:`cartrm.runs.folder`): ``resume`` continues the run in it
    after checking that settings and inputs match, ``overwrite`` clears a folder that holds another run.
    ``evaluate`` (e.g. accuracies on validation pairs) runs before the first step and every ``config.eval_steps``
    steps; its scores form ``TrainResult.curve``, a learning curve (they do not change training).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    out = Path(output_dir)
    started = time.time()
    tail_mask = None if tail is None else np.asarray(tail.mask, dtype=bool)
    if tail_mask is not None and len(tail_mask) != len(dataset):
        raise CartError(f"the tail split has {len(tail_mask)} entries for {len(dataset)} training examples")
    if get_method(config.method, config).needs_tail and tail_mask is None:
        raise CartError(f"method '{config.method}' needs the head/tail split: pass --tail-by")
    on_cpu = default_device().type == "cpu"
    if on_cpu:
        return_freed_buffers_to_the_os()
    AcceleratorState._reset_state()  # the precision of an earlier train() in this process must not stick
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with="tensorboard",
        project_dir=str(out / "logs"),
        mixed_precision=_mixed_precision(config.mixed_precision),
        cpu=on_cpu,  # without it accelerate runs torchrun's CPU processes as separate single runs
    )
    identity = run_identity(
        config.model_dump(mode="json"),
        data=digest(dataset.to_records()),
        tail=None if tail_mask is None else digest(tail_mask),
        model=reward_model.fingerprint(),
        circuits=None if circuits is None else digest(circuits.model_dump(mode="json")),
        vulnerability=None if vulnerability is None else digest(vulnerability.model_dump(mode="json")),
    )
    folder = RunFolder(out, identity, resume=resume, overwrite=overwrite)
    with folder if accelerator.is_main_process else contextlib.nullcontext():
        accelerator.wait_for_everyone()
        set_seed(config.seed)
        if config.max_length:
            reward_model.max_length = config.max_length
        max_length, truncated = fit_max_length(
            reward_model, dataset, config.max_length or model_max_positions(reward_model.model)
        )
        max_length = config.max_length or max_length
        if progress and accelerator.is_local_main_process:
            print(
                f"max length {max_length} tokens; {truncated} of {_texts(dataset)} texts are longer and lose "
                "their start",
                file=sys.stderr,
            )
        config = config.model_copy(update={"max_length": max_length})
        method = get_method(config.method, config)
        if config.disable_dropout:
            disable_dropout(reward_model.model)
        builder = BatchBuilder(reward_model, dataset, tail_mask, max_length=max_length)
        lengths = builder.lengths() if config.group_by_length and builder.pairwise else None
        draw = method.sampler(builder.is_tail, config.batch_size, config.seed, lengths)
        plan = method.batch_plan(default_device().type)
        loader: DataLoader = DataLoader(
            range(len(dataset)),  # type: ignore[arg-type]  # any sized sequence of indices works
            batch_size=draw.batch_size,
            sampler=draw.sampler,
            collate_fn=functools.partial(
                builder.chunks, max_tokens=plan.max_tokens, weigh=plan.weigh, tail_together=plan.tail_together
            ),
            generator=torch.Generator().manual_seed(config.seed),
        )
        optimizer = torch.optim.AdamW(
            _parameter_groups(reward_model.model, config.weight_decay), lr=config.learning_rate
        )
        micro_per_epoch = math.ceil(len(loader) / accelerator.num_processes)
        steps_per_epoch = math.ceil(micro_per_epoch / config.gradient_accumulation_steps)
        total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
        context = TrainingContext(
            tail_mask=builder.is_tail,
            total_steps=total_steps,
            output_dir=out,
            progress=progress,
            max_length=max_length,
            circuits=circuits,
            vulnerability=vulnerability,
        )
        method.setup(reward_model, dataset, context)
        scheduler = get_scheduler(
            "linear",
            optimizer,
            num_warmup_steps=int(config.warmup_ratio * total_steps) * accelerator.num_processes,
            num_training_steps=total_steps * accelerator.num_processes,
        )
        model, optimizer, loader, scheduler = accelerator.prepare(reward_model.model, optimizer, loader, scheduler)
        state: dict[str, Any] = (
            _resume(accelerator, out, digest(identity))
            if resume
            else {"global_step": 0, "micro": 0, "history": [], "curve": [], "method": {}}
        )
        method.restore(state.get("method", {}))
        accelerator.init_trackers("train", config=_hparams(config.model_dump()))
        model.train()
        global_step, micro, history = state["global_step"], state["micro"], state["history"]
        curve: list[dict[str, float]] = state.get("curve", [])

        def score_curve(step: int) -> None:
            if evaluate is not None and config.eval_steps and (step % config.eval_steps == 0 or step == total_steps):
                scores = evaluate(reward_model)
                curve.append({"step": step, **scores})
                accelerator.log({f"eval/{k}": v for k, v in scores.items()}, step=step)

        if not curve:
            score_curve(0)
        bar = tqdm(
            total=total_steps,
            initial=global_step,
            desc=f"train[{config.method}]",
            disable=not progress or not accelerator.is_local_main_process,
        )
        running: list[float] = []
        stop = _StopRequest()
        saved_step = global_step if resume else None

        def save(step: int, micro_batches: int) -> int:
            _checkpoint(
                accelerator,
                out,
                {
                    "global_step": step,
                    "micro": micro_batches,
                    "history": history,
                    "curve": curve,
                    "method": method.state(),
                    "run": digest(identity),
                },
            )
            return step

        try:
            while global_step < total_steps and not stop.agreed(accelerator):
                epoch, offset = divmod(micro, micro_per_epoch)
                batches: Any = accelerator.skip_first_batches(loader, offset) if offset else loader
                batches.set_epoch(epoch)  # accelerate's loaders pass the epoch on to the sampler when they start
                for chunks in batches:
                    with accelerator.accumulate(model):
                        logs = _forward_backward(accelerator, model, method, chunks, global_step, out)
                        if accelerator.sync_gradients and config.max_grad_norm:
                            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad()
                    micro += 1
                    running.append(logs["loss"])
                    if not accelerator.sync_gradients:
                        continue
                    global_step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{np.mean(running[-20:]):.4f}")
                    if global_step % config.logging_steps == 0 or global_step == total_steps:
                        entry = {
                            "step": global_step,
                            "epoch": micro / micro_per_epoch,
                            "lr": scheduler.get_last_lr()[0],
                            **logs,
                        }
                        history.append(entry)
                        accelerator.log({f"train/{k}": v for k, v in entry.items() if k != "step"}, step=global_step)
                    score_curve(global_step)
                    end_of_epoch = micro % micro_per_epoch == 0
                    if (
                        global_step >= total_steps
                        or (config.save_steps and global_step % config.save_steps == 0)
                        or (not config.save_steps and end_of_epoch)
                    ):
                        saved_step = save(global_step, micro)
                    if global_step >= total_steps or stop.agreed(accelerator):
                        break
            if global_step < total_steps:
                if saved_step != global_step:
                    save(global_step, micro)
                raise CartError(
                    f"interrupted at step {global_step} of {total_steps}; checkpoint saved in {out / 'checkpoints'}; "
                    "continue with --resume"
                )
        except KeyboardInterrupt:
            found = _checkpoints(out)
            last = f"the last checkpoint is {found[-1]}" if found else "no checkpoint was saved"
            raise CartError(
                f"aborted during step {global_step + 1} of {total_steps}; {last}; continue with --resume"
            ) from None
        finally:
            stop.close()
            bar.close()
        accelerator.wait_for_everyone()
        accelerator.end_training()
        reward_model.model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # scoring after training: float32
        result = TrainResult(
            output_dir=str(out),
            method=config.method,
            global_step=global_step,
            total_steps=total_steps,
            final_loss=float(np.mean(running[-20:])) if running else float("nan"),
            seconds=time.time() - started,
            history=history,
            curve=curve,
            max_length=max_length,
            truncated=truncated,
            tail=None if tail is None else tail.description,
        )
        if accelerator.is_main_process:
            _save_final(reward_model, config, result, out)
        return result


def return_freed_buffers_to_the_os(threshold: int = MMAP_THRESHOLD) -> None:
    """Fix glibc's mmap threshold so that freed activation buffers leave the process (and trim the heaps now).

    glibc serves allocations below the threshold from heaps that keep freed memory, and it raises the threshold
    (up to 32 MiB) whenever a large buffer is freed, so after the first step most activations of a forward pass
    live in heaps that only grow. With the threshold fixed at 4 MiB, training MiniLM on 320 HH-RLHF pairs peaked
    at 1.47 GB instead of 1.74 GB resident (``benchmarks/vs_trl.py``). A no-op where libc has no ``mallopt``.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, threshold)
        gc.collect()
        libc.malloc_trim(0)  # and hand back what earlier work in this process left free in the heaps
    except (OSError, AttributeError):
        return


def _mixed_precision(setting: str) -> str:
    """``auto``: bf16 autocast on a CUDA GPU that supports it (weights and optimizer stay float32), else none.
    CPUs without native bf16 instructions run bf16 several times slower than float32, so ``auto`` keeps them in
    float32."""
    if setting != "auto":
        return setting
    return "bf16" if default_device().type == "cuda" and torch.cuda.is_bf16_supported() else "no"


def _texts(dataset: PreferenceDataset | PointwiseDataset) -> int:
    return len(dataset) * (2 if isinstance(dataset, PreferenceDataset) else 1)


def _forward_backward(
    accelerator: Any, model: Any, method: TrainingMethod, chunks: list[TrainBatch], step: int, out: Path
) -> dict[str, float]:
    """Loss and gradients of one batch, one forward/backward pass per pass of ``method.passes`` (only the last one
    synchronises gradients across processes); the logs are the summed loss and, for every other value, its mean
    over the passes that report it, weighted by their examples."""
    sums: dict[str, float] = {}
    examples: dict[str, int] = {}
    passes = method.passes(chunks, step)
    for position, batch in enumerate(passes):
        last = position == len(passes) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            loss, logs = method.loss(model, batch, step)
            _check_finite(loss, step + 1, out)
            accelerator.backward(loss)
        for key, value in logs.items():
            size = 1 if key == "loss" else len(batch.index)
            sums[key] = sums.get(key, 0.0) + value * size
            examples[key] = examples.get(key, 0) + size
    return {key: total if key == "loss" else total / examples[key] for key, total in sums.items()}


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


class _StopRequest:
    """Ctrl-C (SIGINT) asks training to stop at the next optimizer-step boundary, where a checkpoint resumes to
    exactly the weights of an uninterrupted run (mid-step, dropout RNG and partial gradients would be lost);
    a second Ctrl-C aborts at once. All processes stop at the same step: the request is max-reduced across them."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nstopping after the current step and saving a checkpoint (Ctrl-C again to abort)",
            file=sys.stderr,
            flush=True,
        )

    def agreed(self, accelerator: Any) -> bool:
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor([float(self.requested)], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="max").item())

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _check_finite(loss: torch.Tensor, step: int, out: Path) -> None:
    """Stop before a NaN/inf loss reaches the weights; the last checkpoint stays the last good one."""
    if not torch.isfinite(loss).all():
        found = _checkpoints(out)
        last = f"the last good checkpoint is {found[-1]}" if found else "no checkpoint was saved yet"
        raise CartError(
            f"step {step}: the loss is {loss.item()}; training stopped before applying it ({last}; try a lower --lr)"
        )


def _hparams(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flat ``{name: scalar}`` for TensorBoard's hparams (nested configs become ``cart.x``; None is dropped)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_hparams(value, f"{prefix}{key}."))
        elif value is not None:
            flat[prefix + key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and normalisation weights (the usual AdamW practice)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _checkpoint(accelerator: Any, out: Path, loop_state: dict[str, Any]) -> None:
    """Save accelerate state + loop position (and the method's state) under ``checkpoints/step-N`` atomically;
    keep the newest few."""
    folder = out / "checkpoints" / f"step-{loop_state['global_step']}"
    if accelerator.is_main_process:
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    tmp = folder.with_name(f".{folder.name}.tmp")
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(loop_state))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        for old in _checkpoints(out)[:-CHECKPOINTS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _checkpoints(out: Path) -> list[Path]:
    folder = out / "checkpoints"
    found = [p for p in folder.glob("step-*") if (p / "trainer_state.json").exists()] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _resume(accelerator: Any, out: Path, run: str) -> dict[str, Any]:
    """The loop state of the newest checkpoint, which must belong to ``run`` (the run identity's digest)."""
    checkpoints = _checkpoints(out)
    if not checkpoints:
        raise CartError(f"--resume: no checkpoint found under {out / 'checkpoints'}")
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    if state.get("run") != run:
        raise CartError(f"--resume: {checkpoints[-1]} belongs to another run than {out / 'run.json'}")
    accelerator.load_state(str(checkpoints[-1]))
    return state


def _save_final(reward_model: RewardModel, config: TrainConfig, result: TrainResult, out: Path) -> None:
    """Write the model files into ``out``; ``config.json`` goes last so a half-saved folder never loads."""
    staging = out / ".final.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        reward_model.save_into(staging)
        files = sorted(staging.iterdir(), key=lambda p: p.name == "config.json")
        (out / "config.json").unlink(missing_ok=True)
        for path in files:
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json_atomic(out / "train_config.json", config.model_dump())
    result.save(out / "train_result.json")
