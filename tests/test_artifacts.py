"""Every saved result shares one base: atomic JSON, schema version checked on load, one-line errors naming the file."""

import pytest

from cartrm.circuits.result import Circuits
from cartrm.errors import CartError
from cartrm.evaluation.metrics import EvaluationReport
from cartrm.experiments.ensemble import EnsembleResult
from cartrm.experiments.sweep import BoundSweep
from cartrm.io import Artifact
from cartrm.report.results import RunResults, SeedStability
from cartrm.training import TrainResult
from cartrm.vulnerability.result import VulnerabilityReport


class Example(Artifact):
    kind = "example"
    schema_version: int = 3
    value: float
    names: list[str] = []


@pytest.mark.parametrize(
    "result",
    [
        Circuits,
        VulnerabilityReport,
        EvaluationReport,
        RunResults,
        SeedStability,
        TrainResult,
        EnsembleResult,
        BoundSweep,
    ],
)
def test_every_saved_result_is_an_artifact(result):
    assert issubclass(result, Artifact) and result.kind != Artifact.kind


def test_an_artifact_round_trips_and_records_its_schema_version(tmp_path):
    Example(value=1.5, names=["a"]).save(tmp_path / "e.json")
    assert '"schema_version": 3' in (tmp_path / "e.json").read_text()
    assert Example.load(tmp_path / "e.json") == Example(value=1.5, names=["a"])
    assert not [p for p in tmp_path.iterdir() if p.name != "e.json"]  # no temporary file left


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "no such example file"),
        ("{not json", "cannot read the example file"),
        ('{"schema_version": 2, "value": 1}', "example schema version 2, this cartrm reads 3"),
        ('{"schema_version": 3, "value": "high"}', "field 'value'"),
        ('{"schema_version": 3, "value": 1, "extra": 0}', "field 'extra'"),
        ("[1, 2]", "example schema version None"),
    ],
)
def test_a_bad_artifact_file_is_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "e.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(CartError, match=message) as error:
        Example.load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
