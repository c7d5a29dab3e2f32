"""Auditing labels after editing: whether gold, read back from the text, still prefers the chosen response."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cartrm.datasets.longtail.parser import domain_from_text, foreign_words, gold_from_text
from cartrm.datasets.longtail.tables import SHORTCUT_SENTENCE


def label_agreement(pairs: Sequence[tuple[str, str]], domains: Sequence[str]) -> float:
    """Share of (chosen, rejected) texts whose gold reward, read from the text, prefers the chosen one."""
    if len(pairs) != len(domains):
        raise ValueError(f"{len(pairs)} pairs but {len(domains)} domains")
    if not pairs:
        raise ValueError("label agreement needs at least one pair")
    return float(np.mean([gold_from_text(c, d) > gold_from_text(r, d) for (c, r), d in zip(pairs, domains)]))


def augmentation_audit(
    edited: Sequence[tuple[str, str, str, str]], source_domains: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per transform, for edited pairs ``(transform, prompt, chosen, rejected)`` of benchmark pairs from
    ``source_domains``: ``n``; ``gold_agreement``, the share whose gold reward, recomputed from the edited text
    under the domain the edited text reads as (:func:`domain_from_text`, the source's when undecided), prefers the
    chosen response; ``foreign_word``, the share holding another domain's word; ``domain_changed``, the share that
    reads as another domain; ``shortcut_against``, the share whose rejected response carries the planted shortcut
    sentence (``tail_shortcut``): counterfactuals that put it against the label."""
    if len(edited) != len(source_domains):
        raise ValueError(f"{len(edited)} edited pairs but {len(source_domains)} source domains")
    rows: dict[str, list[tuple[bool, bool, bool, bool]]] = {}
    for (transform, prompt, chosen, rejected), source in zip(edited, source_domains):
        text = f"{prompt} {chosen} {rejected}"
        domain = domain_from_text(text) or source
        agrees = gold_from_text(chosen, domain) > gold_from_text(rejected, domain)
        against = SHORTCUT_SENTENCE in rejected
        rows.setdefault(transform, []).append((agrees, bool(foreign_words(text, source)), domain != source, against))
    return {
        transform: {
            "n": float(len(values)),
            "gold_agreement": float(np.mean([v[0] for v in values])),
            "foreign_word": float(np.mean([v[1] for v in values])),
            "domain_changed": float(np.mean([v[2] for v in values])),
            "shortcut_against": float(np.mean([v[3] for v in values])),
        }
        for transform, values in sorted(rows.items())
    }
