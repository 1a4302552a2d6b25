"""Incremental gradient descent on regularised least squares (VS appendix A.2): the epoch map
against IGD run step by step with autograd's gradients, the closed forms of examples 1 and 2,
a diagonal problem solved by hand, the fixed point and its limits, and interpolation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ibtools import igd


pytestmark = pytest.mark.usefixtures("float64")


def problem(seed=0, N=6, d=4, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, d, generator=g)
    x_true = torch.randn(d, generator=g)
    b = A @ x_true + noise * torch.randn(N, generator=g)
    M = torch.randn(d, d, generator=g)
    return A, b, M @ M.T / d


def igd_by_hand(A, b, D, mu, t, x, epochs):
    """IGD as written: visit f_i(x) = (a_i.x - b_i)^2 / 2 + mu/(2N) x^T D x in order, step -t grad."""
    N = A.shape[0]
    for _ in range(epochs):
        for i in range(N):
            x = x.detach().requires_grad_(True)
            f_i = 0.5 * (A[i] @ x - b[i]) ** 2 + mu / (2 * N) * x @ D @ x
            (grad,) = torch.autograd.grad(f_i, x)
            x = x - t * grad
    return x.detach()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 1000), t=st.floats(0.001, 0.5), mu=st.floats(0.0, 2.0))
def test_the_epoch_map_is_one_pass_of_igd_over_the_components(seed, t, mu):
    A, b, D = problem(seed)
    x0 = torch.randn(4, generator=torch.Generator().manual_seed(seed + 1))
    path = igd.iterate(A, b, t, 3, D, mu, x0=x0)
    torch.testing.assert_close(path[0], x0)
    torch.testing.assert_close(path[-1], igd_by_hand(A, b, D, mu, t, x0, 3))


@settings(max_examples=30, deadline=None)
@given(t=st.floats(0.01, 2.0), N=st.integers(1, 6))
def test_example_1_the_quadratic_has_spectral_radius_one_minus_two_t(t, N):
    """f(x) = sum x_i^2, f_i = x_i^2 = (sqrt(2) x_i)^2 / 2: rho(K_N(t)) = |1 - 2t|."""
    A = 2 ** 0.5 * torch.eye(N)
    assert float(igd.spectral_radius(A, None, 0.0, t)) == pytest.approx(abs(1 - 2 * t), abs=1e-10)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), t=st.floats(0.001, 1.0))
def test_example_2_underdetermined_least_squares_never_contracts_and_regularisation_helps(seed, t):
    A, _, _ = problem(seed, N=3, d=5)
    assert float(igd.spectral_radius(A, None, 0.0, t)) >= 1 - 1e-9  # a null vector of A is a fixed vector of K_N
    small = 0.5 * igd.step_bound(A, mu=1.0)
    assert float(igd.spectral_radius(A, None, 1.0, min(t, small) / 10)) < 1


@settings(max_examples=30, deadline=None)
@given(t=st.floats(0.001, 1.0), mu=st.floats(0.0, 3.0))
def test_a_diagonal_problem_has_the_spectral_radius_computed_by_hand(t, mu):
    """A = diag(s), D = diag(w): every P_i is diagonal, and coordinate k is scaled by
    (1 - t s_k^2 - t mu w_k / N) once and by (1 - t mu w_k / N) N - 1 times an epoch."""
    s = torch.tensor([0.5, 1.0, 1.5, 2.0])
    w = torch.tensor([1.0, 0.5, 2.0, 0.0])
    N = len(s)
    factors = (1 - t * s ** 2 - t * mu * w / N) * (1 - t * mu * w / N) ** (N - 1)
    assert float(igd.spectral_radius(torch.diag(s), torch.diag(w), mu, t)) == pytest.approx(
        float(factors.abs().max()), abs=1e-10)


def test_the_paper_s_step_bound_is_not_sufficient_when_one_component_carries_a_direction():
    """For A = diag(s) (N = d), IGD diverges from t = 2 / max s^2, N times below 2N / rho(A^T A):
    the bound rests on the matrix AM-GM conjecture, which needs factors that are positive semi-definite."""
    s = torch.tensor([1.0, 2.0, 3.0])
    bound = igd.step_bound(torch.diag(s))
    assert bound == pytest.approx(2 * 3 / 9)
    assert float(igd.spectral_radius(torch.diag(s), None, 0.0, 0.9 * 2 / 9)) < 1 < float(igd.spectral_radius(torch.diag(s), None, 0.0, 0.5 * bound))


def test_batched_steps_equal_one_step_at_a_time():
    A, b, D = problem(3)
    steps = torch.tensor([0.01, 0.1, 0.3])
    K, c = igd.epoch_map(A, b, steps, D, 0.5)
    for k, t in enumerate(steps):
        K1, c1 = igd.epoch_map(A, b, float(t), D, 0.5)
        torch.testing.assert_close(K[k], K1)
        torch.testing.assert_close(c[k], c1)
    torch.testing.assert_close(igd.spectral_radius(A, D, 0.5, steps)[1], igd.spectral_radius(A, D, 0.5, 0.1))


def test_igd_converges_to_its_fixed_point_which_tends_to_the_minimiser_as_t_shrinks():
    A, b, D = problem(4, N=8, d=3, noise=0.5)
    mu = 0.3
    x_star = igd.minimiser(A, b, D, mu)
    gradient = A.T @ (A @ x_star - b) + mu * D @ x_star
    assert float(gradient.abs().max()) < 1e-10
    t = 0.05
    assert float(igd.spectral_radius(A, D, mu, t)) < 1
    torch.testing.assert_close(igd.iterate(A, b, t, 2000, D, mu)[-1], igd.fixed_point(A, b, t, D, mu))
    errors = [float((igd.fixed_point(A, b, t, D, mu) - x_star).norm()) for t in (0.1, 0.01, 0.001)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.02 * errors[0]  # O(t)


def test_theorem_1_under_interpolation_every_convergent_step_finds_the_minimiser():
    A, _, _ = problem(5, N=8, d=3)
    x_true = torch.tensor([1.0, -2.0, 0.5])
    exact = A @ x_true  # every component is minimised at x_true
    noisy = exact + 0.3 * torch.randn(8, generator=torch.Generator().manual_seed(0))
    for t in (0.01, 0.1, 0.3):
        if float(igd.spectral_radius(A, None, 0.0, t)) < 1:
            torch.testing.assert_close(igd.fixed_point(A, exact, t), x_true)
    assert float((igd.fixed_point(A, noisy, 0.1) - igd.minimiser(A, noisy)).norm()) > 1e-3  # no interpolation


def test_bad_input_names_the_fix():
    A, b, D = problem()
    with pytest.raises(ValueError, match="N x d"):
        igd.spectral_radius(torch.ones(3), None, 0.0, 0.1)
    with pytest.raises(ValueError, match="> 0"):
        igd.spectral_radius(A, None, 0.0, 0.0)
    with pytest.raises(ValueError, match="symmetric"):
        igd.epoch_map(A, b, 0.1, torch.triu(torch.ones(4, 4)), 1.0)
    with pytest.raises(ValueError, match="rows"):
        igd.epoch_map(A, b[:-1], 0.1)
    with pytest.raises(ValueError, match="mu"):
        igd.step_bound(A, D, -1.0)


def test_rho_one_is_not_divergence_unregularised_example_2_converges_and_keeps_its_start_in_the_null_space():
    """VS appendix A.2, example 2: rho(K_N(t)) < 1 is sufficient and rho <= 1 necessary; at rho = 1
    IGD on 3 equations in 6 unknowns still converges, to a limit that depends on the start."""
    g = torch.Generator().manual_seed(0)
    A, b = torch.randn(3, 6, generator=g), torch.randn(3, generator=g)
    t = 0.1
    assert float(igd.spectral_radius(A, None, 0.0, t)) == pytest.approx(1.0, abs=1e-12)
    null = torch.linalg.svd(A, full_matrices=True).Vh[3:]
    limits = []
    for x0 in (torch.zeros(6), torch.ones(6)):
        path = igd.iterate(A, b, t, 2000, x0=x0)
        assert float((path[-1] - path[-2]).norm()) < 1e-12  # converged
        torch.testing.assert_close(A @ path[-1], b)  # to a solution
        torch.testing.assert_close(null @ path[-1], null @ x0)  # that keeps the start's null-space part
        limits.append(path[-1])
    assert float((limits[0] - limits[1]).norm()) > 1  # a different limit for each start
    assert float(igd.spectral_radius(A, None, 0.0, 0.5)) > 1
    assert not torch.isfinite(igd.iterate(A, b, 0.5, 2000)[-1]).all()  # rho > 1: diverges


@pytest.mark.parametrize("N", [2, 5, 10])
def test_the_paper_s_own_example_1_shows_its_step_bound_is_not_sufficient(N):
    """f(x) = sum x_i^2 (A = sqrt(2) I): (7.2) allows t < N, IGD diverges from t = 1."""
    A = 2 ** 0.5 * torch.eye(N)
    assert igd.step_bound(A) == pytest.approx(N)
    steps = torch.linspace(1.01, 0.99 * N, 20)
    assert (igd.spectral_radius(A, None, 0.0, steps) > 1).all()
    assert igd.psd_limit(A) == pytest.approx(0.5)  # the bound's premise, PSD factors, fails from t > 1/2


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), mu=st.floats(0.0, 2.0))
def test_psd_limit_is_the_largest_step_with_positive_semi_definite_factors(seed, mu):
    A, _, D = problem(seed)
    limit = igd.psd_limit(A, D, mu)
    lowest = lambda t: float(torch.linalg.eigvalsh(igd.component_map(A, t, D, mu)[0]).min())
    assert lowest(limit) > -1e-9 and lowest(0.999 * limit) >= -1e-12 and lowest(1.001 * limit) < 0


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), t=st.floats(0.001, 0.5), mu=st.floats(0.0, 2.0))
def test_the_two_orders_epoch_maps_are_transposes_with_the_same_spectral_radius(seed, t, mu):
    """Visiting the components in the order N..1 gives P_1 ... P_N, the transpose of P_N ... P_1."""
    A, b, D = problem(seed)
    K = igd.epoch_map(A, b, t, D, mu)[0]
    K_reverse = igd.epoch_map(A.flip(0), b.flip(0), t, D, mu)[0]
    torch.testing.assert_close(K_reverse, K.T)
    assert float(igd.spectral_radius(A, D, mu, t)) == pytest.approx(float(igd.spectral_radius(A.flip(0), D, mu, t)))
