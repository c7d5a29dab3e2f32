"""The training loop: PyTorch + accelerate (so ``accelerate launch`` / torchrun DDP work unchanged).

Layout of ``output_dir`` after training: the final reward model as a plain HF folder at the top level
(``config.json``, ``model.safetensors``, tokenizer files), ``train_config.json``, ``train_result.json``,
``checkpoints/step-N`` (accelerate state: model, optimizer, scheduler, RNG) and ``logs/`` (TensorBoard).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from cartrm.data.dataset import PointwiseDataset, PreferenceDataset
from cartrm.errors import CartError
from cartrm.io import write_json_atomic
from cartrm.models.reward_model import RewardModel
from cartrm.training.config import TrainConfig
from cartrm.training.methods import get_method

CHECKPOINTS_KEPT = 2


@dataclass
class TrainResult:
    output_dir: str
    method: str
    global_step: int
    total_steps: int
    final_loss: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> TrainResult:
        return cls(**json.loads(Path(path).read_text()))


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation per epoch drawn from ``(seed, epoch)`` alone, so a resumed run sees the same order."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.size).tolist())

    def __len__(self) -> int:
        return self.size


class BatchBuilder:
    """Tokenises the dataset once; turns a list of row indices into a padded batch.

    Pairwise batches stack the chosen rows over the rejected rows (2B sequences).
    """

    def __init__(self, reward_model: RewardModel, dataset: PreferenceDataset | PointwiseDataset) -> None:
        self.model = reward_model
        self.n = len(dataset)
        self.pairwise = isinstance(dataset, PreferenceDataset)
        self.weight = dataset.numeric_column("weight") if dataset.has_column("weight") else np.ones(self.n)
        if (self.weight < 0).any() or self.weight.sum() <= 0:
            raise CartError(f"{dataset.source}: column 'weight' must be non-negative with a positive sum")
        if self.pairwise:
            pairs = dataset.render(reward_model.tokenizer)
            prompts = [p.prompt for p in pairs]
            self.encoded = reward_model.encode(prompts * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs])
            self.margin = dataset.numeric_column("margin") if dataset.has_column("margin") else np.zeros(self.n)
        else:
            rendered = dataset.render(reward_model.tokenizer)
            self.encoded = reward_model.encode([p for p, _ in rendered], [r for _, r in rendered])
            self.score = np.asarray(dataset.score, dtype=np.float64)

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = list(indices) + [i + self.n for i in indices] if self.pairwise else list(indices)
        batch = self.model.collate(self.encoded, rows)
        batch["index"] = torch.tensor(indices, dtype=torch.long)
        batch["weight"] = torch.tensor(self.weight[indices], dtype=torch.float32)
        if self.pairwise:
            batch["margin"] = torch.tensor(self.margin[indices], dtype=torch.float32)
        else:
            batch["score"] = torch.tensor(self.score[indices], dtype=torch.float32)
        return batch


def train(
    reward_model: RewardModel,
    dataset: PreferenceDataset | PointwiseDataset,
    config: TrainConfig,
    output_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``reward_model`` in place on ``dataset`` and save it to ``output_dir``."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    out = Path(output_dir)
    started = time.time()
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps, log_with="tensorboard", project_dir=str(out / "logs")
    )
    set_seed(config.seed)
    if config.max_length:
        reward_model.max_length = config.max_length
    method = get_method(config.method, config)
    method.setup(reward_model, dataset)
    builder = BatchBuilder(reward_model, dataset)
    sampler = EpochShuffleSampler(len(dataset), config.seed)
    loader = DataLoader(
        range(len(dataset)), batch_size=config.batch_size, sampler=sampler, collate_fn=builder,
        generator=torch.Generator().manual_seed(config.seed),
    )
    optimizer = torch.optim.AdamW(_parameter_groups(reward_model.model, config.weight_decay), lr=config.learning_rate)
    micro_per_epoch = math.ceil(len(loader) / accelerator.num_processes)
    steps_per_epoch = math.ceil(micro_per_epoch / config.gradient_accumulation_steps)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    scheduler = get_scheduler(
        "linear", optimizer,
        num_warmup_steps=int(config.warmup_ratio * total_steps) * accelerator.num_processes,
        num_training_steps=total_steps * accelerator.num_processes,
    )
    model, optimizer, loader, scheduler = accelerator.prepare(reward_model.model, optimizer, loader, scheduler)
    state = _resume(accelerator, out) if resume else {"global_step": 0, "micro": 0, "history": []}
    accelerator.init_trackers("train", config={k: v for k, v in config.model_dump().items() if v is not None})
    model.train()
    global_step, micro, history = state["global_step"], state["micro"], state["history"]
    bar = tqdm(total=total_steps, initial=global_step, desc=f"train[{config.method}]", disable=not progress or not accelerator.is_local_main_process)
    running: list[float] = []
    while global_step < total_steps:
        epoch, offset = divmod(micro, micro_per_epoch)
        batches = accelerator.skip_first_batches(loader, offset) if offset else loader
        batches.set_epoch(epoch)  # accelerate's loaders pass the epoch on to the sampler when they start
        for batch in batches:
            with accelerator.accumulate(model):
                loss, logs = method.loss(model, batch, global_step)
                accelerator.backward(loss)
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
                entry = {"step": global_step, "epoch": micro / micro_per_epoch, "lr": scheduler.get_last_lr()[0], **logs}
                history.append(entry)
                accelerator.log({f"train/{k}": v for k, v in entry.items() if k != "step"}, step=global_step)
            end_of_epoch = micro % micro_per_epoch == 0
            if global_step >= total_steps or (config.save_steps and global_step % config.save_steps == 0) or (not config.save_steps and end_of_epoch):
                _checkpoint(accelerator, out, global_step, micro, history)
            if global_step >= total_steps:
                break
    bar.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    reward_model.model = accelerator.unwrap_model(model)
    result = TrainResult(
        output_dir=str(out), method=config.method, global_step=global_step, total_steps=total_steps,
        final_loss=float(np.mean(running[-20:])) if running else float("nan"), seconds=time.time() - started, history=history,
    )
    if accelerator.is_main_process:
        _save_final(reward_model, config, result, out)
    return result


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and normalisation weights (the usual AdamW practice)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _checkpoint(accelerator: Any, out: Path, global_step: int, micro: int, history: list) -> None:
    """Save accelerate state + loop position under ``checkpoints/step-N`` atomically; keep the newest few."""
    folder = out / "checkpoints" / f"step-{global_step}"
    if accelerator.is_main_process:
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    tmp = folder.with_name(f".{folder.name}.tmp")
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps({"global_step": global_step, "micro": micro, "history": history}))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        for old in _checkpoints(out)[:-CHECKPOINTS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _checkpoints(out: Path) -> list[Path]:
    folder = out / "checkpoints"
    found = [p for p in folder.glob("step-*") if (p / "trainer_state.json").exists()] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _resume(accelerator: Any, out: Path) -> dict[str, Any]:
    checkpoints = _checkpoints(out)
    if not checkpoints:
        raise CartError(f"--resume: no checkpoint found under {out / 'checkpoints'}")
    accelerator.load_state(str(checkpoints[-1]))
    return json.loads((checkpoints[-1] / "trainer_state.json").read_text())


def _save_final(reward_model: RewardModel, config: TrainConfig, result: TrainResult, out: Path) -> None:
    """Write the model files into ``out``; ``config.json`` goes last so a half-saved folder never loads."""
    staging = out / ".final.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    reward_model.save_into(staging)
    files = sorted(staging.iterdir(), key=lambda p: p.name == "config.json")
    (out / "config.json").unlink(missing_ok=True)
    for path in files:
        os.replace(path, out / path.name)
    shutil.rmtree(staging, ignore_errors=True)
    write_json_atomic(out / "train_config.json", config.model_dump())
    result.save(out / "train_result.json")
