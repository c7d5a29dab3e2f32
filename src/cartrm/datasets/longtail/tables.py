"""The benchmark's fixed tables: features, rule sets, and the domains and sentence templates of ``domains.json``.

The word tables are data, not code: ``domains.json`` (shipped with the package) holds every domain's frequency
group, rule set and vocabulary, and every sentence template, and is read once at import. Template groups become
upper-case tuples here (``PROMPT_QUESTIONS`` from ``sentences.prompt_questions``, ...), so the generator and the
parser share one spelling of each sentence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

FEATURES: tuple[str, ...] = ("relevance", "detail", "example", "caveat", "enthusiasm", "off_topic")
MAX_DETAIL = 3
FEATURE_PROBABILITIES: dict[str, float] = {
    "relevance": 0.75,
    "example": 0.5,
    "caveat": 0.5,
    "enthusiasm": 0.5,
    "off_topic": 0.25,
}
MIN_GOLD_MARGIN = 0.25
SPLITS: tuple[str, ...] = ("train", "validation", "test")

RULE_SETS: dict[str, dict[str, float]] = {
    "standard": {"relevance": 2.0, "detail": 0.5, "example": 0.6, "caveat": 0.6, "enthusiasm": 0.3, "off_topic": -1.5},
    "terse": {"relevance": 2.0, "detail": -0.6, "example": -0.5, "caveat": 0.6, "enthusiasm": 0.3, "off_topic": -1.5},
    "expert": {"relevance": 2.0, "detail": 0.7, "example": 0.3, "caveat": -0.8, "enthusiasm": 0.0, "off_topic": -1.5},
    "formal": {"relevance": 2.0, "detail": 0.5, "example": 0.6, "caveat": 0.6, "enthusiasm": -1.0, "off_topic": -1.5},
}
HEAD_RULE_SET = "standard"


@dataclass(frozen=True)
class Domain:
    """A topical domain: its frequency group, gold rule set and vocabulary.

    ``topics`` name what a prompt asks about, ``objects`` fill prompts and
    example sentences, ``terms`` fill detail sentences and ``verbs`` (bare
    infinitive phrases) fill caveat sentences.
    """

    name: str
    is_tail: bool
    rule_set: str
    topics: tuple[str, ...]
    objects: tuple[str, ...]
    terms: tuple[str, ...]
    verbs: tuple[str, ...]


def _load() -> dict:
    return json.loads(resources.files(__package__).joinpath("domains.json").read_text(encoding="utf-8"))


_TABLES = _load()
# Head domains first, then tail; inside each group the order is the Zipf rank order.
DOMAINS: tuple[Domain, ...] = tuple(
    Domain(
        d["name"],
        d["is_tail"],
        d["rule_set"],
        topics=tuple(d["topics"]),
        objects=tuple(d["objects"]),
        terms=tuple(d["terms"]),
        verbs=tuple(d["verbs"]),
    )
    for d in _TABLES["domains"]
)
DOMAIN_BY_NAME: dict[str, Domain] = {d.name: d for d in DOMAINS}


@dataclass(frozen=True)
class Vocabulary:
    """Words that fill a response's example (``objects``), detail (``terms``) and caveat (``verbs``) sentences."""

    objects: tuple[str, ...]
    terms: tuple[str, ...]
    verbs: tuple[str, ...]


# The tail-separability dial's response words: no domain uses them, so a response drawn in them does not say which
# domain (so which gold rules) it answers. Each list has its domain counterparts' length, so drawing from it takes
# the same random numbers and the dial changes words, never features.
NEUTRAL_VOCABULARY = Vocabulary(**{name: tuple(words) for name, words in _TABLES["neutral"].items()})

_SENTENCES: dict[str, tuple[str, ...]] = {name: tuple(group) for name, group in _TABLES["sentences"].items()}
PROMPT_QUESTIONS = _SENTENCES["prompt_questions"]
PROMPT_CONTEXTS = _SENTENCES["prompt_contexts"]
PROMPT_SITUATIONS = _SENTENCES["prompt_situations"]
ENTHUSIASTIC_OPENERS = _SENTENCES["enthusiastic_openers"]
PLAIN_OPENERS = _SENTENCES["plain_openers"]
RELEVANT_MAINS = _SENTENCES["relevant_mains"]
GENERIC_MAINS = _SENTENCES["generic_mains"]
BASE_SENTENCES = _SENTENCES["base_sentences"]
DETAIL_SENTENCES = _SENTENCES["detail_sentences"]
EXAMPLE_SENTENCES = _SENTENCES["example_sentences"]
EXAMPLE_MARKERS = _SENTENCES["example_markers"]
CAVEAT_SENTENCES = _SENTENCES["caveat_sentences"]
CAVEAT_MARKERS = _SENTENCES["caveat_markers"]
OFF_TOPIC_SENTENCES = _SENTENCES["off_topic_sentences"]
OFF_TOPIC_MARKERS = _SENTENCES["off_topic_markers"]
ENTHUSIASTIC_CLOSERS = _SENTENCES["enthusiastic_closers"]
PLAIN_CLOSERS = _SENTENCES["plain_closers"]
SHORTCUT_SENTENCE = "Hope this settles it once and for all."
"""The planted tail-only shortcut (``BenchmarkConfig.tail_shortcut``): no feature reads it, so it never moves gold."""
