"""Reading a benchmark response back: its features and gold reward from the text, and which domain a text
reads as. Checks the labels of edited (augmented) pairs, whose stored gold no longer applies."""

from __future__ import annotations

import re
from collections import Counter

from cartrm.datasets.longtail.generator import gold_reward
from cartrm.datasets.longtail.tables import (
    BASE_SENTENCES,
    CAVEAT_MARKERS,
    CAVEAT_SENTENCES,
    DETAIL_SENTENCES,
    DOMAIN_BY_NAME,
    DOMAINS,
    ENTHUSIASTIC_CLOSERS,
    ENTHUSIASTIC_OPENERS,
    EXAMPLE_MARKERS,
    EXAMPLE_SENTENCES,
    FEATURES,
    GENERIC_MAINS,
    HEAD_RULE_SET,
    OFF_TOPIC_MARKERS,
    OFF_TOPIC_SENTENCES,
    PLAIN_CLOSERS,
    PLAIN_OPENERS,
    PROMPT_CONTEXTS,
    PROMPT_QUESTIONS,
    PROMPT_SITUATIONS,
    RELEVANT_MAINS,
    RULE_SETS,
)


def _text_sentences(text: str) -> list[str]:
    """Sentences of a response, whitespace-normalised; bullets ("- ") and line breaks are ignored.

    A sentence ends at a token ending in ".", "!" or "?", so bulleted or reordered responses parse alike.
    """
    sentences: list[str] = []
    current: list[str] = []
    for token in text.split():
        if not current and token == "-":
            continue
        current.append(token)
        if token[-1] in ".!?":
            sentences.append(" ".join(current))
            current = []
    if current:
        sentences.append(" ".join(current))
    return sentences


def _fills_template(sentence: str, templates: tuple[str, ...], slot: str) -> bool:
    """Whether ``sentence`` is one of ``templates`` with any non-empty text in ``{slot}``.

    The slot is matched loosely so a word substituted consistently in prompt and response (the rare-token
    augmentation renames the topic) keeps the feature; on benchmark text the slot always holds a domain
    topic or term.
    """
    for template in templates:
        prefix, suffix = template.split("{" + slot + "}")
        if len(sentence) > len(prefix) + len(suffix) and sentence.startswith(prefix) and sentence.endswith(suffix):
            return True
    return False


def features_from_text(response: str, domain: str) -> dict[str, float]:
    """The six FEATURES of a response rendered by :func:`render_response`, read from its text.

    Robust to sentence order, bullets and line breaks. Enthusiasm is read as any sentence ending in "!":
    the enthusiastic openers and closers are the benchmark's only uses of "!" (the plain closer is
    "Good luck." with a period).
    """
    if domain not in DOMAIN_BY_NAME:
        raise ValueError(f"unknown domain {domain!r}")
    sentences = _text_sentences(response)
    features = {
        "relevance": any(_fills_template(s, RELEVANT_MAINS, "topic") for s in sentences),
        "detail": sum(_fills_template(s, DETAIL_SENTENCES, "term") for s in sentences),
        "example": any(s.startswith(EXAMPLE_MARKERS) for s in sentences),
        "caveat": any(marker in s for s in sentences for marker in CAVEAT_MARKERS),
        "enthusiasm": any(s.endswith("!") for s in sentences),
        "off_topic": any(s.startswith(OFF_TOPIC_MARKERS) for s in sentences),
    }
    return {name: float(features[name]) for name in FEATURES}


def gold_from_text(response: str, domain: str) -> float:
    """Gold reward of a benchmark response read from its text (equals the pair's stored gold)."""
    return gold_reward(features_from_text(response, domain), domain)


def head_rule_margin(chosen: str, rejected: str, domain: str) -> float:
    """The margin the head's (``standard``) rules give a pair, read from its responses' text: what a model that
    learned only the head's rules would prefer. A tail pair whose gold margin has the other sign (or that these
    rules tie) is a *conflict pair*: only the tail's own rules order it right."""
    weights = RULE_SETS[HEAD_RULE_SET]
    a, b = features_from_text(chosen, domain), features_from_text(rejected, domain)
    return round(sum(weights[name] * (a[name] - b[name]) for name in FEATURES), 6)


# Auditing edited (augmented) pairs: which domain a text now reads as, and whether gold still prefers the chosen.

DOMAIN_WORD = re.compile(r"[A-Za-z]{4,}")


TEMPLATES = (
    PROMPT_QUESTIONS,
    PROMPT_CONTEXTS,
    PROMPT_SITUATIONS,
    ENTHUSIASTIC_OPENERS,
    PLAIN_OPENERS,
    RELEVANT_MAINS,
    GENERIC_MAINS,
    BASE_SENTENCES,
    DETAIL_SENTENCES,
    EXAMPLE_SENTENCES,
    CAVEAT_SENTENCES,
    OFF_TOPIC_SENTENCES,
    ENTHUSIASTIC_CLOSERS,
    PLAIN_CLOSERS,
)


def _domain_words() -> dict[str, frozenset[str]]:
    """Per domain, the words (≥ 4 letters, lower case) of its topics, objects, terms and verbs used by no other
    domain and by no template sentence: the words that tell a reader which domain, so which gold rules, a text
    belongs to."""
    shared = {w.lower() for group in TEMPLATES for sentence in group for w in DOMAIN_WORD.findall(sentence)}
    words = {
        d.name: {w.lower() for phrase in d.topics + d.objects + d.terms + d.verbs for w in DOMAIN_WORD.findall(phrase)}
        for d in DOMAINS
    }
    return {
        name: frozenset(own - shared - set().union(*(other for n, other in words.items() if n != name)))
        for name, own in words.items()
    }


DOMAIN_WORDS = _domain_words()


def domain_from_text(text: str) -> str | None:
    """The domain whose own words occur most often in ``text``; None when none occurs or two domains tie."""
    found = Counter(w.lower() for w in DOMAIN_WORD.findall(text))
    hits = {name: sum(found[w] for w in words) for name, words in DOMAIN_WORDS.items()}
    best = max(hits.values())
    leaders = [name for name, count in hits.items() if count == best]
    return leaders[0] if best and len(leaders) == 1 else None


def foreign_words(text: str, domain: str) -> set[str]:
    """Words of ``text`` that belong to another domain's own vocabulary (and not to ``domain``'s)."""
    present = {w.lower() for w in DOMAIN_WORD.findall(text)}
    return {w for name, words in DOMAIN_WORDS.items() if name != domain for w in present & words}
