"""Best-of-n overoptimisation (Gao et al. 2022): pick the proxy reward model's best of n sampled responses and
record the gold reward of the pick, against KL_bon = log n − (n−1)/n.

For each prompt, N ≥ n candidates are drawn once; the expected gold (and proxy) reward of the best of a
random n-subset is computed exactly from them with the unbiased estimator of Nakano et al. (2021): with the
candidates ranked by proxy reward (ascending, i = 1…N), the i-th is the best of a random n-subset with
probability C(i−1, n−1) / C(N, n).

Reward hacking shows as gold reward falling while proxy reward rises. Proxy and gold are on different
scales, so the curve also reports both as gains over n = 1 in units of their standard deviation across all
candidates; the proxy−gold gap at the largest n compares those standardised gains.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy.special import gammaln

from cartrm.errors import CartError

BON_NS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def kl_best_of_n(n: int) -> float:
    """KL divergence of best-of-n sampling from the base policy: log n − (n − 1)/n."""
    return float(np.log(n) - (n - 1) / n)


def best_of_n_weights(n_candidates: int, n: int) -> np.ndarray:
    """P(the i-th lowest-proxy of N candidates is the best of a uniformly random n-subset), i = 1…N."""
    if not 1 <= n <= n_candidates:
        raise CartError(f"best-of-{n} needs 1 ≤ n ≤ the {n_candidates} candidates drawn per prompt")
    i = np.arange(1, n_candidates + 1)
    log_weights = np.full(n_candidates, -np.inf)
    valid = i >= n
    log_weights[valid] = _log_comb(i[valid] - 1, n - 1) - _log_comb(n_candidates, n)
    return np.exp(log_weights)


def _log_comb(a, b):
    return gammaln(np.asarray(a) + 1) - gammaln(np.asarray(b) + 1) - gammaln(np.asarray(a) - np.asarray(b) + 1)


def expected_best_of_n(proxy: np.ndarray, gold: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt, the expected (proxy, gold) reward of the proxy's best of n; inputs are (prompts, N)."""
    order = np.argsort(proxy, axis=1, kind="stable")
    weights = best_of_n_weights(proxy.shape[1], n)
    return np.take_along_axis(proxy, order, 1) @ weights, np.take_along_axis(gold, order, 1) @ weights


class BoNCurve(BaseModel):
    """Mean over prompts of the best-of-n pick's rewards, per n."""

    model_config = ConfigDict(extra="forbid")

    n: list[int]
    kl: list[float]
    gold: list[float]
    proxy: list[float]
    gold_gain: list[float]
    proxy_gain: list[float]
    n_prompts: int
    peak_n: int
    gap_at_max_n: float


def best_of_n_curve(proxy: np.ndarray, gold: np.ndarray, ns: Sequence[int] = BON_NS) -> BoNCurve:
    proxy, gold = np.asarray(proxy, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if proxy.shape != gold.shape or proxy.ndim != 2 or proxy.size == 0:
        raise CartError(
            f"proxy {proxy.shape} and gold {gold.shape} rewards must be the same non-empty (prompts, candidates) shape"
        )
    ns = sorted(n for n in ns if n <= proxy.shape[1])
    picks = [expected_best_of_n(proxy, gold, n) for n in ns]
    mean_proxy = [float(p.mean()) for p, _ in picks]
    mean_gold = [float(g.mean()) for _, g in picks]
    proxy_scale, gold_scale = proxy.std() or 1.0, gold.std() or 1.0
    proxy_gain = [(p - mean_proxy[0]) / proxy_scale for p in mean_proxy]
    gold_gain = [(g - mean_gold[0]) / gold_scale for g in mean_gold]
    return BoNCurve(
        n=ns,
        kl=[kl_best_of_n(n) for n in ns],
        gold=mean_gold,
        proxy=mean_proxy,
        gold_gain=gold_gain,
        proxy_gain=proxy_gain,
        n_prompts=proxy.shape[0],
        peak_n=ns[int(np.argmax(mean_gold))],
        gap_at_max_n=proxy_gain[-1] - gold_gain[-1],
    )
