"""The math of ibtools.sibp (Liu & Zhang, *Semi-Implicit Back Propagation*): SIBP's descent
(Theorem 4.1), the subproblems (4.1) solved to their optimality conditions, the linear CG of
ProxBP against a direct solve, the no-move limits, l1 zeros (Remark 4.1), BCD's merit
function (section 3.3), all three methods training through ibtools.train.train, and SIBP's and
ProxBP's steps free of host round trips (so that CUDA graphs can capture them), bitwise the
eager steps. Gradients of the subproblems come from autograd, not from the derivations under test."""

from dataclasses import dataclass
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ibtools import data, sibp
from ibtools.models import MLP, Arctan
from ibtools.steps import EagerStep, GraphStep, graph_safe, host_syncs
from ibtools.train import LOSSES, BatchClosure, make_step, train

F64 = torch.float64
property_test = settings(deadline=None, max_examples=25, derandomize=True)

seeds = st.integers(0, 2**31 - 1)
smooth = st.sampled_from(["identity", "tanh", "arctan", "sigmoid"])
any_activation = st.sampled_from(["relu", "tanh", "arctan", "sigmoid"])
ACTIVATION_MODULES = {"identity": nn.Identity, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
                      "arctan": Arctan}


def randn(gen, *shape, dtype=F64):
    return torch.randn(*shape, generator=gen, dtype=F64).to(dtype)


def activation(name):
    return sibp.ACTIVATIONS[ACTIVATION_MODULES[name]]


def network(seed, sizes, hidden="relu", dtype=F64):
    """Flatten, then Linear layers with ``hidden`` after each but the last (as an MLP builds it)."""
    torch.manual_seed(seed)
    layers = [nn.Flatten()]
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(fan_in, fan_out)] + ([ACTIVATION_MODULES[hidden]()] if k < len(sizes) - 2 else [])
    return nn.Sequential(*layers).to(dtype)


def classification_batch(seed, batch, features, classes, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    return randn(gen, batch, features, dtype=dtype), torch.randint(0, classes, (batch,), generator=gen)


def closure_for(model, optimizer, inputs, targets, loss="cross_entropy"):
    return BatchClosure(model, LOSSES[loss], optimizer, inputs, targets)


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


def gradient(phi, x):
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(phi(x), x)
    return grad


def layer_problem(seed, kind, act, batch=12, n=5, m=4, lam=1.0, dtype=F64):
    """A random W, b or neuron subproblem of moderate conditioning (inputs scaled 1/sqrt(n)):
    the ProxFit, its starting point, and its objective written out from the paper's formula."""
    gen = torch.Generator().manual_seed(seed)
    inputs = randn(gen, batch, n, dtype=dtype) / n ** 0.5
    weight, bias = randn(gen, m, n, dtype=dtype), randn(gen, m, dtype=dtype)
    target = act.value(randn(gen, batch, m, dtype=dtype))

    def fit(pre):
        return ((act.value(pre) - target) ** 2).sum()

    if kind == "weight":  # (4.1) for W_i
        return (sibp.weight_fit(inputs, weight, bias, act, target, lam), weight,
                lambda w: fit(inputs @ w.T + bias) + ((w - weight) ** 2).sum() / (2 * lam))
    if kind == "bias":  # (4.1) for b_i, as a column
        return (sibp.bias_fit(inputs, weight, bias, act, target, lam), bias[:, None],
                lambda b: fit(inputs @ weight.T + b[:, 0]) + ((b[:, 0] - bias) ** 2).sum() / (2 * lam))
    scaled = weight / n ** 0.5  # BCD's neurons F_i, anchored at ``inputs``
    return (sibp.neuron_fit(scaled, bias, act, target, inputs, lam), inputs,
            lambda f: fit(f @ scaled.T + bias) + ((f - inputs) ** 2).sum() / (2 * lam))


# --- Theorem 4.1: a small SIBP step does not increase the loss -----------------------------

@property_test
@given(seed=seeds, hidden=any_activation, depth=st.integers(1, 3), width=st.integers(2, 8),
       lam=st.sampled_from([0.1, 1.0, 10.0]), loss=st.sampled_from(["cross_entropy", "mse"]))
def test_a_small_sibp_step_does_not_increase_the_loss(seed, hidden, depth, width, lam, loss):
    model = network(seed, [3] + [width] * depth + [3], hidden)
    inputs, labels = classification_batch(seed + 1, 10, 3, 3)
    targets = labels if loss == "cross_entropy" else F.one_hot(labels, 3).to(F64)
    optimizer = sibp.SIBP(model, lr=1e-3, lam=lam)
    closure = closure_for(model, optimizer, inputs, targets, loss)
    before = optimizer.step(closure)
    with torch.no_grad():
        after = LOSSES[loss](model(inputs), targets)
    assert float(after) <= float(before)


def test_sibp_step_returns_the_loss_before_the_update_and_descends():
    model = network(0, [4, 6, 6, 3], "tanh")
    inputs, targets = classification_batch(1, 20, 4, 3)
    optimizer = sibp.SIBP(model, lr=0.05, lam=1.0)
    closure = closure_for(model, optimizer, inputs, targets)
    expected = float(closure())
    returned = optimizer.step(closure)
    assert not returned.requires_grad and float(returned) == pytest.approx(expected, rel=1e-12)
    assert float(closure()) < expected


# --- the subproblems: optimality and the solvers --------------------------------------------

@property_test
@given(seed=seeds, act=smooth, kind=st.sampled_from(["weight", "bias", "neuron"]),
       lam=st.sampled_from([0.1, 1.0]))
def test_nonlinear_cg_reaches_a_stationary_point_of_the_subproblem(seed, act, kind, lam):
    problem, x0, phi = layer_problem(seed, kind, activation(act), lam=lam)
    x = sibp.nonlinear_cg(problem, x0, 150)
    assert gradient(phi, x).norm() <= 1e-7 * gradient(phi, x0).norm()
    # the closed-form value and gradient the solver uses agree with autograd's
    start = problem.evaluate(x0)
    torch.testing.assert_close(start.value.sum(), phi(x0))
    torch.testing.assert_close(start.grad, gradient(phi, x0))


@property_test
@given(seed=seeds, act=any_activation, kind=st.sampled_from(["weight", "bias", "neuron"]))
def test_nonlinear_cg_never_increases_the_subproblem(seed, act, kind):
    problem, x0, phi = layer_problem(seed, kind, activation(act), lam=10.0)
    values = [float(phi(sibp.nonlinear_cg(problem, x0, k))) for k in range(7)]
    assert all(b <= a for a, b in zip(values, values[1:]))


@property_test
@given(seed=seeds, n=st.integers(1, 6), m=st.integers(1, 5), lam=st.sampled_from([0.01, 1.0, 100.0]))
def test_nonlinear_cg_with_a_linear_layer_is_the_direct_solve(seed, n, m, lam):
    """With sigma = identity, (4.1) for W is W (2 F^T F + I/lam) = 2 (T - b)^T F + W_k / lam, and
    nonlinear CG with its exact (Gauss-Newton) line search is linear CG: exact after n steps."""
    gen = torch.Generator().manual_seed(seed)
    inputs, weight, bias = randn(gen, 9, n), randn(gen, m, n), randn(gen, m)
    target = randn(gen, 9, m)
    problem = sibp.weight_fit(inputs, weight, bias, activation("identity"), target, lam)
    matrix = 2 * inputs.T @ inputs + torch.eye(n, dtype=F64) / lam
    direct = torch.linalg.solve(matrix, (2 * (target - bias).T @ inputs + weight / lam).T).T
    torch.testing.assert_close(sibp.nonlinear_cg(problem, weight, n + 2), direct, rtol=1e-7, atol=1e-8)


@property_test
@given(seed=seeds, n=st.integers(1, 8), rows=st.integers(1, 4))
def test_linear_cg_against_a_direct_solve(seed, n, rows):
    gen = torch.Generator().manual_seed(seed)
    factor = randn(gen, n + 2, n)
    matrix = factor.T @ factor + 0.1 * torch.eye(n, dtype=F64)
    rhs, x0 = randn(gen, rows, n), randn(gen, rows, n)
    x = sibp.linear_cg(lambda v: v @ matrix, rhs, x0, 3 * n)
    torch.testing.assert_close(x, torch.linalg.solve(matrix, rhs.T).T, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("with_bias", [True, False])
def test_proxbp_layer_update_against_a_direct_solve(with_bias):
    gen = torch.Generator().manual_seed(3)
    inputs, weight, bias, target = randn(gen, 30, 6), randn(gen, 4, 6), randn(gen, 4), randn(gen, 30, 4)
    lam = 0.5
    design = torch.cat([inputs, torch.ones(30, 1, dtype=F64)], 1) if with_bias else inputs
    theta = torch.cat([weight, bias[:, None]], 1) if with_bias else weight
    matrix = 2 * design.T @ design + torch.eye(design.shape[1], dtype=F64) / lam
    direct = torch.linalg.solve(matrix, (2 * target.T @ design + theta / lam).T).T
    new_weight, new_bias = sibp.prox_linear_layer(inputs, weight, bias if with_bias else None, target, lam, 20)
    torch.testing.assert_close(new_weight, direct[:, :6], rtol=1e-8, atol=1e-9)
    if with_bias:
        torch.testing.assert_close(new_bias, direct[:, 6], rtol=1e-8, atol=1e-9)
    else:
        assert new_bias is None


def test_sibp_step_is_algorithm_1_built_from_its_pieces():
    """Half step on top, (4.1) layer by layer from the top, error propagated with W^{k+1} (4.2)."""
    model = network(5, [4, 5, 6, 3], "tanh")
    inputs, targets = classification_batch(6, 15, 4, 3)
    eta, lam = 0.7, 2.0
    stack = sibp.dense_stack(model)
    with torch.no_grad():
        neurons, pre = sibp.forward(stack, inputs)
        _, delta = sibp.output_gradient(F.cross_entropy, neurons[-1], targets)
        expected = []
        for i in (2, 1, 0):
            linear, act = stack.linears[i], stack.activations[i]
            w, b = sibp.prox_layer(neurons[i], linear.weight, linear.bias, act, neurons[i + 1] - eta * delta, lam, 5)
            delta = sibp.propagate_error(delta, pre[i], act, w)
            expected = [w, b] + expected
    optimizer = sibp.SIBP(model, lr=eta, lam=lam)
    optimizer.step(closure_for(model, optimizer, inputs, targets))
    for got, want in zip(model.parameters(), expected):
        torch.testing.assert_close(got.detach(), want)


# --- the limits in which nothing moves ---------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda m: sibp.SIBP(m, lr=10.0, lam=1e-12),
    lambda m: sibp.SIBP(m, lr=1e-12, lam=10.0),
    lambda m: sibp.ProxBP(m, lr=10.0, lam=1e-12),
    lambda m: sibp.ProxBP(m, lr=1e-12, lam=10.0),
    lambda m: sibp.BCD(m, gamma=1.0, lam=1e-12),
], ids=["sibp-lam", "sibp-eta", "proxbp-lam", "proxbp-eta", "bcd-lam"])
def test_weights_do_not_move_in_the_no_move_limit(make):
    model = network(2, [4, 8, 3])
    inputs, labels = classification_batch(3, 16, 4, 3)
    optimizer = make(model)
    loss = "mse" if isinstance(optimizer, sibp.BCD) else "cross_entropy"
    targets = F.one_hot(labels, 3).to(F64) if loss == "mse" else labels
    before = weights(model)
    optimizer.step(closure_for(model, optimizer, inputs, targets, loss))
    for old, new in zip(before, model.parameters()):
        assert (new - old).abs().max() <= 1e-9


# --- l1 (Remark 4.1, section 5.5) -----------------------------------------------------------

@property_test
@given(x=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=20), threshold=st.floats(0, 10))
def test_soft_threshold_is_the_l1_proximal_map(x, threshold):
    """y = S_t(x) minimises (y - x)^2 / 2 + t |y|: x - y = t sign(y) where y != 0, |x| <= t where y = 0."""
    x = torch.tensor(x, dtype=F64)
    y = sibp.soft_threshold(x, threshold)
    nonzero = y != 0
    torch.testing.assert_close((x - y)[nonzero], threshold * torch.sign(y[nonzero]))
    assert bool((x[~nonzero].abs() <= threshold).all())
    closed_form = torch.where(x.abs() > threshold, x - threshold * torch.sign(x), torch.zeros_like(x))
    torch.testing.assert_close(y, closed_form)


def test_sibp_with_l1_zeroes_weights_exactly():
    inputs, targets = classification_batch(4, 32, 4, 3)
    zeros = {}
    for l1 in (0.0, 0.3, 1e3):
        model = network(4, [4, 16, 3])
        optimizer = sibp.SIBP(model, lr=1.0, lam=1.0, l1=l1)
        optimizer.step(closure_for(model, optimizer, inputs, targets))
        zeros[l1] = sum(int((p == 0).sum()) for p in model.parameters())
    assert zeros[0.0] == 0
    assert 0 < zeros[0.3] < zeros[1e3]
    # x = 0 is the minimiser once gamma exceeds |grad phi(0)| for every weight
    assert zeros[1e3] == sum(p.numel() for p in model.parameters())


# --- the l1 variant solved as one composite problem (Remark 4.1, section 5.5) ----------------
#
# The l1 subproblem is (4.1) + gamma ||x||_1, phi(x) + gamma ||x||_1 with phi written out from
# the paper's formula in ``layer_problem``. Soft-thresholding the smooth minimiser at lam gamma
# is its minimiser only when the fit has no curvature; l1_fit must find the true minimiser.

def composite(phi, gamma):
    return lambda x: phi(x) + gamma * x.abs().sum()


def brute_force_smooth(phi, x0, gamma, starts=4, seed=0):
    """argmin phi(x) + gamma ||x||_1 by L-BFGS-B on the smooth split x = u - v, u, v >= 0
    (where gamma (u + v) is smooth), in float64 from x0 and random starts: the best found."""
    from scipy.optimize import minimize

    shape, n = x0.shape, x0.numel()

    def split(z):
        z = torch.as_tensor(z, dtype=F64).requires_grad_(True)
        value = phi((z[:n] - z[n:]).reshape(shape)) + gamma * z.sum()
        (grad,) = torch.autograd.grad(value, z)
        return float(value.detach()), grad.numpy()

    rng = torch.Generator().manual_seed(seed)
    best = None
    for k in range(starts):
        start = x0.flatten() if k == 0 else x0.flatten() + torch.randn(n, generator=rng, dtype=F64)
        z0 = torch.cat([start.clamp_min(0), (-start).clamp_min(0)]).numpy()
        result = minimize(split, z0, jac=True, method="L-BFGS-B", bounds=[(0, None)] * (2 * n),
                          options=dict(ftol=1e-15, gtol=1e-12, maxiter=20000, maxcor=30))
        if best is None or result.fun < best.fun:
            best = result
    z = torch.as_tensor(best.x, dtype=F64)
    return (z[:n] - z[n:]).reshape(shape)


def brute_force_relu_row(inputs, offset, target, anchor, lam, gamma):
    """argmin_w ||relu(inputs w + offset) - target||^2 + ||w - anchor||^2 / (2 lam) + gamma ||w||_1
    for one row w, exhaustively: on each cell of (which examples are active) x (the sign of
    each weight) the objective is a convex quadratic and the constraints linear; the best
    cell's solution (SLSQP) is the global minimiser."""
    import itertools

    import numpy as np
    from scipy.optimize import minimize

    a, c, t, w0 = (v.numpy() for v in (inputs, offset, target, anchor))
    batch, n = a.shape
    best_value, best = np.inf, None
    for active in itertools.product([0.0, 1.0], repeat=batch):
        on = np.array(active, dtype=bool)
        for signs in itertools.product([-1.0, 1.0], repeat=n):
            s = np.array(signs)

            def value(w):
                g = a @ w + c
                return ((g[on] - t[on]) ** 2).sum() + (t[~on] ** 2).sum() + ((w - w0) ** 2).sum() / (2 * lam) \
                    + gamma * s @ w

            def grad(w):
                g = a @ w + c
                return 2 * a[on].T @ (g[on] - t[on]) + (w - w0) / lam + gamma * s

            cons = [dict(type="ineq", fun=lambda w: np.where(on, 1.0, -1.0) * (a @ w + c),
                         jac=lambda w: np.where(on, 1.0, -1.0)[:, None] * a),
                    dict(type="ineq", fun=lambda w: s * w, jac=lambda w: np.diag(s))]
            result = minimize(value, s * np.abs(w0), jac=grad, constraints=cons, method="SLSQP",
                              options=dict(ftol=1e-15, maxiter=500))
            w = result.x
            feasible = (np.where(on, 1.0, -1.0) * (a @ w + c) >= -1e-9).all() and (s * w >= -1e-9).all()
            true_value = ((np.maximum(a @ w + c, 0) - t) ** 2).sum() + ((w - w0) ** 2).sum() / (2 * lam) \
                + gamma * np.abs(w).sum()
            if feasible and true_value < best_value:
                best_value, best = true_value, w
    return torch.as_tensor(best, dtype=F64)


def assert_l1_optimal(phi, x, gamma, atol):
    """The subgradient conditions of phi + gamma ||.||_1 at x: grad phi = -gamma sign(x) where
    x != 0, |grad phi| <= gamma where x = 0."""
    grad = gradient(phi, x)
    nonzero = x != 0
    torch.testing.assert_close(grad[nonzero], -gamma * torch.sign(x[nonzero]), atol=atol, rtol=0)
    assert bool((grad[~nonzero].abs() <= gamma + atol).all())


def test_l1_fit_is_the_closed_form_on_an_orthogonal_design_and_a_soft_threshold_of_the_smooth_fit_is_not():
    """Identity activation, orthogonal inputs of unequal norms: the problem separates by weight,
    w_j = S_{gamma / c_j}(smooth_j) with curvature c_j = 2 ||X_j||^2 + 1 / lam, so the threshold is
    gamma / c_j, not lam gamma (the old answer soft-thresholded the smooth fit at lam gamma)."""
    gen = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(randn(gen, 8, 3))
    inputs = q * torch.tensor([0.3, 1.0, 3.0], dtype=F64)
    target, weight = randn(gen, 8, 2), randn(gen, 2, 3) / 2
    lam, gamma = 0.5, 0.8
    identity = activation("identity")
    problem = sibp.weight_fit(inputs, weight, None, identity, target, lam)
    phi = composite(lambda w: ((inputs @ w.T - target) ** 2).sum() + ((w - weight) ** 2).sum() / (2 * lam), gamma)
    curvature = 2 * (inputs ** 2).sum(0) + 1 / lam
    smooth = (2 * target.T @ inputs + weight / lam) / curvature
    exact = sibp.soft_threshold(smooth, gamma / curvature)
    solved = sibp.l1_fit(problem, weight, gamma, 2000, 0.0)
    torch.testing.assert_close(solved, exact, atol=1e-7, rtol=0)
    # the smooth solve, then one soft threshold at lam gamma: not the minimiser here
    old = sibp.soft_threshold(sibp.nonlinear_cg(problem, weight, 50), lam * gamma)
    torch.testing.assert_close(sibp.nonlinear_cg(problem, weight, 50), smooth)
    assert float(phi(old)) > float(phi(exact)) + 1e-3
    assert (old - exact).abs().max() > 0.05
    # and the prox_layer update is the exact one
    new, _ = sibp.prox_layer(inputs, weight, None, identity, target, lam, 5, l1=gamma, l1_iters=2000, l1_tol=1e-12)
    torch.testing.assert_close(new, exact, atol=1e-7, rtol=0)


@pytest.mark.parametrize("kind", ["weight", "bias"])
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "identity"])
def test_l1_fit_matches_a_brute_force_minimiser(kind, act):
    for seed, gamma in ((0, 0.05), (1, 0.3), (2, 1.0)):
        problem, x0, phi = layer_problem(seed, kind, activation(act), batch=6, n=3, m=2, lam=0.5)
        objective = composite(phi, gamma)
        solved = sibp.l1_fit(problem, x0, gamma, 5000, 1e-10)
        brute = brute_force_smooth(phi, x0, gamma)
        assert float(objective(solved)) <= float(objective(brute)) + 1e-10
        torch.testing.assert_close(solved, brute, atol=1e-6, rtol=0)
        assert_l1_optimal(phi, solved, gamma, 1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_l1_fit_matches_an_exhaustive_minimiser_for_relu(seed):
    """ReLU makes the fit piecewise quadratic, so the brute force runs over every activation
    pattern and sign pattern of each row."""
    gen = torch.Generator().manual_seed(seed)
    batch, n, m, lam, gamma = 4, 2, 2, 0.5, 0.3
    inputs, weight, bias = randn(gen, batch, n), randn(gen, m, n), randn(gen, m) / 2
    target = torch.relu(randn(gen, batch, m))
    relu = activation("relu")
    problem = sibp.weight_fit(inputs, weight, bias, relu, target, lam)
    solved = sibp.l1_fit(problem, weight, gamma, 20000, 0.0)
    phi = composite(lambda w: ((torch.relu(inputs @ w.T + bias) - target) ** 2).sum()
                    + ((w - weight) ** 2).sum() / (2 * lam), gamma)
    brute = torch.stack([brute_force_relu_row(inputs, bias[j].expand(batch), target[:, j], weight[j], lam, gamma)
                         for j in range(m)])
    assert float(phi(solved)) <= float(phi(brute)) + 1e-9
    torch.testing.assert_close(solved, brute, atol=1e-6, rtol=0)


@settings(deadline=None, max_examples=6, derandomize=True)
@given(seed=seeds, act=smooth, kind=st.sampled_from(["weight", "bias"]), gamma=st.floats(0.01, 2.0),
       lam=st.floats(0.05, 2.0))
def test_l1_fit_meets_the_subgradient_optimality_conditions_and_never_increases_the_objective(
        seed, act, kind, gamma, lam):
    problem, x0, phi = layer_problem(seed, kind, activation(act), lam=lam)
    objective = composite(phi, gamma)
    x = sibp.l1_fit(problem, x0, gamma, 3000, 1e-12)
    assert_l1_optimal(phi, x, gamma, 1e-5 * (1 + float(gradient(phi, x0).abs().max())))
    values = [float(objective(sibp.l1_fit(problem, x0, gamma, k, 0.0))) for k in range(8)]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "identity"])
def test_l1_fit_without_a_penalty_is_the_smooth_subproblem(act):
    for kind in ("weight", "bias"):
        problem, x0, phi = layer_problem(4, kind, activation(act))
        torch.testing.assert_close(sibp.l1_fit(problem, x0, 0.0, 5000, 1e-12), sibp.nonlinear_cg(problem, x0, 200),
                                   atol=1e-6, rtol=0)


@pytest.mark.parametrize("hidden", ["tanh", "sigmoid"])
def test_the_conv_l1_update_meets_the_optimality_conditions(hidden):
    gen = torch.Generator().manual_seed(7)
    act = activation(hidden)
    conv = nn.Conv2d(2, 3, 3, padding=1, stride=2).to(F64)
    inputs = randn(gen, 5, 2, 7, 7) / 3
    target = act.value(randn(gen, 5, 3, 4, 4))
    weight, bias, lam, gamma = randn(gen, 3, 2, 3, 3), randn(gen, 3), 0.1, 0.5
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    new_weight, new_bias = sibp.prox_conv_layer(conv, inputs, act, target, lam, 5, l1=gamma, l1_iters=2000,
                                                l1_tol=1e-12)

    def phi_w(w):
        return ((act.value(F.conv2d(inputs, w, bias, stride=2, padding=1)) - target) ** 2).sum() \
            + ((w - weight) ** 2).sum() / (2 * lam)

    def phi_b(b):
        return ((act.value(F.conv2d(inputs, new_weight, b, stride=2, padding=1)) - target) ** 2).sum() \
            + ((b - bias) ** 2).sum() / (2 * lam)

    assert_l1_optimal(phi_w, new_weight, gamma, 1e-6)
    assert_l1_optimal(phi_b, new_bias, gamma, 1e-6)
    assert 0 < int((new_weight == 0).sum()) < new_weight.numel()


# --- BCD -----------------------------------------------------------------------------------

def one_hot_batch(seed, batch=40):
    inputs, labels = classification_batch(seed, batch, 4, 3)
    return inputs, F.one_hot(labels, 3).to(F64)


def test_bcd_lowers_its_merit_function_every_step_whatever_the_order_of_the_batch():
    model = network(7, [4, 10, 10, 3])
    inputs, targets = one_hot_batch(8)
    optimizer = sibp.BCD(model, gamma=1.0, lam=10.0)
    gen = torch.Generator().manual_seed(0)
    merits = []
    for _ in range(8):
        order = torch.randperm(len(inputs), generator=gen)
        closure = closure_for(model, optimizer, inputs[order], targets[order], "mse")
        merits.append(float(optimizer.merit(closure)))
        optimizer.step(closure)
    assert all(b <= a for a, b in zip(merits, merits[1:]))
    assert merits[-1] < 0.5 * merits[0]


def test_bcd_steps_are_the_same_for_a_reshuffled_batch():
    inputs, targets = one_hot_batch(9)
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(1))
    results = []
    for second in (torch.arange(len(inputs)), order):
        model = network(9, [4, 8, 3])
        optimizer = sibp.BCD(model, gamma=1.0, lam=1.0)
        optimizer.step(closure_for(model, optimizer, inputs, targets, "mse"))
        optimizer.step(closure_for(model, optimizer, inputs[second], targets[second], "mse"))
        results.append(weights(model))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_bcd_refuses_a_different_batch_and_a_non_squared_loss():
    model = network(0, [4, 8, 3])
    inputs, targets = one_hot_batch(10)
    optimizer = sibp.BCD(model)
    optimizer.step(closure_for(model, optimizer, inputs, targets, "mse"))
    with pytest.raises(ValueError, match="batch_size equal to the training set"):
        optimizer.step(closure_for(model, optimizer, inputs[:20], targets[:20], "mse"))
    inputs, labels = classification_batch(10, 40, 4, 3)
    fresh = sibp.BCD(network(0, [4, 8, 3]))
    with pytest.raises(ValueError, match="loss='least_squares' or loss='mse'"):
        fresh.step(closure_for(model, fresh, inputs, labels, "cross_entropy"))


# --- training through the common loop ---------------------------------------------------------

@dataclass
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def iris(dtype, one_hot=False):
    d = data.load("iris")
    labels = (lambda y: F.one_hot(y, 3).to(dtype)) if one_hot else (lambda y: y)
    return Split(d.x_train.to(dtype), labels(d.y_train), d.x_test.to(dtype), labels(d.y_test))


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("method", ["SIBP", "ProxBP", "BCD"])
def test_each_method_trains_iris_through_the_common_loop(method, dtype):
    makers = {"SIBP": lambda m: sibp.SIBP(m, lr=3.0, lam=0.1),
              "ProxBP": lambda m: sibp.ProxBP(m, lr=1.0, lam=10.0),
              "BCD": lambda m: sibp.BCD(m, gamma=1.0, lam=10.0)}
    full_batch = method == "BCD"
    torch.manual_seed(0)
    model = MLP([4, 16, 3], ["relu", "identity"]).to(dtype)
    result = train(model, iris(dtype, one_hot=full_batch), makers[method],
                   loss="mse" if full_batch else "cross_entropy", epochs=30 if full_batch else 10,
                   batch_size=120 if full_batch else 16, seed=0, device="cpu")
    epochs = [row for row in result.rows if row["kind"] == "epoch"]
    assert not result.diverged
    assert epochs[-1]["train_loss"] < 0.25 * epochs[0]["train_loss"]
    assert all(p.dtype == dtype for p in model.parameters())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["SIBP", "ProxBP"])
def test_float32_on_every_device_matches_float64(method, device):
    make = {"SIBP": lambda m: sibp.SIBP(m, lr=5.0, lam=1.0),
            "ProxBP": lambda m: sibp.ProxBP(m, lr=1.0, lam=1.0)}[method]
    inputs, targets = classification_batch(11, 32, 4, 3)
    results = []
    for dtype, where in ((F64, "cpu"), (torch.float32, device)):
        model = network(11, [4, 12, 12, 3], "tanh").to(dtype=dtype, device=where)
        optimizer = make(model)
        optimizer.step(closure_for(model, optimizer, inputs.to(where), targets.to(where)))
        results.append([p.detach().to("cpu", F64) for p in model.parameters()])
    for want, got in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)


# --- models it accepts, and errors that name the fix -------------------------------------------

def test_an_mlp_and_the_same_sequential_update_alike():
    inputs, targets = classification_batch(12, 16, 4, 3)
    torch.manual_seed(12)
    mlp = MLP([4, 6, 3], ["tanh", "identity"]).to(F64)
    nested = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(4, 6), nn.Tanh()), nn.Identity(),
                           nn.Linear(6, 3)).to(F64)
    with torch.no_grad():
        for mine, theirs in zip(nested.parameters(), mlp.parameters()):
            mine.copy_(theirs)
    for model in (mlp, nested):
        optimizer = sibp.SIBP(model, lr=1.0)
        optimizer.step(closure_for(model, optimizer, inputs, targets))
    for a, b in zip(mlp.parameters(), nested.parameters()):
        torch.testing.assert_close(a, b)


def test_images_are_flattened_and_linear_layers_without_bias_work():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5, bias=False), nn.ReLU(), nn.Linear(5, 3)).to(F64)
    gen = torch.Generator().manual_seed(13)
    inputs, targets = randn(gen, 8, 1, 3, 4), torch.randint(0, 3, (8,), generator=gen)
    for optimizer in (sibp.SIBP(model, lr=1.0), sibp.ProxBP(model, lr=1.0)):
        closure = closure_for(model, optimizer, inputs, targets)
        stack = sibp.dense_stack(model)
        torch.testing.assert_close(sibp.forward(stack, stack.inputs(inputs))[0][-1], model(inputs))
        before = float(closure())
        optimizer.step(closure)
        assert float(closure()) < before


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)), "Conv2d"),
    (nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)), "Dropout"),
    (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Tanh()), "Tanh"),
    (nn.Linear(4, 3), "nn.Sequential"),
    (nn.Sequential(nn.Flatten()), "no nn.Linear"),
], ids=["conv", "dropout", "two-activations", "bare-linear", "no-linear"])
def test_unsupported_models_are_refused_with_what_is_supported(model, message):
    # SIBP trains convolutional networks (Remark 5.1); ProxBP and BCD refuse them
    for method in (sibp.ProxBP,) if message == "Conv2d" else (sibp.SIBP, sibp.ProxBP):
        with pytest.raises(ValueError, match=message):
            method(model, lr=0.1)
    with pytest.raises(ValueError, match=message):
        sibp.BCD(model)


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=-1.0), "learning rate"), (dict(lr=0.0), "learning rate"), (dict(lr=float("nan")), "learning rate"),
    (dict(lr=1.0, lam=-1.0), "lam"), (dict(lr=1.0, lam=0.0), "lam"),
    (dict(lr=1.0, cg_iters=2.5), "cg_iters"), (dict(lr=1.0, cg_iters="5"), "cg_iters"),
    (dict(lr=1.0, cg_iters=True), "cg_iters"), (dict(lr=1.0, cg_iters=0), "cg_iters"),
])
def test_bad_hyperparameters_are_refused(kwargs, message):
    model = network(0, [4, 5, 3])
    for method in (sibp.SIBP, sibp.ProxBP):
        with pytest.raises(ValueError, match=message):
            method(model, **kwargs)


def test_other_bad_arguments_are_refused():
    model = network(0, [4, 5, 3])
    with pytest.raises(ValueError, match="l1"):
        sibp.SIBP(model, lr=1.0, l1=-0.1)
    with pytest.raises(ValueError, match="gamma"):
        sibp.BCD(model, gamma=0.0)
    with pytest.raises(ValueError, match="not its parameters"):
        sibp.SIBP(model.parameters(), lr=1.0)
    optimizer = sibp.SIBP(model, lr=1.0)
    with pytest.raises(ValueError, match="BatchClosure"):
        optimizer.step(lambda: torch.tensor(0.0))
    inputs, targets = classification_batch(0, 4, 7, 3)
    with pytest.raises(ValueError, match="takes 4 features"):
        optimizer.step(closure_for(model, optimizer, inputs, targets))


# --- convolutional networks (Remark 5.1) ------------------------------------------------------

def lenet(seed, hidden="relu", dtype=F64):
    """Conv(1->4, 3) + act, max-pool 2, Conv(4->6, 3) + act, max-pool 2, flatten, Linear(6, 3),
    for 1x12x12 images (12 -> 10 -> 5 -> 3 -> 1)."""
    torch.manual_seed(seed)
    act = ACTIVATION_MODULES[hidden]
    return nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3), act()), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3), act(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6, 3)).to(dtype)


def image_batch(seed, batch=16, classes=3, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    return randn(gen, batch, 1, 12, 12, dtype=dtype), torch.randint(0, classes, (batch,), generator=gen)


def conv_parameters(model):
    return [p for m in model.modules() if isinstance(m, nn.Conv2d) for p in (m.weight, m.bias)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("hidden", ["relu", "tanh"])
def test_a_small_sibp_step_on_a_conv_net_does_not_increase_the_loss(seed, hidden):
    model = lenet(seed, hidden)
    inputs, targets = image_batch(seed + 100)
    optimizer = sibp.SIBP(model, lr=1e-3, lam=1.0)
    closure = closure_for(model, optimizer, inputs, targets)
    before = weights(model)
    loss = optimizer.step(closure)
    with torch.no_grad():
        after = F.cross_entropy(model(inputs), targets)
    assert float(after) <= float(loss)
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))  # everything moved


def test_a_conv_sibp_step_with_no_proximal_room_leaves_the_conv_weights_where_they_are():
    model = lenet(1)
    inputs, targets = image_batch(2)
    optimizer = sibp.SIBP(model, lr=10.0, lam=1e-12)
    before = [p.detach().clone() for p in conv_parameters(model)]
    optimizer.step(closure_for(model, optimizer, inputs, targets))
    for old, new in zip(before, conv_parameters(model)):
        assert (new - old).abs().max() <= 1e-9


@pytest.mark.parametrize("what", ["weight", "bias"])
@pytest.mark.parametrize("hidden", ["tanh", "sigmoid", "identity"])
def test_the_conv_subproblem_cg_reaches_a_stationary_point(what, hidden):
    gen = torch.Generator().manual_seed(7)
    act = activation(hidden)
    conv = nn.Conv2d(2, 3, 3, padding=1, stride=2).to(F64)
    inputs = randn(gen, 5, 2, 7, 7) / 3
    target = act.value(randn(gen, 5, 3, 4, 4))
    weight, bias, lam = randn(gen, 3, 2, 3, 3), randn(gen, 3), 0.1

    def phi_w(w):
        return ((act.value(F.conv2d(inputs, w, bias, stride=2, padding=1)) - target) ** 2).sum() \
            + ((w - weight) ** 2).sum() / (2 * lam)

    def phi_b(b):
        return ((act.value(F.conv2d(inputs, weight, b, stride=2, padding=1)) - target) ** 2).sum() \
            + ((b - bias) ** 2).sum() / (2 * lam)

    if what == "weight":
        problem = sibp.TensorFit(lambda w: F.conv2d(inputs, w, stride=2, padding=1), bias[None, :, None, None],
                                 act, target, weight, lam)
        phi, x0 = phi_w, weight
    else:
        problem = sibp.TensorFit(lambda b: b[None, :, None, None].expand_as(target),
                                 F.conv2d(inputs, weight, stride=2, padding=1), act, target, bias, lam)
        phi, x0 = phi_b, bias
    x = sibp.nonlinear_cg(problem, x0, 100)
    assert gradient(phi, x).norm() <= 1e-7 * gradient(phi, x0).norm()
    values = [float(phi(sibp.nonlinear_cg(problem, x0, k))) for k in range(6)]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(values, values[1:]))  # up to rounding once converged
    # prox_conv_layer solves the same two problems in turn
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    new_weight, new_bias = sibp.prox_conv_layer(conv, inputs, act, target, lam, 100)
    assert gradient(phi_w, new_weight).norm() <= 1e-7 * gradient(phi_w, weight).norm()
    torch.testing.assert_close(conv.weight.detach(), weight)  # the module is left to the optimizer


@pytest.mark.parametrize("kwargs", [dict(), dict(padding=1, stride=2), dict(padding="same", padding_mode="reflect")],
                         ids=["plain", "strided", "reflect"])
def test_conv_error_propagation_is_the_input_gradient_with_the_new_weights(kwargs):
    gen = torch.Generator().manual_seed(8)
    conv = nn.Conv2d(3, 4, 3, **kwargs).to(F64)
    inputs = randn(gen, 5, 3, 9, 9)
    new_weight = randn(gen, 4, 3, 3, 3)
    act = activation("tanh")
    pre = conv(inputs).detach()
    delta = randn(gen, *pre.shape)
    got = sibp.propagate_conv_error(delta, pre, act, conv, new_weight, inputs.shape)
    x = inputs.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(conv._conv_forward(x, new_weight, None), x, act.slope(pre) * delta)
    torch.testing.assert_close(got, want)


def test_a_conv_sibp_step_is_algorithm_1_built_from_its_pieces():
    """Pooling passes the error down by its vector-Jacobian product, flatten reshapes it, each
    conv stage is fitted by (4.1) and passes the error down with its new weights (4.2)."""
    model = lenet(9, "tanh")
    inputs, targets = image_batch(10)
    eta, lam = 0.5, 2.0
    conv1, conv2, linear = model[0][0], model[2], model[6]
    tanh = activation("tanh")
    with torch.no_grad():
        f1 = inputs
        g2 = conv1(f1)
        f2 = torch.tanh(g2)
        f3 = model[1](f2)
        g4 = conv2(f3)
        f4 = torch.tanh(g4)
        f5 = model[4](f4)
        f6 = f5.flatten(1)
        f7 = linear(f6)
        _, delta = sibp.output_gradient(F.cross_entropy, f7, targets)
        w3, b3 = sibp.prox_layer(f6, linear.weight, linear.bias, sibp.ACTIVATIONS[nn.Identity], f7 - eta * delta,
                                 lam, 5)
        delta = (delta @ w3).reshape(f5.shape)
        x = f4.clone().requires_grad_(True)
        with torch.enable_grad():
            (delta,) = torch.autograd.grad(model[4](x), x, delta)
        w2, b2 = sibp.prox_conv_layer(conv2, f3, tanh, f4 - eta * delta, lam, 5)
        delta = sibp.propagate_conv_error(delta, g4, tanh, conv2, w2, f3.shape)
        x = f2.clone().requires_grad_(True)
        with torch.enable_grad():
            (delta,) = torch.autograd.grad(model[1](x), x, delta)
        w1, b1 = sibp.prox_conv_layer(conv1, f1, tanh, f2 - eta * delta, lam, 5)
    optimizer = sibp.SIBP(model, lr=eta, lam=lam)
    optimizer.step(closure_for(model, optimizer, inputs, targets))
    for got, want in zip(model.parameters(), [w1, b1, w2, b2, w3, b3]):
        torch.testing.assert_close(got.detach(), want)


def pattern_images(seed, per_class=20, classes=3, noise=0.3, dtype=F64):
    """``per_class`` images of each class: a fixed 12x12 pattern per class plus Gaussian noise."""
    gen = torch.Generator().manual_seed(seed)
    grid = torch.arange(12, dtype=F64)
    patterns = torch.stack([torch.sin(grid[:, None] * 0.8).expand(12, 12),            # horizontal stripes
                            torch.sin(grid[None, :] * 0.8).expand(12, 12),            # vertical stripes
                            torch.sin((grid[:, None] + grid[None, :]) * 0.8)])[:classes]  # diagonal
    labels = torch.arange(classes).repeat_interleave(per_class)
    images = patterns[labels][:, None] + noise * randn(gen, len(labels), 1, 12, 12)
    return images.to(dtype), labels


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
def test_sibp_trains_a_small_conv_net_through_the_common_loop(dtype):
    x_train, y_train = pattern_images(0, dtype=dtype)
    x_test, y_test = pattern_images(1, per_class=5, dtype=dtype)
    model = lenet(0, dtype=dtype)
    result = train(model, Split(x_train, y_train, x_test, y_test), lambda m: sibp.SIBP(m, lr=10.0, lam=1.0),
                   loss="cross_entropy", epochs=6, batch_size=20, seed=0, device="cpu")
    epochs = [row for row in result.rows if row["kind"] == "epoch"]
    assert not result.diverged
    assert epochs[-1]["train_loss"] < 0.25 * epochs[0]["train_loss"]
    assert all(p.dtype == dtype for p in model.parameters())


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)), "BatchNorm2d"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)), "ReLU"),
    (nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3)), "Conv1d"),
    (nn.Sequential(nn.MaxPool2d(2), nn.Flatten()), "no nn.Linear or nn.Conv2d"),
], ids=["batchnorm", "two-activations", "conv1d", "no-trained-layer"])
def test_unsupported_conv_models_are_refused_with_what_is_supported(model, message):
    with pytest.raises(ValueError, match=message) as info:
        sibp.SIBP(model, lr=0.1)
    assert "nn.Conv2d" in str(info.value) and "nn.MaxPool2d" in str(info.value)
    with pytest.raises(ValueError, match="supported by SIBP only"):
        sibp.ProxBP(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)), lr=0.1)


# --- steps with no host round trip (CUDA graphs) ---------------------------------------------
#
# On CUDA every bool() of a device tensor waits for the device and cannot be captured in a
# graph, so the conv line search's acceptance test (on CUDA) and l1_fit's early exits (while
# captured) take a path that asks nothing. steps.host_syncs makes host_waits and capturing
# True on any device, so the CPU runs that path inside it and the eager one outside; the two
# must agree bit for bit.

class Counted:
    """A subproblem that counts how often l1_fit evaluates phi alone and with its gradient."""

    def __init__(self, problem):
        self.problem, self.values, self.evaluations = problem, 0, 0

    def __getattr__(self, name):
        return getattr(self.problem, name)

    def value(self, x):
        self.values += 1
        return self.problem.value(x)

    def evaluate(self, x):
        self.evaluations += 1
        return self.problem.evaluate(x)


def both_paths(solve):
    """solve() outside host_syncs (early exits) and inside it (no host round trip): the two
    results and the host syncs recorded inside."""
    eager = solve()
    with host_syncs() as calls:
        sync_free = solve()
    return eager, sync_free, calls


@settings(deadline=None, max_examples=24, derandomize=True)
@given(seed=seeds, kind=st.sampled_from(["weight", "bias", "neuron"]), act=any_activation,
       gamma=st.sampled_from([1e-9, 1e-3, 0.3, 30.0]), lam=st.sampled_from([0.05, 1.0, 50.0]),
       tol=st.sampled_from([1e-3, 0.1]), dtype=st.sampled_from([torch.float32, F64]))
def test_l1_fit_without_host_round_trips_is_the_early_exit_solver_bitwise(seed, kind, act, gamma, lam, tol, dtype):
    problem, x0, _ = layer_problem(seed, kind, activation(act), lam=lam, dtype=dtype)
    iters = 30
    counted = []

    def solve():
        counted.append(Counted(problem))
        return sibp.l1_fit(counted[-1], x0, gamma, iters, tol)

    eager, sync_free, calls = both_paths(solve)
    assert calls == []
    assert torch.equal(sync_free, eager)
    early, fixed = counted
    assert (fixed.evaluations, fixed.values) == (iters + 1, 1 + iters * sibp._L1_HALVINGS)  # every budget spent
    assert early.values < fixed.values  # the eager path left its backtracking early


@pytest.mark.parametrize("kind", ["weight", "bias", "conv"])
def test_the_sync_free_l1_solver_holds_x_from_where_the_early_exit_one_stopped(kind):
    """With tol = 0.1 the eager solver stops before its budget, and running on would move x:
    the sync-free solver, which does run on, returns the point where it stopped."""
    if kind == "conv":
        gen = torch.Generator().manual_seed(3)
        conv = nn.Conv2d(2, 3, 3).to(F64)
        inputs = randn(gen, 4, 2, 6, 6)
        problem = sibp.TensorFit(apply=lambda w: conv._conv_forward(inputs, w, None), offset=0.0,
                                 activation=activation("tanh"), target=torch.tanh(randn(gen, 4, 3, 4, 4)),
                                 anchor=conv.weight.detach(), lam=1.0)
        x0 = conv.weight.detach()
    else:
        problem, x0, _ = layer_problem(5, kind, activation("tanh"), lam=2.0)
    counted = []

    def solve(tol=0.1):
        counted.append(Counted(problem))
        return sibp.l1_fit(counted[-1], x0, 0.05, 40, tol)

    eager, sync_free, calls = both_paths(solve)
    assert calls == [] and torch.equal(sync_free, eager)
    assert counted[0].evaluations < 41 == counted[1].evaluations
    assert not torch.equal(solve(tol=0.0), eager)


@settings(deadline=None, max_examples=8, derandomize=True)
@given(seed=seeds, hidden=st.sampled_from(["relu", "tanh"]), gamma=st.sampled_from([1e-9, 0.05, 50.0]),
       lam=st.sampled_from([0.1, 10.0]), dtype=st.sampled_from([torch.float32, F64]))
def test_the_conv_l1_update_without_host_round_trips_is_the_early_exit_one_bitwise(seed, hidden, gamma, lam, dtype):
    gen = torch.Generator().manual_seed(seed)
    act = activation(hidden)
    conv = nn.Conv2d(2, 3, 3, padding=1, stride=2).to(dtype)
    inputs = randn(gen, 5, 2, 7, 7, dtype=dtype) / 3
    target = act.value(randn(gen, 5, 3, 4, 4, dtype=dtype))
    eager, sync_free, calls = both_paths(
        lambda: sibp.prox_conv_layer(conv, inputs, act, target, lam, 5, l1=gamma, l1_iters=20, l1_tol=0.05))
    assert calls == []
    assert all(torch.equal(a, b) for a, b in zip(sync_free, eager))


@pytest.mark.parametrize("case", ["first trial", "a later trial", "no trial"])
def test_the_conv_line_search_without_host_round_trips_takes_the_same_point_bitwise(case, monkeypatch):
    """Along -grad the Gauss-Newton step passes Armijo's test at once; told a slope 8 times
    steeper than it is, the search overshoots a linear fit's quadratic and halves the step three
    times; told one 1e12 times steeper, no trial passes and x stays."""
    gen = torch.Generator().manual_seed(7)
    act = activation("identity" if case == "a later trial" else "tanh")
    conv = nn.Conv2d(2, 3, 3, padding=1, stride=2).to(F64)
    inputs = randn(gen, 5, 2, 7, 7) / 3
    weight = randn(gen, 3, 2, 3, 3)
    problem = sibp.TensorFit(apply=lambda w: conv._conv_forward(inputs, w, None), offset=0.0, activation=act,
                             target=act.value(randn(gen, 5, 3, 4, 4)), anchor=weight, lam=1.0)
    point = problem.evaluate(weight)
    slope = -(point.grad ** 2).sum() * {"first trial": 1, "a later trial": 8, "no trial": 1e12}[case]
    priced = []  # phi evaluations per search: one per trial, and one for the point taken
    objective = sibp.TensorFit.objective

    def counted(self, x, pre):
        priced[-1] += 1
        return objective(self, x, pre)

    def search():
        priced.append(0)
        return problem.line_step(point, -point.grad, slope)

    monkeypatch.setattr(sibp.TensorFit, "objective", counted)
    eager, sync_free, calls = both_paths(search)
    assert calls == []
    assert all(torch.equal(a, b) for a, b in zip(sync_free, eager))
    stayed = torch.equal(eager.x, point.x)
    tried = priced[0] - (not stayed)  # the eager path's trials
    assert (tried, stayed) == {"first trial": (1, False), "a later trial": (4, False),
                               "no trial": (sibp._TENSOR_HALVINGS, True)}[case]
    assert priced[1] == sibp._TENSOR_HALVINGS + 1


_DENSE, _CONV = partial(network, 3, [6, 8, 3], "tanh"), partial(lenet, 3, "relu")  # each called with a dtype
STEP_CASES = {"SIBP": (_DENSE, lambda m: sibp.SIBP(m, lr=1.0)),
              "SIBP l1": (_DENSE, lambda m: sibp.SIBP(m, lr=1.0, l1=1e-3)),
              "ProxBP": (_DENSE, lambda m: sibp.ProxBP(m, lr=1.0)),
              "conv SIBP": (_CONV, lambda m: sibp.SIBP(m, lr=1.0)),
              "conv SIBP l1": (_CONV, lambda m: sibp.SIBP(m, lr=1.0, l1=1e-3, l1_iters=20))}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(STEP_CASES))
def test_sibp_and_proxbp_steps_make_no_host_round_trip_and_take_the_eager_step(case, dtype, device):
    make_model, make_optimizer = STEP_CASES[case]
    inputs, targets = image_batch(4, dtype=dtype) if case.startswith("conv") else \
        classification_batch(4, 16, 6, 3, dtype=dtype)
    inputs, targets = inputs.to(device), targets.to(device)

    def two_steps():
        model = make_model(dtype).to(device)
        optimizer = make_optimizer(model)
        closure = closure_for(model, optimizer, inputs, targets)
        return [optimizer.step(closure) for _ in range(2)] + weights(model)

    eager, sync_free, calls = both_paths(two_steps)
    assert calls == []
    assert all(torch.equal(a, b) for a, b in zip(sync_free, eager))
    assert not all(torch.equal(a, b) for a, b in zip(eager[2:], weights(make_model(dtype).to(device))))


def test_sibp_and_proxbp_are_graph_safe_and_bcd_and_sibp_with_l1_are_not():
    """graph_safe is what ibtools.train.train asks before it captures a step on CUDA. SIBP with
    l1 could be captured (the tests above run its capture path) but is not worth it."""
    cuda = torch.device("cuda")
    for optimizer in (sibp.SIBP(network(0, [4, 5, 3]), lr=1.0), sibp.SIBP(lenet(0), lr=1.0),
                      sibp.ProxBP(network(0, [4, 5, 3]), lr=1.0)):
        assert graph_safe(optimizer) and isinstance(make_step(optimizer, cuda), GraphStep)
    for optimizer in (sibp.BCD(network(0, [4, 5, 3])), sibp.SIBP(network(0, [4, 5, 3]), lr=1.0, l1=0.1),
                      sibp.SIBP(lenet(0), lr=1.0, l1=0.1)):
        assert not graph_safe(optimizer) and isinstance(make_step(optimizer, cuda), EagerStep)
