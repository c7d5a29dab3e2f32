"""Tests for the seeded long-tail preference benchmark."""

import json
import math
import re
from collections import Counter

import numpy as np
import pydantic
import pytest

from cartrm.datasets.longtail.generator import (
    BenchmarkConfig,
    BenchmarkPrompt,
    domain_probabilities,
    generate_benchmark,
    generate_pairs,
    gold_reward,
    sample_candidates,
)
from cartrm.datasets.longtail.tables import (
    CAVEAT_MARKERS,
    DOMAIN_BY_NAME,
    DOMAINS,
    EXAMPLE_MARKERS,
    FEATURES,
    HEAD_RULE_SET,
    MIN_GOLD_MARGIN,
    OFF_TOPIC_MARKERS,
    RULE_SETS,
)

SMALL = BenchmarkConfig(n_train=300, n_validation=100, n_test_head=120, n_test_tail=150, seed=3)
RECORD_KEYS = {
    "prompt",
    "chosen",
    "rejected",
    "split",
    "domain",
    "is_tail",
    "rule_set",
    "gold_chosen",
    "gold_rejected",
    "gold_margin",
    "pair_id",
}
STOPWORDS = {"a", "an", "the", "of", "and", "to", "in", "with", "for", "at", "on", "from", "off", "up", "down"}
BASE_FEATURES = {"relevance": 1.0, "detail": 1.0, "example": 0.0, "caveat": 0.0, "enthusiasm": 0.0, "off_topic": 0.0}


@pytest.fixture(scope="module")
def small_records() -> list[dict]:
    return generate_benchmark(SMALL)


def _is_tail(domain: str) -> bool:
    return DOMAIN_BY_NAME[domain].is_tail


def _head_rules_score(features: dict[str, float]) -> float:
    return sum(RULE_SETS[HEAD_RULE_SET][name] * value for name, value in features.items())


def _vocabulary(is_tail: bool) -> set[str]:
    words = set()
    for domain in DOMAINS:
        if domain.is_tail == is_tail:
            for phrase in (*domain.topics, *domain.objects, *domain.terms, *domain.verbs):
                words.update(re.findall(r"[a-z0-9'-]+", phrase.lower()))
    return words - STOPWORDS


def test_domains_cover_head_and_tail_with_known_rule_sets():
    tail = [d for d in DOMAINS if d.is_tail]
    head = [d for d in DOMAINS if not d.is_tail]
    assert len(DOMAINS) >= 12 and len(head) >= 3 and len(tail) >= 8
    assert len(DOMAIN_BY_NAME) == len(DOMAINS)
    assert all(d.rule_set == HEAD_RULE_SET for d in head)
    assert {d.rule_set for d in DOMAINS} <= set(RULE_SETS)
    assert any(d.rule_set == HEAD_RULE_SET for d in tail)
    assert all(set(weights) == set(FEATURES) for weights in RULE_SETS.values())


@pytest.mark.parametrize("alpha", [0.6, 0.9])
def test_domain_probabilities_sum_to_one_with_head_share_alpha(alpha):
    probs = domain_probabilities(alpha)
    assert math.isclose(sum(probs.values()), 1.0)
    assert math.isclose(sum(p for name, p in probs.items() if not _is_tail(name)), alpha)
    for is_tail in (False, True):
        group = [probs[d.name] for d in DOMAINS if d.is_tail == is_tail]
        assert all(a > b for a, b in zip(group, group[1:]))


def test_domain_probabilities_follow_zipf_within_group():
    probs = domain_probabilities(0.9, zipf_exponent=2.0)
    head = [probs[d.name] for d in DOMAINS if not d.is_tail]
    assert math.isclose(head[0] / head[1], 4.0)
    with pytest.raises(ValueError):
        domain_probabilities(1.0)


def test_train_head_share_matches_alpha():
    alpha, n = 0.8, 2000
    config = BenchmarkConfig(n_train=n, n_validation=0, n_test_head=0, n_test_tail=0, alpha=alpha, seed=11)
    head_share = np.mean([not r["is_tail"] for r in generate_benchmark(config)])
    assert abs(head_share - alpha) < 4 * math.sqrt(alpha * (1 - alpha) / n)


def test_tail_vocabulary_is_disjoint_from_head_vocabulary():
    assert _vocabulary(is_tail=True).isdisjoint(_vocabulary(is_tail=False))


@pytest.mark.parametrize(("rule_set", "feature"), [("terse", "detail"), ("expert", "caveat"), ("formal", "enthusiasm")])
def test_tail_rule_set_reverses_a_head_preference(rule_set, feature):
    assert RULE_SETS[HEAD_RULE_SET][feature] > 0 >= RULE_SETS[rule_set][feature]
    tail_domain = next(d.name for d in DOMAINS if d.rule_set == rule_set)
    with_feature = {**BASE_FEATURES, feature: BASE_FEATURES[feature] + 1.0}
    assert gold_reward(with_feature, "cooking") > gold_reward(BASE_FEATURES, "cooking")
    assert gold_reward(with_feature, tail_domain) < gold_reward(BASE_FEATURES, tail_domain)


def test_relevance_and_off_topic_keep_their_sign_everywhere():
    assert all(w["relevance"] > 0 and w["off_topic"] < 0 for w in RULE_SETS.values())


def test_gold_reward_rejects_unknown_inputs():
    with pytest.raises(ValueError):
        gold_reward({"sparkle": 1.0}, "cooking")
    with pytest.raises(ValueError):
        gold_reward(BASE_FEATURES, "underwater_basket_weaving")


def test_head_rules_only_oracle_shows_long_tail_gap():
    config = BenchmarkConfig(n_train=0, n_validation=0, n_test_head=600, n_test_tail=600, seed=5)
    correct: dict[bool, list[bool]] = {False: [], True: []}
    for pair in generate_pairs(config):
        oracle_prefers_chosen = _head_rules_score(pair.chosen.features) > _head_rules_score(pair.rejected.features)
        correct[_is_tail(pair.prompt.domain)].append(oracle_prefers_chosen == (pair.chosen.gold > pair.rejected.gold))
    head_accuracy, tail_accuracy = np.mean(correct[False]), np.mean(correct[True])
    assert head_accuracy == 1.0
    assert head_accuracy - tail_accuracy >= 0.10
    assert tail_accuracy > 0.5


def _agreement(temperature: float) -> float:
    config = BenchmarkConfig(
        n_train=1500, n_validation=0, n_test_head=0, n_test_tail=0, label_noise_temperature=temperature, seed=7
    )
    return float(np.mean([r["gold_margin"] > 0 for r in generate_benchmark(config)]))


def test_annotator_agreement_in_range_and_rises_as_temperature_falls():
    default = _agreement(BenchmarkConfig().label_noise_temperature)
    assert 0.83 <= default <= 0.92
    assert _agreement(2.0) < default < _agreement(0.2)


def test_no_near_ties(small_records):
    assert all(abs(r["gold_margin"]) >= MIN_GOLD_MARGIN - 1e-9 for r in small_records)


def test_same_seed_is_byte_identical_and_different_seed_differs(small_records):
    again = json.dumps(generate_benchmark(SMALL))
    assert json.dumps(small_records) == again
    other = generate_benchmark(SMALL.model_copy(update={"seed": 4}))
    assert json.dumps(other) != again


def test_prompts_are_unique_so_no_split_leakage(small_records):
    by_split = {
        split: {r["prompt"] for r in small_records if r["split"] == split} for split in ("train", "validation", "test")
    }
    assert by_split["train"].isdisjoint(by_split["validation"] | by_split["test"])
    assert by_split["validation"].isdisjoint(by_split["test"])
    assert len({r["prompt"] for r in small_records}) == len(small_records)


def test_splits_are_ordered_and_test_is_stratified(small_records):
    splits = [r["split"] for r in small_records]
    assert splits == ["train"] * 300 + ["validation"] * 100 + ["test"] * 270
    test_tail = Counter(r["is_tail"] for r in small_records if r["split"] == "test")
    assert test_tail == {False: 120, True: 150}
    assert len({r["pair_id"] for r in small_records}) == len(small_records)


def test_records_are_plain_json_with_consistent_gold(small_records):
    assert json.loads(json.dumps(small_records)) == small_records
    for record in small_records:
        assert set(record) == RECORD_KEYS
        domain = DOMAIN_BY_NAME[record["domain"]]
        assert (record["is_tail"], record["rule_set"]) == (domain.is_tail, domain.rule_set)
        assert math.isclose(record["gold_margin"], record["gold_chosen"] - record["gold_rejected"], abs_tol=1e-6)
        assert not record["chosen"].startswith(record["prompt"][:20])
        assert record["chosen"] != record["rejected"]


def test_responses_have_moderate_length(small_records):
    lengths = [len(r[key].split()) for r in small_records for key in ("chosen", "rejected")]
    assert 35 <= np.mean(lengths) <= 60
    assert np.percentile(lengths, 95) <= 75


def test_sample_candidates_gold_matches_gold_reward():
    prompt = BenchmarkPrompt(text="Any practical tips for pulling cane?", domain="glassblowing", topic="pulling cane")
    candidates = sample_candidates(prompt, 7, seed=1)
    assert len(candidates) == 7
    assert all(c.gold == gold_reward(c.features, "glassblowing") for c in candidates)
    assert candidates == sample_candidates(prompt, 7, np.random.default_rng(1))
    assert candidates != sample_candidates(prompt, 7, seed=2)


def _has_any(text: str, markers: tuple[str, ...]) -> bool:
    return any(marker in text for marker in markers)


@pytest.mark.parametrize("domain", DOMAINS, ids=lambda d: d.name)
def test_features_are_visible_in_text(domain):
    rng = np.random.default_rng(0)
    for topic in domain.topics:
        prompt = BenchmarkPrompt(text=f"What should I know about {topic}?", domain=domain.name, topic=topic)
        for candidate in sample_candidates(prompt, 15, rng):
            text, features = candidate.text, candidate.features
            assert (topic.lower() in text.lower()) == bool(features["relevance"])
            assert sum(term in text for term in domain.terms) == features["detail"]
            assert _has_any(text, EXAMPLE_MARKERS) == bool(features["example"])
            assert _has_any(text, CAVEAT_MARKERS) == bool(features["caveat"])
            assert ("!" in text) == bool(features["enthusiasm"])
            assert _has_any(text, OFF_TOPIC_MARKERS) == bool(features["off_topic"])


def test_config_is_validated():
    with pytest.raises(pydantic.ValidationError):
        BenchmarkConfig(alpha=1.0)
    with pytest.raises(pydantic.ValidationError):
        BenchmarkConfig(n_trian=10)
    with pytest.raises(pydantic.ValidationError):
        BenchmarkConfig(label_noise_temperature=0.0)
