"""Capture overhead and discovery memory, measured in one process per figure.

1. Time of a capture pass (hooks on every MLP site, pooling, streamed moments) over a plain forward pass
   on the same batches (target ≤ 1.15×).
2. Peak resident memory of discovery (statistics + candidate passes, no patching) at 1× and 4× the number
   of examples (target: flat — the statistics are streamed). Both runs cap inputs at 128 tokens so their
   longest batch is the same size: attention memory grows with the longest sequence, not with the count.
   The children run with glibc's mmap threshold fixed at 64 KiB and one arena, so freed batch buffers go
   back to the OS: with the default allocator the heap keeps freed memory and peak RSS drifts up with the
   number of batches (measured 1.09–1.24× at 4× examples) although live allocations stay flat.

Run: ``python bench/capture_overhead.py [--model minilm] [--pairs 128] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

MAX_TOKENS = 128
ALLOCATOR_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}


def benchmark_pairs(n_pairs: int):
    from cartrm.data import parse_tail_spec
    from cartrm.datasets import BenchmarkConfig, make_longtail_dataset

    data = make_longtail_dataset(BenchmarkConfig(n_train=n_pairs, n_validation=2, n_test_head=2, n_test_tail=2)).split(
        "train"
    )
    return data, parse_tail_spec("label:is_tail").fit_transform(data)


def capture_ratio(model_name: str, n_pairs: int, repeats: int) -> None:
    from cartrm.capture import list_sites
    from cartrm.capture.stream import ExampleSet, pooled_batches
    from cartrm.circuits.statistics import GroupMoments
    from cartrm.models import RewardModel, reward_forward

    model = RewardModel.load(model_name)
    data, tail = benchmark_pairs(n_pairs)
    examples = ExampleSet.from_pairs(model, data, tail.mask)
    sites = list_sites(model.model, ("mlp",))
    order = np.argsort([len(ids) for ids in examples.encoded.input_ids], kind="stable")
    batches = [model.collate(examples.encoded, order[i : i + 32]) for i in range(0, len(order), 32)]

    def plain() -> None:
        with model.eval_mode(), torch.inference_mode():
            for batch in batches:
                reward_forward(model.model, batch)

    def capture() -> None:
        moments = GroupMoments(sum(s.width for s in sites))
        for batch in pooled_batches(model, examples, sites, batch_size=32):
            moments.update(batch.activations, examples.is_tail[batch.indices])

    plain()  # warm-up
    timings = {"plain": [], "capture": []}
    for _ in range(repeats):
        for name, run in (("plain", plain), ("capture", capture)):
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)
    plain_s, capture_s = min(timings["plain"]), min(timings["capture"])
    print(f"model {model_name}, {len(examples)} texts, {len(sites)} MLP sites ({sum(s.width for s in sites)} neurons)")
    print(f"plain forward pass : {plain_s:.2f} s (best of {repeats})")
    print(f"capture pass       : {capture_s:.2f} s (best of {repeats})")
    print(f"capture / plain    : {capture_s / plain_s:.3f}x  (target <= 1.15x)")


def discovery_peak_rss(model_name: str, n_pairs: int) -> None:
    """Child process: run discovery (no patching) and print its own peak RSS in MiB."""
    from cartrm.circuits.discover import DiscoveryConfig, discover
    from cartrm.models import RewardModel

    model = RewardModel.load(model_name, max_length=MAX_TOKENS)
    data, tail = benchmark_pairs(n_pairs)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    discover(model, data, tail, DiscoveryConfig(patch_pairs=0, n_permutations=100), progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps({"pairs": n_pairs, "peak_mib": after / 1024, "growth_during_discovery_mib": (after - before) / 1024})
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.memory_child:
        discovery_peak_rss(args.model, args.memory_child)
        return
    capture_ratio(args.model, args.pairs, args.repeats)
    results = []
    for pairs in (args.pairs, 4 * args.pairs):
        child = subprocess.run(
            [sys.executable, __file__, "--model", args.model, "--memory-child", str(pairs)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **ALLOCATOR_ENV},
        )
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    for result in results:
        print(
            f"discovery on {result['pairs']:5d} pairs: peak RSS {result['peak_mib']:.0f} MiB "
            f"(grew {result['growth_during_discovery_mib']:.0f} MiB during discovery)"
        )
    print(f"peak RSS 4x / 1x examples: {results[1]['peak_mib'] / results[0]['peak_mib']:.3f}  (target: flat, ~1.0)")


if __name__ == "__main__":
    main()
