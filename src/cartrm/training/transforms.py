"""The rule-based transformations G(x) of a tail pair (paper eq. 10): each applies the same edit to chosen and
rejected (and to the prompt where it names the edited word), so the pair's label is meant to hold: rare-token
substitution (words frequent in the tail and rare in the head, :func:`tail_vocabulary`), synonym substitution,
dropping a sentence both responses share, reordering inner sentences, bullet formatting.

Sentences are split with the regex ``(?<=[.!?])\\s+`` (after ".", "!" or "?" followed by whitespace); good
enough for short advice text, not for abbreviations such as "e.g. this".
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from cartrm.data.dataset import RenderedPair

TailVocabulary = tuple[str, ...]
Transform = Callable[[RenderedPair, np.random.Generator, TailVocabulary], RenderedPair | None]

SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?])\s+")
WORD = re.compile(r"\b[A-Za-z]{4,}\b")
STOP_WORDS = frozenset(
    [
        "about",
        "after",
        "again",
        "also",
        "because",
        "been",
        "before",
        "being",
        "could",
        "does",
        "doing",
        "each",
        "from",
        "have",
        "here",
        "into",
        "just",
        "like",
        "make",
        "more",
        "most",
        "much",
        "need",
        "only",
        "other",
        "over",
        "some",
        "such",
        "than",
        "that",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "very",
        "want",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "will",
        "with",
        "would",
        "your",
        "yours",
        "user",
        "assistant",
        "system",
        "human",
    ]  # the last four: chat-template role names, never edited
)
SYNONYMS: dict[str, str] = {
    "start": "begin",
    "careful": "cautious",
    "help": "assist",
    "practice": "training",
    "important": "essential",
    "simple": "basic",
    "slowly": "gradually",
    "main": "principal",
    "thing": "point",
    "patience": "perseverance",
    "progress": "improvement",
    "deliberate": "intentional",
    "preparation": "planning",
    "notes": "records",
    "compare": "contrast",
    "short": "brief",
    "regular": "frequent",
    "sessions": "periods",
    "better": "superior",
    "change": "alter",
    "closely": "attentively",
    "early": "soon",
    "understand": "grasp",
    "check": "verify",
    "many": "numerous",
    "people": "folks",
    "begin": "commence",
    "worth": "valuable",
    "proper": "suitable",
    "guidance": "advice",
    "unsure": "uncertain",
    "useful": "helpful",
    "enjoy": "savour",
    "great": "excellent",
}

# ---- tail vocabulary ------------------------------------------------------------------------------------


def _words(texts: Iterable[str]) -> Counter:
    return Counter(w.lower() for text in texts for w in WORD.findall(text))


def tail_vocabulary(tail_texts: Iterable[str], head_texts: Iterable[str], size: int = 200) -> TailVocabulary:
    """Words (alphabetic, ≥ 4 letters, lower-case) frequent in tail texts and rare or absent in head texts.

    Ranked by the add-one smoothed log-ratio of their relative frequencies, log p_tail(w) − log p_head(w);
    only words with a positive ratio are kept; ties go alphabetically, so the order is deterministic.
    """
    tail, head = _words(tail_texts), _words(head_texts)
    n_vocab = len(tail.keys() | head.keys())
    tail_total, head_total = sum(tail.values()) + n_vocab, sum(head.values()) + n_vocab
    ratio = {w: math.log((tail[w] + 1) / tail_total) - math.log((head[w] + 1) / head_total) for w in tail}
    ranked = sorted((w for w in ratio if ratio[w] > 0), key=lambda w: (-ratio[w], w))
    return tuple(ranked[:size])


def group_vocabularies(
    pairs: Sequence[RenderedPair], groups: np.ndarray, tail_mask: np.ndarray, size: int = 200
) -> dict[Any, TailVocabulary]:
    """Per group of tail pairs, the words frequent in that group's texts against every other pair's (the head's
    and the other groups'), ranked as in :func:`tail_vocabulary`: a replacement then stays within its source's
    group (on the benchmark, its domain, whose vocabulary tells which gold rules apply)."""
    texts = [(p.prompt, p.chosen, p.rejected) for p in pairs]
    out = {}
    for group in sorted(set(groups[tail_mask].tolist()), key=str):
        inside = groups == group
        out[group] = tail_vocabulary(
            (t for i in np.flatnonzero(inside & tail_mask) for t in texts[i]),
            (t for i in np.flatnonzero(~inside) for t in texts[i]),
            size,
        )
    return out


# ---- rule-based transformations -------------------------------------------------------------------------


def split_sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_BOUNDARY.split(text.strip()) if s]


def keep_margins(text: str, body: str) -> str:
    """``body`` with ``text``'s leading and trailing whitespace (chat templates put newlines there)."""
    stripped = text.strip()
    if not stripped:
        return text
    start = text.index(stripped)
    return text[:start] + body + text[start + len(stripped) :]


def _match_case(word: str, template: str) -> str:
    if template.isupper():
        return word.upper()
    return word.capitalize() if template[0].isupper() else word


def _replace_words(text: str, mapping: dict[str, str]) -> str:
    """Replace whole-word, case-insensitive occurrences of ``mapping``'s keys, keeping simple capitalisation."""
    if not mapping:
        return text
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(mapping)) + r")\b", re.IGNORECASE)
    return pattern.sub(lambda m: _match_case(mapping[m.group(0).lower()], m.group(0)), text)


def _content_words(text: str) -> set[str]:
    return {w for w in _words([text]) if w not in STOP_WORDS}


def rare_token(pair: RenderedPair, rng: np.random.Generator, vocabulary: TailVocabulary) -> RenderedPair | None:
    """Rename a content word of the prompt that a response repeats to a rare tail word, everywhere."""
    shared = sorted(_content_words(pair.prompt) & (_content_words(pair.chosen) | _content_words(pair.rejected)))
    present = _words([pair.prompt, pair.chosen, pair.rejected])
    replacements = [w for w in vocabulary if w not in present]
    if not shared or not replacements:
        return None
    mapping = {shared[int(rng.integers(len(shared)))]: replacements[int(rng.integers(len(replacements)))]}
    return RenderedPair(*(_replace_words(t, mapping) for t in (pair.prompt, pair.chosen, pair.rejected)))


def synonym(pair: RenderedPair, rng: np.random.Generator, vocabulary: TailVocabulary) -> RenderedPair | None:
    """Swap a random non-empty subset of the table's words found in the responses, in both responses."""
    found = sorted(set(SYNONYMS) & _words([pair.chosen, pair.rejected]).keys())
    if not found:
        return None
    picked = [w for w in found if rng.random() < 0.5] or [found[int(rng.integers(len(found)))]]
    mapping = {w: SYNONYMS[w] for w in picked}
    return replace(pair, chosen=_replace_words(pair.chosen, mapping), rejected=_replace_words(pair.rejected, mapping))


def drop_shared_sentence(
    pair: RenderedPair, rng: np.random.Generator, vocabulary: TailVocabulary
) -> RenderedPair | None:
    """Delete a sentence both responses contain verbatim: shared content is not what the label is about."""
    chosen, rejected = split_sentences(pair.chosen), split_sentences(pair.rejected)
    shared = [s for s in dict.fromkeys(chosen) if s in rejected]
    if not shared or min(len(chosen), len(rejected)) < 2:
        return None
    drop = shared[int(rng.integers(len(shared)))]

    def without(text: str, sentences: list[str]) -> str:
        return keep_margins(text, " ".join(s for s in sentences if s != drop))

    return replace(pair, chosen=without(pair.chosen, chosen), rejected=without(pair.rejected, rejected))


def move_sentence(pair: RenderedPair, rng: np.random.Generator, vocabulary: TailVocabulary) -> RenderedPair | None:
    """Move a sentence that only one response contains to the end of the other, the label kept: a counterfactual
    for a sentence that should not decide the preference (beyond the paper; pair it with
    ``aug_selection="against_circuits"``, which keeps the move that turns the target circuits against the label).
    It keeps the label only when the moved sentence is not what makes the chosen response better."""
    sides = {"chosen": split_sentences(pair.chosen), "rejected": split_sentences(pair.rejected)}
    movable = [
        (side, sentence)
        for side, other in (("chosen", "rejected"), ("rejected", "chosen"))
        if len(sides[side]) >= 2
        for sentence in dict.fromkeys(sides[side])
        if sentence not in sides[other]
    ]
    if not movable:
        return None
    side, sentence = movable[int(rng.integers(len(movable)))]
    other = "rejected" if side == "chosen" else "chosen"
    source = getattr(pair, side)
    moved = {
        side: keep_margins(source, " ".join(s for s in sides[side] if s != sentence)),
        other: keep_margins(getattr(pair, other), " ".join([*sides[other], sentence])),
    }
    return replace(pair, **moved)


def _shuffle_inner(text: str, rng: np.random.Generator) -> str:
    """Shuffle the sentences between the first and the last (a non-identity order when there are ≥ 2)."""
    sentences = split_sentences(text)
    inner = sentences[1:-1]
    if len(inner) < 2:
        return text
    order = rng.permutation(len(inner))
    if np.array_equal(order, np.arange(len(inner))):
        order = np.roll(order, 1)
    return keep_margins(text, " ".join([sentences[0], *(inner[i] for i in order), sentences[-1]]))


def reorder(pair: RenderedPair, rng: np.random.Generator, vocabulary: TailVocabulary) -> RenderedPair | None:
    """Shuffle each response's inner sentences independently (the first and last stay in place)."""
    edited = replace(pair, chosen=_shuffle_inner(pair.chosen, rng), rejected=_shuffle_inner(pair.rejected, rng))
    return None if edited == pair else edited


def _bulleted(text: str) -> str:
    return keep_margins(text, "\n".join(f"- {s}" for s in split_sentences(text)))


def format_bullets(pair: RenderedPair, rng: np.random.Generator, vocabulary: TailVocabulary) -> RenderedPair | None:
    """Render both responses as bulleted lists, one sentence per line."""
    return replace(pair, chosen=_bulleted(pair.chosen), rejected=_bulleted(pair.rejected))


TRANSFORMS: dict[str, Transform] = {
    "rare_token": rare_token,
    "synonym": synonym,
    "drop_shared_sentence": drop_shared_sentence,
    "move_sentence": move_sentence,
    "reorder": reorder,
    "format": format_bullets,
}
