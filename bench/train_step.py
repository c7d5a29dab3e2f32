"""Cost of a CART training step over a plain Bradley–Terry step (target ≤ 1.3×), measured in one process.

Every method trains a fresh copy of the same model on the same batches (each with at least
``min_tail_per_batch`` tail pairs, as the tail-aware sampler builds them); a step is the method's loss,
backward and an AdamW step. One-off costs (augmentation selection, circuit discovery) are reported
separately: they happen when targets are set, not per step. The circuits are found on the base model with a
cheap discovery (no patching) on ``--discovery-pairs`` benchmark pairs; the targets are its largest circuits.

Run: ``python bench/train_step.py [--model minilm] [--steps 6] [--batch-size 16]``.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

VARIANTS = {
    "bt": ("bt", {}),
    "cart: circuit reg only": ("cart", {"augmentation": False, "progressive": False}),
    "cart: augmentation only": ("cart", {"circuit_reg": False, "progressive": False}),
    "cart: all components": ("cart", {}),
}


def benchmark_data(n_pairs: int, seed: int):
    from cartrm.datasets import BenchmarkConfig, make_longtail_dataset

    data = make_longtail_dataset(
        BenchmarkConfig(n_train=n_pairs, n_validation=2, n_test_head=2, n_test_tail=2, seed=seed)
    ).split("train")
    return data, np.array(data.column("is_tail"), dtype=bool)


def find_circuits(model, data, mask, n_pairs: int, folder: Path) -> Path:
    from cartrm.circuits.discover import DiscoveryConfig, balanced_subset, discover
    from cartrm.data.tail import TailSplit

    subset = balanced_subset(mask, n_pairs, 0)
    circuits = discover(
        model, data.select(subset), TailSplit(mask[subset], "is_tail"), DiscoveryConfig(patch_pairs=0), progress=False
    )
    circuits.save(folder / "circuits.json")
    return folder / "circuits.json"


def batches(data, mask, batch_size: int, min_tail: int, count: int, seed: int) -> list[list[int]]:
    from cartrm.training.sampling import TailAwareSampler

    order = list(TailAwareSampler(mask, batch_size, min_tail, seed))
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(count)]


def time_variant(
    base,
    data,
    mask,
    method_name: str,
    cart_options: dict,
    circuits: Path,
    rows: list[list[int]],
    warmup: int,
    folder: Path,
) -> tuple[float, float]:
    """(one-off setup seconds, mean seconds per step after ``warmup`` steps)."""
    from cartrm.circuits.result import Circuits
    from cartrm.training import TrainConfig, get_method
    from cartrm.training.batches import BatchBuilder
    from cartrm.training.config import CartConfig
    from cartrm.training.methods import TrainingContext

    model = copy.deepcopy(base)
    cart = CartConfig(**cart_options)
    method = get_method(method_name, TrainConfig(method=method_name, cart=cart))
    started = time.perf_counter()
    context = TrainingContext(
        mask, total_steps=len(rows), output_dir=folder / method_name, progress=False, circuits=Circuits.load(circuits)
    )
    method.setup(model, data, context)
    setup_seconds = time.perf_counter() - started
    builder = BatchBuilder(model, data, mask)
    optimizer = torch.optim.AdamW(model.model.parameters(), lr=1e-5)
    model.model.train()
    times = []
    for step, indices in enumerate(rows):
        batch = builder(indices)
        started = time.perf_counter()
        for one_pass in method.passes([batch], step):  # CART's L_aug runs as a pass of its own
            loss, _ = method.loss(model.model, one_pass, step)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return setup_seconds, float(np.mean(times[warmup:]))


def main() -> None:
    from cartrm.models import RewardModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--pairs", type=int, default=400, help="benchmark training pairs (the tail share is ~10%%)")
    parser.add_argument("--discovery-pairs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--min-tail", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    base = RewardModel.load(args.model, max_length=args.max_length, seed=0)
    data, mask = benchmark_data(args.pairs, seed=0)
    rows = batches(data, mask, args.batch_size, args.min_tail, args.steps + args.warmup, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        circuits = find_circuits(base, data, mask, args.discovery_pairs, folder)
        print(
            f"discovery on {args.discovery_pairs} pairs (one-off, not per step): {time.perf_counter() - started:.1f}s"
        )
        results = {
            name: time_variant(base, data, mask, method, options, circuits, rows, args.warmup, folder)
            for name, (method, options) in VARIANTS.items()
        }
    reference = results["bt"][1]
    print(
        f"{args.model}: {args.steps} timed steps of {args.batch_size} pairs (≥{args.min_tail} tail), "
        f"after {args.warmup} warm-up step(s)"
    )
    for name, (setup, per_step) in results.items():
        print(f"  {name:26s} {per_step:7.3f} s/step  ({per_step / reference:.2f}× bt)   setup {setup:6.1f}s")


if __name__ == "__main__":
    main()
