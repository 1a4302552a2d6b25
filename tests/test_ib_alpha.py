"""The math of ibtools.ib: alpha of eq. (8) of Fagan & Iyengar,

    alpha = argmin_a { b sigma(c / (1 + lr mu) - a lr ||z||^2) + lr (1 + lr mu) ||z||^2 a^2 / 2 },

and the update (7), theta_j+ = theta_j / (1 + lr mu) - lr alpha_j z. Minimisers here come from a
brute-force search in numpy (and scipy), activations from numpy, cubic roots from numpy.roots
and scipy's brentq, so the checks do not reuse the closed forms under test.

The brute force searches the bracket |alpha| <= |b| L / (1 + lr mu), L = sup |sigma'|: at a
minimiser where sigma is differentiable, (1 + lr mu) alpha = b sigma'(u); at a kink, the
one-sided derivatives of (8) change sign, so (1 + lr mu) alpha lies between b times the two
one-sided slopes. Either way |alpha| <= |b| L / (1 + lr mu). The kinks themselves,
alpha = (c / (1 + lr mu) - B) / (lr ||z||^2), are searched too.
"""

import math

import numpy as np
import pytest
import scipy.optimize
import torch
from conftest import DEVICES
from hypothesis import given, settings
from hypothesis import strategies as st

from ibtools import ib

F64 = torch.float64
F32 = torch.float32
# The GPU cases run wherever a GPU is present.

property_test = settings(deadline=None, max_examples=60, derandomize=True)


# --- independent references --------------------------------------------------------------------

def hermite(knots, values, slopes) -> ib.PiecewiseCubic:
    """The C^1 piecewise cubic through (knots, values) with these slopes, linear beyond the ends."""
    rows = [(values[0] - slopes[0] * knots[0], slopes[0], 0.0, 0.0)]
    for x0, x1, v0, v1, m0, m1 in zip(knots, knots[1:], values, values[1:], slopes, slopes[1:]):
        powers = np.array([[1, x, x**2, x**3] for x in (x0, x1)] + [[0, 1, 2 * x, 3 * x**2] for x in (x0, x1)])
        rows.append(tuple(np.linalg.solve(powers, [v0, v1, m0, m1])))
    rows.append((values[-1] - slopes[-1] * knots[-1], slopes[-1], 0.0, 0.0))
    return ib.PiecewiseCubic(breakpoints=tuple(knots), coefficients=tuple(rows))


# A wiggly piecewise cubic: sin at five knots, non-monotone, with decreasing linear tails.
_WIGGLE_KNOTS = [-3.0, -1.5, 0.0, 1.5, 3.0]
WIGGLE = hermite(_WIGGLE_KNOTS, np.sin(_WIGGLE_KNOTS), np.cos(_WIGGLE_KNOTS))
RELU_AS_CUBIC = ib.PiecewiseCubic(breakpoints=(0.0,), coefficients=((0, 0, 0, 0), (0, 1, 0, 0)))


def numpy_piecewise(pc):
    """sigma and sigma' of a PiecewiseCubic, in numpy."""
    coefficients, breakpoints = np.array(pc.coefficients), np.array(pc.breakpoints)

    def sigma(x):
        a = coefficients[np.searchsorted(breakpoints, x, side="right")]
        return a[..., 0] + a[..., 1] * x + a[..., 2] * x**2 + a[..., 3] * x**3

    def slope(x):
        a = coefficients[np.searchsorted(breakpoints, x, side="right")]
        return a[..., 1] + 2 * a[..., 2] * x + 3 * a[..., 3] * x**2

    return sigma, slope


def smoothstep(x):
    return np.where(np.abs(x) <= 1, 1.5 * x - 0.5 * x**3, np.sign(x))


_WIGGLE_SIGMA, _WIGGLE_SLOPE = numpy_piecewise(WIGGLE)

# name -> (sigma in numpy, sup |sigma'|, kinks, sigma' in numpy)
REFERENCE = {
    "identity": (lambda x: x, 1.0, [], lambda x: np.ones_like(x)),
    "relu": (lambda x: np.maximum(x, 0), 1.0, [0.0], lambda x: (x > 0) * 1.0),
    "arctan": (np.arctan, 1.0, [], lambda x: 1 / (1 + x**2)),
    "hardtanh": (lambda x: np.clip(x, -1, 1), 1.0, [-1.0, 1.0], lambda x: (np.abs(x) < 1) * 1.0),
    "smoothstep": (smoothstep, 1.5, [-1.0, 1.0], lambda x: np.where(np.abs(x) < 1, 1.5 - 1.5 * x**2, 0.0)),
    "wiggle": (_WIGGLE_SIGMA, 1.01 * np.abs(_WIGGLE_SLOPE(np.linspace(-4, 4, 200001))).max(), _WIGGLE_KNOTS,
               _WIGGLE_SLOPE),
}
ACTIVATION = {"wiggle": WIGGLE}  # test name -> what solve_alpha takes; other names as they are
GLOBAL_MINIMISERS = ["relu", "hardtanh", "smoothstep", "wiggle"]
BOUNDED = ["relu", "arctan", "hardtanh", "smoothstep", "wiggle"]


def objective(name, alpha, b, c, z_sq, lr, mu):
    """Eq. (8) in numpy float64."""
    sigma = REFERENCE[name][0]
    shrink = 1 + lr * mu
    return b * sigma(c / shrink - alpha * lr * z_sq) + lr * shrink * z_sq * alpha**2 / 2


def brute_force(name, b, c, z_sq, lr, mu):
    """The least value of (8) on a grid of the bracket and its kinks, refined by a bounded
    scalar search around the best grid point; and a scale of (8)'s terms on the bracket."""
    sigma, lipschitz, kinks, _ = REFERENCE[name]
    shrink, reach = 1 + lr * mu, lr * z_sq
    half = abs(b) * lipschitz / shrink
    grid = np.linspace(-half, half, 2001)
    at_kinks = [(c / shrink - k) / reach for k in kinks] if reach > 0 else []
    points = np.concatenate([grid, [0.0], [a for a in at_kinks if abs(a) <= half]])
    values = objective(name, points, b, c, z_sq, lr, mu)
    best_value, best = values.min(), points[values.argmin()]
    if half > 0:
        width = 2 * half / 2000
        refined = scipy.optimize.minimize_scalar(
            lambda a: objective(name, a, b, c, z_sq, lr, mu), method="bounded",
            bounds=(max(best - width, -half), min(best + width, half)), options=dict(xatol=1e-13 * half))
        best_value = min(best_value, refined.fun)
    scale = abs(b) * (abs(sigma(c / shrink)) + lipschitz * reach * half) + shrink * reach * half**2 / 2
    return best_value, half, scale


def alpha_of(name, b, c, z_sq, lr, mu, dtype=F64, device="cpu"):
    """solve_alpha on scalars, returned as a Python float."""
    def tensor(value):
        return torch.tensor(value, dtype=dtype, device=device)

    return ib.solve_alpha(ACTIVATION.get(name, name), tensor(b), tensor(c), tensor(z_sq), lr, mu).item()


def rounded(value, dtype):
    return torch.tensor(value, dtype=dtype).item()


# --- hypothesis strategies ------------------------------------------------------------------------

def signed_log_uniform(low, high):
    return st.tuples(st.sampled_from([-1.0, 1.0]), st.floats(low, high)).map(lambda p: p[0] * 10 ** p[1])


gradients = st.one_of(st.just(0.0), signed_log_uniform(-3, 3))
pre_activations = st.one_of(st.floats(-4, 4), st.sampled_from([-1.0, 0.0, 1.0, math.sqrt(3)]),
                            st.floats(-1e4, 1e4))
squared_norms = st.one_of(st.just(0.0), st.floats(-4, 4).map(lambda e: 10**e))
learning_rates = st.floats(-4, 6).map(lambda e: 10**e)
decays = st.sampled_from([0.0, 1e-3, 0.1, 1.0, 10.0])


# --- the global minimiser: relu, hardtanh, smoothstep, any piecewise cubic --------------------------

@pytest.mark.parametrize("name", GLOBAL_MINIMISERS)
@pytest.mark.parametrize("dtype, rtol", [(F64, 1e-12), (F32, 1e-6)])
@property_test
@given(b=gradients, c=pre_activations, z_sq=squared_norms, lr=learning_rates, mu=decays)
def test_alpha_minimises_eq_8(name, dtype, rtol, b, c, z_sq, lr, mu):
    b, c, z_sq = (rounded(v, dtype) for v in (b, c, z_sq))
    alpha = alpha_of(name, b, c, z_sq, lr, mu, dtype)
    best, half, scale = brute_force(name, b, c, z_sq, lr, mu)
    assert abs(alpha) <= half * (1 + 4 * rtol)
    assert objective(name, alpha, b, c, z_sq, lr, mu) <= best + rtol * scale


def test_relu_is_the_piecewise_cubic_relu():
    g = torch.Generator().manual_seed(0)
    b = torch.randn(4000, generator=g, dtype=F64) * 10 ** torch.randint(-3, 3, (4000,), generator=g)
    c = torch.randn(4000, generator=g, dtype=F64) * 3
    z_sq = torch.rand(4000, generator=g, dtype=F64) * 10
    for lr, mu in [(1e-3, 0.0), (0.3, 0.1), (50.0, 1.0), (1e6, 0.0)]:
        torch.testing.assert_close(ib.solve_alpha("relu", b, c, z_sq, lr, mu),
                                   ib.solve_alpha(RELU_AS_CUBIC, b, c, z_sq, lr, mu), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("activation, b, c", [("relu", -1.0, -2.0), (RELU_AS_CUBIC, -1.0, -2.0),
                                               ("hardtanh", 1.0, 3.0)])
def test_ties_go_to_the_alpha_closest_to_zero(activation, b, c):
    # lr ||z||^2 = 4, mu = 0, numbers exact in binary. relu: staying (alpha = 0) and looking past
    # the hinge (alpha = b) both give (8) = 0. hardtanh: staying on the top flat and moving to the
    # bottom one (alpha = (c + 1) / 4 = 1) both give (8) = 1.
    assert ib.solve_alpha(activation, torch.tensor(b, dtype=F64), torch.tensor(c, dtype=F64),
                          torch.tensor(4.0, dtype=F64), 1.0).item() == 0.0


# (b, c) -> alpha for lr = 0.5, mu = 0.2, ||z||^2 = 6: 1 + lr mu = 1.1, lr ||z||^2 b = 3 b.
TABLE_1 = [
    (1.0, -1.0, 0.0),  # b > 0, c <= 0: on the flat, stay
    (1.0, 0.0, 0.0),
    (1.0, 1.1, 1 / 3),  # b > 0, 0 < c <= 3b: stop at the hinge, alpha = c / (1.1 * 3)
    (1.0, 3.0, 1 / 1.1),  # the boundary of the last two rows: both give b / 1.1
    # Table 1 compares theta^T z itself, not theta^T z / (1 + lr mu) = c / 1.1, with lr ||z||^2 b:
    (1.0, 3.2, 1 / 1.1),  # c > 3b although c / 1.1 < 3b
    (1.0, 4.4, 1 / 1.1),  # b > 0, c > 3b: EB's step, shrunk
    (-2.0, -4.0, 0.0),  # b < 0, c <= 3b / 2 = -3: too far from the hinge to look past it
    (-2.0, -3.2, 0.0),  # c <= 3b / 2 although c / 1.1 > 3b / 2
    (-2.0, -3.0, 0.0),  # the tie at c = 3b / 2 goes to 0
    (-2.0, -2.2, -2 / 1.1),  # b < 0, 3b/2 < c <= 0: look past the hinge and descend the slope
    (-2.0, 1.1, -2 / 1.1),  # b < 0, c > 0: on the slope
    (0.0, 1.0, 0.0),
]


@pytest.mark.parametrize("b, c, expected", TABLE_1)
def test_relu_alpha_is_table_1(b, c, expected):
    assert alpha_of("relu", b, c, 6.0, 0.5, 0.2) == pytest.approx(expected, rel=1e-14, abs=1e-15)


def test_ib_update_is_eq_7_for_each_row_of_table_1():
    # One relu layer, 3 inputs plus the bias, one output unit per row of TABLE_1: theta_j
    # = (c_j - 1, 1/4, 1/2) and z = (1, 2, 1) give theta_j^T z = c_j, ||z||^2 = 6.
    b = torch.tensor([row[0] for row in TABLE_1], dtype=F64)
    c = torch.tensor([row[1] for row in TABLE_1], dtype=F64)
    alpha = torch.tensor([row[2] for row in TABLE_1], dtype=F64)
    theta = torch.stack([c - 1, torch.full_like(c, 0.25), torch.full_like(c, 0.5)], dim=1)
    z = torch.tensor([1.0, 2.0, 1.0], dtype=F64)
    new = ib.ib_update(theta, z, b, lr=0.5, mu=0.2, activation="relu")
    torch.testing.assert_close(new, theta / 1.1 - 0.5 * alpha[:, None] * z, rtol=1e-14, atol=1e-14)
    new_c = new @ z
    assert abs(new_c[TABLE_1.index((1.0, 1.1, 1 / 3))]) < 1e-14  # stopped at the hinge
    assert new_c[TABLE_1.index((-2.0, -2.2, -2 / 1.1))] > 0  # looked past the hinge: now on the slope


# --- arctan: the stationary point closest to 0 -------------------------------------------------------

def arctan_residual(alpha, b, c, z_sq, lr, mu):
    """(1 + lr mu) alpha - b sigma'(u): (8)'s derivative over lr ||z||^2; and its rounding scale."""
    shrink = 1 + lr * mu
    u = c / shrink - lr * z_sq * alpha
    residual = shrink * alpha - b / (1 + u * u)
    return abs(residual), abs(b) * (1 + abs(c / shrink) + abs(lr * z_sq * alpha))


@pytest.mark.parametrize("dtype, eps", [(F64, 2.0**-52), (F32, 2.0**-23)])
@property_test
@given(b=gradients, c=pre_activations, z_sq=squared_norms, lr=learning_rates, mu=decays)
def test_arctan_alpha_is_a_stationary_point(dtype, eps, b, c, z_sq, lr, mu):
    b, c, z_sq = (rounded(v, dtype) for v in (b, c, z_sq))
    alpha = alpha_of("arctan", b, c, z_sq, lr, mu, dtype)
    residual, scale = arctan_residual(alpha, b, c, z_sq, lr, mu)
    assert residual <= 64 * eps * scale
    assert abs(alpha) <= abs(b) / (1 + lr * mu) * (1 + 4 * eps)


def arctan_cubic(alpha, b, c, z_sq, lr, mu):
    """(1 + lr mu) alpha (1 + u^2) - b, u = c / (1 + lr mu) - lr z_sq alpha: zero where (8) is stationary."""
    shrink = 1 + lr * mu
    return shrink * alpha * (1 + (c / shrink - lr * z_sq * alpha) ** 2) - b


def arctan_cubic_roots(b, c, z_sq, lr, mu):
    """The real roots of (1 + lr mu) alpha (1 + (c0 - lr z_sq alpha)^2) - b, c0 = c / (1 + lr mu)."""
    shrink, reach = 1 + lr * mu, lr * z_sq
    c0 = c / shrink
    roots = np.roots([shrink * reach**2, -2 * shrink * c0 * reach, shrink * (1 + c0**2), -b])
    return np.sort(roots[np.abs(roots.imag) <= 1e-9 * (1 + np.abs(roots))].real)


def three_root_case(rng, position):
    """(b, c, z_sq, lr, mu) whose cubic has three real roots: beta = lr ||z||^2 b / (1 + lr mu)
    at ``position`` between d (1 + (c0 - d)^2) at its local minimum (0) and maximum (1)."""
    c0 = rng.uniform(1.8, 30)
    turning = (2 * c0 + np.array([1, -1]) * np.sqrt(c0**2 - 3)) / 3  # local min, local max of d
    low, high = turning * (1 + (c0 - turning) ** 2)
    beta = low + position * (high - low)
    z_sq, lr, mu = rng.uniform(0.5, 5), 10 ** rng.uniform(-2, 3), rng.choice([0.0, 0.01, 0.3])
    shrink = 1 + lr * mu
    sign = rng.choice([-1.0, 1.0])  # (b, c) -> (-b, -c) mirrors the problem
    return sign * beta * shrink / (lr * z_sq), sign * c0 * shrink, z_sq, lr, mu


def test_arctan_alpha_is_the_real_root_closest_to_zero():
    rng = np.random.default_rng(0)
    cases = [(rng.choice([-1, 1]) * 10 ** rng.uniform(-3, 3), rng.uniform(-20, 20), 10 ** rng.uniform(-3, 3),
              10 ** rng.uniform(-4, 4), rng.choice([0.0, 1e-3, 0.1, 1.0])) for _ in range(300)]
    cases += [three_root_case(rng, rng.uniform(0.05, 0.95)) for _ in range(300)]
    three = 0
    for b, c, z_sq, lr, mu in cases:
        roots = arctan_cubic_roots(b, c, z_sq, lr, mu)
        three += len(roots) == 3
        closest = roots[np.abs(roots).argmin()]
        assert alpha_of("arctan", b, c, z_sq, lr, mu) == pytest.approx(closest, rel=1e-9)
        assert alpha_of("arctan", b, c, z_sq, lr, mu, F32) == pytest.approx(closest, rel=2e-4)
    assert three >= 300


@pytest.mark.parametrize("dtype, rtol", [(F64, 1e-13), (F32, 1e-5)])
@pytest.mark.parametrize("c_magnitude", [10.0, 1e3, 1e5, 1e7])
def test_arctan_alpha_far_down_the_slope(dtype, rtol, c_magnitude):
    # b c < 0: (8) pushes the pre-activation further from 0, the cubic has one real root, and
    # its other two are a complex pair ~ 1 / c from the real axis (relative to their size),
    # which rounding must not mistake for real roots. The root lies in [0, b / (1 + lr mu)].
    for b in [1e-3, 1.0, 1e3]:
        for sign in [-1.0, 1.0]:
            for z_sq, lr, mu in [(1e-6, 0.2, 0.0), (1.0, 1e-3, 0.1), (3.0, 1.0, 0.0)]:
                b_, c_ = rounded(sign * b, dtype), rounded(-sign * c_magnitude, dtype)
                root = scipy.optimize.brentq(arctan_cubic, 0.0, b_ / (1 + lr * mu), args=(b_, c_, z_sq, lr, mu),
                                             xtol=1e-300, rtol=1e-15)
                assert alpha_of("arctan", b_, c_, z_sq, lr, mu, dtype) == pytest.approx(root, rel=rtol)


@pytest.mark.parametrize("dtype, eps", [(F64, 2.0**-52), (F32, 2.0**-23)])
@pytest.mark.parametrize("position", [0.0, 1e-12, 1e-6, 1 - 1e-6, 1 - 1e-12, 1.0])
def test_arctan_is_finite_and_stationary_at_double_roots(dtype, eps, position):
    # position 0 or 1: beta at a turning point of d (1 + (c0 - d)^2), the cubic's discriminant 0.
    rng = np.random.default_rng(1)
    for _ in range(50):
        b, c, z_sq, lr, mu = (rounded(v, dtype) for v in three_root_case(rng, position))
        alpha = alpha_of("arctan", b, c, z_sq, lr, mu, dtype)
        assert math.isfinite(alpha)
        residual, scale = arctan_residual(alpha, b, c, z_sq, lr, mu)
        assert residual <= 64 * eps * scale


# --- identity, and the limits lr -> 0 and lr -> oo ---------------------------------------------------

@pytest.mark.parametrize("dtype", [F32, F64])
def test_identity_alpha_is_b_over_one_plus_lr_mu(dtype):
    g = torch.Generator().manual_seed(0)
    b, c = torch.randn(2, 50, 7, generator=g, dtype=F64).to(dtype)
    z_sq = torch.rand(50, 1, generator=g, dtype=F64).to(dtype) * 100
    for lr, mu in [(1e-4, 0.0), (1.0, 0.1), (1e6, 1.0)]:
        alpha = ib.solve_alpha("identity", b, c, z_sq, lr, mu)
        assert alpha.shape == (50, 7) and alpha.dtype == dtype
        torch.testing.assert_close(alpha, b / (1 + lr * mu))


# (name, b, c) where sigma'(c) != 0 and c is no kink.
SMOOTH_POINTS = [("identity", 0.7, 2.0), ("relu", 0.8, 0.5), ("relu", -1.3, 2.0), ("arctan", 1.1, 0.4),
                 ("arctan", -0.6, -2.5), ("hardtanh", 0.9, 0.3), ("hardtanh", -1.2, -0.6),
                 ("smoothstep", 1.0, 0.5), ("smoothstep", -0.8, -0.2), ("wiggle", 0.7, 0.8),
                 ("wiggle", -1.4, 2.2)]


@pytest.mark.parametrize("name, b, c", SMOOTH_POINTS)
def test_ib_tends_to_eb_as_lr_goes_to_zero(name, b, c):
    eb = REFERENCE[name][3](c) * b
    gaps = [abs(alpha_of(name, b, c, 2.0, lr, 0.1) - eb) for lr in (1e-3, 1e-4, 1e-5)]
    assert gaps[0] / gaps[1] == pytest.approx(10, rel=0.05)
    assert gaps[1] / gaps[2] == pytest.approx(10, rel=0.01)


@pytest.mark.parametrize("name, b, c", SMOOTH_POINTS)
def test_alpha_at_z_zero_is_eb_at_the_decayed_pre_activation(name, b, c):
    # (8) is constant in alpha when z = 0; solve_alpha returns the limit z -> 0.
    lr, mu = 3.0, 0.1
    eb = REFERENCE[name][3](c / (1 + lr * mu)) * b / (1 + lr * mu)
    assert alpha_of(name, b, c, 0.0, lr, mu) == pytest.approx(eb, rel=1e-14, abs=1e-15)


@pytest.mark.parametrize("name, c", [("relu", -0.5), ("hardtanh", 1.5), ("hardtanh", -2.0), ("smoothstep", 1.2)])
def test_ib_stays_on_a_flat_at_small_lr(name, c):
    for b in (-1.0, 1.0):
        assert alpha_of(name, b, c, 2.0, 1e-3, 0.1) == 0.0


@pytest.mark.parametrize("name", BOUNDED)
@pytest.mark.parametrize("mu", [0.01, 1.0])
def test_ib_step_stays_bounded_as_lr_grows(name, mu):
    # |alpha| <= |b| L / (1 + lr mu), so |lr alpha| < |b| L / mu, where EB's step grows as lr.
    g = torch.Generator().manual_seed(0)
    b = torch.randn(1000, generator=g, dtype=F64) * 3
    c = torch.randn(1000, generator=g, dtype=F64) * 3
    z_sq = torch.rand(1000, generator=g, dtype=F64) * 10
    lipschitz = REFERENCE[name][1]
    for lr in [1e2, 1e4, 1e6, 1e9]:
        step = lr * ib.solve_alpha(ACTIVATION.get(name, name), b, c, z_sq, lr, mu)
        assert torch.isfinite(step).all()
        assert (step.abs() <= b.abs() * lipschitz / mu * (1 + 1e-12)).all()


# --- finite everywhere ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(REFERENCE))
@pytest.mark.parametrize("dtype", [F32, F64])
def test_alpha_is_finite_and_in_the_bracket_for_extreme_inputs(name, dtype):
    def values(*magnitudes):
        return torch.tensor(sorted({s * m for m in magnitudes for s in (-1, 1)}), dtype=dtype)

    b = values(0.0, 1e-30, 1e-6, 1.0, 1e6)[:, None, None, None, None]
    c = values(0.0, 1e-30, 1e-3, 1.0, math.sqrt(3), 2.0, 1e6, 1e12)[:, None, None, None]
    z_sq = torch.tensor([0.0, 1e-30, 1e-6, 1.0, 1e6], dtype=dtype)[:, None, None]
    lr = torch.tensor([1e-4, 1.0, 1e6], dtype=dtype)[:, None]
    mu = torch.tensor([0.0, 1.0], dtype=dtype)
    alpha = ib.solve_alpha(ACTIVATION.get(name, name), b, c, z_sq, lr, mu)
    assert alpha.shape == (9, 15, 5, 3, 2) and alpha.dtype == dtype
    assert torch.isfinite(alpha).all()
    bracket = b.abs() * REFERENCE[name][1] / (1 + lr * mu)
    assert (alpha.abs() <= bracket * (1 + 1e-5)).all()


# --- shapes, dtypes, devices ------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name", list(REFERENCE))
def test_alpha_broadcasts_a_batch_and_many_learning_rates(name, device, dtype):
    g = torch.Generator().manual_seed(0)
    batch, m = 5, 4
    b = (torch.randn(batch, m, generator=g, dtype=F64) * 2).to(dtype=dtype, device=device)
    c = (torch.randn(batch, m, generator=g, dtype=F64) * 3).to(dtype=dtype, device=device)
    z_sq = (torch.rand(batch, 1, generator=g, dtype=F64) * 5).to(dtype=dtype, device=device)
    lrs = torch.tensor([1e-3, 1.0, 1e3], dtype=dtype, device=device)[:, None, None]
    activation = ACTIVATION.get(name, name)
    alpha = ib.solve_alpha(activation, b, c, z_sq, lrs, 0.1)
    assert alpha.shape == (3, batch, m) and alpha.dtype == dtype and alpha.device.type == device
    for r, lr in enumerate([1e-3, 1.0, 1e3]):
        for i in range(batch):
            for j in range(m):
                single = ib.solve_alpha(activation, b[i, j].cpu(), c[i, j].cpu(), z_sq[i, 0].cpu(), lr, 0.1)
                torch.testing.assert_close(alpha[r, i, j].cpu(), single)


def test_alpha_takes_numbers_and_promotes_dtypes():
    assert ib.solve_alpha("relu", 1.0, 0.5, 2.0, 0.1).item() == pytest.approx(1.0)
    mixed = ib.solve_alpha("arctan", torch.ones(3, dtype=F32), torch.zeros(3, dtype=F64), torch.ones(1), 0.1)
    assert mixed.dtype == F64


# --- ib_update solves eq. (6) ---------------------------------------------------------------------

def eq_6(name, theta_j, z, b_j, lr, mu):
    sigma = REFERENCE[name][0]
    return 2 * lr * b_j * sigma(theta_j @ z) + lr * mu * theta_j @ theta_j


@pytest.mark.parametrize("name", ["identity", "relu", "arctan", "hardtanh", "smoothstep", "wiggle"])
@pytest.mark.parametrize("lr, mu", [(0.05, 0.0), (1.0, 0.1), (20.0, 0.5)])
def test_ib_update_minimises_eq_6_for_each_unit(name, lr, mu):
    # Eq. (6): theta_j+ = argmin 2 lr b_j sigma(theta_j^T z) + lr mu ||theta_j||^2 + ||theta_j - theta_j~||^2,
    # searched by Powell from the old and the new theta_j and from random points.
    rng = np.random.default_rng(2)
    m, n = 4, 3
    theta = rng.normal(size=(m, n + 1)) * 0.5
    z = np.append(rng.normal(size=n) * 0.5, 1.0)
    b = rng.normal(size=m) * 2
    new = ib.ib_update(torch.tensor(theta), torch.tensor(z), torch.tensor(b), lr, mu, ACTIVATION.get(name, name))
    assert new.shape == (m, n + 1) and new.dtype == F64
    new = new.numpy()
    for j in range(m):
        def f(t):
            return eq_6(name, t, z, b[j], lr, mu) + (t - theta[j]) @ (t - theta[j])

        starts = [theta[j], new[j]] + list(rng.normal(size=(4, n + 1)))
        found = min(scipy.optimize.minimize(f, x0, method="Powell", options=dict(xtol=1e-10, ftol=1e-14)).fun
                    for x0 in starts)
        assert f(new[j]) <= found + 1e-9 * (1 + abs(found))


# --- activations --------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_activation_functions_and_derivatives(device, dtype):
    x = torch.linspace(-4, 4, 801, dtype=dtype, device=device)  # crosses every breakpoint
    x64 = x.cpu().double().numpy()
    for name in ["identity", "relu", "arctan", "hardtanh", "smoothstep", "wiggle"]:
        sigma, _, kinks, slope = REFERENCE[name]
        activation = ACTIVATION.get(name, name)
        got = ib.activation_fn(activation)(x)
        assert got.dtype == dtype and got.device == x.device
        np.testing.assert_allclose(got.cpu().double().numpy(), sigma(x64), rtol=1e-6, atol=1e-6)
        # Away from kinks, sigma' is numpy's and autograd's (so EB by autograd is EB by sigma').
        leaf = x.clone().requires_grad_(True)
        (autograd,) = torch.autograd.grad(ib.activation_fn(activation)(leaf).sum(), leaf)
        got_slope = ib.activation_derivative(activation)(x)
        away = np.min(np.abs(x64[:, None] - np.array(kinks + [math.inf])), axis=1) > 1e-3
        np.testing.assert_allclose(got_slope.cpu().double().numpy()[away], slope(x64)[away], rtol=1e-6, atol=1e-6)
        away = torch.from_numpy(away).to(device)
        torch.testing.assert_close(got_slope[away], autograd[away])
    # At a kink, the piece on the right: relu'(0) = 0, hardtanh'(-1) = 1, hardtanh'(1) = 0.
    at = torch.tensor([-1.0, 0.0, 1.0], dtype=dtype, device=device)
    assert ib.activation_derivative("relu")(at).tolist() == [0.0, 0.0, 1.0]
    assert ib.activation_derivative("hardtanh")(at).tolist() == [1.0, 1.0, 0.0]
    assert ib.activation_fn("hardtanh") is ib.HARDTANH and ib.activation_fn("smoothstep") is ib.SMOOTHSTEP


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "softplus", "RELU", None])
def test_unknown_activations_name_the_fix(name):
    for call in (ib.activation_fn, ib.activation_derivative,
                 lambda a: ib.solve_alpha(a, torch.ones(1), torch.ones(1), torch.ones(1), 0.1)):
        with pytest.raises(ValueError, match="PiecewiseCubic") as error:
            call(name)
        assert "'relu'" in str(error.value) and "'smoothstep'" in str(error.value)


def test_piecewise_cubic_normalises_its_numbers():
    pc = ib.PiecewiseCubic(breakpoints=np.array([0.0]), coefficients=[[0, 0, 0, 0], np.array([0, 1, 0, 0])])
    assert pc == RELU_AS_CUBIC and hash(pc) == hash(RELU_AS_CUBIC)
    assert pc.breakpoints == (0.0,) and pc.coefficients == ((0.0,) * 4, (0.0, 1.0, 0.0, 0.0))


@pytest.mark.parametrize("breakpoints, coefficients, match", [
    ((1.0, 0.0), ((0, 0, 0, 0),) * 3, "strictly increasing"),
    ((0.0, 0.0), ((0, 0, 0, 0),) * 3, "strictly increasing"),
    ((0.0, math.inf), ((0, 0, 0, 0),) * 3, "finite"),
    ((0.0,), ((0, 0, 0, 0),) * 3, "one row of coefficients per piece"),
    ((0.0,), ((0, 0, 0),) * 2, "four finite numbers"),
    ((0.0,), ((0, 0, 0, 0), (0, math.nan, 0, 0)), "four finite numbers"),
    ((0.0,), ((0, 0, 0, 0), (0, 1, 1, 0)), "linear"),
    ((), ((0, 0, 0, 1),), "linear"),
    ((0.0,), ((0, 0, 0, 0), (1, 1, 0, 0)), "meet"),
])
def test_piecewise_cubic_rejects_what_eq_8_cannot_use(breakpoints, coefficients, match):
    with pytest.raises(ValueError, match=match):
        ib.PiecewiseCubic(breakpoints=breakpoints, coefficients=coefficients)


def test_the_arctan_alpha_is_the_root_closest_to_zero_even_where_a_farther_root_is_lower():
    """Section 4.3's axiom: the smaller step, not the minimiser of (8). At b = 1, lr = 4,
    ||z||^2 = 1, c = 2.8 the stationary points are 0.2, 0.382 and 0.818, and (8) is lower at 0.818."""
    got = float(ib.solve_alpha("arctan", torch.tensor(1.0, dtype=F64), torch.tensor(2.8, dtype=F64),
                               torch.tensor(1.0, dtype=F64), 4.0))
    roots = np.roots([16.0, -2 * 2.8 * 4, 1 + 2.8**2, -1.0]).real

    def objective(a):
        return np.arctan(2.8 - 4 * a) + 4 * a**2 / 2

    assert got == pytest.approx(min(roots, key=abs), abs=1e-12) == pytest.approx(0.2, abs=1e-12)
    assert objective(max(roots)) < objective(got) - 0.25


# --- section 4.1's bound: mu > 0 is sufficient, not necessary ----------------------------------

@pytest.mark.parametrize("name", ["hardtanh", "smoothstep"])
def test_at_mu_0_flat_tailed_activations_move_q_at_most_past_the_flat_edge(name):
    """(8) at mu = 0 with sigma flat outside [-1, 1]: no minimiser carries u = c - lr ||z||^2 alpha
    beyond the flat part's edge, so the step moves q by at most |c| + 1 at every learning rate."""
    rng = np.random.default_rng(0)
    b = torch.tensor(rng.choice([-1.0, 1.0], 4000) * 10 ** rng.uniform(-2, 2, 4000), dtype=F64)
    c = torch.tensor(rng.normal(0, 3, 4000), dtype=F64)
    z_sq = torch.tensor(10 ** rng.uniform(-2, 2, 4000), dtype=F64)
    for lr in (1.0, 1e3, 1e6, 1e9):
        moved = (lr * z_sq * ib.solve_alpha(name, b, c, z_sq, lr, 0.0)).abs()
        assert (moved <= c.abs() + 1 + 1e-9 * (1 + c.abs())).all()


@pytest.mark.parametrize("mu", [0.1, 1e-2, 1e-4])
def test_with_a_ridge_the_relus_step_for_negative_b_tends_to_norm_z_over_mu(mu):
    """On the slope (c > 0) with b < 0, Table 1 gives alpha = b / (1 + lr mu); the step of (7),
    theta (1/(1 + lr mu) - 1) - lr alpha z with theta = c z / ||z||^2, tends to
    |b| ||z|| / mu - c / ||z|| as lr -> oo: bounded, but growing as 1/mu as the ridge shrinks."""
    b, c, z_sq = -2.0, 0.5, 4.0
    theta, z = torch.tensor([c / 2, 0.0], dtype=F64), torch.tensor([2.0, 0.0], dtype=F64)
    for lr, rtol in ((1e6 / mu, 1e-5), (1e12 / mu, 1e-11)):
        alpha = ib.solve_alpha("relu", torch.tensor(b, dtype=F64), torch.tensor(c, dtype=F64),
                               torch.tensor(z_sq, dtype=F64), lr, mu)
        step = float(torch.linalg.norm(theta * (1 / (1 + lr * mu) - 1) - lr * alpha * z))
        assert step == pytest.approx(abs(b) * 2 / mu - c / 2, rel=rtol)
