"""The HTML report: numbers and text from results.json, escaping, self-containment, atomic writing."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cartrm.errors import CartError
from cartrm.evaluation.bon import best_of_n_curve
from cartrm.evaluation.statistics import PairedComparison, summarise_seeds
from cartrm.plotting import plt, save_figure
from cartrm.report.html import fmt_p, fmt_pct, fmt_summary, render_html, write_report
from cartrm.report.plots import plot_accuracy, plot_best_of_n, plot_vuln_before_after
from cartrm.report.results import BoNSummary, Comparison, MethodResults, RunResults, SeedStability, Stability

SEEDS = [0, 1]
VERDICT = "CART raises tail accuracy over BT (+0.041, p = 0.012) & keeps head accuracy"
NOTE = "a note with <b>markup</b>"


def _bon(rng: np.random.Generator, group: str) -> BoNSummary:
    curves = []
    for _ in SEEDS:
        gold = rng.normal(size=(12, 16))
        proxy = gold + rng.normal(scale=1.5, size=gold.shape)
        curves.append(best_of_n_curve(proxy, gold, ns=(1, 2, 4, 8, 16)))
    return BoNSummary(
        group=group,
        curves=curves,
        peak_n=[c.peak_n for c in curves],
        gold_at_peak=summarise_seeds([max(c.gold) for c in curves]),
        gold_at_max=summarise_seeds([c.gold[-1] for c in curves]),
        gap_at_max=summarise_seeds([c.gap_at_max_n for c in curves]),
    )


def _method(name: str, head: list[float], tail: list[float], rng: np.random.Generator) -> MethodResults:
    return MethodResults(
        method=name,
        head_accuracy=summarise_seeds(head),
        tail_accuracy=summarise_seeds(tail),
        overall_accuracy=summarise_seeds([(h + t) / 2 for h, t in zip(head, tail)]),
        head_gold_accuracy=summarise_seeds([h - 0.05 for h in head]),
        tail_gold_accuracy=summarise_seeds([t - 0.05 for t in tail]),
        ece=summarise_seeds([0.04, 0.06]),
        train_seconds=summarise_seeds([30.0, 34.0]),
        bon={group: _bon(rng, group) for group in ("head", "tail")},
        n_pairs={"head": [400, 400], "tail": [790, 800], "overall": [1190, 1200]},
        augmentation=[
            {"seed": s, "transforms": {"rare_token": {"n": 40.0 + s, "gold_agreement": 0.9, "foreign_word": 0.25}}}
            for s in (0, 1)
        ]
        if name == "cart"
        else [],
    )


def make_results(run_dir: Path) -> RunResults:
    """Two methods over two seeds; one artifact that exists and one that does not."""
    rng = np.random.default_rng(0)
    figure, axis = plt.subplots(figsize=(2, 1.5))
    axis.plot([0, 1], [1, 0])
    save_figure(figure, run_dir / "discovery" / "delta_hist.png")
    stability = Stability(
        top_k=20,
        across_seeds_neuron_jaccard=0.35,
        across_seeds_circuit_jaccard=0.5,
        per_seed=[
            SeedStability(
                seed=s,
                top_k=20,
                baseline_vs_cart_jaccard=0.2 + 0.1 * s,
                targets=["c0", "c2"],
                vuln_before={"c0": 0.8, "c1": 0.3, "c2": 0.6},
                vuln_after={"c0": 0.5 - 0.1 * s, "c2": 0.45},
                effect_share={"c0": 0.007, "c2": 0.0123},
            )
            for s in SEEDS
        ],
    )
    return RunResults(
        name="synthetic run",
        config={"alpha": 0.5, "data": {"name": "toy"}},
        setup={"data": "toy <pairs>", "model": "tiny-llama", "α": "0.5"},
        seeds=SEEDS,
        methods={
            "bt": _method("bt", [0.81, 0.83], [0.61, 0.64], rng),
            "cart": _method("cart", [0.80, 0.82], [0.66, 0.68], rng),
        },
        comparisons=[
            Comparison(
                method="cart",
                baseline="bt",
                metric="tail_accuracy",
                paired=PairedComparison(n=400, difference=0.041, ci_low=0.009, ci_high=0.072, p_value=0.0123),
            )
        ],
        stability=stability,
        verdict=[VERDICT],
        notes=[NOTE],
        artifacts={"delta_hist": "discovery/delta_hist.png", "coherence_graph": "discovery/missing.png"},
        total_seconds=3725.0,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, RunResults]:
    run_dir = tmp_path_factory.mktemp("run")
    results = make_results(run_dir)
    results.save(run_dir / "results.json")
    return run_dir, results


@pytest.fixture(scope="module")
def page(run) -> str:
    return render_html(run[1], run[0])


def test_table_numbers_and_verdict(page, run):
    results = run[1]
    tail = results.methods["cart"].tail_accuracy
    assert f"{tail.mean:.3f} [{tail.ci_low:.3f}, {tail.ci_high:.3f}]" == fmt_summary(tail)
    assert f"{100 * tail.mean:.1f} [{100 * tail.ci_low:.1f}, {100 * tail.ci_high:.1f}]" == fmt_pct(tail)
    assert fmt_pct(tail) in page  # accuracies in percent, as the verdict's points
    assert fmt_summary(results.methods["bt"].bon["tail"].gold_at_max) in page
    assert "p = 0.012" in page and "+4.1 [+0.9, +7.2]" in page
    assert "cart − bt" in page
    assert "CART raises tail accuracy over BT (+0.041, p = 0.012) &amp; keeps head accuracy" in page
    assert page.index('class="verdict"') < page.index("<h2>Setup</h2>") < page.index("<h2>Results</h2>")
    assert "1 h 02 min" in page and "c0: 0.800 → 0.500" in page and "c0: 0.7%; c2: 1.2%" in page
    assert '<td class="text">rare_token</td><td>40</td><td>0.900</td><td>0.250</td>' in page
    assert "head acc % (n = 400)" in page and "tail gold acc % (n = 790–800)" in page  # n next to every figure


def test_text_is_escaped(page):
    assert "a note with &lt;b&gt;markup&lt;/b&gt;" in page
    assert "<b>" not in page
    assert "toy &lt;pairs&gt;" in page


def test_formatting():
    assert fmt_p(0.0004) == "p < 0.001" and fmt_p(0.0123) == "p = 0.012"
    assert fmt_summary(summarise_seeds([0.5])) == "0.500"


def test_page_is_self_contained(page, run):
    run_dir = run[0]
    assert 'src="http' not in page and "<script" not in page.lower() and "<link" not in page.lower()
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert len(sources) == 4  # accuracy, best-of-n, vuln before/after (drawn), delta_hist; coherence graph missing
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert "discovery/missing.png is missing" in page
    assert {p.name for p in (run_dir / "plots").iterdir()} == {"accuracy.png", "best_of_n.png", "vuln_before_after.png"}


def test_plots_skip_without_data(tmp_path, run):
    empty = run[1].model_copy(update={"methods": {}, "stability": None})
    for plot in (plot_accuracy, plot_best_of_n, plot_vuln_before_after):
        assert plot(empty, tmp_path / "x.png") is False
    assert not (tmp_path / "x.png").exists()
    assert "<h2>Results</h2>" in render_html(empty, tmp_path)


def test_write_report_is_atomic(tmp_path, run, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(run[0], run_dir)
    path = write_report(run_dir)
    assert path == run_dir / "report.html" and "synthetic run" in path.read_text()

    def half_write(self, text, encoding=None):
        with open(self, "w", encoding=encoding) as handle:
            handle.write(text[:100])
        raise OSError("disk full")

    path.write_text("previous report")
    monkeypatch.setattr(Path, "write_text", half_write)
    with pytest.raises(OSError):
        write_report(run_dir)
    monkeypatch.undo()
    assert path.read_text() == "previous report"
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_write_report_without_results(tmp_path):
    with pytest.raises(CartError, match="results.json"):
        write_report(tmp_path)


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_renders_in_headless_browser(tmp_path, run):
    run_dir = tmp_path / "run"
    shutil.copytree(run[0], run_dir)
    report = write_report(run_dir)
    flags = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1280,2400", report.as_uri()],
        capture_output=True,
        timeout=60,
        check=True,
    )
    image = plt.imread(shot)
    assert image.std() > 0
    dom = subprocess.run(
        [*flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert fmt_pct(run[1].methods["cart"].tail_accuracy) in dom and "Paired comparisons" in dom


def _paired(difference: float, p_value: float, n_seeds: int = 2) -> PairedComparison:
    per_seed = [difference] * n_seeds
    return PairedComparison(
        n=720 * n_seeds,
        difference=difference,
        ci_low=difference - 0.02,
        ci_high=difference + 0.02,
        p_value=p_value,
        n_seeds=n_seeds,
        per_seed=per_seed,
    )


def test_the_verdict_box_says_what_was_compared_whether_it_clears_the_noise_and_where_it_comes_from(run):
    from cartrm.report.aggregate import headlines, verdict

    def compared(method, baseline, tail, p):
        return [
            Comparison(method=method, baseline=baseline, metric="tail_gold_accuracy", paired=_paired(tail, p)),
            Comparison(method=method, baseline=baseline, metric="head_gold_accuracy", paired=_paired(-0.01, 0.5)),
        ]

    comparisons = [
        *compared("cart", "bt-continued", 0.016, 0.01),
        *compared("cart", "tail-upsample", 0.004, 0.6),
        *compared("tail-upsample", "bt-continued", 0.012, 0.03),
    ]
    lines = verdict(comparisons)
    assert lines[0].startswith("cart improves tail gold accuracy over bt-continued: +1.6 points")
    assert "more tail pairs (tail-upsample − bt-continued) +1.2 points" in lines[1]
    assert "the circuit parts (cart − tail-upsample) +0.4 points" in lines[1] and len(lines) == 2
    (box,) = headlines(comparisons, [("seed 0", "no circuit passed its causal test (…)")], n_seeds=2)
    assert box.clears_noise and box.control == "bt-continued" and box.data_control == "tail-upsample"
    assert box.circuits.difference == 0.004 and box.upsampled.difference == 0.012
    page = render_html(run[1].model_copy(update={"headlines": [box]}), run[0])
    shown = page[page.index('class="verdict"') : page.index("<h2>Setup</h2>")]
    assert "<b>cart</b> vs <b>bt-continued</b>" in shown and "<b>+1.6 points [-0.4, +3.6]</b>" in shown
    assert "2 seeds × 720 tail test pairs: clears the noise (p = 0.010)" in shown
    assert "the circuit parts (cart − tail-upsample) +0.4 points" in shown
    assert "seed 0: no circuit passed its causal test" in shown
    one = headlines([*compared("cart", "bt", 0.05, 0.001)], [], n_seeds=1)[0]
    assert not one.clears_noise and "one seed" in one.caveats[0]  # one seed never clears the noise


def test_one_seed_shows_its_test_pairs_interval_and_groups_get_a_table(run):
    from cartrm.evaluation.metrics import GroupMetrics
    from cartrm.report.aggregate import _accuracy, _by_group

    group = GroupMetrics(n=300, accuracy=0.7, ci_low=0.65, ci_high=0.75, mean_margin=1.0, ece=0.1)
    one = _accuracy([group])
    assert (one.ci_low, one.ci_high, one.interval) == (0.65, 0.75, "pairs") and fmt_pct(one) == "70.0 [65.0, 75.0]"
    assert _accuracy([group, group]).interval == "seeds"

    class Report:
        by = {"domain": {"legal": group, "medical": group.model_copy(update={"accuracy": 0.5})}}

    by = _by_group([Report()])
    assert by["domain"]["medical"].mean == 0.5 and by["domain"]["legal"].interval == "pairs"
    results = run[1]
    methods = {k: m.model_copy(update={"by": by}) for k, m in results.methods.items()}
    page = render_html(results.model_copy(update={"methods": methods}), run[0])
    assert "<h3>By domain</h3>" in page and "<th>legal</th><th>medical</th>" in page and "50.0 [65.0, 75.0]" in page
