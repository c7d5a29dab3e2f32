"""The training loop: PyTorch + accelerate (so ``accelerate launch`` / torchrun DDP work unchanged).

Layout of ``output_dir`` after training: the final reward model as a plain HF folder at the top level
(``config.json``, ``model.safetensors``, tokenizer files), ``train_config.json``, ``train_result.json``,
``checkpoints/step-N`` (accelerate state: model, optimizer, scheduler, RNG; :mod:`cartrm.training.checkpoints`)
and ``logs/`` (TensorBoard). The trainer asks the method (:mod:`cartrm.training.methods`) how to draw and split
batches and knows no method by name.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cartrm.circuits.result import Circuits
from cartrm.data.dataset import PointwiseDataset, PreferenceDataset, load_dataset
from cartrm.data.tail import TailSplit
from cartrm.errors import CartError
from cartrm.io import Artifact, atomic_directory
from cartrm.models.lora import has_lora, merge_lora, save_adapter
from cartrm.models.reward_model import RewardModel, default_device, model_max_positions
from cartrm.runs import RunFolder, digest, run_identity
from cartrm.runs.identity import without_keyed_defaults
from cartrm.training.batches import BatchBuilder, TrainBatch, fit_max_length
from cartrm.training.checkpoints import (
    StopRequest,
    check_finite,
    checkpoints,
    load_checkpoint,
    save_checkpoint,
    save_final,
)
from cartrm.training.config import TrainConfig
from cartrm.training.methods import TrainingContext, TrainingMethod, get_method
from cartrm.training.runtime import (
    check_checkpointing,
    check_length,
    checkpointing,
    hparams,
    mixed_precision,
    parameter_groups,
    return_freed_buffers_to_the_os,
    shape_model,
    tracker_names,
    trackers,
)
from cartrm.vulnerability.result import VulnerabilityReport

Evaluate = Callable[[RewardModel], dict[str, float]]


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


@dataclass(frozen=True)
class Inputs:
    """What one call of :func:`train` trains on and with."""

    reward_model: RewardModel
    dataset: PreferenceDataset | PointwiseDataset
    tail_mask: np.ndarray | None
    circuits: Circuits | None
    vulnerability: VulnerabilityReport | None
    out: Path
    progress: bool
    evaluate: Evaluate | None


@dataclass
class Run:
    """A prepared run: the method, the accelerate-prepared model, optimizer, loader and schedule, and the loop's
    position (``global_step``, ``micro``: micro-batches so far) with what it records."""

    inputs: Inputs
    accelerator: Any
    config: TrainConfig
    method: TrainingMethod
    model: Any
    optimizer: Any
    scheduler: Any
    loader: Any
    total_steps: int
    micro_per_epoch: int
    run_digest: str  # the run identity's digest, recorded in every checkpoint
    max_length: int
    truncated: int
    global_step: int = 0
    micro: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)
    running: list[float] = field(default_factory=list)


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
    evaluate: Evaluate | None = None,
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
    from accelerate.utils import set_seed

    started = time.time()
    if not isinstance(dataset, PreferenceDataset | PointwiseDataset):  # a datasets.Dataset: read at the edge
        dataset = load_dataset(dataset)
    check_length(reward_model, config)
    tail_mask = _tail_mask(tail, dataset, config)
    check_checkpointing(config, get_method(config.method, config))
    inputs = Inputs(reward_model, dataset, tail_mask, circuits, vulnerability, Path(output_dir), progress, evaluate)
    accelerator = _accelerator(config, inputs.out)
    identity = run_identity(
        without_keyed_defaults(config, config.model_dump(mode="json")),  # a new option at its default: same run
        data=digest(dataset.to_records()),
        tail=None if tail_mask is None else digest(tail_mask),
        model=reward_model.fingerprint(),
        circuits=None if circuits is None else digest(circuits.model_dump(mode="json")),
        vulnerability=None if vulnerability is None else digest(vulnerability.model_dump(mode="json")),
    )
    folder = RunFolder(inputs.out, identity, resume=resume, overwrite=overwrite)
    with folder if accelerator.is_main_process else contextlib.nullcontext():
        accelerator.wait_for_everyone()
        finished = _finished_run(inputs) if resume else None
        if finished is not None:
            return finished
        set_seed(config.seed)
        run = _prepare(inputs, accelerator, config, digest(identity), resume)
        _Loop(run, resume).run()
        return _finish(run, None if tail is None else tail.description, started)


def _finished_run(inputs: Inputs) -> TrainResult | None:
    """A resumed run that had already finished (its identity was checked on entry): its saved model goes back on
    the reward model and its result is returned unchanged, so resuming it again is a no-op."""
    path = inputs.out / "train_result.json"
    if not path.exists():
        return None
    result = TrainResult.load(path)
    if result.global_step < result.total_steps:
        return None
    inputs.reward_model.model = RewardModel.load(inputs.out, max_length=result.max_length).model
    if result.max_length:
        inputs.reward_model.max_length = result.max_length
    if inputs.progress:
        print(f"{inputs.out}: the run finished at step {result.global_step}; nothing to resume", file=sys.stderr)
    return result


def _tail_mask(
    tail: TailSplit | None, dataset: PreferenceDataset | PointwiseDataset, config: TrainConfig
) -> np.ndarray | None:
    """The tail split as a mask over the training rows; refuses a split of other data, or none for a method that
    needs it."""
    tail_mask = None if tail is None else np.asarray(tail.mask, dtype=bool)
    if tail_mask is not None and len(tail_mask) != len(dataset):
        raise CartError(f"the tail split has {len(tail_mask)} entries for {len(dataset)} training examples")
    if get_method(config.method, config).needs_tail and tail_mask is None:
        raise CartError(f"method '{config.method}' needs the head/tail split: pass --tail-by")
    return tail_mask


def _accelerator(config: TrainConfig, out: Path) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    on_cpu = default_device().type == "cpu"
    if on_cpu:
        return_freed_buffers_to_the_os()
    AcceleratorState._reset_state()  # the precision of an earlier train() in this process must not stick
    return Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=trackers(config.report_to),
        project_dir=str(out / "logs"),
        mixed_precision=mixed_precision(config.mixed_precision),
        cpu=on_cpu,  # without it accelerate runs torchrun's CPU processes as separate single runs
    )


def _fit_length(inputs: Inputs, config: TrainConfig, accelerator: Any) -> tuple[int, int]:
    """The token limit of the training texts (set on the model) and how many texts are longer."""
    reward_model, dataset = inputs.reward_model, inputs.dataset
    if config.max_length:
        reward_model.max_length = config.max_length
    max_length, truncated = fit_max_length(
        reward_model, dataset, config.max_length or model_max_positions(reward_model.model)
    )
    max_length = config.max_length or max_length
    if inputs.progress and accelerator.is_local_main_process:
        print(
            f"max length {max_length} tokens; {truncated} of {_texts(dataset)} texts are longer and lose their start",
            file=sys.stderr,
        )
    return max_length, truncated


def _loader(method: TrainingMethod, builder: BatchBuilder, config: TrainConfig) -> DataLoader:
    """Batches as the method draws them (its sampler) and splits them into forward passes (its batch plan)."""
    lengths = builder.lengths() if config.group_by_length and builder.pairwise else None
    draw = method.sampler(builder.is_tail, config.batch_size, config.seed, lengths)
    plan = method.batch_plan(default_device().type)
    return DataLoader(
        range(builder.n),  # type: ignore[arg-type]  # any sized sequence of indices works
        batch_size=draw.batch_size,
        sampler=draw.sampler,
        collate_fn=functools.partial(
            builder.chunks, max_tokens=plan.max_tokens, weigh=plan.weigh, tail_together=plan.tail_together
        ),
        generator=torch.Generator().manual_seed(config.seed),
    )


def _prepare(inputs: Inputs, accelerator: Any, config: TrainConfig, run_digest: str, resume: bool) -> Run:
    """Everything before the first step, in the order that fixes the run's random draws: the token limit, the
    method, the loader, the optimizer, the method's setup, the schedule, accelerate's preparation, the resumed
    position."""
    from transformers import get_scheduler

    reward_model = inputs.reward_model
    max_length, truncated = _fit_length(inputs, config, accelerator)
    config = config.model_copy(update={"max_length": max_length})
    method = get_method(config.method, config)
    shape_model(reward_model.model, config, inputs.progress and accelerator.is_local_main_process)
    builder = BatchBuilder(reward_model, inputs.dataset, inputs.tail_mask, max_length=max_length)
    loader = _loader(method, builder, config)
    optimizer = torch.optim.AdamW(parameter_groups(reward_model.model, config.weight_decay), lr=config.learning_rate)
    micro_per_epoch = math.ceil(len(loader) / accelerator.num_processes)
    steps_per_epoch = math.ceil(micro_per_epoch / config.gradient_accumulation_steps)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    context = TrainingContext(
        tail_mask=builder.is_tail,
        total_steps=total_steps,
        output_dir=inputs.out,
        progress=inputs.progress,
        max_length=max_length,
        circuits=inputs.circuits,
        vulnerability=inputs.vulnerability,
    )
    method.setup(reward_model, inputs.dataset, context)
    scheduler = get_scheduler(
        "linear",
        optimizer,
        num_warmup_steps=int(config.warmup_ratio * total_steps) * accelerator.num_processes,
        num_training_steps=total_steps * accelerator.num_processes,
    )
    model, optimizer, loader, scheduler = accelerator.prepare(reward_model.model, optimizer, loader, scheduler)
    run = Run(
        inputs,
        accelerator,
        config,
        method,
        model,
        optimizer,
        scheduler,
        loader,
        total_steps=total_steps,
        micro_per_epoch=micro_per_epoch,
        run_digest=run_digest,
        max_length=max_length,
        truncated=truncated,
    )
    _restore(run, resume)
    return run


def _restore(run: Run, resume: bool) -> None:
    """The loop's position (from the newest checkpoint when resuming) and the method's state; then the trackers
    start and the model is put in training mode."""
    state: dict[str, Any] = (
        load_checkpoint(run.accelerator, run.inputs.out, run.run_digest)
        if resume
        else {"global_step": 0, "micro": 0, "history": [], "curve": [], "method": {}}
    )
    run.method.restore(state.get("method", {}))
    run.accelerator.init_trackers(
        "train", config=hparams(run.config.model_dump()), init_kwargs=tracker_names(run.config, run.inputs.out)
    )
    run.model.train()
    run.global_step, run.micro, run.history = state["global_step"], state["micro"], state["history"]
    run.curve = state.get("curve", [])


class _Loop:
    """The optimizer steps of a prepared run: epochs of micro-batches, logging, learning-curve scores,
    checkpoints, and stopping at a step boundary on request."""

    def __init__(self, run: Run, resume: bool) -> None:
        from tqdm.auto import tqdm

        self.run_ = run
        if not run.curve:
            self.score_curve(0)
        self.bar = tqdm(
            total=run.total_steps,
            initial=run.global_step,
            desc=f"train[{run.config.method}]",
            disable=not run.inputs.progress or not run.accelerator.is_local_main_process,
        )
        self.stop = StopRequest()
        self.saved_step = run.global_step if resume else None

    def score_curve(self, step: int) -> None:
        run = self.run_
        evaluate, config = run.inputs.evaluate, run.config
        if evaluate is not None and config.eval_steps and (step % config.eval_steps == 0 or step == run.total_steps):
            scores = evaluate(run.inputs.reward_model)
            run.curve.append({"step": step, **scores})
            run.accelerator.log({f"eval/{k}": v for k, v in scores.items()}, step=step)

    def save(self, step: int, micro_batches: int) -> int:
        run = self.run_
        save_checkpoint(
            run.accelerator,
            run.inputs.out,
            {
                "global_step": step,
                "micro": micro_batches,
                "history": run.history,
                "curve": run.curve,
                "method": run.method.state(),
                "run": run.run_digest,
            },
        )
        return step

    def run(self) -> None:
        run = self.run_
        try:
            while run.global_step < run.total_steps and not self.stop.agreed(run.accelerator):
                self._epoch()
            if run.global_step < run.total_steps:
                if self.saved_step != run.global_step:
                    self.save(run.global_step, run.micro)
                raise CartError(
                    f"interrupted at step {run.global_step} of {run.total_steps}; checkpoint saved in "
                    f"{run.inputs.out / 'checkpoints'}; continue with --resume"
                )
        except KeyboardInterrupt:
            found = checkpoints(run.inputs.out)
            last = f"the last checkpoint is {found[-1]}" if found else "no checkpoint was saved"
            raise CartError(
                f"aborted during step {run.global_step + 1} of {run.total_steps}; {last}; continue with --resume"
            ) from None
        finally:
            self.stop.close()
            self.bar.close()

    def _epoch(self) -> None:
        """The rest of the current epoch (from where a resumed run stopped), or until the last step or a stop."""
        run = self.run_
        epoch, offset = divmod(run.micro, run.micro_per_epoch)
        batches: Any = run.accelerator.skip_first_batches(run.loader, offset) if offset else run.loader
        batches.set_epoch(epoch)  # accelerate's loaders pass the epoch on to the sampler when they start
        for chunks in batches:
            with run.accelerator.accumulate(run.model):
                logs = _forward_backward(
                    run.accelerator, run.model, run.method, chunks, run.global_step, run.inputs.out
                )
                if run.accelerator.sync_gradients and run.config.max_grad_norm:
                    run.accelerator.clip_grad_norm_(run.model.parameters(), run.config.max_grad_norm)
                run.optimizer.step()
                run.scheduler.step()
                run.optimizer.zero_grad()
            run.micro += 1
            run.running.append(logs["loss"])
            if not run.accelerator.sync_gradients:
                continue
            if self._step_done(logs):
                break

    def _step_done(self, logs: dict[str, float]) -> bool:
        """After an optimizer step: progress, logs, curve, checkpoint; True when the loop is to stop."""
        run, config = self.run_, self.run_.config
        run.global_step += 1
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{np.mean(run.running[-20:]):.4f}")
        if run.global_step % config.logging_steps == 0 or run.global_step == run.total_steps:
            entry = {
                "step": run.global_step,
                "epoch": run.micro / run.micro_per_epoch,
                "lr": run.scheduler.get_last_lr()[0],
                **logs,
            }
            run.history.append(entry)
            run.accelerator.log({f"train/{k}": v for k, v in entry.items() if k != "step"}, step=run.global_step)
        self.score_curve(run.global_step)
        end_of_epoch = run.micro % run.micro_per_epoch == 0
        if (
            run.global_step >= run.total_steps
            or (config.save_steps and run.global_step % config.save_steps == 0)
            or (not config.save_steps and end_of_epoch)
        ):
            self.saved_step = self.save(run.global_step, run.micro)
        return run.global_step >= run.total_steps or self.stop.agreed(run.accelerator)


def _finish(run: Run, tail: str | None, started: float) -> TrainResult:
    """End training, put the unwrapped float32 model back on the reward model, save it with the result."""
    accelerator, reward_model = run.accelerator, run.inputs.reward_model
    accelerator.wait_for_everyone()
    accelerator.end_training()
    model = accelerator.unwrap_model(run.model, keep_fp32_wrapper=False)  # scoring after: no autocast
    if run.config.gradient_checkpointing:
        checkpointing(model, False)
    if has_lora(model):
        if accelerator.is_main_process:
            with atomic_directory(run.inputs.out / "adapter") as folder:
                save_adapter(model, folder, base=reward_model.name)
        model = merge_lora(model)
    reward_model.model = model
    result = TrainResult(
        output_dir=str(run.inputs.out),
        method=run.config.method,
        global_step=run.global_step,
        total_steps=run.total_steps,
        final_loss=float(np.mean(run.running[-20:])) if run.running else float("nan"),
        seconds=time.time() - started,
        history=run.history,
        curve=run.curve,
        max_length=run.max_length,
        truncated=run.truncated,
        tail=tail,
    )
    if accelerator.is_main_process:
        save_final(reward_model, run.config, result, run.inputs.out)
    return result


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
            check_finite(loss, step + 1, out)
            accelerator.backward(loss)
        for key, value in logs.items():
            size = 1 if key == "loss" else len(batch.index)
            sums[key] = sums.get(key, 0.0) + value * size
            examples[key] = examples.get(key, 0) + size
    return {key: total if key == "loss" else total / examples[key] for key, total in sums.items()}


def _texts(dataset: PreferenceDataset | PointwiseDataset) -> int:
    return len(dataset) * (2 if isinstance(dataset, PreferenceDataset) else 1)
