"""``results.json``: every headline figure of a ``cart run``, over seeds, with intervals and paired tests.

Written by :func:`cartrm.experiments.pipeline.run_experiment`; read by the HTML report (``cart report RUN_DIR``).
Paths in ``artifacts`` are relative to the run directory.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cartrm.circuits.concentration import Concentration
from cartrm.evaluation.bon import BoNCurve
from cartrm.evaluation.statistics import PairedComparison, SeedSummary
from cartrm.io import Artifact, Record

RESULTS_SCHEMA_VERSION = 1


class BoNSummary(Record):
    """Best-of-n on one prompt group (``head`` or ``tail``): one curve per seed and their summaries."""

    group: str
    curves: list[BoNCurve]
    peak_n: list[int]
    gold_at_peak: SeedSummary
    gold_at_max: SeedSummary
    gap_at_max: SeedSummary


class MethodResults(Record):
    method: str
    head_accuracy: SeedSummary
    tail_accuracy: SeedSummary
    overall_accuracy: SeedSummary
    head_gold_accuracy: SeedSummary | None = None
    tail_gold_accuracy: SeedSummary | None = None
    by: dict[str, dict[str, SeedSummary]] = {}  # per --by column and value: (gold where known) accuracy
    ece: SeedSummary
    train_seconds: SeedSummary
    bon: dict[str, BoNSummary] = {}
    learning_curves: list[list[dict[str, float]]] = []  # per seed: validation scores at steps (train.eval_steps)
    tuning: list[dict[str, Any]] = []  # per seed: the grid, every variant's validation scores, the chosen one
    n_pairs: dict[str, list[int]] = {}  # per group (head, tail, overall): test pairs scored, per seed
    augmentation: list[dict[str, Any]] = []  # per seed: the kept augmentations' audit per transform (benchmark)
    shortcut_gain: SeedSummary | None = None  # benchmark with a planted shortcut: the reward it adds (validation)


class Comparison(Record):
    """``method − baseline`` on one metric, paired over the same test pairs of every seed."""

    method: str
    baseline: str
    metric: str
    paired: PairedComparison


class Headline(Record):
    """The verdict box of one CART method: its tail change over its compute-matched control, the head change,
    the split of the tail change between more tail pairs (its data control) and the circuit parts, and the
    caveats a reader needs first."""

    method: str
    control: str
    metric: str
    tail: PairedComparison
    head: PairedComparison | None = None
    data_control: str | None = None
    upsampled: PairedComparison | None = None  # data control − control
    circuits: PairedComparison | None = None  # method − data control
    clears_noise: bool
    caveats: list[str] = []


class SeedStability(Artifact):
    """Within one seed: the baseline's top tail neurons vs CART's, and Vuln of the targeted circuits
    before (baseline model) and after (CART model) CART training; saved per seed as ``stability/stability.json``."""

    kind = "stability"

    seed: int
    top_k: int
    baseline_vs_cart_jaccard: float
    targets: list[str]
    vuln_before: dict[str, float]
    vuln_after: dict[str, float]
    effect_share: dict[str, float] = Field(
        default_factory=dict,
        description="each target's patch effect (mean |ΔR| over tail texts, discovery's null mode) over the "
        "baseline's mean |reward margin| on the test split's tail pairs: how much of what decides a tail preference "
        "the targeted circuits carry (empty when the baseline was not scored on the test split)",
    )


class Stability(Record):
    """Across seeds: mean pairwise Jaccard of the baselines' top tail neurons and of their circuits (each
    circuit matched to its best counterpart); per seed: before/after CART."""

    top_k: int
    across_seeds_neuron_jaccard: float | None
    across_seeds_circuit_jaccard: float | None
    per_seed: list[SeedStability]


class RunResults(Artifact):
    kind = "results"
    schema_version: int = RESULTS_SCHEMA_VERSION
    name: str
    config: dict
    setup: dict[str, str]
    seeds: list[int]
    methods: dict[str, MethodResults]
    comparisons: list[Comparison]
    stability: Stability | None = None
    verdict: list[str]
    headlines: list[Headline] = []
    notes: list[str] = []
    concentration: dict[str, Concentration] = {}  # per seed: the baseline's concentration diagnostic
    artifacts: dict[str, str] = {}
    total_seconds: float
