"""Checkpoints and the final save: ``checkpoints/step-N`` (accelerate state plus the loop's position and the
method's state, written atomically, the newest few kept), resuming from the newest, stopping at a step boundary on
Ctrl-C, and the model folder written at the end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import torch

from cartrm.errors import CartError
from cartrm.io import Artifact, write_json_atomic
from cartrm.models.reward_model import RewardModel
from cartrm.training.config import TrainConfig

CHECKPOINTS_KEPT = 2


class StopRequest:
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


def check_finite(loss: torch.Tensor, step: int, out: Path) -> None:
    """Stop before a NaN/inf loss reaches the weights; the last checkpoint stays the last good one."""
    if not torch.isfinite(loss).all():
        found = checkpoints(out)
        last = f"the last good checkpoint is {found[-1]}" if found else "no checkpoint was saved yet"
        raise CartError(
            f"step {step}: the loss is {loss.item()}; training stopped before applying it ({last}); a learning rate, "
            "tail weight or data weight/margin too large for float32 does this: try a lower --lr first"
        )


def save_checkpoint(accelerator: Any, out: Path, loop_state: dict[str, Any]) -> None:
    """Save accelerate state + loop position (and the method's state) under ``checkpoints/step-N`` atomically;
    keep the newest few."""
    folder = out / "checkpoints" / f"step-{loop_state['global_step']}"
    if accelerator.is_main_process:
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    tmp = folder.with_name(f".{folder.name}.tmp")
    try:
        accelerator.save_state(str(tmp))
        if accelerator.is_main_process:
            (tmp / "trainer_state.json").write_text(json.dumps(loop_state))
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        found = checkpoints(out)
        last = f"the last checkpoint is {found[-1]}" if found else "no checkpoint was saved"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CartError(f"cannot write the checkpoint {folder} ({reason}); {last}") from None
    if accelerator.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        for old in checkpoints(out)[:-CHECKPOINTS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def checkpoints(out: Path) -> list[Path]:
    folder = out / "checkpoints"
    found = [p for p in folder.glob("step-*") if (p / "trainer_state.json").exists()] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def load_checkpoint(accelerator: Any, out: Path, run: str) -> dict[str, Any]:
    """The loop state of the newest checkpoint, which must belong to ``run`` (the run identity's digest)."""
    found = checkpoints(out)
    if not found:
        raise CartError(f"--resume: no checkpoint found under {out / 'checkpoints'}")
    state = json.loads((found[-1] / "trainer_state.json").read_text())
    if state.get("run") != run:
        raise CartError(f"--resume: {found[-1]} belongs to another run than {out / 'run.json'}")
    accelerator.load_state(str(found[-1]))
    return state


def save_final(reward_model: RewardModel, config: TrainConfig, result: Artifact, out: Path) -> None:
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
