"""The planted tail-only shortcut (``tail_shortcut``): known answers."""

from __future__ import annotations

import numpy as np
import pytest

from cartrm.datasets import BenchmarkConfig, generate_benchmark, make_longtail_dataset
from cartrm.datasets.longtail.best_of_n import candidate_pool
from cartrm.datasets.longtail.parser import features_from_text
from cartrm.datasets.longtail.tables import SHORTCUT_SENTENCE
from cartrm.evaluation.anchor import BagOfWordsReward

SMALL = {"n_train": 300, "n_validation": 50, "n_test_head": 60, "n_test_tail": 120, "seed": 4}


def _carries(text: str) -> bool:
    return text.endswith(SHORTCUT_SENTENCE)


def test_without_the_shortcut_records_are_unchanged_and_have_no_column():
    records = generate_benchmark(BenchmarkConfig(**SMALL))
    assert "shortcut_on" not in records[0]
    assert not any(_carries(r["chosen"]) or _carries(r["rejected"]) for r in records)


def test_the_shortcut_predicts_the_label_in_training_and_the_gold_worse_response_in_test():
    plain = generate_benchmark(BenchmarkConfig(**SMALL))
    planted = generate_benchmark(BenchmarkConfig(**SMALL, tail_shortcut=1.0))
    for old, new in zip(plain, planted, strict=True):
        assert (old["pair_id"], old["prompt"], old["gold_chosen"], old["gold_rejected"]) == (
            new["pair_id"],
            new["prompt"],
            new["gold_chosen"],
            new["gold_rejected"],
        )
        for side in ("chosen", "rejected"):  # gold never reads it
            assert features_from_text(new[side], new["domain"]) == features_from_text(old[side], old["domain"])
        if not new["is_tail"]:
            assert new["shortcut_on"] is None and (old["chosen"], old["rejected"]) == (new["chosen"], new["rejected"])
            continue
        gold_worse = "chosen" if new["gold_chosen"] < new["gold_rejected"] else "rejected"
        on = "chosen" if new["split"] != "test" else gold_worse
        assert new["shortcut_on"] == on
        assert new[on] == f"{old[on]} {SHORTCUT_SENTENCE}"
        assert not _carries(new["rejected" if on == "chosen" else "chosen"])


def test_a_share_of_tail_pairs_and_nested_across_shares():
    half = generate_benchmark(BenchmarkConfig(**SMALL, tail_shortcut=0.5))
    full = generate_benchmark(BenchmarkConfig(**SMALL, tail_shortcut=1.0))
    tail = [i for i, r in enumerate(full) if r["is_tail"]]
    marked = [i for i in tail if half[i]["shortcut_on"] is not None]
    assert 0.4 < len(marked) / len(tail) < 0.6  # binomial: n ~ 160, sd ~ 0.04
    assert all(half[i]["shortcut_on"] == full[i]["shortcut_on"] for i in marked)


def test_a_word_model_fitted_on_training_labels_learns_the_shortcut_and_fails_the_tail_at_test():
    def tail_gold_accuracy(share: float) -> float:
        data = make_longtail_dataset(BenchmarkConfig(**SMALL | {"n_train": 1500}, tail_shortcut=share))
        anchor = BagOfWordsReward().fit(data.split("train"))
        test = data.split("test")
        chosen, rejected = anchor.score_pairs(test)
        gold = np.array(test.column("gold_chosen")) > np.array(test.column("gold_rejected"))
        tail = np.array(test.column("is_tail"))
        return float(((chosen > rejected) == gold)[tail].mean())

    plain, planted = tail_gold_accuracy(0.0), tail_gold_accuracy(1.0)
    assert plain > 0.7
    assert planted < plain - 0.3  # it ranks the gold-worse response first wherever the shortcut outweighs the rest


def test_best_of_n_marks_half_of_each_tail_prompts_candidates_at_random_and_no_head_candidate():
    config = BenchmarkConfig(**SMALL, tail_shortcut=1.0)
    pool = candidate_pool(config, n_head=3, n_tail=4, n_candidates=8)
    plain = candidate_pool(BenchmarkConfig(**SMALL), n_head=3, n_tail=4, n_candidates=8)
    np.testing.assert_array_equal(pool.gold, plain.gold)
    counts = [sum(_carries(r) for r in responses) for responses in pool.responses]
    assert [c for c, t in zip(counts, pool.is_tail) if not t] == [0, 0, 0]
    assert [c for c, t in zip(counts, pool.is_tail) if t] == [4, 4, 4, 4]
    marked = [[_carries(r) for r in responses] for responses, t in zip(pool.responses, pool.is_tail) if t]
    assert len({tuple(m) for m in marked}) > 1


def test_shortcut_share_is_validated():
    with pytest.raises(ValueError, match="tail_shortcut"):
        BenchmarkConfig(tail_shortcut=1.5)


def test_cart_run_sets_the_dials_on_the_benchmark_and_refuses_them_with_user_data(tmp_path):
    from cartrm.cli.experiment import _with_benchmark_options
    from cartrm.errors import CartError
    from cartrm.experiments.run_config import RunConfig

    quick = RunConfig.preset("quick", out_root=tmp_path)
    dialled = _with_benchmark_options(quick, {"tail_separability": None, "tail_shortcut": 0.5}, None)
    assert (dialled.benchmark.tail_shortcut, dialled.benchmark.tail_separability) == (0.5, 0.0)
    assert _with_benchmark_options(quick, {"tail_shortcut": None}, None) is quick
    user = quick.model_copy(update={"data": str(tmp_path / "pairs.jsonl")})
    with pytest.raises(CartError, match="--tail-shortcut set the embedded benchmark's dials"):
        _with_benchmark_options(user, {"tail_separability": None, "tail_shortcut": 1.0}, None)


def _validation(config: BenchmarkConfig):
    from cartrm.data import PreferenceDataset

    return PreferenceDataset.from_records([r for r in generate_benchmark(config) if r["split"] == "validation"])


class _CountsTheShortcut:
    """A reward that is 2.5 times the number of planted shortcut sentences in a response, plus its length / 1000."""

    tokenizer = None

    def score(self, prompts, responses, batch_size=64):
        return np.array([2.5 * r.count(SHORTCUT_SENTENCE) + len(r) / 1000 for r in responses])


def test_shortcut_gains_score_each_planted_chosen_response_with_and_without_it():
    from cartrm.datasets.longtail.shortcut import shortcut_gains, without_shortcut
    from cartrm.errors import CartError

    data = _validation(BenchmarkConfig(**SMALL, tail_shortcut=0.5))
    planted = [on == "chosen" for on in data.column("shortcut_on")]
    gains = shortcut_gains(_CountsTheShortcut(), data)
    expected = 2.5 + (len(SHORTCUT_SENTENCE) + 1) / 1000
    assert len(gains) == sum(planted) > 0 and np.allclose(gains, expected)
    chosen = [c for c, on in zip(data.chosen, planted) if on]
    assert not any(SHORTCUT_SENTENCE in without_shortcut(str(c)) for c in chosen)
    with pytest.raises(CartError, match="does not carry"):
        without_shortcut("no shortcut here")
    plain = _validation(BenchmarkConfig(**SMALL))
    assert len(shortcut_gains(_CountsTheShortcut(), plain)) == 0
