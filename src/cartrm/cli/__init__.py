"""The ``cart`` command line: parses options and calls the library; errors are one line on stderr. One module per
group of commands (:mod:`.training`, :mod:`.analysis`, :mod:`.audit`, :mod:`.experiment`), on the application of
:mod:`.app`; they are imported in the order ``cart --help`` lists them."""

# isort: off
from cartrm.cli import training, analysis, audit, experiment, models
from cartrm.cli.app import app, main

# isort: on

__all__ = ["analysis", "app", "audit", "experiment", "main", "models", "training"]
