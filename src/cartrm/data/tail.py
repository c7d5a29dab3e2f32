"""Tail definitions (``--tail-by``): which examples are long-tail.

Specs:
- ``label:COLUMN=V1,V2`` — rows whose COLUMN value is one of V1, V2 are tail;
- ``label:COLUMN`` — COLUMN is boolean (true/false, 1/0, yes/no) and true means tail;
- ``rarity:Q`` — tail when the share of rare tokens in the text is in the top Q quantile. A token is rare
  when its count in the fitting corpus (under the model's tokenizer, or lower-cased words without one) is at
  most the ``RARE_TOKEN_MASS`` quantile of the occurrence-weighted counts, i.e. the rarest tokens that together
  make up about 10% of the corpus; tokens unseen in the corpus are rare;
- ``density:Q`` / ``density:Q:tfidf`` — tail when the k-NN density (1 / mean distance to the k nearest
  fitting examples) is in the lowest Q quantile, in the reward model's embedding space (its pooled final
  hidden state) or in a TF-IDF + SVD space.

Definitions follow scikit-learn's shape: ``fit`` on a reference corpus (the training data), ``transform`` any
dataset into a :class:`TailSplit`. The text looked at is the prompt plus the chosen response.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cartrm.errors import CartError, DataError

RARE_TOKEN_MASS = 0.1
DENSITY_NEIGHBOURS = 10
TRUE_VALUES = {"true", "1", "yes", "y", "t"}
FALSE_VALUES = {"false", "0", "no", "n", "f"}
SPEC_HELP = "expected label:COLUMN=V1,V2 | label:COLUMN | rarity:Q | density:Q[:tfidf] with 0 < Q < 1"

Embedder = Callable[[Sequence[str]], np.ndarray]


def memoised(embed: Embedder) -> Embedder:
    """``embed`` keeping each text's vector: fitting a density tail, splitting a dataset by it and refitting on
    every seed's training split embed the same texts again and again."""
    vectors: dict[str, np.ndarray] = {}

    def cached(texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(text for text in texts if text not in vectors))
        if missing:
            vectors.update(zip(missing, embed(missing), strict=True))
        return np.stack([vectors[text] for text in texts]) if len(texts) else embed(texts)

    return cached


@dataclass(frozen=True)
class TailSplit:
    """A boolean tail mask over a dataset and a human-readable description of how it was made."""

    mask: np.ndarray
    description: str

    @property
    def n_tail(self) -> int:
        return int(self.mask.sum())

    @property
    def n_head(self) -> int:
        return int((~self.mask).sum())

    @property
    def tail_indices(self) -> np.ndarray:
        return np.flatnonzero(self.mask)

    @property
    def head_indices(self) -> np.ndarray:
        return np.flatnonzero(~self.mask)


class TailDefinition:
    """Base class; subclasses implement ``_fit`` and ``_mask``."""

    spec: str

    def fit(self, dataset: Any, *, tokenizer: Any = None, embedder: Embedder | None = None) -> TailDefinition:
        self._fit(dataset, tokenizer=tokenizer, embedder=embedder)
        return self

    def transform(self, dataset: Any) -> TailSplit:
        mask = np.asarray(self._mask(dataset), dtype=bool)
        split = TailSplit(mask=mask, description=f"{self.describe()}: {mask.sum()} tail / {(~mask).sum()} head")
        if split.n_tail == 0 or split.n_head == 0:
            empty = "tail" if split.n_tail == 0 else "head"
            raise CartError(f"--tail-by {self.spec} leaves the {empty} empty on {dataset.source} ({len(mask)} rows)")
        return split

    def fit_transform(self, dataset: Any, *, tokenizer: Any = None, embedder: Embedder | None = None) -> TailSplit:
        return self.fit(dataset, tokenizer=tokenizer, embedder=embedder).transform(dataset)

    def describe(self) -> str:
        return self.spec

    def _fit(self, dataset: Any, *, tokenizer: Any, embedder: Embedder | None) -> None:
        return None

    def _mask(self, dataset: Any) -> np.ndarray:
        raise NotImplementedError


class LabelTail(TailDefinition):
    def __init__(self, column: str, values: tuple[str, ...] | None, spec: str) -> None:
        self.column, self.values, self.spec = column, values, spec

    def _fit(self, dataset: Any, *, tokenizer: Any, embedder: Embedder | None) -> None:
        """Values named in the spec that no row of the data has are a typo more often than not: named."""
        if self.values is None:
            return
        present = {_label_text(v) for v in dataset.column(self.column)}
        absent = [v for v in self.values if v not in present]
        if absent:
            warnings.warn(
                f"--tail-by {self.spec}: no row of {dataset.source} has {self.column} = {', '.join(absent)} "
                f"(values present: {', '.join(sorted(present)[:10])})",
                stacklevel=3,
            )

    def describe(self) -> str:
        if self.values is None:
            return f"rows where '{self.column}' is true"
        return f"rows where '{self.column}' is one of {', '.join(self.values)}"

    def _mask(self, dataset: Any) -> np.ndarray:
        values = dataset.column(self.column)
        if self.values is not None:
            wanted = set(self.values)
            return np.array([_label_text(v) in wanted for v in values])
        return np.array([_as_bool(v, dataset.source, dataset.line_of(i), self.column) for i, v in enumerate(values)])


class RarityTail(TailDefinition):
    def __init__(self, quantile: float, spec: str) -> None:
        self.quantile, self.spec = quantile, spec
        self._tokenize: Callable[[str], list] | None = None
        self._rare_count = 0.0
        self._counts: Counter = Counter()
        self._threshold = 0.0

    def describe(self) -> str:
        return f"top {self.quantile:g} quantile of rare-token share"

    def _fit(self, dataset: Any, *, tokenizer: Any, embedder: Embedder | None) -> None:
        self._tokenize = _token_function(tokenizer)
        tokens = [self._tokenize(text) for text in dataset.plain_texts()]
        self._counts = Counter(t for seq in tokens for t in seq)
        occurrence_counts = np.array([self._counts[t] for seq in tokens for t in seq])
        self._rare_count = float(np.quantile(occurrence_counts, RARE_TOKEN_MASS)) if len(occurrence_counts) else 0.0
        self._threshold = float(np.quantile(self._shares(tokens), 1.0 - self.quantile))

    def _shares(self, tokens: list[list]) -> np.ndarray:
        return np.array([np.mean([self._counts[t] <= self._rare_count for t in seq]) if seq else 0.0 for seq in tokens])

    def rare_token_share(self, dataset: Any) -> np.ndarray:
        if self._tokenize is None:
            raise CartError("fit the rarity tail definition before transform")
        return self._shares([self._tokenize(text) for text in dataset.plain_texts()])

    def _mask(self, dataset: Any) -> np.ndarray:
        shares = self.rare_token_share(dataset)
        return (shares >= self._threshold) & (shares > 0)


class DensityTail(TailDefinition):
    def __init__(self, quantile: float, space: str, spec: str, neighbours: int = DENSITY_NEIGHBOURS) -> None:
        self.quantile, self.space, self.spec, self.neighbours = quantile, space, spec, neighbours
        self._embed: Embedder | None = None
        self._index: Any = None
        self._reference_texts: list[str] = []
        self._threshold = 0.0

    def describe(self) -> str:
        where = "TF-IDF space" if self.space == "tfidf" else "the model's embedding space"
        return f"lowest {self.quantile:g} quantile of {self.neighbours}-NN density in {where}"

    def _fit(self, dataset: Any, *, tokenizer: Any, embedder: Embedder | None) -> None:
        from sklearn.neighbors import NearestNeighbors

        texts = dataset.plain_texts()
        self._embed = _tfidf_embedder(texts) if self.space == "tfidf" else embedder
        if self._embed is None:
            raise CartError(
                f"--tail-by {self.spec} needs a reward model to embed texts; use {self.spec}:tfidf without one"
            )
        reference = np.asarray(self._embed(texts), dtype=np.float64)
        k = min(self.neighbours, len(texts) - 1)
        if k < 1:
            raise CartError(f"--tail-by {self.spec} needs at least 2 examples")
        self._index = NearestNeighbors(n_neighbors=k + 1).fit(reference)
        self._reference_texts = texts
        self._threshold = float(np.quantile(self._density(reference, exclude_self=True), self.quantile))

    def _density(self, points: np.ndarray, exclude_self: bool) -> np.ndarray:
        distances, _ = self._index.kneighbors(points)
        distances = distances[:, 1:] if exclude_self else distances[:, :-1]
        return 1.0 / (distances.mean(axis=1) + 1e-12)

    def _mask(self, dataset: Any) -> np.ndarray:
        if self._index is None or self._embed is None:
            raise CartError("fit the density tail definition before transform")
        texts = dataset.plain_texts()
        points = np.asarray(self._embed(texts), dtype=np.float64)
        return self._density(points, exclude_self=texts == self._reference_texts) <= self._threshold


def parse_tail_spec(spec: str) -> TailDefinition:
    """Parse a ``--tail-by`` spec into an (unfitted) :class:`TailDefinition`."""
    kind, _, rest = spec.partition(":")
    if kind == "label" and rest:
        column, has_values, values = rest.partition("=")
        parsed = tuple(v.strip() for v in values.split(",") if v.strip())
        if not column or (has_values and not parsed):
            raise CartError(f"invalid --tail-by '{spec}': {SPEC_HELP}")
        return LabelTail(column, parsed if has_values else None, spec)
    if kind == "rarity":
        return RarityTail(_parse_quantile(rest, spec), spec)
    if kind == "density":
        value, _, space = rest.partition(":")
        if space not in ("", "tfidf", "model"):
            raise CartError(f"invalid --tail-by '{spec}': {SPEC_HELP}")
        return DensityTail(_parse_quantile(value, spec), space or "model", spec)
    raise CartError(f"invalid --tail-by '{spec}': {SPEC_HELP}")


def _parse_quantile(text: str, spec: str) -> float:
    try:
        q = float(text)
    except ValueError:
        raise CartError(f"invalid --tail-by '{spec}': {SPEC_HELP}") from None
    if not 0.0 < q < 1.0:
        raise CartError(f"invalid --tail-by '{spec}': {SPEC_HELP}")
    return q


def _label_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _as_bool(value: Any, source: str, line: int, column: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = _label_text(value).strip().lower()
    if text in TRUE_VALUES:
        return True
    if text in FALSE_VALUES:
        return False
    raise DataError(
        f"expected a boolean (true/false, 1/0, yes/no), got {value!r}", file=source, line=line, field=column
    )


def _token_function(tokenizer: Any) -> Callable[[str], list]:
    if tokenizer is None:
        return lambda text: re.findall(r"\w+", text.lower())
    return lambda text: tokenizer(text, add_special_tokens=False, verbose=False)[
        "input_ids"
    ]  # whole texts: no length warning


def _tfidf_embedder(corpus: list[str]) -> Embedder:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    try:
        vectorizer = TfidfVectorizer(sublinear_tf=True).fit(corpus)
    except ValueError:  # scikit-learn's "empty vocabulary"
        raise CartError(
            "density:…:tfidf found no words in the texts (only symbols or digits); use density:Q with a model"
        ) from None
    n_components = max(1, min(64, len(corpus) - 1, len(vectorizer.vocabulary_)))
    pipeline = make_pipeline(vectorizer, TruncatedSVD(n_components, random_state=0), Normalizer())
    pipeline.fit(corpus)
    return lambda texts: pipeline.transform(list(texts))
