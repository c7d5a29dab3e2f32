#!/usr/bin/env bash
# Run here (with the package registries): fills bench/gpu/carry/ with what a GPU machine without network
# lacks for `cart run`: wheels for its Python 3.12 (pydantic and its parts, cartrm itself) and a float16 copy of
# MiniLM (~45 MB). Then run full.sh there with `carry: ["bench/gpu/carry"]` (the device tool) or copy it over.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
carry="$here/carry"
python="${PYTHON:-python}"
rm -rf "$carry" && mkdir -p "$carry/wheels"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$carry/wheels" \
  pydantic pydantic-core annotated-types typing-inspection
"$python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$carry/wheels" "$here/../.."
"$python" "$here/minilm_fp16.py" pack "$carry/minilm-fp16"
du -sh "$carry"
