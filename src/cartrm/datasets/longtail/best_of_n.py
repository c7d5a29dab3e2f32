"""Best-of-n on the embedded benchmark: test prompts, N candidates each from the benchmark's sampler, scored by
a proxy reward model and by the gold reward (SPEC "What it works means"; Gao et al. 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cartrm.datasets.longtail.generator import (
    SHORTCUT_STREAM,
    BenchmarkConfig,
    BenchmarkPrompt,
    Candidate,
    generate_pairs,
    sample_candidates,
    with_shortcut,
)
from cartrm.datasets.longtail.tables import DOMAIN_BY_NAME
from cartrm.evaluation.bon import BON_NS, BoNCurve, best_of_n_curve


@dataclass(frozen=True)
class CandidatePool:
    """N sampled responses per prompt with their gold rewards (proxy scores are added per reward model)."""

    prompts: list[BenchmarkPrompt]
    responses: list[list[str]]
    gold: np.ndarray

    @property
    def is_tail(self) -> np.ndarray:
        return np.array([DOMAIN_BY_NAME[p.domain].is_tail for p in self.prompts])


def candidate_pool(
    config: BenchmarkConfig, n_head: int, n_tail: int, n_candidates: int = max(BON_NS), seed: int = 0
) -> CandidatePool:
    """The first ``n_head`` head and ``n_tail`` tail prompts of the benchmark's test split, each with
    ``n_candidates`` responses drawn with a generator seeded by (seed, prompt number); with the benchmark's
    planted shortcut on, half of each tail prompt's candidates, drawn at random, carry it."""
    head: list[Any] = []
    tail: list[Any] = []
    for pair in generate_pairs(config):
        if pair.split == "test":
            (tail if DOMAIN_BY_NAME[pair.prompt.domain].is_tail else head).append(pair.prompt)
    prompts = head[:n_head] + tail[:n_tail]
    drawn = [sample_candidates(p, n_candidates, np.random.default_rng([seed, i])) for i, p in enumerate(prompts)]
    if config.tail_shortcut > 0:
        drawn = [
            _half_with_shortcut(cs, p, np.random.default_rng([seed, i, SHORTCUT_STREAM]))
            for i, (p, cs) in enumerate(zip(prompts, drawn))
        ]
    return CandidatePool(
        prompts, [[c.text for c in cs] for cs in drawn], np.array([[c.gold for c in cs] for cs in drawn])
    )


def _half_with_shortcut(
    candidates: list[Candidate], prompt: BenchmarkPrompt, rng: np.random.Generator
) -> list[Candidate]:
    """Tail prompts' candidates, a random half of them with the shortcut (independent of gold: a reward model
    that rewards it picks worse responses); head prompts' unchanged."""
    if not DOMAIN_BY_NAME[prompt.domain].is_tail:
        return candidates
    marked = set(rng.permutation(len(candidates))[: len(candidates) // 2].tolist())
    return [with_shortcut(c) if i in marked else c for i, c in enumerate(candidates)]


def candidate_records(pool: CandidatePool) -> list[dict[str, Any]]:
    """The pool as ``cart audit --candidates`` rows: prompt, responses, their gold rewards and the group."""
    return [
        {"prompt": p.text, "responses": list(rs), "gold": [float(g) for g in gold], "group": "tail" if t else "head"}
        for p, rs, gold, t in zip(pool.prompts, pool.responses, pool.gold, pool.is_tail)
    ]


def proxy_scores(reward_model, pool: CandidatePool, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """(prompts, N) proxy rewards of every candidate."""
    n = len(pool.responses[0])
    prompts = [p.text for p in pool.prompts for _ in range(n)]
    responses = [r for rs in pool.responses for r in rs]
    scores = reward_model.score(prompts, responses, batch_size=batch_size, progress=progress)
    return scores.reshape(len(pool.prompts), n)


def best_of_n_by_group(reward_model, pool: CandidatePool, progress: bool = False) -> dict[str, BoNCurve]:
    """Best-of-n curves over head prompts and over tail prompts."""
    proxy = proxy_scores(reward_model, pool, progress=progress)
    tail = pool.is_tail
    return {
        name: best_of_n_curve(proxy[rows], pool.gold[rows])
        for name, rows in (("head", ~tail), ("tail", tail))
        if rows.any()
    }
