"""One training process for ``test_distributed.py``: run by torchrun (2 processes) or by plain Python (1).

Usage: ``python distributed_worker.py DATA OUT BATCH_SIZE AUDIT_DIR [LORA_R]``. Trains ``tiny-bert`` with Bradley–Terry
(with rank-``LORA_R`` adapters when given)
and records, in ``AUDIT_DIR/rank-R.json``, every path under ``OUT`` this process opened for writing, renamed,
created or removed (Python's audit hooks; writes made by native code, such as safetensors' own, are not seen,
but the model folder's files are moved into place with ``os.replace`` and its JSON files are written by
Python).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

WRITE_EVENTS = {"os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "shutil.move"}


def main() -> None:
    data, out, batch_size, audit = sys.argv[1], Path(sys.argv[2]).resolve(), int(sys.argv[3]), Path(sys.argv[4])
    lora_r = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    rank = int(os.environ.get("RANK", "0"))
    touched: list[str] = []

    def record(event: str, args: tuple) -> None:
        writes = event == "open" and isinstance(args[1], str) and any(flag in args[1] for flag in "wax+")
        if writes or event in WRITE_EVENTS:
            for value in args[:2]:
                if isinstance(value, (str, os.PathLike)) and Path(os.fspath(value)).resolve().is_relative_to(out):
                    touched.append(str(Path(os.fspath(value)).resolve().relative_to(out)))

    from cartrm.data import load_preferences
    from cartrm.models import RewardModel
    from cartrm.training import TrainConfig, train

    dataset = load_preferences(data)
    model = RewardModel.load("tiny-bert", seed=0)
    # a plain shuffle: length grouping shuffles whole batches, so 1 × 8 and 2 × 4 pairs would see other batches
    config = TrainConfig(
        batch_size=batch_size,
        epochs=2,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        seed=0,
        group_by_length=False,
        lora_r=lora_r,
    )
    sys.addaudithook(record)
    train(model, dataset, config, out, progress=False)
    audit.mkdir(parents=True, exist_ok=True)
    (audit / f"rank-{rank}.json").write_text(json.dumps(sorted(set(touched))))


if __name__ == "__main__":
    main()
