"""The long-tail benchmark's generator: prompts, responses rendered from sampled features, annotated pairs.

See the package docstring (:mod:`cartrm.datasets.longtail`) for the domains, features, rule sets and splits.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pydantic

from cartrm.datasets.longtail.tables import (
    BASE_SENTENCES,
    CAVEAT_SENTENCES,
    DETAIL_SENTENCES,
    DOMAIN_BY_NAME,
    DOMAINS,
    ENTHUSIASTIC_CLOSERS,
    ENTHUSIASTIC_OPENERS,
    EXAMPLE_SENTENCES,
    FEATURE_PROBABILITIES,
    FEATURES,
    GENERIC_MAINS,
    MAX_DETAIL,
    MIN_GOLD_MARGIN,
    NEUTRAL_VOCABULARY,
    OFF_TOPIC_SENTENCES,
    PLAIN_CLOSERS,
    PLAIN_OPENERS,
    PROMPT_CONTEXTS,
    PROMPT_QUESTIONS,
    PROMPT_SITUATIONS,
    RELEVANT_MAINS,
    RULE_SETS,
    SHORTCUT_SENTENCE,
    SPLITS,
    Domain,
    Vocabulary,
)
from cartrm.runs import KEYED_WHEN_SET

SEPARABILITY_STREAM = 1
"""The tail-separability dial draws its coins from a generator of its own, seeded ``(seed, SEPARABILITY_STREAM)``:
the main stream, so every feature, label and prompt, is the same at every dial setting."""

SHORTCUT_STREAM = 2
"""The planted shortcut's coins, seeded ``(seed, SHORTCUT_STREAM)``: pairs are otherwise the same with or without it."""


class BenchmarkConfig(pydantic.BaseModel):
    """Sizes, mixture and noise of one benchmark instance."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    n_train: int = pydantic.Field(3000, ge=0, description="training pairs")
    n_validation: int = pydantic.Field(500, ge=0, description="validation pairs")
    n_test_head: int = pydantic.Field(1100, ge=0, description="head pairs in the test split")
    n_test_tail: int = pydantic.Field(1100, ge=0, description="tail pairs in the test split")
    alpha: float = pydantic.Field(0.9, gt=0.0, lt=1.0, description="share of head-domain pairs in train/validation")
    zipf_exponent: float = pydantic.Field(1.0, ge=0.0, description="Zipf exponent of domain frequencies in a group")
    label_noise_temperature: float = pydantic.Field(
        0.6, gt=0.0, description="annotator noise: P(label agrees) = sigmoid(gold margin / temperature)"
    )
    seed: int = pydantic.Field(0, ge=0, description="generator seed")
    tail_separability: float = pydantic.Field(
        0.0,
        ge=0.0,
        le=1.0,
        json_schema_extra=KEYED_WHEN_SET,
        description="share of tail pairs whose responses are written in domain-neutral words, so the tail's own "
        "rules can be read only from the prompt's domain, not from the response's words (0: the classic benchmark)",
    )
    tail_shortcut: float = pydantic.Field(
        0.0,
        ge=0.0,
        le=1.0,
        json_schema_extra=KEYED_WHEN_SET,
        description="share of tail pairs given a planted shortcut: a fixed sentence on the annotator's chosen "
        "response in train and validation, on the gold-worse one in test (and on half the tail candidates of "
        "best-of-n), so a model that learns it fails the tail at test (0: none)",
    )


@dataclass(frozen=True)
class BenchmarkPrompt:
    """A prompt; ``neutral_responses``: its responses use NEUTRAL_VOCABULARY instead of the domain's words."""

    text: str
    domain: str
    topic: str
    neutral_responses: bool = False


@dataclass(frozen=True)
class Candidate:
    text: str
    features: dict[str, float]
    gold: float


@dataclass(frozen=True)
class BenchmarkPair:
    """One annotated pair, keeping the true features that records drop."""

    pair_id: str
    split: str
    prompt: BenchmarkPrompt
    chosen: Candidate
    rejected: Candidate
    shortcut_on: str | None = None
    """Which response carries the planted shortcut: "chosen", "rejected" or None."""

    def to_record(self, with_vocabulary: bool = False, with_shortcut: bool = False) -> dict:
        """TRL plain-text preference record plus gold metadata (and, ``with_vocabulary``, ``neutral_responses``;
        ``with_shortcut``, ``shortcut_on``)."""
        domain = DOMAIN_BY_NAME[self.prompt.domain]
        vocabulary = {"neutral_responses": self.prompt.neutral_responses} if with_vocabulary else {}
        shortcut = {"shortcut_on": self.shortcut_on} if with_shortcut else {}
        return (
            vocabulary
            | shortcut
            | {
                "prompt": self.prompt.text,
                "chosen": self.chosen.text,
                "rejected": self.rejected.text,
                "split": self.split,
                "domain": domain.name,
                "is_tail": domain.is_tail,
                "rule_set": domain.rule_set,
                "gold_chosen": self.chosen.gold,
                "gold_rejected": self.rejected.gold,
                "gold_margin": round(self.chosen.gold - self.rejected.gold, 6),
                "pair_id": self.pair_id,
            }
        )


def _zipf_weights(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1, dtype=float) ** exponent
    return weights / weights.sum()


def _group_probabilities(is_tail: bool, zipf_exponent: float) -> dict[str, float]:
    """Within-group Zipf probabilities, in DOMAINS order (which is the rank order)."""
    names = [d.name for d in DOMAINS if d.is_tail == is_tail]
    return dict(zip(names, (float(w) for w in _zipf_weights(len(names), zipf_exponent)), strict=True))


def domain_probabilities(alpha: float, zipf_exponent: float = 1.0) -> dict[str, float]:
    """Mixture probability of every domain: head share ``alpha``, Zipf within each group."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    head = _group_probabilities(False, zipf_exponent)
    tail = _group_probabilities(True, zipf_exponent)
    return {d.name: alpha * head[d.name] if not d.is_tail else (1.0 - alpha) * tail[d.name] for d in DOMAINS}


def gold_reward(features: Mapping[str, float], domain: str) -> float:
    """Gold reward: the domain's rule-set weights dotted with the feature values."""
    if domain not in DOMAIN_BY_NAME:
        raise ValueError(f"unknown domain {domain!r}")
    unknown = set(features) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown features {sorted(unknown)}")
    weights = RULE_SETS[DOMAIN_BY_NAME[domain].rule_set]
    return round(sum(weights[name] * float(value) for name, value in features.items()), 6)


def _as_generator(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _sample_features(rng: np.random.Generator) -> dict[str, float]:
    features = {name: float(rng.random() < p) for name, p in FEATURE_PROBABILITIES.items()}
    features["detail"] = float(rng.integers(MAX_DETAIL + 1))
    return {name: features[name] for name in FEATURES}


def _main_sentence(relevant: bool, topic: str, rng: np.random.Generator) -> str:
    index = int(rng.integers(len(RELEVANT_MAINS)))
    if not relevant:
        return GENERIC_MAINS[index]
    return RELEVANT_MAINS[index].format(topic=topic)


def _body_sentences(features: Mapping[str, float], words: Domain | Vocabulary, rng: np.random.Generator) -> list[str]:
    """Detail, example, caveat and off-topic sentences, in random order, filled with ``words``."""
    n_detail = int(features["detail"])
    terms = rng.choice(len(words.terms), size=n_detail, replace=False)
    sentences = [_pick(DETAIL_SENTENCES, rng).format(term=words.terms[int(i)]) for i in terms]
    if features["example"]:
        sentences.append(_pick(EXAMPLE_SENTENCES, rng).format(object=_pick(words.objects, rng)))
    if features["caveat"]:
        sentences.append(_pick(CAVEAT_SENTENCES, rng).format(verb=_pick(words.verbs, rng)))
    if features["off_topic"]:
        sentences.append(_pick(OFF_TOPIC_SENTENCES, rng))
    return [sentences[int(i)] for i in rng.permutation(len(sentences))]


def render_response(features: Mapping[str, float], prompt: BenchmarkPrompt, rng: np.random.Generator) -> str:
    """Realise ``features`` as response text for ``prompt`` (in neutral words when the prompt says so; the main
    sentence names the prompt's topic either way, as relevance is that)."""
    domain = DOMAIN_BY_NAME[prompt.domain]
    words = NEUTRAL_VOCABULARY if prompt.neutral_responses else domain
    enthusiastic = bool(features["enthusiasm"])
    sentences = [
        _pick(ENTHUSIASTIC_OPENERS if enthusiastic else PLAIN_OPENERS, rng),
        _main_sentence(bool(features["relevance"]), prompt.topic, rng),
        _pick(BASE_SENTENCES, rng),
        *_body_sentences(features, words, rng),
        _pick(ENTHUSIASTIC_CLOSERS if enthusiastic else PLAIN_CLOSERS, rng),
    ]
    return " ".join(s for s in sentences if s)


def _candidate(prompt: BenchmarkPrompt, rng: np.random.Generator) -> Candidate:
    features = _sample_features(rng)
    return Candidate(render_response(features, prompt, rng), features, gold_reward(features, prompt.domain))


def sample_candidates(prompt: BenchmarkPrompt, n: int, seed: int | np.random.Generator) -> list[Candidate]:
    """Draw ``n`` independent responses to ``prompt`` (for best-of-n experiments)."""
    rng = _as_generator(seed)
    return [_candidate(prompt, rng) for _ in range(n)]


def _prompt_radices(domain: Domain) -> tuple[int, ...]:
    """Number of choices for each prompt slot: question, topic, context, situation, object."""
    return (
        len(PROMPT_QUESTIONS),
        len(domain.topics),
        len(PROMPT_CONTEXTS),
        len(PROMPT_SITUATIONS),
        len(domain.objects),
    )


def _prompt_from_index(domain: Domain, index: int) -> BenchmarkPrompt:
    """Decode a mixed-radix index into one distinct prompt of ``domain``."""
    digits = []
    for radix in _prompt_radices(domain):
        index, digit = divmod(index, radix)
        digits.append(digit)
    question, topic, context, situation, obj = digits
    text = " ".join(
        (
            PROMPT_QUESTIONS[question].format(topic=domain.topics[topic]),
            PROMPT_CONTEXTS[context],
            PROMPT_SITUATIONS[situation].format(object=domain.objects[obj]),
        )
    )
    return BenchmarkPrompt(text=text, domain=domain.name, topic=domain.topics[topic])


def _distinct_prompts(domain: Domain, count: int, rng: np.random.Generator) -> list[BenchmarkPrompt]:
    space = math.prod(_prompt_radices(domain))
    if count > space:
        raise ValueError(f"{domain.name} needs {count} distinct prompts but only {space} exist")
    return [_prompt_from_index(domain, int(i)) for i in rng.choice(space, size=count, replace=False)]


def _stratified_domains(n_head: int, n_tail: int, zipf_exponent: float, rng: np.random.Generator) -> list[str]:
    """Exact per-domain counts (largest remainder) for each group, shuffled."""
    names: list[str] = []
    for is_tail, n in ((False, n_head), (True, n_tail)):
        probs = _group_probabilities(is_tail, zipf_exponent)
        quotas = {name: p * n for name, p in probs.items()}
        counts = {name: math.floor(q) for name, q in quotas.items()}
        by_remainder = sorted(quotas, key=lambda name: counts[name] - quotas[name])
        for name in by_remainder[: n - sum(counts.values())]:
            counts[name] += 1
        names.extend(itertools.chain.from_iterable([name] * c for name, c in counts.items()))
    return [names[int(i)] for i in rng.permutation(len(names))]


def _split_domains(config: BenchmarkConfig, rng: np.random.Generator) -> dict[str, list[str]]:
    probs = domain_probabilities(config.alpha, config.zipf_exponent)
    names, p = list(probs), np.array(list(probs.values()))
    return {
        "train": [names[int(i)] for i in rng.choice(len(names), size=config.n_train, p=p)],
        "validation": [names[int(i)] for i in rng.choice(len(names), size=config.n_validation, p=p)],
        "test": _stratified_domains(config.n_test_head, config.n_test_tail, config.zipf_exponent, rng),
    }


def _candidate_pair(prompt: BenchmarkPrompt, rng: np.random.Generator) -> tuple[Candidate, Candidate]:
    """Two responses whose gold margin is at least MIN_GOLD_MARGIN (near-ties are redrawn)."""
    while True:
        a, b = _candidate(prompt, rng), _candidate(prompt, rng)
        if abs(a.gold - b.gold) >= MIN_GOLD_MARGIN:
            return a, b


def _annotate(
    prompt: BenchmarkPrompt, split: str, index: int, temperature: float, rng: np.random.Generator
) -> BenchmarkPair:
    """Bradley-Terry annotator: prefers a with probability sigmoid(margin / temperature)."""
    a, b = _candidate_pair(prompt, rng)
    p_a = 1.0 / (1.0 + math.exp(-(a.gold - b.gold) / temperature))
    chosen, rejected = (a, b) if rng.random() < p_a else (b, a)
    return BenchmarkPair(f"{split}-{index:05d}", split, prompt, chosen, rejected)


def _separated(prompt: BenchmarkPrompt, coin: float, separability: float) -> BenchmarkPrompt:
    """``prompt``, marked for neutral responses when it is a tail prompt and its coin falls below the dial."""
    if DOMAIN_BY_NAME[prompt.domain].is_tail and coin < separability:
        return dataclasses.replace(prompt, neutral_responses=True)
    return prompt


def with_shortcut(candidate: Candidate) -> Candidate:
    """``candidate`` with SHORTCUT_SENTENCE appended (its features and gold unchanged)."""
    return dataclasses.replace(candidate, text=f"{candidate.text} {SHORTCUT_SENTENCE}")


def _planted(pair: BenchmarkPair, coin: float, share: float) -> BenchmarkPair:
    """``pair`` with the shortcut when it is a tail pair and its coin falls below ``share``: on the annotator's
    chosen response in train and validation (it predicts the label there), on the gold-worse one in test."""
    if not DOMAIN_BY_NAME[pair.prompt.domain].is_tail or coin >= share:
        return pair
    on = "chosen" if pair.split != "test" or pair.chosen.gold < pair.rejected.gold else "rejected"
    if on == "chosen":
        return dataclasses.replace(pair, chosen=with_shortcut(pair.chosen), shortcut_on=on)
    return dataclasses.replace(pair, rejected=with_shortcut(pair.rejected), shortcut_on=on)


def generate_pairs(config: BenchmarkConfig = BenchmarkConfig()) -> list[BenchmarkPair]:
    """All annotated pairs (train, validation, test), with their true features."""
    rng = np.random.default_rng(config.seed)
    split_domains = _split_domains(config, rng)
    needed = Counter(itertools.chain.from_iterable(split_domains.values()))
    pools = {name: iter(_distinct_prompts(DOMAIN_BY_NAME[name], needed[name], rng)) for name in sorted(needed)}
    coins = iter(np.random.default_rng([config.seed, SEPARABILITY_STREAM]).random(sum(needed.values())))
    shortcut_coins = iter(np.random.default_rng([config.seed, SHORTCUT_STREAM]).random(sum(needed.values())))
    return [
        _planted(
            _annotate(
                _separated(next(pools[name]), next(coins), config.tail_separability),
                split,
                index,
                config.label_noise_temperature,
                rng,
            ),
            next(shortcut_coins),
            config.tail_shortcut,
        )
        for split in SPLITS
        for index, name in enumerate(split_domains[split])
    ]


def generate_benchmark(config: BenchmarkConfig = BenchmarkConfig()) -> list[dict]:
    """The benchmark as TRL plain-text preference records, ordered train, validation, test; with the dial above 0
    they also say which pairs have neutral responses (``neutral_responses``), and with a planted shortcut which
    response carries it (``shortcut_on``)."""
    return [
        pair.to_record(with_vocabulary=config.tail_separability > 0, with_shortcut=config.tail_shortcut > 0)
        for pair in generate_pairs(config)
    ]
