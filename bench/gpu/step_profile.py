"""Where a training step's time goes on the machine it runs on (written for a GPU lease; runs on CPU too).

Same model, data and settings as the full preset's bt training (benchmark pairs, 16 pairs per batch, max length
128), measured in one process:
- ``cart train`` steps (``train()``) with the default ``max_batch_tokens`` and with one pass per batch: seconds per
  step from two run lengths (``(t(long) - t(short)) / (long - short)``, so loading and saving cancel out);
- a bare loop over the same batches (tokenise up front, ``model(**batch)`` on chosen and rejected, the BT loss,
  backward, AdamW, under the same autocast): the floor the trainer is compared with;
- a cProfile of ``train()`` (top functions by own time), to name what the trainer adds.

Run: ``python bench/gpu/step_profile.py --out DIR [--model minilm] [--short 10] [--long 60]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SETTINGS = dict(batch_size=16, learning_rate=5e-5, max_length=128)


def benchmark_data(n_pairs: int):
    from cartrm.datasets import BenchmarkConfig, make_longtail_dataset

    data = make_longtail_dataset(
        BenchmarkConfig(n_train=n_pairs, n_validation=2, n_test_head=2, n_test_tail=2, seed=0)
    ).split("train")
    return data, np.array(data.column("is_tail"), dtype=bool)


def train_seconds(model_name: str, data, mask, steps: int, work: Path, **overrides) -> float:
    from cartrm.data.tail import TailSplit
    from cartrm.models import RewardModel
    from cartrm.training import TrainConfig, train

    model = RewardModel.load(model_name)
    config = TrainConfig(max_steps=steps, **SETTINGS, **overrides)
    started = time.perf_counter()
    train(
        model,
        data,
        config,
        work / f"run-{steps}-{len(overrides)}",
        tail=TailSplit(mask, "is_tail"),
        progress=False,
        overwrite=True,
    )
    return time.perf_counter() - started


def per_step(model_name: str, data, mask, short: int, long: int, work: Path, **overrides) -> float:
    train_seconds(model_name, data, mask, 2, work, **overrides)  # warm-up: kernels, allocator, file cache
    return (
        train_seconds(model_name, data, mask, long, work, **overrides)
        - train_seconds(model_name, data, mask, short, work, **overrides)
    ) / (long - short)


def bare_loop(model_name: str, data, steps: int) -> float:
    """Seconds per step of the plainest BT loop on the same batches (no sampler, no accelerate, no logging)."""
    from cartrm.models import RewardModel
    from cartrm.models.reward_model import default_device

    model = RewardModel.load(model_name)
    device = default_device()
    net = model.model.to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=SETTINGS["learning_rate"])
    size = SETTINGS["batch_size"]
    rows = data.to_records()
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()

    def encode(texts: list[str]) -> dict[str, torch.Tensor]:
        batch = model.tokenizer(
            texts, truncation=True, max_length=SETTINGS["max_length"], padding=True, return_tensors="pt"
        )
        return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    batches = [
        (
            encode([r["prompt"] + " " + r["chosen"] for r in rows[i : i + size]]),
            encode([r["prompt"] + " " + r["rejected"] for r in rows[i : i + size]]),
        )
        for i in range(0, size * steps, size)
    ]

    def step(chosen: dict[str, torch.Tensor], rejected: dict[str, torch.Tensor]) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = -torch.nn.functional.logsigmoid(net(**chosen).logits - net(**rejected).logits).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    for chosen, rejected in batches[:3]:
        step(chosen, rejected)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    for chosen, rejected in batches[3:]:
        step(chosen, rejected)
    sync()
    return (time.perf_counter() - started) / (len(batches) - 3)


def profile_train(model_name: str, data, mask, steps: int, work: Path) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    train_seconds(model_name, data, mask, steps, work, logging_steps=steps)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
    return text.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--short", type=int, default=10)
    parser.add_argument("--long", type=int, default=60)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data, mask = benchmark_data(16 * (args.long + 4))
    results: dict[str, str | float] = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    measures = {
        "train, default max_batch_tokens": lambda work: per_step(args.model, data, mask, args.short, args.long, work),
        "train, one pass per batch": lambda work: per_step(
            args.model, data, mask, args.short, args.long, work, max_batch_tokens=0
        ),
        "bare loop": lambda work: bare_loop(args.model, data, args.long),
    }
    with tempfile.TemporaryDirectory() as scratch:
        for name, measure in measures.items():  # each figure is kept as soon as it is measured
            results[name] = measure(Path(scratch))
            (args.out / "step_profile.json").write_text(json.dumps(results, indent=2))
            print(f"{name}: {float(results[name]) * 1000:.1f} ms per step", flush=True)
        (args.out / "step_profile.txt").write_text(profile_train(args.model, data, mask, args.long, Path(scratch)))


if __name__ == "__main__":
    main()
