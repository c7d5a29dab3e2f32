"""The anchors: reward models that are not trained as networks (the bag-of-words logistic model), fitted on the
seed's training split and scored on its test split like every method, so tables and comparisons include them."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from cartrm.evaluation import EvaluationReport
from cartrm.evaluation.anchor import BagOfWordsReward
from cartrm.experiments.stages.context import SeedContext, logged
from cartrm.experiments.stages.evaluation import save_evaluation, saved_evaluation
from cartrm.io import write_json_atomic
from cartrm.runs import stage_key
from cartrm.runs.identity import source_identity
from cartrm.runs.stage import Stage

ANCHOR_VERSION = 2  # 2: pair orders drawn from their own stream (1 replayed a same-seed benchmark's domains)
ANCHORS = {"bag-of-words": lambda: BagOfWordsReward(target="label")}
"""Each anchor's name and how it is built: fitted on the training labels, as the trained methods are."""


def anchored(ctx: SeedContext, name: str) -> tuple[EvaluationReport, dict[str, np.ndarray], float]:
    """``name``'s test report, per-pair correctness and fitting seconds, fitted and scored unless a finished
    stage has them."""
    config = ctx.config
    data: Any = config.benchmark if config.data is None else [source_identity(config.data), config.user_split]
    key = stage_key(name, ANCHOR_VERSION, data, config.tail_by, ctx.seed)
    folder = ctx.layout.eval(name)
    stage = Stage(folder, key, outputs=("metrics.json", "scores.json", "fit.json"))
    if not stage.done():
        stage.begin()
        started = time.time()
        with logged(f"seed {ctx.seed}: fitting and evaluating the {name} anchor"):
            model = ANCHORS[name]().fit(ctx.splits["train"], seed=ctx.seed)
            chosen, rejected = model.score_pairs(ctx.splits["test"])
        save_evaluation(ctx, name, chosen, rejected)
        write_json_atomic(folder / "fit.json", {"seconds": time.time() - started})
        stage.finish()
    seconds = float(json.loads((folder / "fit.json").read_text())["seconds"])
    return (*saved_evaluation(ctx, name), seconds)
