"""Circuit-guided augmentation (eq. 10–11) and reading the benchmark's gold reward back from text."""

import re

import numpy as np
import pytest

from cartrm.capture.sites import list_sites
from cartrm.capture.stream import ExampleSet, FeatureIndex, pooled_batches
from cartrm.data import PreferenceDataset
from cartrm.data.dataset import RenderedPair
from cartrm.datasets.longtail.audit import label_agreement
from cartrm.datasets.longtail.generator import BenchmarkConfig, generate_benchmark, generate_pairs
from cartrm.datasets.longtail.parser import gold_from_text
from cartrm.datasets.longtail.tables import (
    DOMAIN_BY_NAME,
    ENTHUSIASTIC_CLOSERS,
    ENTHUSIASTIC_OPENERS,
    SHORTCUT_SENTENCE,
)
from cartrm.errors import CartError
from cartrm.models import RewardModel
from cartrm.training.augment import (
    LMRewriter,
    augment_tail_pairs,
    circuit_scores,
    generate_candidates,
    select_against_circuits,
    select_at_random,
    select_by_circuits,
)
from cartrm.training.transforms import SYNONYMS, TRANSFORMS, group_vocabularies, tail_vocabulary

CONFIG = BenchmarkConfig(n_train=300, n_validation=0, n_test_head=50, n_test_tail=50, seed=1)
TOKENS = re.compile(r"[A-Za-z]+|[^A-Za-z\s]+")


@pytest.fixture(scope="module")
def benchmark():
    return generate_pairs(CONFIG)


@pytest.fixture(scope="module")
def vocabulary(benchmark):
    def texts(tail: bool):
        return [
            t
            for p in benchmark
            if DOMAIN_BY_NAME[p.prompt.domain].is_tail == tail
            for t in (p.prompt.text, p.chosen.text, p.rejected.text)
        ]

    return tail_vocabulary(texts(True), texts(False))


@pytest.fixture(scope="module")
def gold_ordered_tail(benchmark):
    """Tail pairs whose gold reward prefers the chosen response, as (rendered pair, domain)."""
    return [
        (RenderedPair(p.prompt.text, p.chosen.text, p.rejected.text), p.prompt.domain)
        for p in benchmark
        if DOMAIN_BY_NAME[p.prompt.domain].is_tail and p.chosen.gold > p.rejected.gold
    ]


@pytest.fixture(scope="module")
def setting(benchmark, vocabulary):
    model = RewardModel.load("tiny-gpt2")
    index = FeatureIndex(tuple(list_sites(model.model, ("mlp",))))
    members = [np.array([3, 17, 40]), np.array([64 + 5, 64 + 9])]  # one circuit per MLP layer (width 64)
    pairs = [RenderedPair(p.prompt.text + "\n\n", p.chosen.text, p.rejected.text) for p in benchmark[:4]]
    candidates = generate_candidates(pairs, range(len(pairs)), n_candidates=3, seed=0, vocabulary=vocabulary)
    return model, index, members, candidates


def test_gold_reward_is_read_back_exactly_from_benchmark_text(benchmark):
    for pair in benchmark:
        for response in (pair.chosen, pair.rejected):
            assert gold_from_text(response.text, pair.prompt.domain) == response.gold


def test_exclamation_marks_only_in_enthusiastic_templates():
    """features_from_text reads enthusiasm as a sentence ending in "!"; this keeps that rule honest."""
    from cartrm.datasets.longtail import tables as longtail

    enthusiastic = set(ENTHUSIASTIC_OPENERS + ENTHUSIASTIC_CLOSERS)
    assert all(s.endswith("!") for s in enthusiastic)
    others = [
        v
        for k, v in vars(longtail).items()
        if k.isupper() and isinstance(v, tuple) and all(isinstance(s, str) for s in v)
    ]
    assert not [s for group in others for s in group if "!" in s and s not in enthusiastic]


def test_tail_vocabulary_is_tail_words_absent_from_head(benchmark, vocabulary):
    head_words = {
        w.lower()
        for p in benchmark
        if not DOMAIN_BY_NAME[p.prompt.domain].is_tail
        for w in re.findall(r"[A-Za-z]+", p.prompt.text + p.chosen.text + p.rejected.text)
    }
    assert 50 <= len(vocabulary) <= 200 and len(set(vocabulary)) == len(vocabulary)
    assert all(w.isalpha() and w.islower() and len(w) >= 4 for w in vocabulary)
    assert not set(vocabulary[:20]) & head_words
    assert tail_vocabulary(["zebra zebra okapi", "zebra"], ["okapi okapi"], size=5) == ("zebra",)


@pytest.mark.parametrize("name", ["reorder", "format", "drop_shared_sentence"])
def test_structural_transforms_keep_the_gold_preference(gold_ordered_tail, vocabulary, name):
    rng = np.random.default_rng(0)
    applied = 0
    for pair, domain in gold_ordered_tail:
        edited = TRANSFORMS[name](pair, rng, vocabulary)
        if edited is None:
            continue
        applied += 1
        assert edited != pair and edited.prompt == pair.prompt
        assert gold_from_text(edited.chosen, domain) > gold_from_text(edited.rejected, domain)
    assert applied >= 10


def _substitutions(before: str, after: str) -> set[tuple[str, str]]:
    old, new = TOKENS.findall(before), TOKENS.findall(after)
    assert len(old) == len(new)  # one word for one word
    return {(a.lower(), b.lower()) for a, b in zip(old, new) if a != b}


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]+", text)}


@pytest.mark.parametrize(("name", "min_agreement"), [("rare_token", 0.95), ("synonym", 0.6)])
def test_word_substitutions_are_the_same_in_both_responses(gold_ordered_tail, vocabulary, name, min_agreement):
    rng = np.random.default_rng(0)
    edited_pairs, domains = [], []
    for pair, domain in gold_ordered_tail:
        edited = TRANSFORMS[name](pair, rng, vocabulary)
        if edited is None:
            continue
        texts = list(zip((pair.prompt, pair.chosen, pair.rejected), (edited.prompt, edited.chosen, edited.rejected)))
        mapping = set().union(*(_substitutions(a, b) for a, b in texts))
        assert mapping and len({old for old, _ in mapping}) == len(mapping)  # each word has one replacement
        new_words = {new for _, new in mapping}
        edited_texts = [edited.chosen, edited.rejected] + ([edited.prompt] if name == "rare_token" else [])
        for old, new in mapping:
            assert new == SYNONYMS[old] if name == "synonym" else new in vocabulary
            if old not in new_words:  # every occurrence went, in every text
                assert old not in _words(" ".join(edited_texts))
        if name == "rare_token":
            assert len(mapping) == 1 and edited.prompt != pair.prompt
        else:
            assert edited.prompt == pair.prompt
        edited_pairs.append((edited.chosen, edited.rejected))
        domains.append(domain)
    assert len(edited_pairs) >= 0.8 * len(gold_ordered_tail)
    assert label_agreement(edited_pairs, domains) >= min_agreement


def test_label_agreement_counts_gold_preferences(benchmark):
    pairs = [(p.chosen.text, p.rejected.text) for p in benchmark]
    domains = [p.prompt.domain for p in benchmark]
    expected = np.mean([p.chosen.gold > p.rejected.gold for p in benchmark])
    assert label_agreement(pairs, domains) == pytest.approx(expected)
    assert label_agreement([(b, a) for a, b in pairs], domains) == pytest.approx(1 - expected)  # no gold ties


def test_candidates_are_reproducible_distinct_and_order_independent(gold_ordered_tail, vocabulary):
    pairs = [p for p, _ in gold_ordered_tail[:6]]
    sources = list(range(10, 16))
    first = generate_candidates(pairs, sources, n_candidates=5, seed=3, vocabulary=vocabulary)
    assert first == generate_candidates(pairs, sources, n_candidates=5, seed=3, vocabulary=vocabulary)
    assert first != generate_candidates(pairs, sources, n_candidates=5, seed=4, vocabulary=vocabulary)
    backwards = generate_candidates(pairs[::-1], sources[::-1], n_candidates=5, seed=3, vocabulary=vocabulary)
    assert sorted(first, key=lambda c: c.source) == sorted(backwards, key=lambda c: c.source)
    for source, pair in zip(sources, pairs):
        mine = [(c.prompt, c.chosen, c.rejected) for c in first if c.source == source]
        assert 1 <= len(mine) <= 5 and len(set(mine)) == len(mine)
        assert (pair.prompt, pair.chosen, pair.rejected) not in mine
    assert {c.transform for c in first} == set(TRANSFORMS)


def test_circuit_scores_are_the_summed_member_means(setting):
    model, index, members, candidates = setting
    prompts, responses = [c.prompt for c in candidates], [c.chosen for c in candidates]
    scores = circuit_scores(model, prompts, responses, members, index, "mean", batch_size=4)
    n = len(prompts)
    examples = ExampleSet(model.encode(prompts, responses), np.arange(n), np.ones(n, bool), np.ones(n, bool))
    full = np.zeros((n, index.size))
    for batch in pooled_batches(model, examples, index.sites, pooling="mean", batch_size=7):
        full[batch.indices] = batch.activations
    expected = sum(full[:, m].mean(axis=1) for m in members)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-7)
    assert np.ptp(scores) > 0


@pytest.fixture(scope="module")
def pair_scores(setting) -> np.ndarray:
    """Eq. 11 score of every candidate: the mean of Σ_c a_c over its two texts."""
    model, index, members, candidates = setting
    prompts = [c.prompt for c in candidates]
    both = circuit_scores(
        model, prompts * 2, [c.chosen for c in candidates] + [c.rejected for c in candidates], members, index, "mean"
    )
    return (both[: len(candidates)] + both[len(candidates) :]) / 2


def test_selection_keeps_the_most_activating_candidate_per_source(setting, pair_scores):
    model, index, members, candidates = setting
    selected = select_by_circuits(model, candidates, members, index, "mean", keep=1)
    sources = sorted({c.source for c in candidates})
    assert [c.source for c in selected] == sources
    firsts = 0
    for best, source in zip(selected, sources):
        mine = [i for i, c in enumerate(candidates) if c.source == source]
        assert best == candidates[max(mine, key=lambda i: pair_scores[i])]  # eq. 11 argmax
        firsts += best == candidates[mine[0]]
    assert firsts < len(sources)  # the selection is not just "the first candidate"


def test_selection_keeps_two_per_source_best_first(setting, pair_scores):
    model, index, members, candidates = setting
    selected = select_by_circuits(model, candidates, members, index, "mean", keep=2)
    position = {c: i for i, c in enumerate(candidates)}
    for source in sorted({c.source for c in candidates}):
        kept = [c for c in selected if c.source == source]
        available = sorted((i for i, c in enumerate(candidates) if c.source == source), key=lambda i: -pair_scores[i])
        assert [position[c] for c in kept] == available[:2]
    assert [c.source for c in selected] == sorted(c.source for c in selected)


def test_augment_tail_pairs_end_to_end(setting):
    model, index, members, _ = setting
    records = generate_benchmark(BenchmarkConfig(n_train=30, n_validation=0, n_test_head=0, n_test_tail=0, seed=2))
    data = PreferenceDataset.from_records(records)
    tail = np.array([r["is_tail"] for r in records])
    kept = augment_tail_pairs(model, data, tail, members, index, "mean", n_candidates=3, keep=1, seed=0)
    assert tail.any() and [c.source for c in kept] == list(np.flatnonzero(tail))
    with pytest.raises(CartError, match="tail"):
        augment_tail_pairs(
            model, data, np.zeros(len(records), bool), members, index, "mean", n_candidates=3, keep=1, seed=0
        )


@pytest.fixture(scope="module")
def generator_folder(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = RewardModel.load("tiny-gpt2").tokenizer
    folder = tmp_path_factory.mktemp("generator")
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_lm_rewriter_samples_reproducibly(generator_folder, gold_ordered_tail, vocabulary):
    texts = ["Start simple and build up slowly.", "Keep notes on what you try."]
    rewriter = LMRewriter(str(generator_folder), seed=0, max_new_tokens=8)
    rewritten = rewriter.rewrite(texts)
    assert len(rewritten) == 2 and all(isinstance(t, str) and t for t in rewritten)
    assert rewritten == LMRewriter(str(generator_folder), seed=0, max_new_tokens=8).rewrite(texts)
    assert rewriter.rewrite(texts[::-1]) == rewritten[::-1]
    pairs = [p for p, _ in gold_ordered_tail[:1]]
    candidates = generate_candidates(pairs, [0], n_candidates=6, seed=0, vocabulary=vocabulary, rewriter=rewriter)
    assert "lm_rewrite" in {c.transform for c in candidates}


def test_lm_rewriter_refuses_a_folder_that_is_not_a_causal_lm(tmp_path):
    RewardModel.load("tiny-gpt2").save(tmp_path / "reward")
    with pytest.raises(CartError, match="not a causal LM"):
        LMRewriter(str(tmp_path / "reward"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CartError):
        LMRewriter(str(tmp_path / "empty"))


def _domain_words():
    from cartrm.datasets.longtail import DOMAINS

    return {
        d.name: {
            w.lower()
            for phrase in d.topics + d.objects + d.terms + d.verbs
            for w in re.findall(r"[A-Za-z]{4,}", phrase)
        }
        for d in DOMAINS
    }


def test_per_domain_swaps_never_insert_another_domains_word(benchmark, vocabulary):
    pairs = [RenderedPair(p.prompt.text, p.chosen.text, p.rejected.text) for p in benchmark]
    domains = np.array([p.prompt.domain for p in benchmark], dtype=object)
    tail = np.array([DOMAIN_BY_NAME[d].is_tail for d in domains])
    words_of = _domain_words()

    used = {}  # words each domain's own texts use (its template sentences included)
    for pair, domain in zip(pairs, domains):
        used.setdefault(domain, set()).update(
            w.lower() for w in re.findall(r"[A-Za-z]{4,}", pair.prompt + " " + pair.chosen + " " + pair.rejected)
        )

    def foreign(domain):
        """Words of another domain's topics, objects, terms and verbs that this domain never uses."""
        return set().union(*(w for name, w in words_of.items() if name != domain)) - words_of[domain] - used[domain]

    vocabularies = group_vocabularies(pairs, domains, tail)
    assert set(vocabularies) == set(domains[tail])
    for domain, words in vocabularies.items():
        assert words and not set(words) & foreign(domain)
    assert any(set(vocabulary) & foreign(d) for d in vocabularies)  # the pooled vocabulary does mix domains
    rng, swapped = np.random.default_rng(0), 0
    for i in np.flatnonzero(tail):
        edited = TRANSFORMS["rare_token"](pairs[i], rng, vocabularies[domains[i]])
        if edited is not None:
            swapped += 1
            inserted = {w.lower() for w in re.findall(r"[A-Za-z]{4,}", edited.prompt + edited.chosen + edited.rejected)}
            assert not inserted & foreign(domains[i])
    assert swapped > 20


def test_random_selection_keeps_seeded_draws_per_source(setting):
    candidates = setting[3]
    picked = select_at_random(candidates, keep=2, seed=0)
    assert picked == select_at_random(candidates, keep=2, seed=0)
    sources = [c.source for c in picked]
    assert sources == sorted(sources) and all(sources.count(s) <= 2 for s in set(sources))
    assert set(picked) <= set(candidates) and set(sources) == {c.source for c in candidates}
    assert any(
        select_at_random(candidates, keep=1, seed=s) != select_at_random(candidates, keep=1, seed=0)
        for s in range(1, 6)
    )


def test_domain_from_text_reads_the_domains_own_words():
    from cartrm.datasets.longtail.parser import DOMAIN_WORDS, domain_from_text, foreign_words

    coin, bird = sorted(DOMAIN_WORDS["numismatics"])[0], sorted(DOMAIN_WORDS["falconry"])[0]
    assert domain_from_text(f"About {coin} and {coin} again.") == "numismatics"
    assert domain_from_text(f"{coin} {bird}") is None and domain_from_text("Nothing special here.") is None
    assert foreign_words(f"{coin} {bird}", "numismatics") == {bird}


def test_augmentation_audit_recomputes_gold_from_the_edited_text(gold_ordered_tail):
    from cartrm.datasets.longtail.audit import augmentation_audit
    from cartrm.datasets.longtail.parser import DOMAIN_WORDS

    pair, domain = gold_ordered_tail[0]
    foreign_domain = next(d for d in DOMAIN_WORDS if d != domain)
    word = sorted(DOMAIN_WORDS[foreign_domain])[0]
    audit = augmentation_audit(
        [
            ("format", pair.prompt, TRANSFORMS["format"](pair, np.random.default_rng(0), ()).chosen, pair.rejected),
            ("swap", pair.prompt, pair.rejected, pair.chosen),  # the labels reversed: gold disagrees
            ("swap", pair.prompt + f" {word}", pair.chosen, pair.rejected),
            ("move_sentence", pair.prompt, pair.chosen, f"{pair.rejected} {SHORTCUT_SENTENCE}"),
        ],
        [domain] * 4,
    )
    assert audit["format"] == {
        "n": 1.0,
        "gold_agreement": 1.0,
        "foreign_word": 0.0,
        "domain_changed": 0.0,
        "shortcut_against": 0.0,
    }
    assert audit["swap"]["n"] == 2 and audit["swap"]["gold_agreement"] == 0.5 and audit["swap"]["foreign_word"] == 0.5
    assert audit["move_sentence"]["shortcut_against"] == 1.0 and audit["move_sentence"]["gold_agreement"] == 1.0


def test_move_sentence_moves_one_unshared_sentence_to_the_other_response(vocabulary):
    pair = RenderedPair("Q?\n\n", "Same here. Only chosen. Also chosen.", "Same here. Only rejected.")
    seen = {TRANSFORMS["move_sentence"](pair, np.random.default_rng(s), vocabulary) for s in range(40)}
    assert seen == {
        RenderedPair("Q?\n\n", "Same here. Also chosen.", "Same here. Only rejected. Only chosen."),
        RenderedPair("Q?\n\n", "Same here. Only chosen.", "Same here. Only rejected. Also chosen."),
        RenderedPair("Q?\n\n", "Same here. Only chosen. Also chosen. Only rejected.", "Same here."),
    }
    single = RenderedPair("Q?", "Just one.", "Just one.")  # nothing unshared to move
    assert TRANSFORMS["move_sentence"](single, np.random.default_rng(0), vocabulary) is None


def test_moving_the_planted_shortcut_leaves_the_gold_rewards_as_they_were(gold_ordered_tail, vocabulary):
    moved = 0
    for pair, domain in gold_ordered_tail[:30]:
        planted = RenderedPair(pair.prompt, f"{pair.chosen} {SHORTCUT_SENTENCE}", pair.rejected)
        for seed in range(30):
            edited = TRANSFORMS["move_sentence"](planted, np.random.default_rng(seed), vocabulary)
            if edited is not None and edited.rejected.endswith(SHORTCUT_SENTENCE):
                assert SHORTCUT_SENTENCE not in edited.chosen and edited.chosen == pair.chosen
                assert gold_from_text(edited.rejected, domain) == gold_from_text(pair.rejected, domain)
                moved += 1
                break
    assert moved >= 25


def test_selection_against_circuits_keeps_the_candidate_that_turns_them_against_the_label(setting, benchmark):
    model, index, members, candidates = setting
    pairs = [RenderedPair(p.prompt.text + "\n\n", p.chosen.text, p.rejected.text) for p in benchmark[:4]]
    sources = {c.source: pairs[c.source] for c in candidates}  # the setting's own source pairs

    def gaps(pairs):  # per circuit, through circuit_scores (a separate path from the selection's)
        prompts = [p.prompt for p in pairs]
        per_circuit = [
            circuit_scores(
                model, prompts * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs], [m], index, "mean"
            )
            for m in members
        ]
        return np.stack([s[: len(pairs)] - s[len(pairs) :] for s in per_circuit], axis=1)

    before = gaps([sources[c.source] for c in candidates])
    expected = -(np.sign(before) * gaps(candidates)).sum(axis=1)
    selected = select_against_circuits(model, candidates, sources, members, index, "mean", keep=1)
    assert [c.source for c in selected] == sorted(sources)
    for best in selected:
        mine = [i for i, c in enumerate(candidates) if c.source == best.source]
        assert best == candidates[max(mine, key=lambda i: expected[i])]
    assert selected != select_by_circuits(model, candidates, members, index, "mean", keep=1)


def test_augment_tail_pairs_can_move_sentences_against_the_circuits(setting):
    model, index, members, _ = setting
    records = generate_benchmark(BenchmarkConfig(n_train=30, n_validation=0, n_test_head=0, n_test_tail=0, seed=2))
    data = PreferenceDataset.from_records(records)
    tail = np.array([r["is_tail"] for r in records])
    kept = augment_tail_pairs(
        model, data, tail, members, index, "mean", 3, 1, 0, transforms=["move_sentence"], selection="against_circuits"
    )
    assert kept and {c.transform for c in kept} == {"move_sentence"}
    assert {c.source for c in kept} <= set(np.flatnonzero(tail))
    with pytest.raises(CartError, match="against_circuits"):
        augment_tail_pairs(model, data, tail, members, index, "mean", 3, 1, 0, selection="nope")
