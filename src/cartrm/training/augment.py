"""Circuit-guided augmentation of tail pairs (SPEC §Phase 3, paper eq. 10–11).

A family G(x) of transformations edits a tail pair; the candidates that most activate the vulnerable
circuits C_v are kept: x̃ = argmax_{x'∈G(x)} Σ_{c∈C_v} a_c(x') (eq. 10), a_c(x) being the plain mean of the
circuit's members' pooled activations (as in phase 2). A pair's score is the mean over its two texts
(prompt + chosen, prompt + rejected).

The rule-based transformations (``TRANSFORMS`` of :mod:`cartrm.training.transforms`) apply the same edit to
chosen and rejected (and to the prompt where it names the edited word), so the pair's label is meant to hold.
Beyond the paper, ``selection="against_circuits"`` (:func:`select_against_circuits`) keeps the candidates whose
circuits point most against the label instead, with the ``move_sentence`` transform as its counterfactual.
``lm_rewrite`` (with an :class:`LMRewriter`) paraphrases chosen and rejected separately with a
sampled causal LM: it gives more varied text but does not guarantee the label.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cartrm.capture.stream import ExampleSet, FeatureIndex, pooled_batches
from cartrm.data.dataset import RenderedPair
from cartrm.errors import CartError
from cartrm.models.reward_model import RewardModel
from cartrm.training.transforms import TRANSFORMS, TailVocabulary, group_vocabularies, keep_margins, tail_vocabulary

SELECTIONS = ("circuits", "random", "against_circuits")
REWRITE_PROMPT = "Rewrite the following answer in different words:\n{text}\nRewrite:"


@dataclass(frozen=True)
class AugmentedPair:
    """One candidate x' ∈ G(x): the edited pair, the index of its source pair and the transform's name."""

    source: int
    transform: str
    prompt: str
    chosen: str
    rejected: str


# ---- sampled rewrites -----------------------------------------------------------------------------------


class LMRewriter:
    """Paraphrases texts by sampling a local causal LM (the ``lm_rewrite`` transformation).

    Each text is sampled under a torch seed derived from (``seed``, ``salt``, the text), so a rewrite does
    not depend on which other texts share the call; the global torch RNG is left untouched. Chosen and
    rejected are rewritten separately, so the pair's label is not guaranteed to hold.
    """

    def __init__(self, path: str, seed: int = 0, max_new_tokens: int = 48, temperature: float = 0.9) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _require_causal_lm(path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        except (OSError, ValueError) as exc:
            raise CartError(f"cannot load a causal LM from {path}: {str(exc).splitlines()[0]}") from exc
        self.seed, self.max_new_tokens, self.temperature = seed, max_new_tokens, temperature
        self.pad_token_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        )

    def rewrite(self, texts: list[str], salt: int = 0) -> list[str]:
        """One sampled paraphrase per text (the original text when the sample decodes to nothing)."""
        return [self._rewrite_one(text, salt) for text in texts]

    def _rewrite_one(self, text: str, salt: int) -> str:
        inputs = self.tokenizer(REWRITE_PROMPT.format(text=text), return_tensors="pt")
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(
                int(np.random.SeedSequence([self.seed, salt, zlib.crc32(text.encode())]).generate_state(1)[0])
            )
            output = self.model.generate(
                **inputs,
                do_sample=True,
                temperature=self.temperature,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.pad_token_id,
            )
        sample = str(self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)).strip()
        return sample or text


def _require_causal_lm(path: str) -> None:
    """Refuse folders whose saved architecture is not a causal LM (e.g. a reward model's classifier)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if not Path(path).is_dir():
        raise CartError(f"generator LM '{path}' is not a local model folder")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise CartError(f"{path} is not a Hugging Face model folder: {str(exc).splitlines()[0]}") from exc
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    architectures = getattr(config, "architectures", None) or []
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (
        architectures and not causal & set(architectures)
    ):
        saved = ", ".join(architectures) or config.model_type
        raise CartError(f"{path} holds {saved}, not a causal LM; lm_rewrite needs a generator (AutoModelForCausalLM)")


def _lm_rewrite(pair: RenderedPair, rng: np.random.Generator, rewriter: LMRewriter) -> RenderedPair:
    """Paraphrase chosen and rejected separately (their label is not guaranteed), keeping their outer whitespace."""
    chosen, rejected = rewriter.rewrite([pair.chosen.strip(), pair.rejected.strip()], salt=int(rng.integers(2**31)))
    return replace(pair, chosen=keep_margins(pair.chosen, chosen), rejected=keep_margins(pair.rejected, rejected))


# ---- candidates (eq. 10) --------------------------------------------------------------------------------


def generate_candidates(
    pairs: Sequence[RenderedPair],
    sources: Sequence[int] | np.ndarray,
    n_candidates: int,
    seed: int,
    vocabulary: TailVocabulary,
    rewriter: LMRewriter | None = None,
    transforms: Sequence[str] | None = None,
) -> list[AugmentedPair]:
    """Up to ``n_candidates`` distinct edits of each pair, none equal to the original (G(x), eq. 10), drawn
    from ``transforms`` (names in ``TRANSFORMS``; default all).

    Each pair's draws come from a generator seeded with (``seed``, its source index), so a pair's candidates
    do not depend on the other pairs or their order. Transforms are tried in a fresh random order each
    round, for at most ``n_candidates`` rounds.
    """
    if len(pairs) != len(sources):
        raise ValueError(f"{len(pairs)} pairs but {len(sources)} sources")
    chosen = list(TRANSFORMS if transforms is None else transforms)
    unknown = [name for name in chosen if name not in TRANSFORMS]
    if unknown or not chosen:
        raise CartError(
            f"unknown augmentation transform(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(TRANSFORMS)}"
        )
    names = [*chosen, *(["lm_rewrite"] if rewriter else [])]
    return [
        c
        for pair, source in zip(pairs, sources)
        for c in _pair_candidates(pair, int(source), n_candidates, seed, vocabulary, rewriter, names)
    ]


def _pair_candidates(pair, source, n_candidates, seed, vocabulary, rewriter, names) -> list[AugmentedPair]:
    rng = np.random.default_rng([seed, source])
    seen, out = {pair}, []
    for _ in range(n_candidates):
        for name in (names[i] for i in rng.permutation(len(names))):
            edited = (
                _lm_rewrite(pair, rng, rewriter) if name == "lm_rewrite" else TRANSFORMS[name](pair, rng, vocabulary)
            )
            if edited is None or edited in seen:
                continue
            seen.add(edited)
            out.append(AugmentedPair(source, name, edited.prompt, edited.chosen, edited.rejected))
            if len(out) == n_candidates:
                return out
    return out


# ---- selection by circuit activation (eq. 10) -----------------------------------------------------------


def _circuit_activations(reward_model, encoded, members, feature_index, pooling, batch_size) -> np.ndarray:
    """a_c(x) (N, C): the mean of each circuit's members' pooled activations, capturing only their sites."""
    union = np.unique(np.concatenate(members))
    needed = feature_index.by_site(union)
    sub_index = FeatureIndex(tuple(s for s in feature_index.sites if s.name in needed))
    where = {int(f): i for i, f in enumerate(union)}
    columns = np.array([sub_index.offset_of(site.name) + local for site, local in map(feature_index.locate, union)])
    columns_of = [np.array([where[int(f)] for f in m]) for m in members]
    n = len(encoded)
    examples = ExampleSet(encoded, np.arange(n), np.ones(n, bool), np.ones(n, bool))
    out = np.zeros((n, len(members)))
    for batch in pooled_batches(reward_model, examples, sub_index.sites, pooling=pooling, batch_size=batch_size):
        acts = batch.activations[:, columns]
        out[batch.indices] = np.stack([acts[:, cols].mean(axis=1) for cols in columns_of], axis=1)
    return out


def circuit_scores(
    reward_model: RewardModel,
    prompts: Sequence[str],
    responses: Sequence[str],
    members: Sequence[np.ndarray],
    feature_index: FeatureIndex,
    pooling: str,
    batch_size: int = 32,
) -> np.ndarray:
    """Σ_{c∈C_v} a_c(x) for every ``prompt + response`` text (the objective of eq. 10), shape (N,)."""
    if not members or any(len(m) == 0 for m in members):
        raise CartError("circuit scores need at least one circuit, each with at least one member feature")
    if not prompts:
        return np.zeros(0)
    encoded = reward_model.encode(list(prompts), list(responses))
    return _circuit_activations(reward_model, encoded, list(members), feature_index, pooling, batch_size).sum(axis=1)


def select_by_circuits(
    reward_model: RewardModel,
    candidates: Sequence[AugmentedPair],
    members: Sequence[np.ndarray],
    feature_index: FeatureIndex,
    pooling: str,
    keep: int = 1,
    batch_size: int = 32,
) -> list[AugmentedPair]:
    """Per source pair, the ``keep`` candidates of largest score (eq. 10), best first, sources in order.

    A candidate's score is the mean of Σ_c a_c over its two texts; ties keep the candidates' order.
    """
    if keep < 1:
        raise ValueError(f"keep must be ≥ 1, got {keep}")
    if not candidates:
        return []
    prompts = [c.prompt for c in candidates]
    texts = circuit_scores(
        reward_model,
        prompts * 2,
        [c.chosen for c in candidates] + [c.rejected for c in candidates],
        members,
        feature_index,
        pooling,
        batch_size,
    )
    scores = (texts[: len(candidates)] + texts[len(candidates) :]) / 2
    return _best_per_source(candidates, scores, keep)


def _circuit_gaps(reward_model, pairs, members, feature_index, pooling, batch_size) -> np.ndarray:
    """g_c = a_c(prompt + chosen) − a_c(prompt + rejected) per pair and circuit, shape (N, C)."""
    prompts = [p.prompt for p in pairs]
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    encoded = reward_model.encode(prompts * 2, responses)
    acts = _circuit_activations(reward_model, encoded, list(members), feature_index, pooling, batch_size)
    return acts[: len(pairs)] - acts[len(pairs) :]


def _best_per_source(candidates: Sequence[AugmentedPair], scores: np.ndarray, keep: int) -> list[AugmentedPair]:
    """Per source pair, the ``keep`` candidates of largest score, best first, sources in order; ties keep the
    candidates' order."""
    by_source: dict[int, list[int]] = {}
    for i in np.argsort(-scores, kind="stable"):
        by_source.setdefault(candidates[i].source, []).append(int(i))
    return [candidates[i] for source in sorted(by_source) for i in by_source[source][:keep]]


def select_against_circuits(
    reward_model: RewardModel,
    candidates: Sequence[AugmentedPair],
    sources: dict[int, RenderedPair],
    members: Sequence[np.ndarray],
    feature_index: FeatureIndex,
    pooling: str,
    keep: int = 1,
    batch_size: int = 32,
) -> list[AugmentedPair]:
    """Beyond the paper: per source pair, the ``keep`` candidates whose target circuits point most against the
    label, score Σ_c −sign(g_c(x)) g_c(x') with g_c the circuit's chosen − rejected activation gap (x the source,
    x' the candidate); best first, sources in order, ties in the candidates' order.

    Trained with the source's label, such a pair says the preference must hold where the circuits say otherwise,
    so the reward cannot rest on them (eq. 12 only evens out their activations)."""
    if keep < 1:
        raise ValueError(f"keep must be ≥ 1, got {keep}")
    if not candidates:
        return []
    source_ids = sorted({c.source for c in candidates})
    before = _circuit_gaps(reward_model, [sources[i] for i in source_ids], members, feature_index, pooling, batch_size)
    edited = [RenderedPair(c.prompt, c.chosen, c.rejected) for c in candidates]
    after = _circuit_gaps(reward_model, edited, members, feature_index, pooling, batch_size)
    row_of = {source: row for row, source in enumerate(source_ids)}
    direction = np.sign(before[[row_of[c.source] for c in candidates]])
    scores = -(direction * after).sum(axis=1)
    return _best_per_source(candidates, scores, keep)


def select_at_random(candidates: Sequence[AugmentedPair], keep: int, seed: int) -> list[AugmentedPair]:
    """Per source pair, ``keep`` candidates drawn uniformly (seeded by ``seed`` and the source), sources in order:
    the control for eq. 10's argmax (same candidates, same number kept, no circuit information)."""
    if keep < 1:
        raise ValueError(f"keep must be ≥ 1, got {keep}")
    by_source: dict[int, list[int]] = {}
    for i, candidate in enumerate(candidates):
        by_source.setdefault(candidate.source, []).append(i)
    return [
        candidates[rows[j]]
        for source, rows in sorted(by_source.items())
        for j in np.random.default_rng([seed, source, 1]).permutation(len(rows))[:keep]
    ]


def augment_tail_pairs(
    reward_model: RewardModel,
    dataset,
    tail_mask: np.ndarray,
    members: Sequence[np.ndarray],
    feature_index: FeatureIndex,
    pooling: str,
    n_candidates: int,
    keep: int,
    seed: int,
    rewriter: LMRewriter | None = None,
    batch_size: int = 32,
    transforms: Sequence[str] | None = None,
    groups: np.ndarray | None = None,
    selection: str = "circuits",
) -> list[AugmentedPair]:
    """Eq. 10–11 on a dataset: candidates for every tail pair, the ``keep`` most circuit-activating kept
    (``selection="random"``: ``keep`` drawn at random instead).

    The rare-token vocabulary contrasts the tail pairs' texts (prompts and responses) with the head pairs'; with
    ``groups`` (a label per pair), each tail pair draws from its own group's vocabulary
    (:func:`group_vocabularies`).
    """
    tail_mask = np.asarray(tail_mask, dtype=bool)
    if len(tail_mask) != len(dataset):
        raise CartError(f"tail mask has {len(tail_mask)} entries for {len(dataset)} pairs")
    if not tail_mask.any():
        raise CartError("no tail pairs to augment: the tail mask selects nothing")
    if selection not in SELECTIONS:
        raise CartError(f"unknown augmentation selection '{selection}'; choose {', '.join(SELECTIONS)}")
    pairs = dataset.render(reward_model.tokenizer)
    if groups is None:
        groups = np.zeros(len(pairs), dtype=int)
        head = np.flatnonzero(~tail_mask)
        vocabularies = {
            0: tail_vocabulary(
                (t for i in np.flatnonzero(tail_mask) for t in (pairs[i].prompt, pairs[i].chosen, pairs[i].rejected)),
                (t for i in head for t in (pairs[i].prompt, pairs[i].chosen, pairs[i].rejected)),
            )
        }
    else:
        groups = np.asarray(groups)
        if len(groups) != len(pairs):
            raise CartError(f"{len(groups)} group labels for {len(pairs)} pairs")
        vocabularies = group_vocabularies(pairs, groups, tail_mask)
    candidates = []
    for group, vocabulary in vocabularies.items():
        sources = np.flatnonzero(tail_mask & (groups == group))
        candidates += generate_candidates(
            [pairs[i] for i in sources], sources, n_candidates, seed, vocabulary, rewriter, transforms
        )
    if selection == "random":
        return select_at_random(candidates, keep, seed)
    if selection == "against_circuits":
        originals = {c.source: pairs[c.source] for c in candidates}
        return select_against_circuits(
            reward_model, candidates, originals, members, feature_index, pooling, keep, batch_size
        )
    return select_by_circuits(reward_model, candidates, members, feature_index, pooling, keep, batch_size)
