"""From per-seed outcomes to :class:`RunResults`: means over seeds with 95% intervals, paired comparisons of
CART against every baseline on the same test pairs, circuit stability, and a verdict computed from them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cartrm.circuits.result import Circuits
from cartrm.evaluation.statistics import SeedSummary, hierarchical_bootstrap, minimum_detectable_effect, summarise_seeds
from cartrm.report.results import BoNSummary, Comparison, Headline, MethodResults, RunResults, Stability
from cartrm.runs.layout import RunLayout
from cartrm.training.registry import baselines_of, data_control, design, matched_control
from cartrm.training.registry import names as registry_names
from cartrm.vulnerability.diagnostics import circuit_warnings
from cartrm.vulnerability.result import VulnerabilityReport

COMPARED_METRICS = (
    "tail_accuracy",
    "head_accuracy",
    "tail_gold_accuracy",
    "head_gold_accuracy",
    "conflict_gold_accuracy",
)
SIGNIFICANCE = 0.05
PHASE_PLOTS = {
    "delta_hist": "delta_hist.png",
    "coherence_graph": "coherence_graph.png",
    "vulnerability": "vulnerability.png",
}


def aggregate(config, outcomes: Sequence, total_seconds: float) -> RunResults:
    labels = (*config.methods, *config.ablated_methods, *config.anchors)
    methods = {m: _method_results(m, outcomes) for m in labels}
    comparisons = _comparisons(labels, outcomes)
    first = config.directory / f"seed-{outcomes[0].seed}"
    artifacts = {
        name: str(Path(first.name) / "analysis" / file)
        for name, file in PHASE_PLOTS.items()
        if (first / "analysis" / file).exists()
    }
    if (config.directory / "bound" / "bound.png").exists():
        artifacts["bound"] = "bound/bound.png"
    stability = _stability(config, outcomes)
    caveats = _circuit_caveats(config, outcomes)
    return RunResults(
        name=config.name,
        config=config.model_dump(mode="json"),
        setup=_setup(config),
        seeds=list(config.seeds),
        methods=methods,
        comparisons=comparisons,
        stability=stability,
        verdict=verdict(comparisons) + _verdict_caveats(caveats),
        headlines=headlines(comparisons, caveats, len(outcomes)),
        notes=_notes(config, outcomes, comparisons, stability) + [f"{seed}: {line}" for seed, line in caveats],
        concentration={str(o.seed): o.concentration for o in outcomes if o.concentration is not None},
        artifacts=artifacts,
        total_seconds=total_seconds,
    )


def _method_results(method: str, outcomes: Sequence) -> MethodResults:
    reports = [o.reports[method] for o in outcomes]
    bon = {}
    for group in ("head", "tail"):
        curves = [o.bon[method][group] for o in outcomes if method in o.bon and group in o.bon[method]]
        if curves:
            bon[group] = BoNSummary(
                group=group,
                curves=curves,
                peak_n=[c.peak_n for c in curves],
                gold_at_peak=summarise_seeds([max(c.gold) for c in curves]),
                gold_at_max=summarise_seeds([c.gold[-1] for c in curves]),
                gap_at_max=summarise_seeds([c.gap_at_max_n for c in curves]),
            )
    groups = {g: [getattr(r, g) for r in reports] for g in ("head", "tail", "overall")}
    return MethodResults(
        method=method,
        head_accuracy=_accuracy(groups["head"]),
        tail_accuracy=_accuracy(groups["tail"]),
        overall_accuracy=_accuracy(groups["overall"]),
        head_gold_accuracy=_accuracy(groups["head"], gold=True),
        tail_gold_accuracy=_accuracy(groups["tail"], gold=True),
        by=_by_group(reports),
        ece=summarise_seeds([r.overall.ece for r in reports]),
        train_seconds=summarise_seeds([o.train_seconds[method] for o in outcomes]),
        bon=bon,
        learning_curves=[o.curves[method] for o in outcomes if o.curves.get(method)],
        tuning=[{"seed": o.seed, **o.tuning[method]} for o in outcomes if method in o.tuning],
        n_pairs={group: [getattr(r, group).n for r in reports] for group in ("head", "tail", "overall")},
        augmentation=[
            {"seed": o.seed, "transforms": o.augmentation[method]} for o in outcomes if o.augmentation.get(method)
        ],
        shortcut_gain=_shortcut_gain(method, outcomes),
    )


def _shortcut_gain(method: str, outcomes: Sequence) -> SeedSummary | None:
    """The planted shortcut's mean reward gain for ``method`` over the seeds that measured it (None: none did)."""
    gains = [o.shortcut[method] for o in outcomes if method in o.shortcut]
    return summarise_seeds(gains) if gains else None


def _accuracy(metrics: Sequence, gold: bool = False) -> SeedSummary | None:
    """(Gold) accuracy over seeds; for one seed with its bootstrap interval over the test pairs."""
    prefix = "gold_" if gold else ""
    values = [getattr(m, f"{prefix}accuracy") for m in metrics]
    if any(v is None for v in values):
        return None
    summary = summarise_seeds(values)
    low, high = getattr(metrics[0], f"{prefix}ci_low"), getattr(metrics[0], f"{prefix}ci_high")
    if len(metrics) == 1 and low is not None and high is not None:
        return summary.model_copy(update={"ci_low": low, "ci_high": high, "interval": "pairs"})
    return summary


def _by_group(reports: Sequence) -> dict[str, dict[str, SeedSummary]]:
    """Per ``--by`` column and value, the (gold where known) accuracy over the seeds that have it."""
    found: dict[str, dict[str, SeedSummary]] = {}
    for column in reports[0].by:
        for value in reports[0].by[column]:
            metrics = [r.by[column][value] for r in reports if value in r.by.get(column, {})]
            if len(metrics) == len(reports):
                gold = all(m.gold_accuracy is not None for m in metrics)
                summary = _accuracy(metrics, gold=gold)
                if summary is not None:
                    found.setdefault(column, {})[value] = summary
    return found


def _comparisons(methods: Sequence[str], outcomes: Sequence) -> list[Comparison]:
    """Each CART method minus each baseline, per metric, on the same test pairs, with the seed as the unit
    (a hierarchical bootstrap: seeds, then pairs within each seed); and each CART method's data control minus the
    CART method's compute-matched control (what more tail pairs alone give)."""
    pairs = []
    for challenger in _challengers(methods):
        others = [m for m in methods if m != challenger]
        pairs += [(challenger, baseline) for baseline in baselines_of(challenger, others)]
        control, data = matched_control(challenger, methods), data_control(challenger)
        if data is not None and data in methods and control in methods and (data, control) not in pairs:
            pairs.append((data, control))
    found = []
    for (method, baseline), metric in itertools.product(pairs, COMPARED_METRICS):
        if metric not in outcomes[0].correct[method]:
            continue
        a = [o.correct[method][metric] for o in outcomes]
        b = [o.correct[baseline][metric] for o in outcomes]
        found.append(Comparison(method=method, baseline=baseline, metric=metric, paired=hierarchical_bootstrap(a, b)))
    return found


def _challengers(methods: Sequence[str]) -> list[str]:
    """The CART methods of a run (ablations, ``cart-NAME``, are read against cart, not compared on their own)."""
    return [m for m in methods if _is_challenger(m)]


def verdict(comparisons: Sequence[Comparison]) -> list[str]:
    """One line per CART method, against its compute-matched control (:func:`matched_control`): the tail accuracy
    change (gold accuracy where a gold reward exists) with its interval and p-value, and the head change beside
    it. Comparisons with the other baselines stay in the table."""
    by_key = {(c.method, c.baseline, c.metric): c for c in comparisons}
    lines = []
    for method, baseline, prefix in _against_controls(comparisons):
        tail, head = (
            by_key[(method, baseline, f"tail_{prefix}accuracy")],
            by_key[(method, baseline, f"head_{prefix}accuracy")],
        )
        label = "gold accuracy" if prefix else "accuracy"
        lines.append(
            f"{method} {_effect(tail)} tail {label} over {baseline}: {_points(tail)}; "
            f"head {label} changes by {_points(head)}."
        )
        data = data_control(method) or ""
        upsampled, circuits = by_key.get((data, baseline, tail.metric)), by_key.get((method, data, tail.metric))
        if upsampled and circuits:
            lines.append(
                f"Where {method}'s tail change comes from: showing more tail pairs ({data} − {baseline}) "
                f"{_points(upsampled)}; the circuit parts ({method} − {data}) {_points(circuits)}."
            )
    return lines or ["No CART method ran, so there is no comparison to report."]


def headlines(comparisons: Sequence[Comparison], caveats: Sequence[tuple[str, str]], n_seeds: int) -> list[Headline]:
    """The verdict box of each CART method (see :class:`Headline`)."""
    by_key = {(c.method, c.baseline, c.metric): c.paired for c in comparisons}
    found = []
    for method, baseline, prefix in _against_controls(comparisons):
        metric, data = f"tail_{prefix}accuracy", data_control(method) or ""
        tail = by_key[(method, baseline, metric)]
        notes = [f"{seed}: {line}" for seed, line in caveats]
        if n_seeds == 1:
            notes.append("one seed: the interval resamples test pairs only, not training runs")
        found.append(
            Headline(
                method=method,
                control=baseline,
                metric=metric,
                tail=tail,
                head=by_key.get((method, baseline, f"head_{prefix}accuracy")),
                data_control=data if (data, baseline, metric) in by_key else None,
                upsampled=by_key.get((data, baseline, metric)),
                circuits=by_key.get((method, data, metric)),
                clears_noise=tail.p_value < SIGNIFICANCE and n_seeds > 1,
                caveats=notes,
            )
        )
    return found


def _circuit_caveats(config, outcomes: Sequence) -> list[tuple[str, str]]:
    """Per seed that ran discovery, each way its circuits and their Vuln carry less than they seem to."""
    found = []
    for outcome in outcomes:
        layout = RunLayout(config.directory).seed(outcome.seed)
        if not layout.circuits.exists():
            continue
        circuits = Circuits.load(layout.circuits)
        report = VulnerabilityReport.load(layout.vulnerability) if layout.vulnerability.exists() else None
        found += [(f"seed {outcome.seed}", line) for line in circuit_warnings(circuits, report)]
    return found


def _verdict_caveats(caveats: Sequence[tuple[str, str]]) -> list[str]:
    """A verdict line when some seed's CART targeted circuits that never passed a causal test."""
    seeds = sorted({seed for seed, line in caveats if line.startswith(("no circuit passed", "discovery found no"))})
    if not seeds:
        return []
    return [
        f"Caveat ({', '.join(seeds)}): no circuit passed its causal test, so CART's circuit terms acted on untested "
        "candidates; its circuit parts cannot be credited with any change."
    ]


def _against_controls(comparisons: Sequence[Comparison]) -> list[tuple[str, str, str]]:
    """(CART method, its compute-matched control, ``gold_`` where gold accuracy was compared, else "")."""
    controls = {c.baseline for c in comparisons}
    gold = {(c.method, c.baseline) for c in comparisons if c.metric == "tail_gold_accuracy"}
    return [
        (method, baseline, "gold_" if (method, baseline) in gold else "")
        for method, baseline in dict.fromkeys((c.method, c.baseline) for c in comparisons)
        if _is_challenger(method) and baseline == matched_control(method, controls)
    ]


def _is_challenger(method: str) -> bool:
    return method in set(registry_names()) and design(method).challenger


def _effect(comparison: Comparison) -> str:
    paired = comparison.paired
    if paired.p_value >= SIGNIFICANCE:
        return "does not significantly change"
    return "improves" if paired.difference > 0 else "worsens"


def _points(comparison: Comparison) -> str:
    p = comparison.paired
    p_text = "p < 0.001" if p.p_value < 0.001 else f"p = {p.p_value:.3f}"
    seeds = f"{p.n_seeds} seeds, per seed {', '.join(f'{100 * d:+.1f}' for d in p.per_seed)}; " if p.n_seeds > 1 else ""
    return (
        f"{100 * p.difference:+.1f} points [{100 * p.ci_low:+.1f}, {100 * p.ci_high:+.1f}] "
        f"({p_text}, {seeds}n = {p.n} pairs)"
    )


def _stability(config, outcomes: Sequence) -> Stability | None:
    from cartrm.circuits.compare import circuit_overlap, top_tail_neurons

    folders = [config.directory / f"seed-{o.seed}" / "analysis" / "circuits.json" for o in outcomes]
    if not all(f.exists() for f in folders):
        return None
    circuits = [Circuits.load(f) for f in folders]
    k = config.stability_top_k
    multi = len(circuits) > 1
    return Stability(
        top_k=k,
        across_seeds_neuron_jaccard=circuit_overlap([top_tail_neurons(c, k) for c in circuits]) if multi else None,
        across_seeds_circuit_jaccard=_circuit_matching(circuits) if multi else None,
        per_seed=[_with_effect_share(o, found) for o, found in zip(outcomes, circuits) if o.stability],
    )


def _with_effect_share(outcome, circuits: Circuits):
    """The seed's stability record with its targets' patch effects read against bt's tail margins."""
    if outcome.tail_margin is None:
        return outcome.stability
    share = circuits.effect_share(outcome.stability.targets, outcome.tail_margin)
    return outcome.stability.model_copy(update={"effect_share": share})


def _circuit_matching(circuits: Sequence[Circuits], largest: int = 10) -> float:
    """Mean over ordered seed pairs and over the ``largest`` circuits of one seed of the best Jaccard with any
    circuit of the other seed (circuits as sets of neuron ids)."""
    sets = [[{m.feature for m in c.members} for c in found.circuits[:largest]] for found in circuits]
    scores = [
        max(len(a & b) / len(a | b) for b in other)
        for mine, other in itertools.permutations(sets, 2)
        for a in mine
        if other
    ]
    return float(np.mean(scores)) if scores else 0.0


def _setup(config) -> dict[str, str]:
    from cartrm.io import versions

    if config.uses_benchmark:
        b = config.benchmark
        data = (
            f"embedded long-tail benchmark: {b.n_train} training / {b.n_validation} validation pairs "
            f"(head share α = {b.alpha}), "
            f"test {b.n_test_head} head + {b.n_test_tail} tail pairs; one benchmark instance per seed"
        )
    else:
        data = f"{config.data} (tail: {config.tail_by})"
    t = config.train
    return {
        "data": data,
        "model": config.model,
        "methods": ", ".join(config.methods),
        "seeds": ", ".join(map(str, config.seeds)),
        "training": f"{t.epochs} epoch(s), batch {t.batch_size} pairs, lr {t.learning_rate}, max length {t.max_length}",
        "analysis": f"discovery and assessment on ≤ {config.analysis_pairs} training pairs (up to half tail)",
        "best-of-n": (
            f"{config.bon_prompts} head + {config.bon_prompts} tail test prompts, "
            f"{config.bon_candidates} candidates each"
        )
        if config.uses_benchmark and config.bon_prompts
        else "skipped",
        "versions": ", ".join(f"{k} {v}" for k, v in versions().items()),
    } | _ablations(config)


def _ablations(config) -> dict[str, str]:
    """What each ablation changes in cart; the comparison cart − cart-NAME is what that change costs CART."""
    if not config.ablations:
        return {}
    changes = "; ".join(f"{label}: {overrides}" for label, overrides in config.ablated_methods.items())
    return {"ablations": f"{changes} (on cart's selected settings; cart − cart-NAME is what the change costs)"}


def _notes(config, outcomes: Sequence, comparisons: Sequence[Comparison], stability: Stability | None) -> list[str]:
    notes = []
    lines, tests = len({c.method for c in comparisons}), len(comparisons)
    if tests > 2:
        notes.append(
            f"The verdict reads {lines} comparison(s) against compute-matched controls; the comparison table holds "
            f"{tests} tests (methods × baselines × metrics) whose p-values are not adjusted for multiple testing: "
            f"by chance alone about {SIGNIFICANCE * tests:.1f} of them would reach p < {SIGNIFICANCE}."
        )
    notes.extend(_power(comparisons))
    notes.extend(_circuit_effect(stability))
    notes.extend(
        f"seed {o.seed}: {o.concentration.summary(group)}"
        for o in outcomes
        if o.concentration is not None
        for group in ("tail", "conflict")
        if group in o.concentration.pairs
    )
    if not config.uses_benchmark:
        notes.append("User data: no gold reward and no response sampler, so gold accuracy and best-of-n are skipped.")
    if len(outcomes) == 1:
        notes.append(
            "One seed: intervals over seeds have zero width, and the paired comparisons resample test pairs only, "
            "so they leave out how much a method varies from one training run to the next."
        )
    return notes


def _circuit_effect(stability: Stability | None) -> list[str]:
    """How large the targeted circuits' causal effect is next to the rewards' own scale, over every seed."""
    if stability is None:
        return []
    shares = [share for seed in stability.per_seed for share in seed.effect_share.values()]
    if not shares:
        return []
    return [
        f"Patching a targeted circuit moves bt's reward of a tail text by {100 * min(shares):.1f}–"
        f"{100 * max(shares):.1f}% (median {100 * float(np.median(shares)):.1f}%) of bt's mean |reward margin| on "
        f"the tail test pairs ({len(shares)} targets over {len(stability.per_seed)} seed(s)): that is how much of "
        "what decides a tail preference the circuit terms of CART act on."
    ]


def _power(comparisons: Sequence[Comparison]) -> list[str]:
    """Per verdict line, what the run could have found: the per-seed differences of its tail metric and the
    minimum detectable effect their spread implies (80% power, two-sided 5%, the seed as the unit)."""
    controls = {c.baseline for c in comparisons}
    gold = any(c.metric == "tail_gold_accuracy" for c in comparisons)
    tail_metric = "tail_gold_accuracy" if gold else "tail_accuracy"
    lines = []
    for c in comparisons:
        if c.metric != tail_metric or c.baseline != matched_control(c.method, controls) or c.paired.n_seeds < 2:
            continue
        spread = float(np.std(c.paired.per_seed, ddof=1))
        per_seed = ", ".join(f"{100 * d:+.1f}" for d in c.paired.per_seed)
        found = (
            "the seeds agree exactly, too few to estimate power"
            if spread == 0
            else f"with this spread and {c.paired.n_seeds} seeds the smallest effect found with 80% power is "
            f"{100 * minimum_detectable_effect(spread, c.paired.n_seeds, alpha=SIGNIFICANCE):.1f} points"
        )
        lines.append(f"{c.method} − {c.baseline}, {c.metric.replace('_', ' ')} per seed: {per_seed} points; {found}.")
    return lines
