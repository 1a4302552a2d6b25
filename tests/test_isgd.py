"""The math of ibtools.isgd: each ISGD step solves eq. (1) of Fagan & Iyengar,

    theta+ = argmin { 2 lr (l(theta) + mu/2 ||theta||^2) + ||theta - theta_t||^2 },

equivalently theta+ = theta_t - lr (grad l(theta+) + mu theta+). Gradients here come from
autograd, minimisers from scipy, so the checks do not reuse the derivations under test."""

import copy
import math

import pytest
import scipy.optimize
import torch
from conftest import DEVICES
from hypothesis import given, settings
from hypothesis import strategies as st

from ibtools import isgd
from ibtools.train import BatchClosure, cross_entropy, least_squares, logistic

F64 = torch.float64
# The GPU cases run wherever a GPU is present.

# A decorator, not a loaded profile, so other test modules keep their own settings.
property_test = settings(deadline=None, max_examples=60, derandomize=True)

sizes = st.integers(1, 7)
seeds = st.integers(0, 2**31 - 1)
log_lrs = st.floats(-4, 4)
mus = st.sampled_from([0.0, 1e-3, 0.1, 1.0, 10.0])


def randn(seed, *shape, dtype=F64, device="cpu"):
    values = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return values.to(dtype=dtype, device=device)


def least_squares_problem(seed, batch, dim, dtype=F64, device="cpu"):
    data = randn(seed, batch * dim + batch + dim, dtype=dtype, device=device)
    X = data[: batch * dim].reshape(batch, dim)
    y = data[batch * dim: batch * dim + batch]
    theta = data[batch * dim + batch:]
    return theta, X, y


def least_squares_loss(theta, X, y):
    return (X @ theta - y).pow(2).sum() / (2 * len(y))


def logistic_loss(theta, x, y):
    margin = y * (x @ theta)
    return torch.logaddexp(torch.zeros_like(margin), -margin)  # softplus turns linear past 20


def gradient(loss, theta, *data):
    theta = theta.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(theta, *data), theta)
    return grad


def implicit_residual(loss, new, old, lr, mu, *data):
    """||theta+ - theta_t + lr (grad l(theta+) + mu theta+)||, relative to what rounding
    theta+ alone leaves in it: the residual's Jacobian I + lr (Hessian + mu I) times theta+."""
    step = lr * (gradient(loss, new, *data) + mu * new)
    hessian = torch.autograd.functional.hessian(lambda t: loss(t, *data), new)
    sensitivity = 1 + lr * (torch.linalg.matrix_norm(hessian, 2) + mu)
    scale = old.norm() + step.norm() + sensitivity * new.norm()
    return ((new - old + step).norm() / scale).item()


def prox_objective(loss, theta, anchor, lr, mu, *data):
    """Eq. (1)."""
    return 2 * lr * (loss(theta, *data) + mu / 2 * theta.pow(2).sum()) + (theta - anchor).pow(2).sum()


def scipy_prox(loss, anchor, lr, mu, *data):
    """Minimise eq. (1) divided by 2 lr with BFGS from theta_t, gradients by autograd."""
    def fun(theta):
        t = torch.tensor(theta, dtype=F64, requires_grad=True)
        value = prox_objective(loss, t, anchor, lr, mu, *data) / (2 * lr)
        (grad,) = torch.autograd.grad(value, t)
        return value.item(), grad.numpy()

    result = scipy.optimize.minimize(fun, anchor.numpy(), jac=True, method="BFGS", options=dict(gtol=1e-12))
    return torch.from_numpy(result.x)


# --- the quadratic of Figure 1 --------------------------------------------------------------

def test_quadratic_steps_are_the_closed_forms_of_figure_1():
    assert isgd.esgd_quadratic_step(1.0, 1.75) == pytest.approx(-0.75)
    assert isgd.isgd_quadratic_step(1.0, 1.75) == pytest.approx(1 / 2.75)
    assert isgd.esgd_quadratic_step(2.0, 0.5, curvature=3.0) == pytest.approx(2.0 * (1 - 1.5))
    assert isgd.isgd_quadratic_step(2.0, 0.5, curvature=3.0) == pytest.approx(2.0 / 2.5)
    k = torch.arange(11, dtype=F64)
    theta0 = torch.tensor(1.5, dtype=F64)
    for method, factor in [("esgd", 1 - 1.75 * 2), ("isgd", 1 / (1 + 1.75 * 2))]:
        trajectory = isgd.quadratic_trajectory(theta0, 1.75, 10, method, curvature=2.0)
        assert trajectory.shape == (11,) and trajectory.dtype == F64
        torch.testing.assert_close(trajectory, 1.5 * torch.tensor(factor, dtype=F64) ** k)


def test_quadratic_steps_broadcast_over_learning_rates():
    lrs = torch.tensor([0.5, 1.75, 3.0])
    torch.testing.assert_close(isgd.isgd_quadratic_step(torch.ones(3), lrs), 1 / (1 + lrs))
    torch.testing.assert_close(isgd.esgd_quadratic_step(torch.ones(3), lrs), 1 - lrs)


@property_test
@given(log_lr=st.floats(-6, 6), log_curvature=st.floats(-3, 3),
       theta0=st.floats(-1e3, 1e3).filter(lambda t: abs(t) > 1e-3))
def test_isgd_quadratic_contracts_for_every_learning_rate(log_lr, log_curvature, theta0):
    theta0 = torch.tensor(theta0, dtype=F64)
    trajectory = isgd.quadratic_trajectory(theta0, 10**log_lr, 30, "isgd", 10**log_curvature)
    size = trajectory.abs()
    assert torch.isfinite(trajectory).all()
    nonzero = size[:-1] > 0
    assert (size[1:][nonzero] < size[:-1][nonzero]).all()


@property_test
@given(ratio=st.floats(0.01, 1.99), log_curvature=st.floats(-3, 3))
def test_esgd_quadratic_converges_below_two_over_curvature(ratio, log_curvature):
    curvature = 10**log_curvature
    size = isgd.quadratic_trajectory(torch.tensor(1.0, dtype=F64), ratio / curvature, 50, "esgd", curvature).abs()
    assert (size[1:] <= size[:-1]).all() and size[-1] < 1


@property_test
@given(ratio=st.floats(2.01, 100), log_curvature=st.floats(-3, 3))
def test_esgd_quadratic_diverges_above_two_over_curvature(ratio, log_curvature):
    curvature = 10**log_curvature
    size = isgd.quadratic_trajectory(torch.tensor(1.0, dtype=F64), ratio / curvature, 50, "esgd", curvature).abs()
    assert (size[1:] > size[:-1]).all()


@pytest.mark.parametrize("kwargs", [dict(method="sgd"), dict(lr=0.0), dict(lr=-1.0), dict(lr=math.nan),
                                    dict(steps=-1)])
def test_quadratic_trajectory_rejects_bad_input(kwargs):
    args = dict(theta0=1.0, lr=0.5, steps=5, method="isgd") | kwargs
    with pytest.raises(ValueError):
        isgd.quadratic_trajectory(**args)


# --- least squares ----------------------------------------------------------------------------

def direct_least_squares_prox(theta, X, y, lr, mu):
    """The d x d normal equations of eq. (1)."""
    batch, dim = X.shape
    matrix = (1 + lr * mu) * torch.eye(dim, dtype=X.dtype) + lr / batch * X.T @ X
    return torch.linalg.solve(matrix, theta + lr / batch * X.T @ y), torch.linalg.cond(matrix).item()


@property_test
@given(seed=seeds, batch=sizes, dim=sizes, log_lr=log_lrs, mu=mus)
def test_prox_least_squares_equals_the_direct_solve(seed, batch, dim, log_lr, mu):
    theta, X, y = least_squares_problem(seed, batch, dim)
    lr = 10**log_lr
    expected, cond = direct_least_squares_prox(theta, X, y, lr, mu)
    got = isgd.prox_least_squares(theta, X, y, lr, mu)
    assert (got - expected).norm() <= 1e-12 * cond * (1 + expected.norm())


@property_test
@given(seed=seeds, batch=sizes, dim=sizes, log_lr=log_lrs, mu=mus)
def test_prox_least_squares_solves_the_implicit_equation(seed, batch, dim, log_lr, mu):
    theta, X, y = least_squares_problem(seed, batch, dim)
    lr = 10**log_lr
    new = isgd.prox_least_squares(theta, X, y, lr, mu)
    assert implicit_residual(least_squares_loss, new, theta, lr, mu, X, y) < 1e-13


@property_test
@given(seed=seeds, batch=sizes, dim=sizes, log_lr=log_lrs, mu=mus)
def test_prox_least_squares_in_float32(seed, batch, dim, log_lr, mu):
    theta, X, y = least_squares_problem(seed, batch, dim)
    lr = 10**log_lr
    expected, cond = direct_least_squares_prox(theta, X, y, lr, mu)
    got = isgd.prox_least_squares(theta.float(), X.float(), y.float(), lr, mu)
    assert got.dtype == torch.float32
    assert (got.double() - expected).norm() <= 1e-5 * cond * (1 + expected.norm())
    assert implicit_residual(least_squares_loss, got.double(), theta, lr, mu, X, y) < 1e-5


@pytest.mark.parametrize("lr", [1e2, 1e4, 1e6])
def test_prox_least_squares_in_float32_with_more_examples_than_features(lr):
    # X X^T is singular here; solving (c I + a X X^T) e = X theta - c y instead of working
    # in X's singular vectors loses about lr * eps, i.e. 20% at lr = 1e6 in float32.
    for seed in range(20):
        theta, X, y = least_squares_problem(seed, 10, 3)
        got = isgd.prox_least_squares(theta.float(), X.float(), y.float(), lr).double()
        assert implicit_residual(least_squares_loss, got, theta, lr, 0.0, X, y) < 1e-5


@property_test
@given(seed=seeds, batch=sizes, dim=sizes, log_lr=log_lrs, mu=mus)
def test_prox_least_squares_minimises_eq_1_against_perturbations(seed, batch, dim, log_lr, mu):
    theta, X, y = least_squares_problem(seed, batch, dim)
    lr = 10**log_lr
    new = isgd.prox_least_squares(theta, X, y, lr, mu)
    best = prox_objective(least_squares_loss, new, theta, lr, mu, X, y)
    directions = randn(seed + 1, 20, dim)
    for delta in 1e-3 * (1 + new.norm()) * directions:
        assert prox_objective(least_squares_loss, new + delta, theta, lr, mu, X, y) > best


@pytest.mark.parametrize("seed, batch, dim, lr, mu",
                         [(0, 5, 3, 0.1, 0.0), (1, 2, 6, 3.0, 0.5), (2, 8, 8, 50.0, 0.01)])
def test_prox_least_squares_matches_scipy(seed, batch, dim, lr, mu):
    theta, X, y = least_squares_problem(seed, batch, dim)
    new = isgd.prox_least_squares(theta, X, y, lr, mu)
    reference = scipy_prox(least_squares_loss, theta, lr, mu, X, y)
    torch.testing.assert_close(new, reference, rtol=1e-6, atol=1e-6)
    assert prox_objective(least_squares_loss, new, theta, lr, mu, X, y) <= (
        prox_objective(least_squares_loss, reference, theta, lr, mu, X, y) + 1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_prox_least_squares_steps_many_problems_at_once(device):
    runs, batch, dim = 4, 3, 5
    theta, X = randn(0, runs, dim, device=device), randn(1, runs, batch, dim, device=device)
    y = randn(2, runs, batch, device=device)
    lrs = torch.tensor([1e-3, 0.1, 10.0, 1e4], dtype=F64, device=device)
    batched = isgd.prox_least_squares(theta, X, y, lrs, 0.1)
    for r in range(runs):
        single = isgd.prox_least_squares(theta[r], X[r], y[r], lrs[r].item(), 0.1)
        torch.testing.assert_close(batched[r], single)


# --- logistic regression ----------------------------------------------------------------------

def logistic_problem(seed, dim, dtype=F64, device="cpu"):
    theta, x = randn(seed, dim, dtype=dtype, device=device), randn(seed + 1, dim, dtype=dtype, device=device)
    y = torch.tensor(1.0 if seed % 2 else -1.0, dtype=dtype, device=device)
    return theta, x, y


@property_test
@given(seed=seeds, dim=sizes, log_lr=st.floats(-4, 6), mu=mus, x_scale=st.sampled_from([0.0, 1e-3, 1.0, 30.0]))
def test_prox_logistic_solves_the_implicit_equation(seed, dim, log_lr, mu, x_scale):
    theta, x, y = logistic_problem(seed, dim)
    x = x_scale * x
    lr = 10**log_lr
    new = isgd.prox_logistic(theta, x, y, lr, mu)
    assert torch.isfinite(new).all()
    assert implicit_residual(logistic_loss, new, theta, lr, mu, x, y) < 1e-13


@property_test
@given(seed=seeds, dim=sizes, log_lr=st.floats(-4, 6), mu=mus, x_scale=st.sampled_from([0.0, 1e-3, 1.0, 30.0]))
def test_prox_logistic_in_float32(seed, dim, log_lr, mu, x_scale):
    theta, x, y = logistic_problem(seed, dim)
    x = x_scale * x
    lr = 10**log_lr
    new = isgd.prox_logistic(theta.float(), x.float(), y.float(), lr, mu)
    assert new.dtype == torch.float32 and torch.isfinite(new).all()
    assert implicit_residual(logistic_loss, new.double(), theta, lr, mu, x, y) < 1e-5


@property_test
@given(margin=st.floats(-50, 50), sq_norm=st.floats(0, 1e3), log_lr=st.floats(-4, 6), mu=mus)
def test_implicit_sigmoid_is_the_root_in_the_unit_interval(margin, sq_norm, log_lr, mu):
    lr = 10**log_lr
    margin_t = torch.tensor(margin, dtype=F64)
    s = isgd.solve_implicit_sigmoid(margin_t, torch.tensor(sq_norm, dtype=F64), lr, mu)
    assert 0 <= s <= 1  # sigmoid rounds to 1 in float64 for margins below -37
    fixed_point = torch.sigmoid(-(margin_t + lr * s * sq_norm) / (1 + lr * mu))
    assert abs(s - fixed_point) <= 1e-13 * s


@pytest.mark.parametrize("seed, dim, lr, mu",
                         [(0, 3, 0.1, 0.0), (1, 4, 5.0, 0.1), (2, 2, 100.0, 0.0), (3, 6, 1.0, 1.0)])
def test_prox_logistic_matches_scipy(seed, dim, lr, mu):
    theta, x, y = logistic_problem(seed, dim)
    new = isgd.prox_logistic(theta, x, y, lr, mu)
    reference = scipy_prox(logistic_loss, theta, lr, mu, x, y)
    torch.testing.assert_close(new, reference, rtol=1e-6, atol=1e-6)
    assert prox_objective(logistic_loss, new, theta, lr, mu, x, y) <= (
        prox_objective(logistic_loss, reference, theta, lr, mu, x, y) + 1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_prox_logistic_is_finite_at_huge_lr_and_zero_input(dtype):
    theta, x, y = logistic_problem(0, 5, dtype=dtype)
    huge = isgd.prox_logistic(theta, 100 * x, y, 1e6, 0.0)
    assert torch.isfinite(huge).all()
    # At lr -> inf the step lands where the example is fit: s -> 0 and theta+ moves along x.
    assert (huge - theta).norm() < 10
    zero = isgd.prox_logistic(theta, torch.zeros_like(x), y, 1e6, 0.5)
    torch.testing.assert_close(zero, theta / (1 + 1e6 * 0.5))
    torch.testing.assert_close(isgd.prox_logistic(theta, torch.zeros_like(x), y, 1e6), theta)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_prox_logistic_batched_equals_per_row_calls(device, dtype):
    runs, dim = 6, 4
    theta, x = randn(0, runs, dim, dtype=dtype, device=device), randn(1, runs, dim, dtype=dtype, device=device)
    y = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0], dtype=dtype, device=device)
    lrs = torch.tensor([1e-4, 1e-2, 1.0, 10.0, 1e3, 1e6], dtype=dtype, device=device)
    batched = isgd.prox_logistic(theta, x, y, lrs, 0.01)
    assert batched.shape == (runs, dim) and batched.dtype == dtype
    for r in range(runs):
        torch.testing.assert_close(batched[r], isgd.prox_logistic(theta[r], x[r], y[r], lrs[r].item(), 0.01))
    torch.testing.assert_close(isgd.prox_logistic(theta, x, y, 0.5), torch.stack(
        [isgd.prox_logistic(theta[r], x[r], y[r], 0.5) for r in range(runs)]))


# --- ISGD is ESGD to first order --------------------------------------------------------------

def _quadratic_pair(lr):
    theta = torch.tensor(1.3, dtype=F64)
    return isgd.isgd_quadratic_step(theta, lr, 2.0), isgd.esgd_quadratic_step(theta, lr, 2.0)


def _least_squares_pair(lr):
    theta, X, y = least_squares_problem(3, 4, 3)
    esgd = theta - lr * (gradient(least_squares_loss, theta, X, y) + 0.2 * theta)
    return isgd.prox_least_squares(theta, X, y, lr, 0.2), esgd


def _logistic_pair(lr):
    theta, x, y = logistic_problem(5, 3)
    esgd = theta - lr * (gradient(logistic_loss, theta, x, y) + 0.2 * theta)
    return isgd.prox_logistic(theta, x, y, lr, 0.2), esgd


@pytest.mark.parametrize("pair", [_quadratic_pair, _least_squares_pair, _logistic_pair])
def test_isgd_matches_esgd_to_first_order(pair):
    gaps = []
    for lr in [1e-2, 1e-3, 1e-4]:
        implicit, explicit = pair(lr)
        gaps.append((implicit - explicit).norm().item())
    assert gaps[0] / gaps[1] == pytest.approx(100, rel=0.2)
    assert gaps[1] / gaps[2] == pytest.approx(100, rel=0.05)


# --- exact ISGD by inner gradient descent -----------------------------------------------------

def test_exact_isgd_inner_fixed_point_is_the_isgd_step():
    theta, X, y = least_squares_problem(7, 6, 4)
    lr, mu = 0.8, 0.1
    current = theta.clone()
    for _ in range(400):
        grad = gradient(least_squares_loss, current, X, y)
        current = isgd.exact_isgd_inner(current, grad, theta, lr, 0.1 * lr, mu)
    torch.testing.assert_close(current, isgd.prox_least_squares(theta, X, y, lr, mu), rtol=1e-10, atol=1e-10)


def _linear_problem(seed=0, batch=8, dim=4, dtype=F64):
    torch.manual_seed(seed)
    model = torch.nn.Linear(dim, 1).to(dtype)
    X = randn(seed + 1, batch, dim, dtype=dtype)
    y = randn(seed + 2, batch, dtype=dtype)
    return model, X, y


def _theta(linear):
    return torch.cat([linear.weight.detach().reshape(-1), linear.bias.detach()])


def _with_ones(X):
    return torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1)


@pytest.mark.parametrize("inner_steps, tol", [(400, 1e-10), (100, 1e-3)])
def test_exact_isgd_converges_to_the_least_squares_prox(inner_steps, tol):
    model, X, y = _linear_problem()
    lr, mu = 0.7, 0.05
    expected = isgd.prox_least_squares(_theta(model), _with_ones(X), y, lr, mu)
    optimizer = isgd.ExactISGD(model.parameters(), lr=lr, mu=mu, inner_steps=inner_steps)
    loss_before = least_squares(model(X), y).item()
    returned = optimizer.step(BatchClosure(model, least_squares, optimizer, X, y))
    assert returned.item() == pytest.approx(loss_before)
    torch.testing.assert_close(_theta(model), expected, rtol=tol, atol=tol)


def test_exact_isgds_first_inner_step_is_an_explicit_step_at_a_tenth_of_the_rate():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).double()
    twin = copy.deepcopy(model)
    X, y = randn(1, 16, 3), torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(2))
    lr = 5.0
    optimizer = isgd.ExactISGD(model.parameters(), lr=lr, inner_steps=1)
    optimizer.step(BatchClosure(model, cross_entropy, optimizer, X, y))
    sgd = torch.optim.SGD(twin.parameters(), lr=lr / 10)
    sgd.step(BatchClosure(twin, cross_entropy, sgd, X, y))
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("factor, grows", [(0.9, False), (1.1, True)])
def test_exact_isgds_inner_descent_diverges_past_19_over_the_curvature(factor, grows):
    # On least squares with Hessian H the inner error is multiplied by 0.9 I - (lr/10) H each step,
    # so the inner descent fails for lr > 19 / lambda_max(H): 9.5 times ESGD's 2 / lambda_max.
    theta, X, y = least_squares_problem(3, 6, 4)
    curvature = float(torch.linalg.eigvalsh(X.T @ X / len(y)).max())
    lr = factor * 19 / curvature
    target = isgd.prox_least_squares(theta, X, y, lr)
    current = theta + 1e-3 * randn(4, 4)
    errors = []
    for _ in range(200):
        current = isgd.exact_isgd_inner(current, gradient(least_squares_loss, current, X, y), theta, lr, lr / 10)
        errors.append(float(torch.linalg.norm(current - target)))
    assert (errors[-1] > 1e3 * errors[0]) == grows and (errors[-1] < 1e-6) == (not grows)


def test_exact_isgd_solves_the_implicit_equation_for_a_network():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    X, y = randn(1, 16, 3), randn(2, 16)
    lr, mu = 0.5, 0.01
    optimizer = isgd.ExactISGD([{"params": model[0].parameters()}, {"params": model[2].parameters()}],
                               lr=lr, mu=mu, inner_steps=1000)
    closure = BatchClosure(model, least_squares, optimizer, X, y)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step(closure)
    closure()  # gradients at theta+
    for p, old in zip(model.parameters(), before):
        torch.testing.assert_close(p.detach(), old - lr * (p.grad + mu * p.detach()), rtol=1e-9, atol=1e-9)


def _dropout_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Dropout(0.5),
                               torch.nn.Linear(8, 1)).double()


@pytest.mark.parametrize("fixed_noise, solves", [(True, True), (False, False)])
def test_exact_isgd_with_fixed_noise_solves_the_implicit_equation_for_one_dropout_mask(fixed_noise, solves):
    model = _dropout_net()
    X, y = randn(1, 16, 3), randn(2, 16)
    lr = 0.5
    optimizer = isgd.ExactISGD(model.parameters(), lr=lr, inner_steps=1000, fixed_noise=fixed_noise)
    closure = BatchClosure(model, least_squares, optimizer, X, y)
    before = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(7)
    optimizer.step(closure)
    after_step = torch.get_rng_state()
    torch.manual_seed(7)
    closure()  # gradients at theta+ under the mask the step's first inner step drew
    # the generator is left as one closure call leaves it (fixed_noise) or as 1000 calls do
    assert torch.equal(after_step, torch.get_rng_state()) == fixed_noise
    residual = max(float((p.detach() - (old - lr * p.grad)).abs().max())
                   for p, old in zip(model.parameters(), before))
    assert (residual < 1e-9) == solves


def test_exact_isgd_without_random_draws_is_the_same_with_fixed_noise():
    results = []
    for fixed_noise in (False, True):
        model = _dropout_net().eval()  # no dropout in evaluation mode: the closure draws nothing
        X, y = randn(1, 16, 3), randn(2, 16)
        optimizer = isgd.ExactISGD(model.parameters(), lr=2.0, inner_steps=20, fixed_noise=fixed_noise)
        torch.manual_seed(3)
        optimizer.step(BatchClosure(model, least_squares, optimizer, X, y))
        results.append(([p.detach().clone() for p in model.parameters()], torch.get_rng_state()))
    for p, q in zip(results[0][0], results[1][0]):
        assert torch.equal(p, q)
    assert torch.equal(results[0][1], results[1][1])


def test_exact_isgd_requires_a_closure():
    model, _, _ = _linear_problem()
    with pytest.raises(ValueError, match="closure"):
        isgd.ExactISGD(model.parameters(), lr=0.1).step()


@pytest.mark.parametrize("kwargs", [dict(lr=0.0), dict(lr=-0.1), dict(lr=math.inf), dict(lr=math.nan),
                                    dict(lr=0.1, mu=-1.0), dict(lr=0.1, inner_steps=0),
                                    dict(lr=0.1, inner_lr_ratio=0.0)])
def test_exact_isgd_rejects_bad_hyperparameters(kwargs):
    model, _, _ = _linear_problem()
    with pytest.raises(ValueError):
        isgd.ExactISGD(model.parameters(), **kwargs)


# --- the optimizers for a linear model --------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_isgd_least_squares_optimizer_equals_the_functional_form(device):
    model, X, y = _linear_problem(batch=5, dim=3)
    lr, mu = 2.0, 0.1
    optimizer = isgd.ISGDLeastSquares(model.to(device), lr=lr, mu=mu)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    theta = _theta(model).cpu()
    for _ in range(3):
        loss_before = least_squares(model(X.to(device)), y.to(device)).item()
        returned = optimizer.step(BatchClosure(model, least_squares, optimizer, X.to(device), y.to(device)))
        assert returned.item() == pytest.approx(loss_before)
        theta = isgd.prox_least_squares(theta, _with_ones(X), y, lr, mu)
        torch.testing.assert_close(_theta(model).cpu(), theta)
        scheduler.step()
        lr /= 2
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr)


def test_isgd_least_squares_without_bias():
    model, X, y = _linear_problem(batch=5, dim=3)
    model = torch.nn.Linear(3, 1, bias=False).double()
    theta = model.weight.detach().reshape(-1).clone()
    optimizer = isgd.ISGDLeastSquares(model, lr=1.0)
    optimizer.step(BatchClosure(model, least_squares, optimizer, X, y))
    torch.testing.assert_close(model.weight.detach().reshape(-1), isgd.prox_least_squares(theta, X, y, 1.0))


@pytest.mark.parametrize("device", DEVICES)
def test_isgd_logistic_optimizer_equals_the_functional_form(device):
    model, X, _ = _linear_problem(batch=4, dim=3)
    labels = torch.tensor([1, 0, 0, 1])
    lr, mu = 5.0, 0.01
    optimizer = isgd.ISGDLogistic(model.to(device), lr=lr, mu=mu)
    theta = _theta(model).cpu()
    for x, label in zip(X, labels):
        closure = BatchClosure(model, logistic, optimizer, x[None].to(device), label[None].to(device))
        loss_before = logistic(model(x[None].to(device)), label[None].to(device)).item()
        assert optimizer.step(closure).item() == pytest.approx(loss_before)
        theta = isgd.prox_logistic(theta, torch.cat([x, torch.ones(1, dtype=F64)]), 2.0 * label - 1, lr, mu)
        torch.testing.assert_close(_theta(model).cpu(), theta)


def test_isgd_logistic_is_per_example():
    model, X, _ = _linear_problem(batch=4, dim=3)
    optimizer = isgd.ISGDLogistic(model, lr=1.0)
    with pytest.raises(ValueError, match="batch_size=1"):
        optimizer.step(BatchClosure(model, logistic, optimizer, X, torch.tensor([1, 0, 0, 1])))


@pytest.mark.parametrize("cls", [isgd.ISGDLeastSquares, isgd.ISGDLogistic])
def test_linear_optimizers_need_the_batch(cls):
    model, X, y = _linear_problem(batch=1)
    optimizer = cls(model, lr=1.0)
    with pytest.raises(ValueError, match="inputs"):
        optimizer.step(lambda: least_squares(model(X), y))
    with pytest.raises(ValueError, match="inputs"):
        optimizer.step()


@pytest.mark.parametrize("cls", [isgd.ISGDLeastSquares, isgd.ISGDLogistic])
@pytest.mark.parametrize("lr", [0.0, -1.0, math.inf, math.nan, "0.1"])
def test_linear_optimizers_reject_bad_learning_rates(cls, lr):
    model, _, _ = _linear_problem()
    with pytest.raises(ValueError, match="lr="):
        cls(model, lr=lr)


@pytest.mark.parametrize("cls", [isgd.ISGDLeastSquares, isgd.ISGDLogistic])
def test_linear_optimizers_need_a_one_output_linear(cls):
    with pytest.raises(ValueError, match="Linear"):
        cls(torch.nn.Linear(3, 2), lr=1.0)
    with pytest.raises(ValueError, match="Linear"):
        cls(torch.nn.Linear(3, 1).parameters(), lr=1.0)
    with pytest.raises(ValueError, match="mu=0.0"):
        cls(torch.nn.Linear(3, 1), lr=1.0, mu=-0.5)
