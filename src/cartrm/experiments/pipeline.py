"""``cart run``: the whole experiment, per seed, with every intermediate artifact kept.

Per seed the stages of :mod:`cartrm.experiments.seed_run` run in order; each is a :class:`cartrm.runs.stage.Stage`
(skipped when its inputs did not change, so an interrupted run resumes at the first unfinished stage, and an
interrupted training at its last checkpoint). Then ``results.json`` (means over seeds with 95% intervals, paired
comparisons) and ``report.html``; when a seed fails, both are still written for the seeds that finished. The run
folder's layout: :mod:`cartrm.runs.layout`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from cartrm.errors import CartError
from cartrm.experiments.run_config import RunConfig
from cartrm.experiments.seed_run import SeedOutcome, SeedRun
from cartrm.io import versions, write_json_atomic, write_text_atomic
from cartrm.report.aggregate import aggregate
from cartrm.report.html import write_report
from cartrm.report.results import RunResults
from cartrm.runs import lock_folder
from cartrm.runs.layout import RunLayout

log = logging.getLogger("cartrm.run")


def run_experiment(config: RunConfig, progress: bool = True) -> RunResults:
    """Run every stage for every seed (skipping finished ones), then write results.json and report.html."""
    started = time.time()
    layout = RunLayout(config.directory)
    config = with_finished_seeds(config)
    seeds = [SeedRun(config, seed, progress) for seed in config.seeds]  # bad data or tail specs fail before writing
    prepared = time.time() - started
    lock = lock_folder(layout.root, "running an experiment in")
    handler = _log_to(layout.log)
    try:
        log.info("data splits and tails of seed(s) %s: ready in %.0f s", ", ".join(map(str, config.seeds)), prepared)
        write_text_atomic(layout.config, config.to_yaml())
        write_json_atomic(layout.versions, versions())
        outcomes: list[SeedOutcome] = []
        try:
            for seed in seeds:
                outcomes.append(seed.run())
        except BaseException:
            if outcomes:
                _write_results(config, outcomes, started, partial=True)
            raise
        return _write_results(config, outcomes, started)
    finally:
        logging.getLogger("cartrm").removeHandler(handler)
        handler.close()
        os.close(lock)


def with_finished_seeds(config: RunConfig) -> RunConfig:
    """``config`` with the seeds that earlier runs of it in the same folder finished, so that running more seeds
    into a run folder adds them to its results instead of replacing them (their stages are skipped). Only runs
    with the same settings but the seeds (wherever the folder was) count."""
    layout = RunLayout(config.directory)
    if not (layout.config.exists() and layout.results.exists()):
        return config
    try:
        earlier, results = RunConfig.from_yaml(layout.config), RunResults.load(layout.results)
    except (CartError, ValueError):
        return config
    place = {"seeds": config.seeds, "out_root": config.out_root, "name": config.name}
    if earlier.model_copy(update=place) != config:
        return config
    kept = [s for s in results.seeds if s not in config.seeds]
    if kept:
        log.info("seed(s) %s finished earlier in %s and stay in its results", ", ".join(map(str, kept)), layout.root)
    return config.model_copy(update={"seeds": tuple(sorted({*config.seeds, *kept}))})


def _write_results(config: RunConfig, outcomes: list[SeedOutcome], started: float, partial: bool = False) -> RunResults:
    """results.json and report.html over ``outcomes`` (``partial``: the seeds that finished before one failed)."""
    layout = RunLayout(config.directory)
    finished = config.model_copy(update={"seeds": tuple(o.seed for o in outcomes)}) if partial else config
    results = aggregate(finished, outcomes, time.time() - started)
    results.save(layout.results)
    write_report(layout.root)
    if partial:
        log.warning("a seed failed: %s and %s hold seed(s) %s only", layout.results, layout.report, finished.seeds)
    else:
        log.info("wrote %s and %s", layout.results, layout.report)
    return results


def _log_to(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("cartrm")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler
