"""The tail-separability dial, conflict pairs and the bag-of-words anchor: known answers."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from cartrm.data.dataset import PreferenceDataset
from cartrm.datasets import BenchmarkConfig, conflict_pairs, generate_benchmark, make_longtail_dataset
from cartrm.datasets.longtail import DOMAIN_BY_NAME, NEUTRAL_VOCABULARY, head_rule_margin
from cartrm.datasets.longtail.parser import DOMAIN_WORD, DOMAIN_WORDS, features_from_text
from cartrm.errors import CartError
from cartrm.evaluation.anchor import BagOfWordsReward
from cartrm.evaluation.metrics import gold_correct

SMALL = {"n_train": 300, "n_validation": 50, "n_test_head": 60, "n_test_tail": 120, "seed": 4}


def _digest(records: list[dict]) -> str:
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()


def test_dial_at_zero_is_the_classic_benchmark_byte_for_byte():
    # the digest of BenchmarkConfig()'s records, taken before the dial existed
    assert _digest(generate_benchmark(BenchmarkConfig())) == (
        "ec2630b80c4836733e4cbd9bd8a8b8a728ab0694a465a52ea2458bc6461ebcff"
    )
    assert "neutral_responses" not in generate_benchmark(BenchmarkConfig(**SMALL))[0]


def test_dial_changes_tail_words_only_never_features_labels_or_head_pairs():
    classic = generate_benchmark(BenchmarkConfig(**SMALL))
    separated = generate_benchmark(BenchmarkConfig(**SMALL, tail_separability=1.0))
    for old, new in zip(classic, separated, strict=True):
        assert (old["prompt"], old["gold_chosen"], old["gold_rejected"]) == (
            new["prompt"],
            new["gold_chosen"],
            new["gold_rejected"],
        )
        assert new["neutral_responses"] is new["is_tail"]
        if not new["is_tail"]:
            assert (old["chosen"], old["rejected"]) == (new["chosen"], new["rejected"])
        for side in ("chosen", "rejected"):  # the text still shows the same features, so the same gold
            assert features_from_text(new[side], new["domain"]) == features_from_text(old[side], old["domain"])


def test_at_one_a_tail_response_names_its_domain_only_through_the_prompts_topic():
    for record in generate_benchmark(BenchmarkConfig(**SMALL, tail_separability=1.0)):
        if not record["is_tail"]:
            continue
        domain = DOMAIN_BY_NAME[record["domain"]]
        topic_words = {w.lower() for t in domain.topics for w in DOMAIN_WORD.findall(t)}
        for side in ("chosen", "rejected"):
            words = {w.lower() for w in DOMAIN_WORD.findall(record[side])}
            assert words & DOMAIN_WORDS[domain.name] <= topic_words


def test_neutral_words_belong_to_no_domain_and_match_the_domains_list_lengths():
    neutral = {
        w.lower()
        for phrases in (NEUTRAL_VOCABULARY.terms, NEUTRAL_VOCABULARY.objects, NEUTRAL_VOCABULARY.verbs)
        for phrase in phrases
        for w in DOMAIN_WORD.findall(phrase)
    }
    for domain in DOMAIN_BY_NAME.values():
        own = {
            w.lower()
            for p in domain.topics + domain.objects + domain.terms + domain.verbs
            for w in DOMAIN_WORD.findall(p)
        }
        assert not neutral & own, domain.name
        assert (len(domain.terms), len(domain.objects), len(domain.verbs)) == (
            len(NEUTRAL_VOCABULARY.terms),
            len(NEUTRAL_VOCABULARY.objects),
            len(NEUTRAL_VOCABULARY.verbs),
        )


def test_dial_mixes_nested_shares_of_tail_pairs():
    config = BenchmarkConfig(**SMALL | {"n_train": 2000})
    half = generate_benchmark(config.model_copy(update={"tail_separability": 0.5}))
    quarter = generate_benchmark(config.model_copy(update={"tail_separability": 0.25}))
    tail = np.array([r["is_tail"] for r in half])
    neutral_half = np.array([r["neutral_responses"] for r in half])
    neutral_quarter = np.array([r["neutral_responses"] for r in quarter])
    assert not neutral_half[~tail].any()
    assert neutral_half[tail].mean() == pytest.approx(0.5, abs=0.08)
    assert neutral_quarter[tail].mean() == pytest.approx(0.25, abs=0.08)
    assert not (neutral_quarter & ~neutral_half).any()  # a pair neutral at 0.25 is neutral at 0.5


def test_dial_is_validated():
    with pytest.raises(ValueError):
        BenchmarkConfig(tail_separability=1.5)


def test_head_rule_margin_and_conflict_pairs_by_hand():
    glassblowing = "With pulling cane, start simple and build up slowly."  # relevance only
    detailed = glassblowing + " Watch the annealing schedule closely. Much depends on the gather size."
    # standard rules: two detail sentences are worth +1.0
    assert head_rule_margin(detailed, glassblowing, "glassblowing") == pytest.approx(1.0)
    records = [
        {"prompt": "p", "chosen": glassblowing, "rejected": detailed, "domain": "numismatics", "is_tail": True},
        {"prompt": "p", "chosen": detailed, "rejected": glassblowing, "domain": "glassblowing", "is_tail": True},
        {"prompt": "p", "chosen": glassblowing, "rejected": detailed, "domain": "cooking", "is_tail": False},
    ]
    for record, (gold_chosen, gold_rejected) in zip(records, ((2.0, 0.8), (3.0, 2.0), (2.0, 3.0))):
        record |= {"gold_chosen": gold_chosen, "gold_rejected": gold_rejected}
    # a terse tail pair where fewer details win is a conflict; a tail pair the head's rules order right is not;
    # a head pair never is
    assert conflict_pairs(PreferenceDataset.from_records(records)).tolist() == [True, False, False]
    assert conflict_pairs(PreferenceDataset.from_records([{"chosen": "a", "rejected": "b"}])) is None


def test_about_a_fifth_of_tail_pairs_conflict_and_none_of_the_head():
    test = make_longtail_dataset(BenchmarkConfig(**SMALL | {"n_test_tail": 600})).split("test")
    conflict, tail = conflict_pairs(test), np.asarray(test.column("is_tail"), dtype=bool)
    assert not conflict[~tail].any()
    assert 0.12 < conflict[tail].mean() < 0.3


def _word_model_on_conflict_pairs(separability: float, per_group: str | None) -> float:
    config = BenchmarkConfig(
        n_train=3000, n_validation=0, n_test_head=50, n_test_tail=600, alpha=0.5, seed=5, tail_separability=separability
    )
    data = make_longtail_dataset(config)
    train, test = data.split("train"), data.split("test")
    chosen, rejected = BagOfWordsReward("gold", per_group=per_group, regularisation=100.0).fit(train).score_pairs(test)
    gold = test.numeric_column("gold_chosen") - test.numeric_column("gold_rejected")
    return float(gold_correct(chosen - rejected, gold)[conflict_pairs(test)].mean())


def test_at_zero_words_carry_the_tail_rules_at_one_only_the_prompts_domain_does():
    # a word-count model fitted on gold reads the tail's own rules off the response's words at S = 0 (measured
    # 0.82 here, 0.89 with 12,000 pairs) and cannot at S = 1 (0.41); told the prompt's domain, it can (0.90, 0.98)
    assert _word_model_on_conflict_pairs(0.0, None) > 0.75
    assert _word_model_on_conflict_pairs(1.0, None) <= 0.55
    assert _word_model_on_conflict_pairs(1.0, "domain") > 0.85


def test_bag_of_words_anchor_fits_labels_and_refuses_misuse():
    data = make_longtail_dataset(BenchmarkConfig(**SMALL))
    anchor = BagOfWordsReward().fit(data.split("train"))
    chosen, rejected = anchor.score_pairs(data.split("test"))
    assert (chosen > rejected).mean() > 0.7  # relevance and off-topic words alone order most pairs
    with pytest.raises(CartError, match="not fitted"):
        BagOfWordsReward().score_pairs(data.split("test"))
    plain = PreferenceDataset.from_records([{"chosen": "a b", "rejected": "b"}, {"chosen": "b", "rejected": "a"}])
    with pytest.raises(CartError, match="gold_chosen"):
        BagOfWordsReward("gold").fit(plain)
    with pytest.raises(CartError, match="no column 'domain'"):
        BagOfWordsReward(per_group="domain").fit(plain)


def test_cart_run_scores_the_bag_of_words_anchor_beside_the_methods(tmp_path):
    from cartrm.experiments.compare import compare_methods
    from cartrm.experiments.pipeline import RunConfig, run_experiment
    from tests.helpers import TINY

    benchmark = TINY["benchmark"].model_copy(update={"tail_separability": 1.0})
    config = RunConfig(
        name="a",
        out_root=tmp_path,
        methods=("bt",),
        anchors=("bag-of-words",),
        seeds=(0,),
        **{**TINY, "benchmark": benchmark, "bon_prompts": 0},
    )
    results = run_experiment(config, progress=False)
    seed = config.directory / "seed-0"
    assert (seed / "eval" / "bag-of-words" / "scores.json").exists()
    assert results.methods["bag-of-words"].tail_gold_accuracy is not None
    test = make_longtail_dataset(benchmark).split("test")
    anchor = BagOfWordsReward().fit(make_longtail_dataset(benchmark).split("train"), seed=0)
    chosen, _ = anchor.score_pairs(test)
    saved = json.loads((seed / "eval" / "bag-of-words" / "scores.json").read_text())
    assert saved["chosen"] == pytest.approx(chosen.tolist())
    assert all(
        r["neutral_responses"] == r["is_tail"] for r in map(json.loads, (seed / "data" / "benchmark.jsonl").open())
    )
    (comparison, *_) = compare_methods(config.directory, "bag-of-words", "bt")
    assert comparison.metric == "conflict_gold_accuracy"
    mtime = (seed / "eval" / "bag-of-words" / "scores.json").stat().st_mtime_ns
    run_experiment(config, progress=False)  # a finished anchor is not refitted
    assert (seed / "eval" / "bag-of-words" / "scores.json").stat().st_mtime_ns == mtime


def test_the_anchors_pair_orders_do_not_follow_a_same_seed_benchmarks_domains():
    # the benchmark draws its domains first from default_rng(seed); orders drawn from the same stream would put
    # every pair of the most frequent domain in one order, leaving that domain without a model
    train = make_longtail_dataset(BenchmarkConfig(**SMALL | {"seed": 0})).split("train")
    anchor = BagOfWordsReward("gold", per_group="domain").fit(train, seed=0)
    assert {"cooking", "travel", "personal_finance", "fitness"} <= set(anchor.weights)


def test_cart_data_separability_prints_the_word_models_ceiling_per_setting():
    from typer.testing import CliRunner

    from cartrm.cli import app

    args = ["data", "separability", "--n-train", "300", "--n-test-head", "20", "--n-test-tail", "80", "--values"]
    result = CliRunner().invoke(app, [*args, "0,1"])
    assert result.exit_code == 0, result.output
    header, *rows = result.output.strip().splitlines()
    assert "conflict" in header and [r.split()[0] for r in rows] == ["0.0", "1.0"]
    assert all(r.split()[1] == "80" for r in rows)  # tail test pairs
    bad = CliRunner().invoke(app, [*args, "0,1.5"])
    assert bad.exit_code == 1 and "between 0 and 1" in bad.output
