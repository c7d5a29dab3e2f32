"""Time the density-tail setup of the HH run with the memoised embedder and check its test splits and tail masks
against the run's stored scores and metrics (made with the embedder called afresh each time)."""
import json, time
import numpy as np
from cartrm.experiments.pipeline import RunConfig, SeedRun
config = RunConfig.from_yaml("runs/hh-density/config.yaml")
started = time.time()
runs = [SeedRun(config, seed, True) for seed in config.seeds]
print(f"setup of {len(runs)} seeds: {time.time() - started:.0f} s")
for run in runs:
    folder = config.directory / f"seed-{run.seed}" / "eval" / "bt"
    scores, metrics = json.loads((folder / "scores.json").read_text()), json.loads((folder / "metrics.json").read_text())
    right = np.array(scores["chosen"]) > np.array(scores["rejected"])
    mask = run.tails["test"].mask
    print(run.seed, "tail n", int(mask.sum()), metrics["tail"]["n"], "tail acc", right[mask].mean(), metrics["tail"]["accuracy"], "head acc", right[~mask].mean(), metrics["head"]["accuracy"])
