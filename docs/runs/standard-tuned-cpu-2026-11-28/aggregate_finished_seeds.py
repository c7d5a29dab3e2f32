"""Aggregate the finished seeds of runs/cart-tuned into OUT (read only: any stage that is not done raises
before anything is removed or written)."""
import sys
from pathlib import Path

import cartrm.experiments.pipeline as pipeline
from cartrm.experiments.pipeline import RunConfig, SeedRun
from cartrm.report.aggregate import aggregate
from cartrm.report.html import write_report

done = pipeline._stage_done


def strict(folder, key):
    if not done(folder, key):
        raise RuntimeError(f"stage not done: {folder}")
    return True


pipeline._stage_done = strict
run = Path(sys.argv[1]).resolve()
seeds = tuple(int(s) for s in sys.argv[2].split(","))
out = Path(sys.argv[3]).resolve()
out.mkdir(parents=True, exist_ok=True)
for s in seeds:
    link = out / f"seed-{s}"
    if not link.exists():
        link.symlink_to(run / f"seed-{s}")
config = RunConfig.from_yaml(run / "config.yaml").model_copy(
    update={"seeds": seeds, "out_root": out.parent, "name": out.name}
)
outcomes = []
for s in seeds:
    seed_run = SeedRun(config, s, progress=False)
    outcomes.append(seed_run.run())
results = aggregate(config, outcomes, 0.0)
results.save(out / "results.json")
write_report(out)
print("\n".join(results.verdict + results.notes))
