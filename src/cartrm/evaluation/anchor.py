"""A bag-of-words reward model: the sanity anchor a trained reward model is read against.

``r(x) = w · counts(response words)``, fitted as a Bradley–Terry model by logistic regression on
``counts(chosen) − counts(rejected)`` (no intercept: the model scores each response on its own, like a reward
model). Where a word-count rule ranks the tail as well as a transformer does, the tail's preference is carried by
its words, and no tail-specific computation (no tail circuit) is needed to learn it. ``per_group`` fits one such
model per value of a column (the prompt's domain): the interaction model, which a word-count model becomes once it
is told which domain, so which rules, a pair belongs to.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from cartrm.errors import CartError

ORDER_STREAM = 2
"""The pair orders are drawn from a generator seeded ``(seed, ORDER_STREAM)``: a plain ``seed`` would replay the
benchmark generator's own first draws (its domain assignment, for a benchmark of the same seed), so the order
would follow the domain."""

Target = Literal["label", "gold"]
"""What the anchor is fitted to: the annotators' labels (a baseline trained like the others) or the gold order
(the best any word-count model can do: a known-answer reference)."""


def _responses(dataset: Any) -> tuple[list[str], list[str]]:
    pairs = dataset.render(None)
    return [p.chosen for p in pairs], [p.rejected for p in pairs]


class BagOfWordsReward:
    """Logistic Bradley–Terry on word counts; ``fit`` then ``score_pairs`` (scikit-learn style).

    ``per_group``: a column of the data; one model per value (values unseen in training score 0).
    """

    def __init__(self, target: Target = "label", per_group: str | None = None, regularisation: float = 1.0) -> None:
        self.target, self.per_group, self.regularisation = target, per_group, regularisation
        self.vectorizer = CountVectorizer(lowercase=True, token_pattern=r"(?u)\b\w+\b|!")
        self.weights: dict[Any, np.ndarray] = {}

    def _groups(self, dataset: Any) -> np.ndarray:
        if self.per_group is None:
            return np.zeros(len(dataset), dtype=int)
        if not dataset.has_column(self.per_group):
            raise CartError(f"{dataset.source}: no column '{self.per_group}' to fit the bag-of-words anchor by")
        return np.asarray(dataset.column(self.per_group), dtype=object)

    def _signs(self, dataset: Any) -> np.ndarray:
        """+1 where the chosen response is the one to prefer (always, for labels; by the gold margin, for gold)."""
        if self.target == "label":
            return np.ones(len(dataset))
        if not (dataset.has_column("gold_chosen") and dataset.has_column("gold_rejected")):
            raise CartError(f"{dataset.source}: a gold-fitted anchor needs gold_chosen and gold_rejected columns")
        return np.sign(dataset.numeric_column("gold_chosen") - dataset.numeric_column("gold_rejected"))

    def fit(self, dataset: Any, seed: int = 0) -> BagOfWordsReward:
        """Fit on ``dataset``'s pairs; each pair is presented in a seeded random order, so both classes occur."""
        chosen, rejected = _responses(dataset)
        self.vectorizer.fit(chosen + rejected)
        difference = (self.vectorizer.transform(chosen) - self.vectorizer.transform(rejected)).toarray()
        signs = self._signs(dataset)
        flip = np.where(np.random.default_rng([seed, ORDER_STREAM]).random(len(dataset)) < 0.5, -1.0, 1.0)
        groups = self._groups(dataset)
        for group in np.unique(groups):
            rows = (groups == group) & (signs != 0)
            labels = flip[rows] > 0
            if labels.all() or not labels.any():
                continue
            model = LogisticRegression(C=self.regularisation, fit_intercept=False, max_iter=2000)
            model.fit(difference[rows] * (flip[rows] * signs[rows])[:, None], labels)
            self.weights[group] = model.coef_[0]
        return self

    def score_pairs(self, dataset: Any, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(chosen rewards, rejected rewards), one per pair (``progress`` is accepted for the reward model API)."""
        if not self.weights:
            raise CartError("the bag-of-words anchor is not fitted: call fit first")
        chosen, rejected = _responses(dataset)
        groups = self._groups(dataset)
        zero = np.zeros(len(self.vectorizer.vocabulary_))
        weights = np.stack([self.weights.get(g, zero) for g in groups])
        counts_chosen = self.vectorizer.transform(chosen).toarray()
        counts_rejected = self.vectorizer.transform(rejected).toarray()
        return (counts_chosen * weights).sum(axis=1), (counts_rejected * weights).sum(axis=1)
