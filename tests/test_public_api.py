"""``import cartrm`` gives the entry points, and the README's Python example runs as written (on a tiny model)."""

import inspect
import re
from pathlib import Path

import pytest

import cartrm

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_entry_points_are_the_functions_the_commands_call():
    from cartrm.circuits.discover import discover
    from cartrm.experiments.pipeline import run_experiment
    from cartrm.models import load_reward_model
    from cartrm.training import train

    assert cartrm.discover is discover and cartrm.run is run_experiment and cartrm.train is train
    assert cartrm.load_reward_model is load_reward_model
    for name in ("load_reward_model", "train", "discover", "assess", "evaluate", "run"):
        signature = inspect.signature(getattr(cartrm, name))
        assert signature.return_annotation is not inspect.Signature.empty, name
    assert set(cartrm.__all__) <= set(dir(cartrm))


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    """The example as printed, on the tiny random BERT instead of MiniLM (same code path, seconds instead of
    minutes)."""
    block = re.search(r"## Python API.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert len(block.strip().splitlines()) <= 12 and '"minilm"' in block
    monkeypatch.chdir(tmp_path)
    exec(compile(block.replace('"minilm"', '"tiny-bert"'), str(README), "exec"), {})
    assert (tmp_path / "runs" / "api" / "rm" / "model.safetensors").exists()
