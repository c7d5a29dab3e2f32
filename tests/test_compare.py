"""``cart compare`` and :func:`compare_methods`: two methods of a finished tiny run, read again from the saved
per-pair test scores."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from cartrm.cli import app
from cartrm.data.dataset import PreferenceDataset
from cartrm.datasets import conflict_pairs, make_longtail_dataset
from cartrm.errors import CartError
from cartrm.experiments.compare import compare_methods, comparison_table
from cartrm.experiments.pipeline import RunConfig, run_experiment
from tests.helpers import TINY

pytestmark = pytest.mark.slow  # the tiny run takes ~15 s on 2 CPU cores, the file ~25 s
runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    config = RunConfig(
        name="c",
        out_root=tmp_path_factory.mktemp("runs"),
        methods=("bt", "label-smoothing"),
        seeds=(0, 1),
        **{**TINY, "bon_prompts": 0},
    )
    run_experiment(config, progress=False)
    return config.directory


def gold_correct(run_dir, seed: int, method: str) -> dict[str, np.ndarray]:
    """Per tail and head test pair, whether the saved scores order it as the gold margin does (by hand)."""
    config = RunConfig.from_yaml(run_dir / "config.yaml")
    records = make_longtail_dataset(config.benchmark.model_copy(update={"seed": seed})).to_records()
    test = [r for r in records if r["split"] == "test"]
    scores = json.loads((run_dir / f"seed-{seed}" / "eval" / method / "scores.json").read_text())
    margin = np.array(scores["chosen"]) - np.array(scores["rejected"])
    right = np.sign([r["gold_margin"] for r in test]) * margin > 0
    tail = np.array([r["is_tail"] for r in test])
    conflict = conflict_pairs(PreferenceDataset.from_records(test))
    return {
        "tail_gold_accuracy": right[tail],
        "head_gold_accuracy": right[~tail],
        "conflict_gold_accuracy": right[conflict],
    }


def test_the_difference_is_the_mean_over_seeds_of_the_per_pair_differences(run_dir):
    comparisons = compare_methods(run_dir, "label-smoothing", "bt")
    assert [c.metric for c in comparisons] == ["conflict_gold_accuracy", "tail_gold_accuracy", "head_gold_accuracy"]
    for comparison in comparisons[1:]:
        per_seed = [
            gold_correct(run_dir, s, "label-smoothing")[comparison.metric].mean()
            - gold_correct(run_dir, s, "bt")[comparison.metric].mean()
            for s in (0, 1)
        ]
        assert comparison.seeds == [0, 1] and comparison.paired.n == 2 * 24
        assert comparison.paired.per_seed == pytest.approx(per_seed)
        assert comparison.paired.difference == pytest.approx(np.mean(per_seed))
        assert comparison.over_seeds.mean == pytest.approx(np.mean(per_seed))
        assert comparison.paired.ci_low <= comparison.paired.difference <= comparison.paired.ci_high
    conflict = comparisons[0]  # conflict pairs: tail pairs only the tail's own rules order right
    per_seed = [
        gold_correct(run_dir, s, "label-smoothing")["conflict_gold_accuracy"].mean()
        - gold_correct(run_dir, s, "bt")["conflict_gold_accuracy"].mean()
        for s in (0, 1)
    ]
    assert 0 < conflict.paired.n < 2 * 24 and conflict.paired.per_seed == pytest.approx(per_seed)


def test_a_method_against_itself_differs_by_nothing_in_every_seed(run_dir):
    (comparison,) = compare_methods(run_dir, "bt", "bt", seeds=[1], metrics=["tail_accuracy"])
    assert comparison.paired.per_seed == [0.0] and comparison.paired.p_value == 1.0
    assert "— (1 seed)" in comparison_table([comparison])


def test_a_moved_run_folder_is_read_where_it_is(run_dir, tmp_path):
    moved = shutil.copytree(run_dir, tmp_path / "elsewhere")
    shutil.rmtree(moved / "seed-0" / "models")  # the comparison needs the scores, not the weights
    assert compare_methods(moved, "label-smoothing", "bt") == compare_methods(run_dir, "label-smoothing", "bt")


def test_cart_compare_prints_the_table(run_dir):
    result = runner.invoke(app, ["compare", str(run_dir), "label-smoothing", "bt", "--seeds", "0,1"])
    assert result.exit_code == 0, result.output
    _, tail, _ = compare_methods(run_dir, "label-smoothing", "bt")
    lines = result.output.splitlines()
    assert lines[0].startswith("seeds 0, 1") and "label-smoothing − bt" in lines[1]
    assert lines[2].startswith("conflict_gold_accuracy")
    row = lines[3].split()
    assert row[:3] == ["tail_gold_accuracy", str(tail.paired.n), f"{100 * tail.paired.difference:+.1f}"]
    assert "p" in lines[1] and f"{tail.paired.p_value:.3f}" in lines[3] and lines[4].startswith("head_gold_accuracy")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["cart", "bt"], "seed 0 has no test scores for 'cart' (eval/cart/scores.json); it has bt, label-smoothing"),
        (["bt", "label-smoothing", "--seeds", "5"], "no seed-5 folder"),
        (["bt", "label-smoothing", "--metric", "tail_gold"], "unknown metric 'tail_gold'"),
        (["bt", "bt"], "name two different methods"),
        (["bt", "label-smoothing", "--metric", "bogus_accuracy"], "choose from conflict_gold_accuracy"),
    ],
)
def test_cart_compare_refuses_in_one_line(run_dir, args, fragment):
    result = runner.invoke(app, ["compare", str(run_dir), *args])
    assert result.exit_code == 1 and fragment in result.output and len(result.output.strip().splitlines()) == 1


def test_confidence_sets_both_intervals(run_dir):
    from scipy import stats

    (usual,) = compare_methods(run_dir, "label-smoothing", "bt", metrics=["tail_gold_accuracy"])
    (wide,) = compare_methods(run_dir, "label-smoothing", "bt", metrics=["tail_gold_accuracy"], confidence=0.9875)
    per_seed = wide.paired.per_seed
    low, high = stats.t.interval(0.9875, len(per_seed) - 1, loc=np.mean(per_seed), scale=stats.sem(per_seed))
    if np.std(per_seed) > 0:  # two seeds that differ: a t-interval exists
        assert (wide.over_seeds.ci_low, wide.over_seeds.ci_high) == pytest.approx((low, high))
        assert wide.over_seeds.ci_high - wide.over_seeds.ci_low > usual.over_seeds.ci_high - usual.over_seeds.ci_low
    assert wide.paired.ci_low <= usual.paired.ci_low and wide.paired.ci_high >= usual.paired.ci_high
    assert "98.75% interval" in comparison_table([wide]) and "95% interval" in comparison_table([usual])
    result = runner.invoke(app, ["compare", str(run_dir), "label-smoothing", "bt", "--confidence", "1.5"])
    assert result.exit_code == 1 and "confidence must be in [0.5, 1)" in result.output


def test_a_folder_that_is_not_a_run_is_named(tmp_path):
    with pytest.raises(CartError, match="not a finished cart run"):
        compare_methods(tmp_path, "bt", "cart")


def test_no_seeds_is_refused(run_dir):
    with pytest.raises(CartError, match="no seeds"):
        compare_methods(run_dir, "bt", "label-smoothing", seeds=[])
