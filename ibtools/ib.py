"""Implicit backpropagation (IB): the one-dimensional problem behind every IB update.

Fagan & Iyengar, *Robust Implicit Backpropagation*, sections 3 and 4. IB updates one layer at
a time, linearising the layers above it, which for a layer with element-wise activation sigma,
input z = (x, 1) and back-propagated gradient b reduces the ISGD step to one update per output
unit j (appendix A):

    theta_j+ = theta_j / (1 + lr mu) - lr alpha_j z,                                        (7)

    alpha_j = argmin_a { b_j sigma(c_j / (1 + lr mu) - a lr ||z||^2)
                         + lr (1 + lr mu) ||z||^2 a^2 / 2 },                                (8)

with c_j = theta_j^T z the pre-activation. EB's step is (7) with alpha_j = sigma'(c_j) b_j; IB's
alpha_j tends to it as lr -> 0. With a ridge term (mu > 0) and an asymptotically linear sigma,
IB's step lr alpha_j z stays bounded as lr -> oo (section 4.1), though the bound grows as
1/mu (the relu's step for b < 0 tends to |b| ||z|| / mu - c / ||z||). The condition is
sufficient, not necessary. With mu = 0 the step need not be bounded: the relu's step for b < 0
is EB's full step lr b z wherever it moves, and the arctan's grows like lr^(1/3); but an
activation flat outside [-1, 1] (the hardtanh, the smoothstep) never moves the pre-activation
past the flat part's edge, a step of at most (|c| + 1) / ||z||, and the relu with b > 0 stops
at the hinge, a step of at most c / ||z||.

This module is the math: :func:`solve_alpha` solves (8) element-wise, in closed form for the
identity, the relu (Table 1) and the arctan (a cubic, section 4.3), and by enumerating
candidates for any :class:`PiecewiseCubic` (section 4.4), such as :data:`HARDTANH` and
:data:`SMOOTHSTEP`. :func:`ib_update` is (7) for one example, the reference the layers in
:mod:`ibtools.ib_layers` reproduce. Everything is vectorised (no Python loop over elements, no
trip to the CPU) and runs on CPU and GPU in float32 and float64.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Union

import torch

from ibtools.steps import host_waits

__all__ = [
    "PiecewiseCubic",
    "HARDTANH",
    "SMOOTHSTEP",
    "ACTIVATIONS",
    "activation_fn",
    "activation_derivative",
    "explicit_alpha",
    "solve_alpha",
    "ib_update",
]

# A piecewise cubic must be continuous at its breakpoints to this relative tolerance.
_CONTINUITY_RTOL = 1e-6


# --- 1. piecewise-cubic activations (section 4.4) -----------------------------------------------

@dataclass(frozen=True)
class PiecewiseCubic:
    """sigma(x) = a0 + a1 x + a2 x^2 + a3 x^3 with the m-th row of ``coefficients`` on the m-th
    piece, [B_{m-1}, B_m) with B_0 = -oo and B_M = +oo (section 4.4).

    ``breakpoints``: the M - 1 inner breakpoints B_1 < ... < B_{M-1}; ``coefficients``: M rows
    (a0, a1, a2, a3). sigma must be continuous, and its first and last pieces linear: with a
    jump (8) may have no minimiser, and with a quadratic or cubic tail (8) is unbounded below
    at large learning rates. At a breakpoint, :meth:`derivative` is the right-hand piece's.
    """

    breakpoints: tuple[float, ...]
    coefficients: tuple[tuple[float, float, float, float], ...]

    def __post_init__(self):
        breakpoints = tuple(float(x) for x in self.breakpoints)
        coefficients = tuple(tuple(float(a) for a in row) for row in self.coefficients)
        if not all(map(math.isfinite, breakpoints)):
            raise ValueError(f"PiecewiseCubic breakpoints must be finite, got {breakpoints}; "
                             "the first and last pieces already extend to -inf and +inf")
        if any(left >= right for left, right in zip(breakpoints, breakpoints[1:])):
            raise ValueError(f"PiecewiseCubic breakpoints must be strictly increasing, got {breakpoints}; "
                             "sort them and drop repeats")
        if len(coefficients) != len(breakpoints) + 1:
            raise ValueError(f"PiecewiseCubic needs one row of coefficients per piece, len(breakpoints) + 1 = "
                             f"{len(breakpoints) + 1}, got {len(coefficients)}")
        for row in coefficients:
            if len(row) != 4 or not all(map(math.isfinite, row)):
                raise ValueError(f"each row of PiecewiseCubic coefficients is four finite numbers "
                                 f"(a0, a1, a2, a3) of a0 + a1 x + a2 x^2 + a3 x^3, got {row}")
        for row in (coefficients[0], coefficients[-1]):
            if row[2] != 0 or row[3] != 0:
                raise ValueError(f"the first and last pieces of a PiecewiseCubic must be linear (a2 = a3 = 0), "
                                 f"got {row}: with a curved tail, eq. (8) is unbounded below at large learning "
                                 "rates; add a linear piece at each end")
        for x, left, right in zip(breakpoints, coefficients, coefficients[1:]):
            jump = abs(_polynomial(left, x) - _polynomial(right, x))
            if jump > _CONTINUITY_RTOL * (1 + abs(_polynomial(left, x))):
                raise ValueError(f"the pieces of a PiecewiseCubic must meet at each breakpoint; at x = {x} they "
                                 f"are {_polynomial(left, x)} and {_polynomial(right, x)}: with a jump, eq. (8) "
                                 "may have no minimiser")
        object.__setattr__(self, "breakpoints", breakpoints)
        object.__setattr__(self, "coefficients", coefficients)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """sigma(x), element-wise."""
        tables = _tables(self, x.dtype, x.device)
        return _cubic(tables.coefficients[_piece(tables, x)], x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """sigma'(x), element-wise."""
        tables = _tables(self, x.dtype, x.device)
        return _cubic_slope(tables.coefficients[_piece(tables, x)], x)


def _polynomial(row, x: float) -> float:
    return row[0] + x * (row[1] + x * (row[2] + x * row[3]))


def _cubic(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """a0 + a1 x + a2 x^2 + a3 x^3 with (a0, a1, a2, a3) along a's last dimension."""
    return ((a[..., 3] * x + a[..., 2]) * x + a[..., 1]) * x + a[..., 0]


def _cubic_slope(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The derivative of :func:`_cubic` in x."""
    return (3 * a[..., 3] * x + 2 * a[..., 2]) * x + a[..., 1]


class _Tables(NamedTuple):
    coefficients: torch.Tensor  # (M, 4)
    breakpoints: torch.Tensor  # (M - 1,)
    lower: torch.Tensor  # (M,) each piece's lower end, -inf for the first
    upper: torch.Tensor  # (M,) each piece's upper end, +inf for the last


@functools.lru_cache(maxsize=None)
def _tables(activation: PiecewiseCubic, dtype: torch.dtype, device: torch.device) -> _Tables:
    """A piecewise cubic's numbers as tensors, made once per dtype and device rather than at
    every call (which on a GPU would copy them from the host each time)."""
    breakpoints = torch.tensor(activation.breakpoints, dtype=dtype, device=device)
    infinity = torch.tensor([math.inf], dtype=dtype, device=device)
    return _Tables(coefficients=torch.tensor(activation.coefficients, dtype=dtype, device=device),
                   breakpoints=breakpoints,
                   lower=torch.cat([-infinity, breakpoints]),
                   upper=torch.cat([breakpoints, infinity]))


def _piece(tables: _Tables, x: torch.Tensor) -> torch.Tensor:
    """The index m of the piece [B_{m-1}, B_m) holding each x."""
    return torch.bucketize(x.contiguous(), tables.breakpoints, right=True)


HARDTANH = PiecewiseCubic(breakpoints=(-1.0, 1.0),
                          coefficients=((-1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0)))
"""The hardtanh (defined in section 4.5): -1, x, 1 on x < -1, [-1, 1], x > 1."""

SMOOTHSTEP = PiecewiseCubic(breakpoints=(-1.0, 1.0),
                            coefficients=((-1.0, 0.0, 0.0, 0.0), (0.0, 1.5, 0.0, -0.5), (1.0, 0.0, 0.0, 0.0)))
"""The smoothstep (defined in section 4.5): -1, 3x/2 - x^3/2, 1 on x < -1, [-1, 1], x > 1
(continuously differentiable)."""


# --- 2. activations by name -----------------------------------------------------------------------

Activation = Union[str, PiecewiseCubic]

ACTIVATIONS = ("identity", "relu", "arctan", "hardtanh", "smoothstep")
"""The activations :func:`solve_alpha` knows by name; any :class:`PiecewiseCubic` works too."""

_PIECEWISE_CUBICS = {"hardtanh": HARDTANH, "smoothstep": SMOOTHSTEP}


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _relu_slope(x: torch.Tensor) -> torch.Tensor:
    """1 where x > 0, else 0: relu'(0) = 0, as in torch's autograd and in Table 1 (c = 0 -> alpha = 0)."""
    return x.sign().clamp_(min=0)  # the same as (x > 0).to(x.dtype), at a third of its cost on a CPU


def _arctan_slope(x: torch.Tensor) -> torch.Tensor:
    return torch.reciprocal(1 + x * x)


_FUNCTIONS = {"identity": _identity, "relu": torch.relu, "arctan": torch.atan}
_SLOPES = {"identity": torch.ones_like, "relu": _relu_slope, "arctan": _arctan_slope}


def _resolve(activation: Activation) -> Activation:
    """A name of :data:`_FUNCTIONS`, or a PiecewiseCubic (the named ones resolved to theirs)."""
    if isinstance(activation, PiecewiseCubic) or activation in _FUNCTIONS:
        return activation
    if activation in _PIECEWISE_CUBICS:
        return _PIECEWISE_CUBICS[activation]
    raise ValueError(
        f"implicit backpropagation has no update for activation {activation!r}; use one of "
        f"{', '.join(map(repr, ACTIVATIONS))} or an ibtools.ib.PiecewiseCubic. An activation without a "
        "closed-form IB update (e.g. 'tanh', 'sigmoid') can be approximated by a PiecewiseCubic (section 4.4).")


def activation_fn(activation: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    """The element-wise function sigma named by ``activation`` (see :data:`ACTIVATIONS`)."""
    activation = _resolve(activation)
    return activation if isinstance(activation, PiecewiseCubic) else _FUNCTIONS[activation]


def activation_derivative(activation: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    """The element-wise derivative sigma' of :func:`activation_fn`, EB's factor in alpha = sigma'(c) b."""
    activation = _resolve(activation)
    return activation.derivative if isinstance(activation, PiecewiseCubic) else _SLOPES[activation]


def explicit_alpha(activation: Activation, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """EB's alpha, sigma'(c) b: what (7) uses in place of (8)'s minimiser in explicit
    backpropagation, in as few passes over the elements as the activation allows."""
    activation = _resolve(activation)
    if isinstance(activation, PiecewiseCubic):
        return b * activation.derivative(c)
    if activation == "relu":  # autograd's own relu backward: b where c > 0, else 0
        return torch.ops.aten.threshold_backward(b, c, 0)
    if activation == "arctan":
        return b / (c * c).add_(1)
    return b


# --- 3. the one-dimensional problem (8) -----------------------------------------------------------
#
# The closed-form solvers below take (b, c, reach, shrink), tensors that broadcast (shrink may be
# a number; 1 when mu = 0, and then they skip dividing by it), with
#     shrink = 1 + lr mu,   reach = lr ||z||^2,   and they use c0 = c / shrink,
# so that (8) reads  min_a  b sigma(c0 - reach a) + shrink reach a^2 / 2:  c0 is where the
# pre-activation starts (after weight decay) and reach is how far one unit of alpha moves it.
# Wherever sigma is differentiable at the new pre-activation u = c0 - reach alpha, (8) is
# stationary when shrink alpha = b sigma'(u); the solvers return alpha in that form where they
# can, which needs no division by reach (zero when z = 0) and loses no digits when reach is tiny.

def _identity_alpha(b, c, reach, shrink):
    # The other solvers' results take the shape of all their inputs by broadcasting; this one's does not.
    alpha = b / shrink
    return alpha.expand(torch.broadcast_shapes(alpha.shape, c.shape, reach.shape)).clone()


def _relu_alpha(b, c, reach, shrink):
    """Table 1. For b > 0, (8) is convex and alpha is EB's b / shrink clipped so that the
    pre-activation stops at the hinge: clamp(c0 / reach, 0, b / shrink), i.e. 0 when c <= 0,
    c0 / reach when 0 < c <= lr ||z||^2 b and b / shrink beyond. For b < 0 the minimiser is b / shrink
    (down the slope, looking past the hinge when c <= 0) or 0 (stay on the flat), whichever is
    lower: b / shrink when c > lr ||z||^2 b / 2, else 0 (the tie at equality goes to 0). Comparing
    c0 / reach with b / shrink is comparing c with lr ||z||^2 b: the table's conditions rightly use
    theta^T z, not theta^T z / (1 + lr mu). (The text around the table says "sign(b) = +1" for
    both columns; the two-case column is b < 0.) b = 0 gives 0."""
    # Both cases at once, in a few passes over the elements (this runs over every unit of every
    # example in each backward, where each pass costs about as much as the arithmetic in it):
    # min(max(c0 / reach, 0), b / shrink) is the clipped step for b > 0 and b / shrink for b < 0;
    # it is kept where c - reach min(b, 0) / 2 > 0 (c > 0 for b > 0, the jump condition for
    # b < 0; written with c and b, not c0 and b / shrink, so that a tie is exact) and zeroed
    # elsewhere, by relu's own backward kernel. At reach = 0
    # (z = 0), c0 / reach is +-inf (the hinge is out of reach: relu'(c0) b / shrink, the limit
    # z -> 0) or, at c = 0, 0 / 0 = nan, which the kernel zeroes since there c - 0 = 0 <= 0.
    if _is_one(shrink):
        full_step, hinge = b, c / reach
    else:
        full_step, hinge = b / shrink, c / (reach * shrink)
    clipped = torch.minimum(hinge.clamp_(min=0), full_step)
    keep = torch.addcmul(c, reach, b.clamp(max=0), value=-0.5)
    return torch.ops.aten.threshold_backward(clipped, keep, 0)


def _arctan_alpha(b, c, reach, shrink):
    """Section 4.3: the stationary point of (8) closest to alpha = 0, in closed form.

    With d = reach alpha = c0 - u and beta = reach b / shrink, shrink alpha = b / (1 + u^2)
    times reach / shrink is the cubic

        d (1 + (c0 - d)^2) = beta,   i.e.   d^3 - 2 c0 d^2 + (1 + c0^2) d - beta = 0.

    arctan is odd, so (b, c) -> (-b, -c) mirrors (8) and alpha: solve with beta >= 0, where
    every real root is >= 0 (d < 0 makes the left side negative) and the one closest to 0 is
    the smallest. Its derivative 3 d^2 - 4 c0 d + 1 + c0^2 has discriminant 4 (c0^2 - 3), so
    there are three real roots only when c0 > sqrt(3) (on the flat top, where IB can look past
    the bend). In the units S = max(1, |c0|, beta^(1/3)), d = S x and c0 = S g, the cubic
    x^3 - 2 g x^2 + (g^2 + S^-2) x - beta / S^3 has coefficients in [-2, 2] whatever lr, b and
    z are; Cardano's formula (one real root) or the trigonometric one (three) solves it, and
    alpha = b / (shrink (1 + u^2)) with u = S (g - x).

    Accuracy: u comes out within a few eps S, and the root closest to 0 has |u| of the order
    of S (or S ~ 1): for c0 > sqrt(3) it lies either below the left side's local maximum, at
    d <= 2 c0 / 3, so u >= c0 / 3, or beyond it, where beta > c0^3 / 27 makes |u| of the order
    of c0. So alpha is within a few eps (relative), except near a double root, which itself
    moves by sqrt(eps); Newton steps gain nothing (checked against 60-digit roots).
    """
    # Written to take few passes over the elements (fused multiply-adds, in-place steps), since
    # each pass costs about as much as its arithmetic here.
    if _is_one(shrink):
        beta, c0 = reach * b, c
    else:
        beta, c0 = reach * b / shrink, c / shrink
    c0 = c0 * torch.ones((), dtype=beta.dtype, device=beta.device).copysign(beta)  # the mirror
    beta = beta.abs_()
    scale = torch.maximum(c0.abs(), _cube_root(beta)).clamp_(min=1)
    g = c0 / scale
    inv_scale_sq = scale.reciprocal().square_()
    constant = (beta * inv_scale_sq).div_(scale)  # beta / S^3
    # The depressed cubic t^3 + p t + q in t = x - 2g/3, with
    # p = S^-2 - g^2 / 3 and q = (2/3) g (S^-2 + g^2 / 9) - beta / S^3; minus_q is -q.
    g_sq = g * g
    p = torch.addcmul(inv_scale_sq, g, g, value=-1 / 3)
    minus_q = torch.addcmul(constant, g, g_sq.mul_(1 / 9).add_(inv_scale_sq), value=-2 / 3)
    half = minus_q / 2
    discriminant = torch.addcmul(half.square(), p.square(), p, value=1 / 27)  # (q/2)^2 + (p/3)^3
    # One real root (Cardano), in the form that adds terms of one sign: t = w - p / (3w).
    # w = 0 only where p = q = 0, at the triple root t = 0 (0 / 0 there, made 0).
    w = _cube_root(discriminant.clamp(min=0).sqrt_().add_(half.abs_())).copysign_(minus_q)
    t = torch.add(w, p / w, alpha=-1 / 3).nan_to_num_(nan=0.0)
    # Three real roots where the discriminant is <= 0 on the flat top c0 > sqrt(3); below it the
    # cubic is increasing, a discriminant <= 0 there is rounding, and the two extra "roots" it
    # would give are those of a complex pair.
    three = torch.maximum(discriminant, math.sqrt(3) - c0) <= 0
    if host_waits(t) or three.any():  # (asking a GPU would cost a sync; a CPU skips the work when none)
        t = torch.where(three, _smallest_of_three(p, minus_q), t)
    # u = S (g - x) = S (g / 3 - t), the new pre-activation; alpha = b / (shrink (1 + u^2)).
    u = torch.sub(g, t, alpha=3).mul_(scale).square_().mul_(1 / 9).add_(1)
    return b / u if _is_one(shrink) else b / u.mul_(shrink)


def _cube_root(x: torch.Tensor) -> torch.Tensor:
    """x^(1/3) for x >= 0, as exp(log(x) / 3): three vectorised passes, several times faster on
    a CPU than torch.pow with a fractional exponent. 0 -> exp(-inf) = 0."""
    return x.log().div_(3).exp_()


def _smallest_of_three(p, minus_q):
    """The smallest of the three real roots 2 r cos((phi + 2 pi k) / 3) of t^3 + p t + q (k = 1),
    r = sqrt(-p / 3), cos(phi) = -q / (2 r^3). r = 0 only at the triple root t = 0, where phi
    does not matter."""
    r = (p / -3).clamp_(min=0).sqrt_()
    cos_phi = torch.nan_to_num(minus_q / (2 * r.pow(3)), nan=1.0).clamp_(-1, 1)
    return 2 * r * torch.cos((torch.acos(cos_phi) + 2 * math.pi) / 3)


def _is_one(shrink) -> bool:
    """Whether shrink = 1 + lr mu is the number 1 (mu = 0), so that dividing by it can be skipped."""
    return not isinstance(shrink, torch.Tensor) and shrink == 1


def _piecewise_alpha(activation: PiecewiseCubic, b, c0, reach, shrink):
    """Section 4.4: the global minimiser of (8), by evaluating (8) at every candidate.

    A minimiser is either a breakpoint, alpha = (c0 - B_k) / reach, or a stationary point inside
    a piece m. Multiplying the stationarity condition by reach / shrink gives, in
    u = c0 - reach alpha (the new pre-activation), the quadratic

        beta sigma_m'(u) + u - c0 = 0,   beta = reach b / shrink,

    solved in the form that stays accurate when its leading coefficient vanishes (sigma_m
    linear, or lr -> 0); a root counts if it lies in piece m, and then alpha = b sigma_m'(u) /
    shrink. The minimiser is the candidate of least (8); ties go to the one closest to 0.
    All candidates of all pieces are stacked along a new last dimension: O(M) per element.
    """
    tables = _tables(activation, b.dtype, b.device)
    a = tables.coefficients  # (M, 4)
    beta = (reach * b / shrink)[..., None]
    b_, c0_, reach_, shrink_ = b[..., None], c0[..., None], reach[..., None], shrink[..., None]
    # Stationary points: quadratic u^2 + linear u + constant = 0 per piece, (..., M), each row
    # divided by its largest coefficient so that its discriminant cannot overflow.
    quadratic, linear, constant = 3 * a[:, 3] * beta, 1 + 2 * a[:, 2] * beta, a[:, 1] * beta - c0_
    largest = torch.maximum(torch.maximum(quadratic.abs(), linear.abs()), constant.abs())
    largest = torch.where(largest > 0, largest, 1.0)
    quadratic, linear, constant = quadratic / largest, linear / largest, constant / largest
    discriminant = linear.square() - 4 * quadratic * constant
    half_sum = -(linear + torch.copysign(discriminant.clamp(min=0).sqrt(), linear)) / 2
    u = torch.stack([half_sum / quadratic, constant / half_sum], dim=-1)  # (..., M, 2)
    in_piece = ((discriminant >= 0)[..., None] & torch.isfinite(u)
                & (tables.lower[:, None] <= u) & (u <= tables.upper[:, None]))
    piece = a[:, None, :]
    stationary_alpha = (b / shrink)[..., None, None] * _cubic_slope(piece, u)
    stationary_value = (b_[..., None] * _cubic(piece, u)
                        + (shrink_ * reach_)[..., None] / 2 * stationary_alpha.square())
    # Breakpoints, where reach > 0 (at z = 0 every alpha leaves u = c0, a stationary point).
    # (8) is written with reach alpha = c0 - B_k so that a tiny reach gives +inf, not 0 * inf.
    to_break = c0_ - tables.breakpoints
    break_alpha = to_break / reach_
    break_value = b_ * _cubic(a[:-1], tables.breakpoints) + shrink_ * to_break * break_alpha / 2
    alphas = torch.cat([stationary_alpha.flatten(-2), break_alpha], dim=-1)
    values = torch.cat([stationary_value.flatten(-2), break_value], dim=-1)
    valid = torch.cat([in_piece.flatten(-2), (reach_ > 0).expand_as(break_alpha)], dim=-1)
    values = torch.where(valid, values, math.inf)
    lowest = valid & (values == values.amin(dim=-1, keepdim=True))
    closest = torch.where(lowest, alphas.abs(), math.inf).argmin(dim=-1, keepdim=True)
    return alphas.gather(-1, closest).squeeze(-1)


_ALPHA_SOLVERS = {"identity": _identity_alpha, "relu": _relu_alpha, "arctan": _arctan_alpha}


def solve_alpha(activation: Activation, b, c, z_sq, lr, mu=0.0) -> torch.Tensor:
    """alpha of eq. (8), element-wise:

        alpha = argmin_a { b sigma(c / (1 + lr mu) - a lr z_sq) + lr (1 + lr mu) z_sq a^2 / 2 },

    with b the back-propagated gradient, c = theta_j^T z the pre-activation and z_sq = ||z||^2
    (the bias's 1 included). ``activation`` is one of :data:`ACTIVATIONS` or a
    :class:`PiecewiseCubic`:

    - "identity": alpha = b / (1 + lr mu).
    - "relu": Table 1 (the global minimiser; see :func:`_relu_alpha`).
    - "arctan": the stationary point closest to 0 (section 4.3's axiom), a root of a cubic in
      closed form (see :func:`_arctan_alpha`). Where the cubic has three real roots this is not
      always the global minimiser of (8): a farther root can give a lower value (for b = 1,
      lr = 4, z_sq = 1 and c = 2.8, the roots 0.2 and 0.818 give 1.187 and 0.897).
    - "hardtanh", "smoothstep", any PiecewiseCubic: the global minimiser over all pieces;
      ties go to the alpha closest to 0 (section 4.4).

    b, c and z_sq are tensors (or numbers) that broadcast, typically (B, m), (B, m) and (B, 1);
    ``lr`` > 0 and ``mu`` >= 0 are numbers or tensors broadcasting with them (they are not
    checked here, which would cost a GPU sync). The result has the broadcast shape and the
    inputs' dtype; it is finite for all finite inputs with lr ||z||^2 |b| finite. At z = 0,
    where (8) does not depend on alpha and the step lr alpha z is 0 anyway, alpha is
    sigma'(c0) b / (1 + lr mu) with c0 = c / (1 + lr mu), the limit z -> 0 away from kinks.
    """
    activation = _resolve(activation)
    b, c, z_sq = _floating_tensors(b, c, z_sq)
    if isinstance(lr, torch.Tensor) or isinstance(mu, torch.Tensor):
        lr = torch.as_tensor(lr, dtype=b.dtype, device=b.device)
        mu = torch.as_tensor(mu, dtype=b.dtype, device=b.device)
    shrink = 1 + lr * mu  # a number when lr and mu are numbers: no tensor ops on scalars
    reach = lr * z_sq
    if isinstance(activation, PiecewiseCubic):
        shrink = torch.as_tensor(shrink, dtype=b.dtype, device=b.device)
        return _piecewise_alpha(activation, *torch.broadcast_tensors(b, c / shrink, reach, shrink))
    return _ALPHA_SOLVERS[activation](b, c, reach, shrink)


def _floating_tensors(*values) -> list[torch.Tensor]:
    """``values`` as tensors of one floating dtype (their promoted one) on the first one's device."""
    first = values[0]
    if (isinstance(first, torch.Tensor) and first.is_floating_point()
            and all(isinstance(v, torch.Tensor) and v.dtype == first.dtype and v.device == first.device
                    for v in values[1:])):
        return list(values)  # the layers' case, without the conversions' cost
    tensors = [torch.as_tensor(value) for value in values]
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return [t.to(dtype=dtype, device=tensors[0].device) for t in tensors]


# --- 4. the update of one layer for one example ----------------------------------------------------

def ib_update(theta: torch.Tensor, z: torch.Tensor, b: torch.Tensor, lr, mu=0.0,
              activation: Activation = "relu") -> torch.Tensor:
    """Eq. (7): the IB step of one layer sigma(theta z) for one example,

        theta_j+ = theta_j / (1 + lr mu) - lr alpha_j z,   alpha_j from eq. (8),

    with theta (m, n + 1) holding the bias as its last column, z (n + 1,) the input with a 1
    appended and b (m,) the back-propagated gradient dl/d sigma(theta z). Returns the new theta.
    """
    alpha = solve_alpha(activation, b, theta @ z, z @ z, lr, mu)
    return theta / (1 + lr * mu) - lr * alpha[:, None] * z
