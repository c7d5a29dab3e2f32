import math

import numpy as np
import pytest
import torch

from cartrm.vulnerability import agreement, circuit_sensitivity, first_order_sensitivity, pgd_sensitivity


@pytest.fixture(autouse=True)
def float64_default():
    """Known answers to 1e-6 need double precision; restore the global default for the other test modules."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def linear(w: torch.Tensor):
    return lambda delta: (delta * w).sum(dim=1)


def relu_net(a: torch.Tensor, sign: float, seed: int = 0):
    """``δ ↦ f(a+δ) − f(a)`` for a 2-layer ReLU net f; convex for sign > 0, concave for sign < 0."""
    gen = torch.Generator().manual_seed(seed)
    w1, b1 = torch.randn(16, a.shape[1], generator=gen), torch.randn(16, generator=gen)
    w2 = sign * torch.rand(16, generator=gen)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ w1.T + b1) @ w2

    return lambda delta: f(a + delta) - f(a)


def recording(reward_change, norms: list, ord: float):
    def wrapped(delta):
        norms.append(torch.linalg.vector_norm(delta.detach(), ord=ord, dim=1))
        return reward_change(delta)

    return wrapped


@pytest.mark.parametrize("norm, dual", [("l2", 2), ("linf", 1)])
def test_linear_change_first_order_and_pgd_are_exact(norm, dual):
    w = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    eps = torch.tensor([0.1, 0.5, 1.0, 2.0, 0.3])
    expected = eps * torch.linalg.vector_norm(w, ord=dual, dim=1)
    torch.testing.assert_close(first_order_sensitivity(w, eps, norm), expected)
    torch.testing.assert_close(pgd_sensitivity(linear(w), 4, eps, norm), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_relu_net_exact_is_at_least_first_order(norm, sign):
    a = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
    result = circuit_sensitivity(relu_net(a, sign), 3, 0.5, norm, batch_size=32)
    assert np.all(result.exact >= result.first_order - 1e-9)
    assert np.any(result.exact > result.first_order + 1e-3)  # the kinks make first order inexact somewhere


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_convex_change_exceeds_first_order_and_reaches_the_true_maximum(norm):
    # v·w > 0: the global maximum lies in the basin PGD starts in (it is a local method; with v·w < 0 the
    # ascent from the first-order optimum ends at the smaller local maximum near −w instead).
    w, v = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 0.3]])
    eps = 0.8
    change = lambda delta: (delta * w).sum(1) ** 2 + (delta * v).sum(1)  # noqa: E731
    result = circuit_sensitivity(change, 2, eps, norm, batch_size=1)
    assert result.first_order[0] == pytest.approx(eps * torch.linalg.vector_norm(v, ord=2 if norm == "l2" else 1))
    assert result.exact[0] > result.first_order[0] + 0.5
    # A convex function's maximum over the ball lies on its boundary: search the boundary densely.
    theta = torch.linspace(0, 2 * math.pi, 20_001)
    circle = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    if norm == "linf":
        circle = circle / circle.abs().amax(dim=1, keepdim=True)
    best = change(eps * circle).abs().max().item()
    # The default η (a path of 2.5ε in all) gets close; a larger step converges onto the boundary optimum.
    assert best * 0.99 <= result.exact[0] <= best + 1e-6
    tuned = pgd_sensitivity(change, 2, eps, norm, steps=50, step_size=0.2, batch_size=1)
    assert tuned.item() == pytest.approx(best, rel=1e-6)


@pytest.mark.parametrize("norm, ord", [("l2", 2), ("linf", math.inf)])
def test_every_queried_perturbation_stays_in_the_ball(norm, ord):
    a = torch.randn(16, 3, generator=torch.Generator().manual_seed(2))
    eps = torch.linspace(0.1, 1.5, 16)
    norms: list = []
    pgd_sensitivity(recording(relu_net(a, 1.0), norms, ord), 3, eps, norm, steps=20)
    assert len(norms) == 20 + 4
    assert torch.all(torch.stack(norms) <= eps * (1 + 1e-12))


def test_batch_elements_are_independent_and_more_steps_never_lower_the_value():
    a = torch.randn(6, 3, generator=torch.Generator().manual_seed(3))
    eps = torch.full((6,), 0.7)
    batch = pgd_sensitivity(relu_net(a, -1.0), 3, eps, steps=15)
    single = torch.cat([pgd_sensitivity(relu_net(a[i : i + 1], -1.0), 3, eps[i : i + 1], steps=15) for i in range(6)])
    torch.testing.assert_close(batch, single)
    start = pgd_sensitivity(relu_net(a, -1.0), 3, eps, steps=0)
    assert torch.all(batch >= start)


def test_degenerate_inputs():
    w = torch.randn(3, 2)
    assert torch.all(pgd_sensitivity(linear(w), 2, 0.0, batch_size=3) == 0)
    assert torch.all(pgd_sensitivity(lambda d: torch.zeros(3), 2, 1.0, batch_size=3) == 0)
    with pytest.raises(ValueError):
        pgd_sensitivity(linear(w), 2, 1.0)
    with pytest.raises(ValueError):
        first_order_sensitivity(w, 1.0, norm="l1")


def test_pgd_runs_under_no_grad_and_keeps_eps_dtype():
    w = torch.randn(4, 3, dtype=torch.float32)
    with torch.no_grad():
        sens = pgd_sensitivity(linear(w), 3, torch.full((4,), 0.5, dtype=torch.float32))
    assert sens.dtype == torch.float32
    torch.testing.assert_close(sens, 0.5 * torch.linalg.vector_norm(w, dim=1), atol=1e-5, rtol=0)


def test_agreement():
    linear_result = circuit_sensitivity(linear(torch.randn(10, 3)), 3, 0.5, batch_size=10)
    stats = linear_result.agreement()
    assert stats["spearman"] == pytest.approx(1.0)
    assert stats["ratio_median"] == pytest.approx(1.0, abs=1e-6)
    stats = agreement(torch.tensor([3.0, 2.0, 1.0]), np.array([1.0, 2.0, 0.0]))
    assert stats["spearman"] == pytest.approx(0.5)  # ranks (3, 2, 1) vs (2, 3, 1)
    assert stats["ratio_median"] == pytest.approx(2.0)  # ratios 3 and 1 (zero first order skipped)
    assert math.isnan(agreement(np.ones(3), np.arange(3.0))["spearman"])
    assert math.isnan(agreement(np.ones(3), np.zeros(3))["ratio_median"])


def test_reward_change_must_return_one_value_per_example():
    with pytest.raises(ValueError, match="shape"):
        pgd_sensitivity(lambda delta: delta.sum(1, keepdim=True), 2, 1.0, batch_size=3)


def test_a_bf16_reward_change_gives_float64_estimates():
    """A model loaded in bf16 returns bf16 rewards; both estimates still come back as numbers numpy can hold."""
    w = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    eps = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float32)
    result = circuit_sensitivity(lambda delta: linear(w)(delta).to(torch.bfloat16), 4, eps, "l2", steps=2)
    expected = (eps.double() * torch.linalg.vector_norm(w, dim=1)).numpy()
    assert result.exact.dtype == result.first_order.dtype == np.float64
    np.testing.assert_allclose(result.first_order, expected, rtol=2e-2)
    np.testing.assert_allclose(result.exact, expected, rtol=2e-2)
