"""Circuit stability before/after CART: CART's top tail neurons against the baseline's, and Vuln of the targeted
circuits after CART."""

from __future__ import annotations

from cartrm.circuits.compare import circuit_overlap, top_tail_neurons
from cartrm.circuits.discover import discover
from cartrm.circuits.result import Circuits
from cartrm.experiments.stages.analysis import analysis_data
from cartrm.experiments.stages.context import SCORING_VERSION, SeedContext, activation_cache, logged
from cartrm.models import RewardModel
from cartrm.report.results import SeedStability
from cartrm.runs import stage_key
from cartrm.runs.stage import Stage
from cartrm.vulnerability.assess import assess
from cartrm.vulnerability.result import VulnerabilityReport

CART = "cart"


def stability(ctx: SeedContext) -> SeedStability:
    layout, config = ctx.layout, ctx.config
    key = stage_key(Stage.key_of(layout.model(CART)), config.stability_top_k, SCORING_VERSION)
    stage = Stage(layout.stability, key, outputs=("stability.json",))
    if not stage.done():
        stage.begin()
        with logged(f"seed {ctx.seed}: circuit stability before/after CART"):
            _measure(ctx)
        stage.finish()
    return SeedStability.load(layout.stability / "stability.json")


def _measure(ctx: SeedContext) -> None:
    layout, config, folder = ctx.layout, ctx.config, ctx.layout.stability
    baseline_circuits = Circuits.load(layout.circuits)
    before = VulnerabilityReport.load(layout.vulnerability)
    cart_model = RewardModel.load(layout.model(CART))
    data, tail = analysis_data(ctx)
    cheap = config.discovery.model_copy(update={"seed": ctx.seed, "patch_pairs": 0, "top_k": config.stability_top_k})
    with activation_cache(folder) as cache:
        cart_circuits = discover(cart_model, data, tail, cheap, progress=ctx.progress, cache_dir=cache)
        after = assess(
            cart_model,
            data,
            tail,
            baseline_circuits,
            config.assessment.model_copy(update={"seed": ctx.seed}),
            progress=ctx.progress,
            check_fingerprint=False,
            cache_dir=cache,
        )
    cart_circuits.save(folder / "cart_circuits.json")
    k = config.stability_top_k
    SeedStability(
        seed=ctx.seed,
        top_k=k,
        baseline_vs_cart_jaccard=circuit_overlap(
            [top_tail_neurons(baseline_circuits, k), top_tail_neurons(cart_circuits, k)]
        ),
        targets=list(before.targets),
        vuln_before={c.id: c.vuln for c in before.circuits if c.id in before.targets},
        vuln_after={c.id: c.vuln for c in after.circuits if c.id in before.targets},
    ).save(folder / "stability.json")
