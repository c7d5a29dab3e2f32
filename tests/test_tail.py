"""Tail definitions: label, rarity and density specs, fitted on one corpus and applied to any dataset."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from cartrm.data import PreferenceDataset, TailSplit, load_dataset, parse_tail_spec
from cartrm.errors import CartError, DataError


def pairs(texts, **extra_columns) -> PreferenceDataset:
    records = [{"chosen": t, "rejected": "no."} for t in texts]
    for name, values in extra_columns.items():
        for record, value in zip(records, values):
            record[name] = value
    return PreferenceDataset.from_records(records, source="<test>")


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    "spec",
    [
        "foo",
        "",
        "label:",
        "label:=a",
        "label:col=",
        "label:col=,",
        "rarity",
        "rarity:",
        "rarity:1.5",
        "rarity:0",
        "rarity:1",
        "rarity:-0.1",
        "rarity:nan",
        "rarity:abc",
        "density:",
        "density:2",
        "density:0.1:bogus",
        "Rarity:0.1",
    ],
)
def test_invalid_spec(spec):
    with pytest.raises(CartError) as info:
        parse_tail_spec(spec)
    assert not isinstance(info.value, DataError)
    assert f"'{spec}'" in str(info.value)
    assert "label:COLUMN" in str(info.value)


@pytest.mark.parametrize(
    ("spec", "attributes"),
    [
        ("label:domain=a, b", {"column": "domain", "values": ("a", "b")}),
        ("label:is_tail", {"column": "is_tail", "values": None}),
        ("rarity:0.2", {"quantile": 0.2}),
        ("density:0.1", {"quantile": 0.1, "space": "model"}),
        ("density:0.05:tfidf", {"quantile": 0.05, "space": "tfidf"}),
    ],
)
def test_valid_spec(spec, attributes):
    definition = parse_tail_spec(spec)
    assert definition.spec == spec
    for name, value in attributes.items():
        assert getattr(definition, name) == value


# --------------------------------------------------------------------------- label


def test_label_values():
    dataset = pairs(["t1", "t2", "t3", "t4", "t5"], domain=["code", "math", "chat", "math", "legal"])
    split = parse_tail_spec("label:domain=math,legal").fit(dataset).transform(dataset)
    assert isinstance(split, TailSplit)
    assert split.mask.dtype == bool
    assert split.mask.tolist() == [False, True, False, True, True]
    assert split.tail_indices.tolist() == [1, 3, 4]
    assert split.head_indices.tolist() == [0, 2]
    assert (split.n_tail, split.n_head) == (3, 2)
    assert "3 tail / 2 head" in split.description
    assert "domain" in split.description


def test_label_values_match_numbers_and_bools_as_text():
    dataset = pairs(["a", "b", "c", "d"], group=[1, 2.0, "2", 3], flag=[True, False, True, False])
    assert parse_tail_spec("label:group=2").fit_transform(dataset).mask.tolist() == [False, True, True, False]
    assert parse_tail_spec("label:flag=true").fit_transform(dataset).mask.tolist() == [True, False, True, False]


def test_label_unknown_column():
    dataset = pairs(["a", "b"], domain=["x", "y"])
    with pytest.raises(DataError) as info:
        parse_tail_spec("label:topic=x").fit_transform(dataset)
    assert info.value.field == "topic"
    assert "domain" in str(info.value)


def test_label_boolean_column_of_bools(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(
        "".join(json.dumps({"chosen": f"c{i}", "rejected": "r", "is_tail": i % 3 == 0}) + "\n" for i in range(6))
    )
    split = parse_tail_spec("label:is_tail").fit_transform(load_dataset(path))
    assert split.tail_indices.tolist() == [0, 3]


def test_label_boolean_column_of_strings_from_csv(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("chosen,rejected,is_tail\na,b,true\nc,d,false\ne,f,FALSE\ng,h,True\ni,j,1\nk,l,no\nm,n,yes\n")
    split = parse_tail_spec("label:is_tail").fit_transform(load_dataset(path))
    assert split.mask.tolist() == [True, False, False, True, True, False, True]


def test_label_boolean_invalid_value_names_csv_line_and_field(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("chosen,rejected,is_tail\na,b,true\nc,d,false\ne,f,maybe\n")
    with pytest.raises(DataError) as info:
        parse_tail_spec("label:is_tail").fit_transform(load_dataset(path))
    exc = info.value
    assert (exc.file, exc.line, exc.field) == (str(path), 4, "is_tail")
    assert "'maybe'" in str(exc)
    assert "\n" not in str(exc)


def test_label_boolean_missing_value_is_invalid():
    dataset = PreferenceDataset.from_records(
        [{"chosen": "a", "rejected": "b", "is_tail": True}, {"chosen": "c", "rejected": "d"}], source="<m>"
    )
    with pytest.raises(DataError) as info:
        parse_tail_spec("label:is_tail").fit_transform(dataset)
    assert (info.value.line, info.value.field) == (2, "is_tail")


def test_empty_tail_and_empty_head_are_errors():
    dataset = pairs(["a", "b", "c"], domain=["x", "y", "x"])
    with pytest.raises(CartError, match="tail empty") as info:
        parse_tail_spec("label:domain=z").fit_transform(dataset)
    assert "label:domain=z" in str(info.value) and "<test>" in str(info.value)
    with pytest.raises(CartError, match="head empty"):
        parse_tail_spec("label:domain=x,y").fit_transform(dataset)


# --------------------------------------------------------------------------- rarity

COMMON = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "warm",
    "mat",
    "and",
    "looked",
    "at",
    "birds",
    "in",
    "the",
    "garden",
    "every",
    "morning",
]
MADE_UP = [
    "zorblax",
    "quindrel",
    "vexomplt",
    "grizzlethorp",
    "plonkavi",
    "dwimmerqu",
    "snorfuzzle",
    "krathemon",
    "blivetrax",
    "wuxlorbin",
    "frindlequog",
    "mogzapper",
    "yazzleborn",
    "thrumquix",
    "glibberosk",
    "xandrofel",
    "pezzlewump",
    "okrabuntz",
    "jibberflax",
    "voolimund",
    "crondlewix",
    "skibbernaut",
    "zeptoquam",
    "hurblefink",
    "marvoxil",
    "trundlebop",
    "quazzimor",
    "flindersk",
    "bopplegrum",
    "wizzlecrat",
    "nurgleplox",
    "dravenquist",
    "sprocklin",
    "yibbertosh",
    "gnarfwidge",
    "plimbulox",
    "scrovelunt",
    "tazzlequip",
    "wombrixel",
    "kezzlewart",
]
PLANTED = [3, 11, 19, 27, 38]


def rarity_corpus() -> PreferenceDataset:
    """35 texts over a 15-word vocabulary and 5 planted texts made mostly of made-up words."""
    rng = random.Random(0)
    texts = [" ".join(rng.choice(COMMON) for _ in range(8)) for _ in range(35)]
    for k, position in enumerate(PLANTED):
        texts.insert(position, " ".join(MADE_UP[8 * k : 8 * k + 8] + rng.sample(COMMON, 2)))
    return pairs(texts)


@pytest.mark.parametrize("use_tokenizer", [False, True])
def test_rarity_flags_exactly_the_planted_rare_word_texts(use_tokenizer, tiny_bert_tokenizer):
    dataset = rarity_corpus()
    tokenizer = tiny_bert_tokenizer if use_tokenizer else None
    definition = parse_tail_spec(f"rarity:{len(PLANTED) / len(dataset)}").fit(dataset, tokenizer=tokenizer)
    split = definition.transform(dataset)
    assert split.tail_indices.tolist() == PLANTED
    shares = definition.rare_token_share(dataset)
    assert shares.shape == (len(dataset),)
    assert np.all(shares[PLANTED] > 0.5)
    assert np.all(np.delete(shares, PLANTED) == 0.0)


def test_rarity_counts_tokenizer_tokens(tiny_bert_tokenizer):
    """With a tokenizer the unit is its tokens: made-up words split into pieces, so shares differ from words."""
    dataset = rarity_corpus()
    by_words = parse_tail_spec("rarity:0.125").fit(dataset).rare_token_share(dataset)
    by_tokens = parse_tail_spec("rarity:0.125").fit(dataset, tokenizer=tiny_bert_tokenizer).rare_token_share(dataset)
    assert np.allclose(by_words[PLANTED], 0.8)
    assert not np.allclose(by_tokens[PLANTED], 0.8)


def test_rarity_transforms_new_data_with_the_training_counts():
    train = rarity_corpus()
    definition = parse_tail_spec("rarity:0.125").fit(train)
    new = pairs(
        [
            "the cat sat on the mat",  # common in training
            "zorblax zorblax zorblax quindrel quindrel quindrel",  # frequent here, once each in training
            "every morning the birds looked at a warm garden",
            "brand new unseenword appears here in the garden",  # unseen in training
            "cat cat cat",
        ]
    )
    split = definition.transform(new)
    assert split.tail_indices.tolist() == [1, 3]
    # fitted on the new data itself, the repeated made-up words are no longer rare
    refit = parse_tail_spec("rarity:0.4").fit(new).rare_token_share(new)
    assert refit[1] == 0.0


def test_rarity_needs_fit():
    with pytest.raises(CartError, match="fit"):
        parse_tail_spec("rarity:0.1").transform(rarity_corpus())


def test_rarity_uniform_corpus_has_no_head_tail_split():
    dataset = pairs(["same words here"] * 10)
    with pytest.raises(CartError, match="(head|tail) empty"):
        parse_tail_spec("rarity:0.2").fit_transform(dataset)


# --------------------------------------------------------------------------- density

CLUSTER_TOPICS = ["cat", "dog", "bird", "fish", "horse"]
OUTLIERS = [
    "quantum chromodynamics lattice gauge gluon confinement",
    "sovereign bond yield curve inversion recession",
    "medieval tapestry embroidery weaving loom heraldry",
]


def density_corpus() -> tuple[PreferenceDataset, list[int]]:
    texts = [
        f"my {topic} likes to eat food and sleep in the sun all day {'long' if i % 2 else 'too'}"
        for i in range(9)
        for topic in CLUSTER_TOPICS
    ]
    positions = [4, 20, 41]
    for position, text in zip(positions, OUTLIERS):
        texts.insert(position, text)
    return pairs(texts), positions


def test_density_tfidf_flags_the_planted_outliers():
    dataset, positions = density_corpus()
    assert len(positions) / len(dataset) == 0.0625
    split = parse_tail_spec("density:0.0625:tfidf").fit_transform(dataset)
    assert split.tail_indices.tolist() == positions
    assert "TF-IDF" in split.description


def test_density_tfidf_on_a_small_vocabulary():
    """More examples than distinct words must still work (the SVD cannot have more components than words)."""
    dataset = pairs(["red apple pie"] * 12 + ["blue fast car", "green slow boat"])
    split = parse_tail_spec("density:0.15:tfidf").fit_transform(dataset)
    assert split.tail_indices.tolist() == [12, 13]


def test_density_tfidf_transforms_new_data():
    dataset, _ = density_corpus()
    definition = parse_tail_spec("density:0.0625:tfidf").fit(dataset)
    new = pairs(
        ["my dog likes to eat food and sleep in the sun all day long", "gluon confinement in lattice gauge theory"]
    )
    assert definition.transform(new).mask.tolist() == [False, True]


def planted_points(n_cluster: int = 45, seed: int = 0):
    rng = np.random.default_rng(seed)
    cluster = rng.normal(0.0, 0.1, size=(n_cluster, 6))
    far = np.zeros((3, 6))
    far[0, 0], far[1, 1], far[2, 2] = 5.0, -6.0, 7.0
    return cluster, far


def test_density_with_a_model_embedder_finds_the_planted_points():
    cluster, far = planted_points()
    texts = [f"example number {i}" for i in range(len(cluster) + len(far))]
    tail_positions = [7, 25, 47]
    points = np.empty((len(texts), cluster.shape[1]))
    head_positions = [i for i in range(len(texts)) if i not in tail_positions]
    points[head_positions] = cluster
    points[tail_positions] = far
    dataset = pairs(texts)
    lookup = {text: points[i] for i, text in enumerate(dataset.plain_texts())}
    calls = []

    def embedder(batch):
        calls.append(len(batch))
        return np.stack([lookup[t] for t in batch])

    definition = parse_tail_spec("density:0.06").fit(dataset, embedder=embedder)
    split = definition.transform(dataset)
    assert split.tail_indices.tolist() == tail_positions
    assert "embedding space" in split.description
    assert calls == [len(texts), len(texts)]
    # new data: a point inside the cluster is head, one far away is tail
    lookup["near"] = np.full(6, 0.01)
    lookup["far away"] = np.full(6, 3.0)
    new = PreferenceDataset.from_records([{"chosen": "near", "rejected": "x"}, {"chosen": "far away", "rejected": "x"}])
    assert definition.transform(new).mask.tolist() == [False, True]


def test_memoised_embedder_embeds_each_text_once_and_keeps_the_order():
    from cartrm.data.tail import memoised

    calls = []

    def embedder(batch):
        calls.append(list(batch))
        return np.array([[float(len(t)), float(t.count("a"))] for t in batch])

    embed = memoised(embedder)
    first = embed(["aa", "b", "aa", "ccc"])
    second = embed(["ccc", "dddd", "b"])
    assert first.tolist() == [[2, 2], [1, 0], [2, 2], [3, 0]]
    assert second.tolist() == [[3, 0], [4, 0], [1, 0]]
    assert calls == [["aa", "b", "ccc"], ["dddd"]]  # only texts not seen before, each once
    assert embed(["b", "aa"]).tolist() == [[1, 0], [2, 2]] and len(calls) == 2


def test_a_density_tail_fitted_through_the_memo_splits_like_the_plain_embedder():
    from cartrm.data.tail import memoised

    cluster, far = planted_points()
    texts = [f"example number {i}" for i in range(len(cluster) + len(far))]
    points = np.concatenate([cluster, far])
    lookup = {text: points[i] for i, text in enumerate(pairs(texts).plain_texts())}

    def embedder(batch):
        return np.stack([lookup[t] for t in batch])

    dataset, part = pairs(texts), pairs(texts[::2])
    plain = parse_tail_spec("density:0.06").fit(dataset, embedder=embedder)
    memo = parse_tail_spec("density:0.06").fit(dataset, embedder=memoised(embedder))
    for data in (dataset, part):
        assert memo.transform(data).mask.tolist() == plain.transform(data).mask.tolist()
    assert plain.transform(dataset).tail_indices.tolist() == [45, 46, 47]


def test_density_with_the_tiny_model_embedder():
    from cartrm.models.reward_model import RewardModel

    model = RewardModel.load("tiny-bert")
    dataset, _ = density_corpus()
    embeddings = model.embed(dataset.plain_texts())
    assert embeddings.shape[0] == len(dataset) and embeddings.ndim == 2
    split = parse_tail_spec("density:0.2").fit_transform(dataset, embedder=model.embed)
    assert split.mask.shape == (len(dataset),)
    assert 0 < split.n_tail <= round(0.2 * len(dataset)) + 1


def test_density_without_an_embedder_is_an_error():
    dataset, _ = density_corpus()
    with pytest.raises(CartError, match="tfidf") as info:
        parse_tail_spec("density:0.1").fit(dataset)
    assert "density:0.1" in str(info.value)
    assert not isinstance(info.value, DataError)


def test_density_needs_fit_and_two_examples():
    dataset, _ = density_corpus()
    with pytest.raises(CartError, match="fit"):
        parse_tail_spec("density:0.1:tfidf").transform(dataset)
    with pytest.raises(CartError, match="at least 2"):
        parse_tail_spec("density:0.5").fit(pairs(["only one"]), embedder=lambda texts: np.zeros((len(texts), 2)))
