"""Semi-implicit back propagation (SIBP), and the two implicit methods it is compared with.

Liu & Zhang, *Semi-Implicit Back Propagation*, J. Nonlinear Var. Anal. 7 (2023). A network of
N - 1 fully connected layers maps the inputs F_1 = X through

    G_{i+1} = W_i F_i + b_i,    F_{i+1} = sigma(G_{i+1}),    i = 1 ... N - 1        (2.1)

and training minimises J = L(F_N, Y) (2.2). In code examples are rows: F_i is (B, n_i) and
G_{i+1} = F_i W_i^T + b_i, so every product below is the paper's with its factors transposed.

* :class:`SIBP` (section 4, Algorithm 1) takes a gradient half step on the top neurons,
  F_N^{k+1/2} = F_N - eta dL/dF_N, and then, from the top layer down, fits each layer to the
  half-stepped neurons above it by the proximal subproblems (4.1), solved by a few nonlinear
  conjugate-gradient iterations (:func:`nonlinear_cg`), and hands the layer below its own half
  step through the error propagation (4.2), which uses the weights just updated.
* :class:`ProxBP` (section 3.2, Frerix et al. 2018) fits each layer's pre-activations, moved
  by a back-propagated gradient step, by a proximal linear least-squares problem solved by
  linear conjugate gradient (:func:`linear_cg`).
* :class:`BCD` (section 3.3, Zeng et al. 2019) keeps every example's neurons as variables
  and does block coordinate descent on the penalised merit function J_BCD.

Scale. J is the loss the training loop computes, a mean over the B examples of the batch
(the paper's J_B, section 4.3), so dL/dF_N is O(1/B) per example; the norms in (4.1) are
Frobenius norms summed over the batch, as written. For small lambda the weight step of the
top layer's (4.1) is then W_N-1 - 2 lambda eta dJ/dW_N-1 to first order, and either lambda or
eta going to zero leaves every weight where it is.

The subproblems separate over the rows of the unknown (one output unit of W_i, one
coordinate of b_i, one example of BCD's neurons), so the conjugate-gradient iterations run
on all rows at once, each row with its own step length and conjugacy coefficient, as
ProxBP's block conjugate gradient does. Everything is vectorised over examples and units
and runs on the model's device and dtype (CPU or CUDA, float32 or float64).

Convolutional networks (Remark 5.1). :class:`SIBP` also trains an ``nn.Sequential`` of
``nn.Conv2d`` layers (each with one activation), max or average pooling, ``nn.Flatten`` and
``nn.Linear`` layers (:func:`conv_stack`). A convolution stage is fitted by (4.1) with the
convolution in place of the matrix product, its W then its b, each by a whole-tensor
Polak-Ribiere+ CG with a backtracking line search (:func:`prox_conv_layer`,
:func:`nonlinear_cg`), and passes the error down by (4.2) as the transposed convolution of
sigma'(G) * delta with the new weights (:func:`propagate_conv_error`); a pooling stage has no
parameters and passes it down by its vector-Jacobian product at the current forward values,
a flatten stage reshapes it. ProxBP and BCD train fully connected networks only.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as nnf
from torch import nn

from ibtools.models import MLP, Arctan
from ibtools.steps import capturing, host_waits
from ibtools.train import check_lr, least_squares, mean_squared_error

__all__ = [
    "Activation",
    "ACTIVATIONS",
    "DenseStack",
    "dense_stack",
    "forward",
    "output_gradient",
    "soft_threshold",
    "linear_cg",
    "FitPoint",
    "ProxFit",
    "weight_fit",
    "bias_fit",
    "neuron_fit",
    "nonlinear_cg",
    "l1_fit",
    "L1_ITERS",
    "L1_TOL",
    "prox_layer",
    "propagate_error",
    "prox_linear_layer",
    "ConvBlock",
    "ConvStack",
    "conv_stack",
    "conv_forward",
    "TensorFit",
    "prox_conv_layer",
    "propagate_conv_error",
    "SIBP",
    "ProxBP",
    "BCD",
]

# Sufficient decrease a step of the nonlinear CG line search must give (Armijo's constant),
# and how many halvings of the Gauss-Newton step it tries before it stays put.
_ARMIJO = 1e-4
_HALVINGS = 4
# The l1 variant's proximal-gradient solver (l1_fit): its iteration budget and tolerance on
# the optimality residual, relative to the starting point's, by default, and how many
# halvings of the step one iteration may take.
L1_ITERS = 50
L1_TOL = 1e-3
_L1_HALVINGS = 40


# --- the network -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Activation:
    """An element-wise activation sigma and its derivative (Assumption 4.2 asks sigma' >= 0)."""

    name: str
    value: Callable[[torch.Tensor], torch.Tensor]
    slope: Callable[[torch.Tensor], torch.Tensor]


def _sigmoid_slope(g: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(g)
    return s * (1 - s)


ACTIVATIONS: dict[type, Activation] = {
    nn.Identity: Activation("identity", lambda g: g, torch.ones_like),
    nn.ReLU: Activation("relu", torch.relu, lambda g: (g > 0).to(g.dtype)),
    nn.Tanh: Activation("tanh", torch.tanh, lambda g: 1 - torch.tanh(g) ** 2),
    nn.Sigmoid: Activation("sigmoid", torch.sigmoid, _sigmoid_slope),
    Arctan: Activation("arctan", torch.atan, lambda g: 1 / (1 + g * g)),
}
_IDENTITY = ACTIVATIONS[nn.Identity]


@dataclass(frozen=True)
class DenseStack:
    """The layers (W_i, b_i, sigma) of a fully connected network, in order, and whether the
    network flattens its inputs first."""

    linears: tuple[nn.Linear, ...]
    activations: tuple[Activation, ...]
    flatten: bool

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """F_1: the batch as the first layer sees it, on the weights' dtype and device."""
        weight = self.linears[0].weight
        if self.flatten:
            x = x.flatten(1)
        if x.dim() != 2 or x.shape[1] != weight.shape[1]:
            raise ValueError(
                f"the first layer takes {weight.shape[1]} features per example, got inputs of shape "
                f"{tuple(x.shape)}; put an nn.Flatten() first for images")
        return x.to(weight)


def _leaves(module: nn.Module):
    for child in module:
        if type(child) is nn.Sequential:
            yield from _leaves(child)
        else:
            yield child


def _sequential(model, method: str, supported: str) -> nn.Module:
    """The ``nn.Sequential`` whose layers ``method`` reads: ``model`` itself or an MLP's ``net``."""
    if isinstance(model, MLP):
        return model.net
    if type(model) is nn.Sequential:
        return model
    if isinstance(model, nn.Module):
        raise ValueError(f"{method} trains {supported}; got a {type(model).__name__}, whose forward it "
                         "cannot see. Build the network as an nn.Sequential")
    raise ValueError(f"{method} needs the model itself, e.g. {method}(model, ...), not its parameters: "
                     f"it reads the layer structure of {supported}")


def dense_stack(model: nn.Module, method: str = "SIBP") -> DenseStack:
    """The fully connected layers of ``model``: an :class:`ibtools.models.MLP`, or an
    ``nn.Sequential`` (nested ones included) of an optional leading ``nn.Flatten()``, then
    ``nn.Linear`` layers each followed by at most one element-wise activation (ReLU, Tanh,
    Sigmoid, Arctan; Identity or none for a linear layer). Anything else raises a ValueError."""
    supported = ("an ibtools.models.MLP, or an nn.Sequential of an optional leading nn.Flatten(), "
                 "nn.Linear layers and one element-wise activation after each (" +
                 ", ".join(a.__name__ for a in ACTIVATIONS) + ")")
    modules = _sequential(model, method, supported)
    linears, activations, flatten = [], [], False
    for position, module in enumerate(_leaves(modules)):
        kind = type(module)
        if kind is nn.Identity:
            continue
        if kind is nn.Flatten and not linears and not flatten and (module.start_dim, module.end_dim) == (1, -1):
            flatten = True
        elif kind is nn.Linear:
            linears.append(module)
            activations.append(_IDENTITY)
        elif kind in ACTIVATIONS and linears and activations[-1] is _IDENTITY:
            activations[-1] = ACTIVATIONS[kind]
        else:
            raise ValueError(
                f"{method} trains {supported}; got {module!r} at position {position}. Convolutions and "
                f"pooling (the paper's Remark 5.1) are supported by SIBP only (see conv_stack): train such "
                "networks with SIBP, torch.optim.SGD or Adam")
    if not linears:
        raise ValueError(f"{method} found no nn.Linear layer in the model; it trains {supported}")
    return DenseStack(tuple(linears), tuple(activations), flatten)


def forward(stack: DenseStack, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The forward pass (2.1) from F_1 = x: ([F_1, ..., F_N], [G_2, ..., G_N])."""
    neurons, pre = [x], []
    for linear, activation in zip(stack.linears, stack.activations):
        pre.append(nnf.linear(neurons[-1], linear.weight, linear.bias))
        neurons.append(activation.value(pre[-1]))
    return neurons, pre


def output_gradient(loss_fn, output: torch.Tensor, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """J = L(F_N, Y) and delta_N = dL/dF_N (section 3.1), by autograd through the loss alone."""
    with torch.enable_grad():
        output = output.detach().requires_grad_(True)
        loss = loss_fn(output, targets)
        (grad,) = torch.autograd.grad(loss, output)
    return loss.detach(), grad


def propagate_error(delta: torch.Tensor, pre: torch.Tensor, activation: Activation,
                    weight: torch.Tensor) -> torch.Tensor:
    """(4.2), and (3.1) with the old weights: delta_i = W_i^T (sigma'(G_{i+1}) * delta_{i+1}),
    in rows: (sigma'(G_{i+1}) * delta_{i+1}) W_i. SIBP passes the updated W_i^{k+1}."""
    return (activation.slope(pre) * delta) @ weight


# --- pure solvers ----------------------------------------------------------------------------

def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1, keepdim=True)


def _safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den for den >= 0, and 0 where den is 0 (num is then 0 too: a finished row)."""
    return num / den.clamp_min(torch.finfo(den.dtype).tiny)


def soft_threshold(x: torch.Tensor, threshold) -> torch.Tensor:
    """The proximal map of threshold ||.||_1 (Remark 4.1 with r = l1 norm):
    argmin_y ||y - x||^2 / 2 + threshold ||y||_1 = sign(x) max(|x| - threshold, 0), which is
    exactly zero wherever |x| <= threshold."""
    return torch.sign(x) * (x.abs() - threshold).clamp_min(0)


def linear_cg(apply_a: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, x0: torch.Tensor,
              iters: int) -> torch.Tensor:
    """``iters`` conjugate-gradient iterations for x M = rhs, every row of x its own system,
    from x0; ``apply_a(x)`` returns x M for a symmetric positive definite M (section 3.2's
    solver). Per row: r = rhs - x M, p = r, then alpha = r.r / p.Mp, x += alpha p,
    r -= alpha pM, p = r + (r.r)_new / (r.r)_old p. Exact after n iterations in exact arithmetic."""
    x = x0
    residual = rhs - apply_a(x)
    direction = residual
    rr = _rowdot(residual, residual)
    for _ in range(iters):
        applied = apply_a(direction)
        alpha = _safe_divide(rr, _rowdot(direction, applied))
        x = x + alpha * direction
        residual = residual - alpha * applied
        rr_new = _rowdot(residual, residual)
        direction = residual + _safe_divide(rr_new, rr) * direction
        rr = rr_new
    return x


class FitPoint(NamedTuple):
    """A point of a :class:`ProxFit`: x, its pre-activations A x + c, x - x_k, and there the
    fit ||sigma(A x + c) - T||^2, phi and grad phi (fit and phi one value per row of x)."""

    x: torch.Tensor
    pre: torch.Tensor
    gap: torch.Tensor
    fit: torch.Tensor
    value: torch.Tensor
    grad: torch.Tensor


@dataclass(frozen=True)
class ProxFit:
    """The subproblem (4.1), and BCD's, in one form:

        phi(x) = ||sigma(A x + c) - T||^2 + ||x - x_k||^2 / (2 lam),
        grad phi(x) = 2 A^T (sigma'(A x + c) * (sigma(A x + c) - T)) + (x - x_k) / lam,

    A linear, x a matrix whose rows enter phi separately (``row_axis``: the axis of T that
    the rows of x index, 1 when they are output units, 0 when they are examples).
    ``apply(x)`` is A x and ``adjoint(R)`` is A^T R."""

    apply: Callable[[torch.Tensor], torch.Tensor]
    adjoint: Callable[[torch.Tensor], torch.Tensor]
    offset: torch.Tensor | float
    activation: Activation
    target: torch.Tensor
    anchor: torch.Tensor
    lam: float
    row_axis: int

    def per_row(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of a T-shaped tensor (or a stack of them) over each row's entries: (..., rows, 1)."""
        return values.sum(dim=-1 - self.row_axis).unsqueeze(-1)

    def spread(self, column: torch.Tensor) -> torch.Tensor:
        """Per-row numbers (..., rows, 1) laid out to broadcast against T."""
        return column.mT if self.row_axis == 1 else column

    def evaluate(self, x: torch.Tensor, pre: torch.Tensor | None = None) -> FitPoint:
        pre = self.apply(x) + self.offset if pre is None else pre
        residual = self.activation.value(pre) - self.target
        gap = x - self.anchor
        fit = self.per_row(residual ** 2)
        grad = torch.add(self.adjoint(2 * self.activation.slope(pre) * residual), gap, alpha=1 / self.lam)
        return FitPoint(x, pre, gap, fit, fit + _rowdot(gap, gap) / (2 * self.lam), grad)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x), one value per row (rows, 1), without the gradient."""
        residual = self.activation.value(self.apply(x) + self.offset) - self.target
        gap = x - self.anchor
        return self.per_row(residual ** 2) + _rowdot(gap, gap) / (2 * self.lam)

    dot = staticmethod(_rowdot)  # the rows of x are separate unknowns

    def line_step(self, point: FitPoint, direction: torch.Tensor, slope: torch.Tensor) -> FitPoint:
        """The next point along ``direction``, given the slope grad.d there.

        Along the line the pre-activations are pre + t A d, so one product A d prices every
        trial step. The trials are the Gauss-Newton step
        t = -grad.d / (2 ||sigma'(pre) * A d||^2 + ||d||^2 / lam) (negative where d ascends),
        exact for a linear or piecewise-linear sigma while no unit changes piece, and its
        halvings; each row takes the first that meets Armijo's condition
        phi(x + t d) <= phi(x) + 1e-4 t grad.d, and a row where none does stays put, so phi
        never increases."""
        delta = self.apply(direction)
        dd, gd = _rowdot(direction, direction), _rowdot(point.gap, direction)
        curvature = 2 * self.per_row((self.activation.slope(point.pre) * delta) ** 2) + dd / self.lam
        halvings = 0.5 ** torch.arange(_HALVINGS, dtype=slope.dtype, device=slope.device)
        trials = _safe_divide(-slope, curvature) * halvings[:, None, None]  # (halvings, rows, 1)
        residual = self.activation.value(point.pre + self.spread(trials) * delta) - self.target
        values = self.per_row(residual ** 2) + (point.value - point.fit) \
            + trials * (2 * gd + trials * dd) / (2 * self.lam)
        accept = values <= point.value + _ARMIJO * trials * slope
        first = accept.to(slope.dtype).argmax(0, keepdim=True)  # the first accepted trial, or 0
        step = torch.where(accept.any(0), trials.gather(0, first)[0], 0)
        return self.evaluate(point.x + step * direction, point.pre + self.spread(step) * delta)


def weight_fit(inputs, weight, bias, activation: Activation, target, lam: float) -> ProxFit:
    """The W_i subproblem of (4.1): x = W_i, A W = F_i W^T, c = b_i^k, x_k = W_i^k."""
    return ProxFit(apply=lambda w: inputs @ w.T, adjoint=lambda r: r.T @ inputs,
                   offset=0.0 if bias is None else bias, activation=activation, target=target,
                   anchor=weight, lam=lam, row_axis=1)


def bias_fit(inputs, weight, bias, activation: Activation, target, lam: float) -> ProxFit:
    """The b_i subproblem of (4.1) with W_i^{k+1} = ``weight``: x = b_i as a column, A b = 1 b^T,
    c = F_i (W_i^{k+1})^T, x_k = b_i^k."""
    return ProxFit(apply=lambda b: b.T, adjoint=lambda r: r.sum(0)[:, None], offset=inputs @ weight.T,
                   activation=activation, target=target, anchor=bias[:, None], lam=lam, row_axis=1)


def neuron_fit(weight, bias, activation: Activation, target, anchor, lam: float) -> ProxFit:
    """BCD's neuron subproblem (section 3.3) after its quadratic terms are merged: x = F_i,
    A F = F W_i^T, c = b_i."""
    return ProxFit(apply=lambda f: f @ weight.T, adjoint=lambda r: r @ weight,
                   offset=0.0 if bias is None else bias, activation=activation, target=target,
                   anchor=anchor, lam=lam, row_axis=0)


def nonlinear_cg(problem: ProxFit | TensorFit, x0: torch.Tensor, iters: int) -> torch.Tensor:
    """``iters`` iterations of Polak-Ribiere+ nonlinear conjugate gradient on ``problem`` from
    x0 (the paper solves (4.1) this way, with 5 iterations): every row of x at once for a
    :class:`ProxFit`, the whole tensor for a :class:`TensorFit` (``problem.dot`` is the inner
    product of one unknown):

        d_0 = -g_0,   x_{k+1} = x_k + t_k d_k   (t_k by ``problem.line_step``),
        beta_k = max(0, g_{k+1}.(g_{k+1} - g_k) / g_k.g_k),   d_{k+1} = -g_{k+1} + beta_k d_k.

    The step t_k takes the sign of -g.d, so a direction that does not descend is walked
    backwards, and phi never increases."""
    dot = problem.dot
    point = problem.evaluate(x0)
    direction = -point.grad
    squared = dot(point.grad, point.grad)
    slope = -squared
    for _ in range(iters):
        new = problem.line_step(point, direction, slope)
        new_squared = dot(new.grad, new.grad)
        beta = _safe_divide(new_squared - dot(new.grad, point.grad), squared).clamp_min(0)
        direction = beta * direction - new.grad
        slope = dot(new.grad, direction)
        point, squared = new, new_squared
    return point.x


def l1_fit(problem: ProxFit | TensorFit, x0: torch.Tensor, gamma: float, iters: int = L1_ITERS,
           tol: float = L1_TOL) -> torch.Tensor:
    """argmin_x phi(x) + gamma ||x||_1 for the subproblem ``problem`` (phi of :class:`ProxFit`
    or :class:`TensorFit`), the l1 variant of (4.1) in Remark 4.1 and section 5.5:

        W_i^{k+1} = argmin ||sigma(W F_i + b_i^k) - F_{i+1}^{k+1/2}||^2 + ||W - W_i^k||^2 / (2 lambda)
                           + gamma ||W||_1,

    and the same for b_i, by accelerated proximal gradient (FISTA, Beck & Teboulle 2009) from
    x0, with a monotone restart:

        z = S_{s gamma}(y - s grad phi(y)),   S_t the soft threshold (:func:`soft_threshold`),

    the step s found by backtracking from s = lam (halved until phi(z) <= phi(y) + grad phi(y).(z - y)
    + ||z - y||^2 / (2 s), the local Lipschitz bound; s never grows again), then x = z and
    y = z + (t_k - 1) / t_{k+1} (z - x_old) with t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2 where the
    objective went down, and where it did not x stays, y = x and t = 1, so the objective never
    increases (phi is not convex for every sigma). Rows of a :class:`ProxFit` are separate
    problems with their own s and t, all updated at once; a :class:`TensorFit` is one problem.

    Stops after ``iters`` iterations, or once every row's optimality residual ||z - y|| / s (the
    gradient mapping, zero exactly at a minimiser) is at most ``tol`` times its value at x0.
    Both early exits (every row converged; in the backtracking, every row's step accepted) are
    questions the host asks of the data. While the step is captured in a CUDA graph
    (:func:`ibtools.steps.capturing`), where no question can be asked, the solver asks none: it
    runs all ``iters`` iterations, each with all 40 trial steps, and holds x by ``torch.where``
    once the early-exit path would have stopped, so the result is bitwise the same, at the
    price of every halving and iteration: ``iters`` x 40 evaluations of phi, where the
    early-exit path, whose step is mostly accepted at its first or second trial, makes a few
    per iteration (63 to 128 for each subproblem of a 784-500-10 step at batch 100, against
    2001). That is why :class:`SIBP` with ``l1 > 0`` is not graph-safe: on a GPU too, a few
    hundred waits cost less than sixteen times the arithmetic.
    At a minimiser the optimality conditions hold: grad phi(x)_j = -gamma sign(x_j)
    where x_j != 0 and |grad phi(x)_j| <= gamma where x_j = 0, so the threshold on each weight
    depends on the fit's curvature, unlike a soft threshold of the smooth solution. With
    gamma = 0 this is the smooth subproblem (4.1). Returns x, shaped like x0."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    dot = problem.dot
    ones = torch.ones_like(x0)

    def objective(phi: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return phi + gamma * dot(x.abs(), ones)

    sync_free = capturing(x0)
    x = x0
    best = objective(problem.value(x), x)
    step = torch.full_like(best, problem.lam)
    momentum = torch.ones_like(best)
    y, point = x, problem.evaluate(x)
    slack = 16 * torch.finfo(x0.dtype).eps
    first = None
    stopped = torch.zeros((), dtype=torch.bool, device=x0.device)  # every row converged (sync-free path)
    for _ in range(iters):
        for _ in range(_L1_HALVINGS):
            trial = soft_threshold(y - step * point.grad, step * gamma)
            move = trial - y
            phi = problem.value(trial)
            bound = point.value + dot(point.grad, move) + dot(move, move) / (2 * step)
            accept = phi <= bound + slack * (point.value.abs() + phi.abs())
            # Once every row has accepted, no step changes and each further trial repeats the
            # accepted one, so the sync-free path runs them all without asking.
            if not sync_free and bool(accept.all()):
                break
            step = torch.where(accept, step, step / 2)
        value = objective(phi, trial)
        lower = accept & (value <= best)
        following = (1 + torch.sqrt(1 + 4 * momentum ** 2)) / 2
        new = torch.where(lower, trial, x)
        residual = dot(move, move) / step ** 2
        first = residual if first is None else first
        converged = residual <= tol ** 2 * first
        y = torch.where(lower, new + (momentum - 1) / following * (new - x), x)
        momentum = torch.where(lower, following, torch.ones_like(momentum))
        best = torch.where(lower, value, best)
        if not sync_free:
            x = new
            if bool(converged.all()):
                break
        else:  # only x leaves the loop, so only x is held from where the early-exit path stops
            x = torch.where(stopped, x, new)
            stopped = stopped | converged.all()
        point = problem.evaluate(y)
    return x


def prox_layer(inputs, weight, bias, activation: Activation, target, lam: float, cg_iters: int,
               l1: float = 0.0, l1_iters: int = L1_ITERS, l1_tol: float = L1_TOL
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One layer's update (4.1): W_i^{k+1}, then b_i^{k+1} with W_i^{k+1}, each from its current
    value. Shapes: inputs F_i (B, n_in), weight (n_out, n_in), bias (n_out,) or None, target
    F_{i+1}^{k+1/2} (B, n_out). With ``l1`` = gamma = 0 each is solved by ``cg_iters`` nonlinear
    CG iterations (:func:`nonlinear_cg`), as the paper does. With gamma > 0 each subproblem is
    (4.1) plus gamma ||W||_1 (gamma ||b||_1), the l1 variant of Remark 4.1 and section 5.5, solved
    as one composite problem by :func:`l1_fit` (at most ``l1_iters`` accelerated proximal
    gradient iterations, step tolerance ``l1_tol``), which makes exact zeros."""
    if l1 > 0:
        weight = l1_fit(weight_fit(inputs, weight, bias, activation, target, lam), weight, l1, l1_iters, l1_tol)
    else:
        weight = nonlinear_cg(weight_fit(inputs, weight, bias, activation, target, lam), weight, cg_iters)
    if bias is not None:
        problem = bias_fit(inputs, weight, bias, activation, target, lam)
        if l1 > 0:
            bias = l1_fit(problem, bias[:, None], l1, l1_iters, l1_tol)[:, 0]
        else:
            bias = nonlinear_cg(problem, bias[:, None], cg_iters)[:, 0]
    return weight, bias


def prox_linear_layer(inputs, weight, bias, target, lam: float, cg_iters: int
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ProxBP's update (section 3.2) of one layer, its bias included:
    theta = [W, b] = argmin ||[F, 1] theta^T - T||^2 + ||theta - theta_k||^2 / (2 lam), i.e.
    theta (2 [F, 1]^T [F, 1] + I / lam) = 2 T^T [F, 1] + theta_k / lam, by ``cg_iters``
    linear CG iterations (:func:`linear_cg`) from theta_k."""
    design, theta = inputs, weight
    if bias is not None:
        design = torch.cat([inputs, inputs.new_ones(len(inputs), 1)], 1)
        theta = torch.cat([weight, bias[:, None]], 1)
    theta = linear_cg(lambda t: torch.addmm(t, (design @ t.T).T, design, beta=1 / lam, alpha=2),
                      torch.addmm(theta, target.T, design, beta=1 / lam, alpha=2), theta, cg_iters)
    if bias is None:
        return theta, None
    return theta[:, :-1], theta[:, -1]


# --- convolutional networks (Remark 5.1) ------------------------------------------------------

_POOLS = (nn.MaxPool2d, nn.AvgPool2d)
# Halvings of the Gauss-Newton step the whole-tensor line search (TensorFit.line_step) tries.
_TENSOR_HALVINGS = 30


@dataclass(frozen=True)
class ConvBlock:
    """One stage of a convolutional network: ``kind`` is "conv" (nn.Conv2d then ``activation``),
    "linear" (nn.Linear then ``activation``), "pool" (nn.MaxPool2d or nn.AvgPool2d, no
    parameters) or "flatten" (nn.Flatten)."""

    kind: str
    module: nn.Module
    activation: Activation = _IDENTITY

    @property
    def trained(self) -> bool:
        return self.kind in ("conv", "linear")

    def linear_part(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """G = conv(x, W) + b or x W^T + b, with the module's stride, padding, ... and the given W, b."""
        if self.kind == "conv":
            return self.module._conv_forward(x, weight, bias)
        return nnf.linear(x, weight, bias)


@dataclass(frozen=True)
class ConvStack:
    """The stages of a convolutional network, in order (see :func:`conv_stack`)."""

    blocks: tuple[ConvBlock, ...]

    @property
    def trained(self) -> tuple[nn.Module, ...]:
        return tuple(block.module for block in self.blocks if block.trained)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """F_1: the batch on the weights' dtype and device."""
        return x.to(self.trained[0].weight)


def _conv_supported() -> str:
    return ("an nn.Sequential (nested ones included) of nn.Conv2d layers, nn.Linear layers, each followed "
            "by at most one element-wise activation (" + ", ".join(a.__name__ for a in ACTIVATIONS) +
            "), nn.MaxPool2d / nn.AvgPool2d pooling layers and nn.Flatten()")


def conv_stack(model: nn.Module, method: str = "SIBP") -> ConvStack:
    """The stages of a convolutional network (Remark 5.1): an ``nn.Sequential`` (nested ones
    included) of ``nn.Conv2d`` and ``nn.Linear`` layers, each followed by at most one
    element-wise activation (ReLU, Tanh, Sigmoid, Arctan; Identity or none for none),
    ``nn.MaxPool2d`` / ``nn.AvgPool2d`` and ``nn.Flatten()``. Anything else raises a ValueError."""
    supported = _conv_supported()
    modules = _sequential(model, method, supported)
    blocks: list[ConvBlock] = []
    for position, module in enumerate(_leaves(modules)):
        kind = type(module)
        if kind is nn.Identity:
            continue
        if kind is nn.Conv2d and module.padding_mode in ("zeros", "reflect", "replicate", "circular"):
            blocks.append(ConvBlock("conv", module))
        elif kind is nn.Linear:
            blocks.append(ConvBlock("linear", module))
        elif kind in _POOLS and not getattr(module, "return_indices", False):
            blocks.append(ConvBlock("pool", module))
        elif kind is nn.Flatten and (module.start_dim, module.end_dim) == (1, -1):
            blocks.append(ConvBlock("flatten", module))
        elif kind in ACTIVATIONS and blocks and blocks[-1].trained and blocks[-1].activation is _IDENTITY:
            blocks[-1] = ConvBlock(blocks[-1].kind, blocks[-1].module, ACTIVATIONS[kind])
        else:
            raise ValueError(
                f"{method} trains {supported}; got {module!r} at position {position}. Train other "
                "networks with torch.optim.SGD or Adam")
    if not any(block.trained for block in blocks):
        raise ValueError(f"{method} found no nn.Linear or nn.Conv2d layer in the model; it trains {supported}")
    return ConvStack(tuple(blocks))


def conv_forward(stack: ConvStack, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """The forward pass from F_1 = x through every stage: ([F_1, ..., F_N], [G_2, ..., G_N]),
    G None after a pooling or flatten stage."""
    neurons, pre = [x], []
    for block in stack.blocks:
        if block.trained:
            if block.kind == "linear" and neurons[-1].dim() != 2:
                raise ValueError(f"the nn.Linear layer {block.module!r} gets inputs of shape "
                                 f"{tuple(neurons[-1].shape)}; put an nn.Flatten() before it")
            pre.append(block.linear_part(neurons[-1], block.module.weight, block.module.bias))
            neurons.append(block.activation.value(pre[-1]))
        else:
            pre.append(None)
            neurons.append(block.module(neurons[-1]))
    return neurons, pre


def propagate_conv_error(delta: torch.Tensor, pre: torch.Tensor, activation: Activation, conv: nn.Conv2d,
                         weight: torch.Tensor, input_shape) -> torch.Tensor:
    """(4.2) through a convolution stage: delta_i = conv^T (sigma'(G_{i+1}) * delta_{i+1}) with the
    weights ``weight`` (SIBP passes W_i^{k+1}): the input gradient (a transposed convolution)
    of the linear map x -> conv(x, W) applied to sigma'(G_{i+1}) * delta_{i+1}."""
    grad_out = activation.slope(pre) * delta
    if conv.padding_mode == "zeros" and not isinstance(conv.padding, str):
        return torch.nn.grad.conv2d_input(tuple(input_shape), weight, grad_out, conv.stride, conv.padding,
                                          conv.dilation, conv.groups)
    with torch.enable_grad():
        x = grad_out.new_zeros(tuple(input_shape)).requires_grad_(True)
        (grad,) = torch.autograd.grad(conv._conv_forward(x, weight, None), x, grad_out)
    return grad


def _pool_error(pool: nn.Module, inputs: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The vector-Jacobian product of a pooling layer at its current inputs."""
    with torch.enable_grad():
        x = inputs.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(pool(x), x, delta)
    return grad


class _TensorPoint(NamedTuple):
    x: torch.Tensor
    pre: torch.Tensor
    value: torch.Tensor
    grad: torch.Tensor


@dataclass(frozen=True)
class TensorFit:
    """The subproblem (4.1) over a whole tensor x (a convolution's W or b):

        phi(x) = ||sigma(A x + c) - T||^2 + ||x - x_k||^2 / (2 lam),

    A linear (``apply``), its value and gradient by autograd."""

    apply: Callable[[torch.Tensor], torch.Tensor]
    offset: torch.Tensor | float
    activation: Activation
    target: torch.Tensor
    anchor: torch.Tensor
    lam: float

    def objective(self, x: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        return ((self.activation.value(pre) - self.target) ** 2).sum() \
            + ((x - self.anchor) ** 2).sum() / (2 * self.lam)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x), a scalar, without the gradient."""
        with torch.no_grad():
            return self.objective(x, self.apply(x) + self.offset)

    def evaluate(self, x: torch.Tensor) -> _TensorPoint:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            pre = self.apply(x) + self.offset
            value = self.objective(x, pre)
            (grad,) = torch.autograd.grad(value, x)
        return _TensorPoint(x.detach(), pre.detach(), value.detach(), grad)

    @staticmethod
    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum()

    def line_step(self, point: _TensorPoint, direction: torch.Tensor, slope: torch.Tensor) -> _TensorPoint:
        """The next point along ``direction``, given the slope grad.d there: the Gauss-Newton step
        t = -grad.d / (2 ||sigma'(pre) * A d||^2 + ||d||^2 / lam) (negative where d ascends),
        halved until Armijo's condition phi(x + t d) <= phi(x) + 1e-4 t grad.d holds; where no
        trial does, x stays put, so phi never increases. Where the host would wait for the
        device to learn whether a trial passed (:func:`ibtools.steps.host_waits`), all 30 trials
        are priced (elementwise, on pre + t A d), the first that passes is kept by
        ``torch.where``, and so is the point where none does: the same point, bitwise, with no
        host round trip."""
        delta = self.apply(direction)
        curvature = 2 * ((self.activation.slope(point.pre) * delta) ** 2).sum() \
            + self.dot(direction, direction) / self.lam
        step = _safe_divide(-slope, curvature)
        sync_free = host_waits(step)
        found = torch.zeros_like(step, dtype=torch.bool)
        for _ in range(_TENSOR_HALVINGS):
            accept = self.objective(point.x + step * direction, point.pre + step * delta) \
                <= point.value + _ARMIJO * step * slope
            if not sync_free and bool(accept):
                return self.evaluate(point.x + step * direction)
            found = found | accept
            step = torch.where(found, step, step / 2)  # the first accepted step stays
        if not sync_free:
            return point
        new = self.evaluate(point.x + step * direction)
        return _TensorPoint(*(torch.where(found, a, b) for a, b in zip(new, point)))


def prox_conv_layer(conv: nn.Conv2d, inputs: torch.Tensor, activation: Activation, target: torch.Tensor,
                    lam: float, cg_iters: int, l1: float = 0.0,
                    weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                    l1_iters: int = L1_ITERS, l1_tol: float = L1_TOL
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(4.1) for a convolution stage (Remark 5.1): W^{k+1} = argmin ||sigma(conv(F_i, W) + b^k)
    - T||^2 + ||W - W^k||^2 / (2 lam), then b^{k+1} likewise with W^{k+1}, each by ``cg_iters``
    iterations of :func:`nonlinear_cg` from its current value (W^k, b^k: ``weight`` and ``bias``,
    by default the module's). With ``l1`` = gamma > 0 each subproblem has gamma ||W||_1
    (gamma ||b||_1) added (Remark 4.1, section 5.5) and is solved as one composite problem by
    :func:`l1_fit` (at most ``l1_iters`` iterations, step tolerance ``l1_tol``)."""
    weight = conv.weight.detach() if weight is None else weight
    if bias is None and conv.bias is not None:
        bias = conv.bias.detach()
    column = None if bias is None else bias[None, :, None, None]
    problem = TensorFit(apply=lambda w: conv._conv_forward(inputs, w, None),
                        offset=0.0 if column is None else column, activation=activation, target=target,
                        anchor=weight, lam=lam)
    weight = l1_fit(problem, weight, l1, l1_iters, l1_tol) if l1 > 0 else nonlinear_cg(problem, weight, cg_iters)
    if bias is not None:
        problem = TensorFit(apply=lambda b: b[None, :, None, None].expand_as(target),
                            offset=conv._conv_forward(inputs, weight, None), activation=activation,
                            target=target, anchor=bias, lam=lam)
        bias = l1_fit(problem, bias, l1, l1_iters, l1_tol) if l1 > 0 else nonlinear_cg(problem, bias, cg_iters)
    return weight, bias


# --- the optimizers --------------------------------------------------------------------------

def _positive(name: str, value, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}; {hint}")
    return float(value)


def _iterations(cg_iters) -> int:
    if isinstance(cg_iters, bool) or not isinstance(cg_iters, int) or cg_iters < 1:
        raise ValueError(f"cg_iters must be an integer >= 1, got {cg_iters!r}; the paper uses 5")
    return cg_iters


def _batch(closure, method: str):
    if not all(hasattr(closure, name) for name in ("inputs", "targets", "loss_fn")):
        raise ValueError(
            f"{method}.step needs the mini-batch and the loss: pass a closure with attributes inputs, "
            "targets and loss_fn (loss_fn(output, targets) -> loss), such as ibtools.train.BatchClosure, "
            "or train with ibtools.train.train")
    return closure.inputs, closure.targets, closure.loss_fn


class _DenseOptimizer(torch.optim.Optimizer):
    """Holds the model's dense layers; ``step`` copies the new weights in."""

    def __init__(self, model: nn.Module, defaults: dict):
        self.stack = dense_stack(model, type(self).__name__)
        params = [p for linear in self.stack.linears for p in (linear.weight, linear.bias) if p is not None]
        super().__init__(params, defaults)

    def _store(self, layer: int, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        linear = self.stack.linears[layer]
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)


class SIBP(_DenseOptimizer):
    """Semi-implicit back propagation, Algorithm 1. Each ``step(closure)`` on the batch
    (X, Y) = (closure.inputs, closure.targets) (Remark 4.2: any mini-batch):

    1. forward pass (2.1), keeping F_i and G_{i+1};
    2. delta_N = dL/dF_N and the half step F_N^{k+1/2} = F_N - eta delta_N, eta = ``lr``;
    3. for i = N-1 ... 1: (W_i, b_i) by the proximal subproblems (4.1) with proximal parameter
       lambda_i = ``lam`` toward F_{i+1}^{k+1/2}, each by ``cg_iters`` nonlinear CG iterations
       (:func:`prox_layer`); then delta_i = (W_i^{k+1})^T (sigma'(G_{i+1}) * delta_{i+1}) and
       F_i^{k+1/2} = F_i - eta delta_i (4.2).

    ``l1`` = gamma > 0 adds gamma (||W_i||_1 + ||b_i||_1) to (4.1) (Remark 4.1, section 5.5),
    which zeroes weights exactly; each composite subproblem is then solved by :func:`l1_fit`,
    at most ``l1_iters`` accelerated proximal gradient iterations with step tolerance
    ``l1_tol``, in place of the CG iterations. Any loss differentiable in the network output works.
    ``step`` returns the batch loss at the weights it started from.

    ``model`` is a fully connected network (:func:`dense_stack`) or, per Remark 5.1, a
    convolutional one (:func:`conv_stack`): convolution stages are fitted by (4.1) and pass
    the error down with W^{k+1}; pooling stages pass it down by their vector-Jacobian product.

    Every path of ``step`` (dense or convolutional, with or without ``l1``) can run as a fixed
    sequence of kernels with no host round trip, so it can be captured in a CUDA graph. Without
    ``l1`` it is :func:`ibtools.steps.graph_safe` and :func:`ibtools.train.train` replays it
    from a CUDA graph on CUDA; with ``l1`` it is not, since a captured :func:`l1_fit` must run
    its whole iteration budget (see there), and it runs eagerly.
    """

    @property
    def graph_safe(self) -> bool:
        return all(group["l1"] == 0 for group in self.param_groups)

    def __init__(self, model: nn.Module, lr: float, lam: float = 1.0, cg_iters: int = 5, l1: float = 0.0,
                 l1_iters: int = L1_ITERS, l1_tol: float = L1_TOL):
        if isinstance(l1, bool) or not isinstance(l1, numbers.Real) or not math.isfinite(l1) or l1 < 0:
            raise ValueError(f"l1 must be a finite number >= 0, got {l1!r}; pass l1=0.0 for no l1 penalty")
        if isinstance(l1_iters, bool) or not isinstance(l1_iters, int) or l1_iters < 1:
            raise ValueError(f"l1_iters must be an integer >= 1, got {l1_iters!r}; the default is {L1_ITERS}")
        defaults = dict(lr=check_lr(lr), lam=_positive("lam", lam, "the paper's lambda, e.g. lam=1.0"),
                        cg_iters=_iterations(cg_iters), l1=float(l1), l1_iters=l1_iters,
                        l1_tol=_positive("l1_tol", l1_tol, f"the default is {L1_TOL}"))
        try:
            super().__init__(model, defaults)
        except ValueError:  # not a dense network: a convolutional one (Remark 5.1), or refused
            self.stack = conv_stack(model, "SIBP")
            params = [p for module in self.stack.trained for p in (module.weight, module.bias) if p is not None]
            torch.optim.Optimizer.__init__(self, params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        inputs, targets, loss_fn = _batch(closure, "SIBP")
        group = self.param_groups[0]
        eta, lam, iters = group["lr"], group["lam"], group["cg_iters"]
        penalty = dict(l1=group["l1"], l1_iters=group["l1_iters"], l1_tol=group["l1_tol"])
        stack = self.stack
        if isinstance(stack, ConvStack):
            return self._conv_step(stack, inputs, targets, loss_fn, eta, lam, iters, penalty)
        neurons, pre = forward(stack, stack.inputs(inputs))
        loss, delta = output_gradient(loss_fn, neurons[-1], targets)
        for i in reversed(range(len(stack.linears))):
            linear, activation = stack.linears[i], stack.activations[i]
            weight, bias = prox_layer(neurons[i], linear.weight, linear.bias, activation,
                                      neurons[i + 1] - eta * delta, lam, iters, **penalty)
            if i > 0:
                delta = propagate_error(delta, pre[i], activation, weight)
            self._store(i, weight, bias)
        return loss

    def _conv_step(self, stack: ConvStack, inputs, targets, loss_fn, eta: float, lam: float, iters: int,
                   penalty: dict):
        """Algorithm 1 through convolution, pooling, flatten and dense stages (Remark 5.1):
        convolution and dense stages are fitted by (4.1) and pass the error down by (4.2)
        with their new weights; pooling stages pass it down by their vector-Jacobian product
        at the current forward values, flatten stages reshape it."""
        neurons, pre = conv_forward(stack, stack.inputs(inputs))
        loss, delta = output_gradient(loss_fn, neurons[-1], targets)
        lowest = min(j for j, block in enumerate(stack.blocks) if block.trained)
        for j in reversed(range(len(stack.blocks))):
            block = stack.blocks[j]
            module, below = block.module, j > lowest
            if block.kind == "linear":
                weight, bias = prox_layer(neurons[j], module.weight, module.bias, block.activation,
                                          neurons[j + 1] - eta * delta, lam, iters, **penalty)
                if below:
                    delta = propagate_error(delta, pre[j], block.activation, weight)
            elif block.kind == "conv":
                weight, bias = prox_conv_layer(module, neurons[j], block.activation, neurons[j + 1] - eta * delta,
                                               lam, iters, **penalty)
                if below:
                    delta = propagate_conv_error(delta, pre[j], block.activation, module, weight, neurons[j].shape)
            elif block.kind == "pool":
                if below:
                    delta = _pool_error(module, neurons[j], delta)
                continue
            else:
                delta = delta.reshape(neurons[j].shape)
                continue
            module.weight.copy_(weight)
            if bias is not None:
                module.bias.copy_(bias)
        return loss


class ProxBP(_DenseOptimizer):
    """Proximal back propagation (section 3.2). Each ``step(closure)``: a forward pass (2.1),
    the gradients dJ/dG_{i+1} of every pre-activation by back propagation (3.1) at the current
    weights, and for every layer

        (W_i, b_i) = argmin ||F_i W^T + b - (G_{i+1} - eta dJ/dG_{i+1})||^2
                            + (||W - W_i^k||^2 + ||b - b_i^k||^2) / (2 lambda)

    with eta = ``lr`` and lambda = ``lam``, by ``cg_iters`` linear CG iterations
    (:func:`prox_linear_layer`; the paper uses 5). The layers update independently (Jacobi
    type, Table 1). Any differentiable loss; returns the batch loss before the update. The step
    runs fixed iteration counts with no host round trip, so it is
    :func:`ibtools.steps.graph_safe` and :func:`ibtools.train.train` replays it from a CUDA
    graph on a GPU.
    """

    graph_safe = True

    def __init__(self, model: nn.Module, lr: float, lam: float = 1.0, cg_iters: int = 5):
        defaults = dict(lr=check_lr(lr), lam=_positive("lam", lam, "the paper's lambda, e.g. lam=1.0"),
                        cg_iters=_iterations(cg_iters))
        super().__init__(model, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        inputs, targets, loss_fn = _batch(closure, "ProxBP")
        group = self.param_groups[0]
        eta = group["lr"]
        stack = self.stack
        neurons, pre = forward(stack, stack.inputs(inputs))
        loss, grad_neurons = output_gradient(loss_fn, neurons[-1], targets)
        for i in reversed(range(len(stack.linears))):
            linear, activation = stack.linears[i], stack.activations[i]
            grad_pre = activation.slope(pre[i]) * grad_neurons
            if i > 0:
                grad_neurons = grad_pre @ linear.weight
            weight, bias = prox_linear_layer(neurons[i], linear.weight, linear.bias, pre[i] - eta * grad_pre,
                                             group["lam"], group["cg_iters"])
            self._store(i, weight, bias)
        return loss


# The losses whose value is scale * mean((output - target)^2), for BCD's closed-form output step.
_SQUARED_LOSSES = {least_squares: 0.5, mean_squared_error: 1.0, nnf.mse_loss: 1.0}


def _example_keys(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One number per example, a fixed random projection of its input and target, by which
    BCD finds its neurons again when the training loop reshuffles the batch."""
    rows = torch.cat([inputs.reshape(len(inputs), -1), targets.reshape(len(targets), -1)], 1).to(torch.float64)
    projection = torch.randn(rows.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return rows @ projection.to(rows.device)


class BCD(_DenseOptimizer):
    """Block coordinate descent on the penalised merit function (section 3.3, after Zeng et
    al. 2019), with the neurons F_2 ... F_N of every training example as variables:

        J_BCD = L(F_N, Y) + gamma / (2B) sum_i ||F_{i+1} - sigma(F_i W_i^T + b_i)||^2.

    The penalty is averaged over the B examples like the loss, so gamma does not depend on
    the size of the training set. One ``step(closure)`` sweeps from the top, with
    lambda = ``lam``:

    * F_N = argmin L(F_N, Y) + gamma/(2B) ||F_N - sigma(G_N)||^2, in closed form for a
      squared loss (the losses ``least_squares`` and ``mse`` of ibtools.train);
    * for i = N-1 ... 1: (W_i, b_i) = argmin gamma/(2B) ||sigma(F_i W^T + b) - F_{i+1}||^2
      + ||W - W_i^k||^2 / (2 lambda) (W first, then b), by ``cg_iters`` nonlinear CG iterations;
      then, for i >= 2, F_i = argmin gamma/(2B) (||F_{i+1} - sigma(F W_i^T + b_i)||^2
      + ||F - sigma(F_{i-1} W_{i-1}^T + b_{i-1})||^2) + ||F - F_i^k||^2 / (2 lambda B), likewise.

    The neurons start from a forward pass at the first step. BCD is full batch: every step
    must see the same examples (in any order, as ``train`` reshuffles them), so train it with
    ``batch_size`` equal to the training set's size. It lowers J_BCD (:meth:`merit`) at every
    step, not necessarily the network's loss (Table 1). Returns the network's loss before
    the update.
    """

    def __init__(self, model: nn.Module, gamma: float = 1.0, lam: float = 1.0, cg_iters: int = 5):
        defaults = dict(gamma=_positive("gamma", gamma, "the penalty weight of J_BCD, e.g. gamma=1.0"),
                        lam=_positive("lam", lam, "the proximal parameter lambda, e.g. lam=1.0"),
                        cg_iters=_iterations(cg_iters))
        super().__init__(model, defaults)
        self._keys: torch.Tensor | None = None
        self._neurons: list[torch.Tensor] = []  # F_2 ... F_N, rows in the order of self._keys

    def _order(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        """The permutation taking the stored examples to this batch's rows (None before the
        first step); raises when the batch holds other examples."""
        keys, order = torch.sort(_example_keys(inputs, targets))
        if self._keys is None:
            self._keys = keys
            return order
        scale = self._keys.abs().max().clamp_min(1.0)
        if len(keys) != len(self._keys) or not torch.allclose(keys, self._keys, rtol=0, atol=1e-9 * scale):
            raise ValueError(
                f"BCD keeps every training example's neurons as variables (section 3.3), so it trains full "
                f"batch: it first saw {len(self._keys)} examples and now a batch of {len(keys)} that are not "
                "the same ones. Train it with batch_size equal to the training set's size")
        return order

    def _neurons_for(self, closure) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """F_1 ... F_N for this batch's rows, the targets and the row order."""
        inputs, targets, _ = _batch(closure, "BCD")
        x = self.stack.inputs(inputs)
        first = self._keys is None
        order = self._order(inputs, targets)
        if first:
            self._neurons = [f[order] for f in forward(self.stack, x)[0][1:]]
        neurons = [torch.empty_like(f) for f in self._neurons]
        for mine, stored in zip(neurons, self._neurons):
            mine[order] = stored
        return [x] + neurons, targets, order

    @torch.no_grad()
    def merit(self, closure) -> torch.Tensor:
        """J_BCD at the current weights and neurons on the closure's batch."""
        neurons, targets, _ = self._neurons_for(closure)
        gamma = self.param_groups[0]["gamma"]
        penalty = sum(((f_next - act.value(nnf.linear(f, linear.weight, linear.bias))) ** 2).sum()
                      for f, f_next, linear, act in zip(neurons, neurons[1:], self.stack.linears,
                                                        self.stack.activations))
        return closure.loss_fn(neurons[-1], targets) + gamma / (2 * len(targets)) * penalty

    @torch.no_grad()
    def step(self, closure=None):
        _, targets, loss_fn = _batch(closure, "BCD")
        if loss_fn not in _SQUARED_LOSSES:
            raise ValueError(
                "BCD updates the output neurons in closed form for a squared loss (section 3.3): train it "
                "with loss='least_squares' or loss='mse' (one-hot targets for classes); got loss_fn "
                f"{getattr(loss_fn, '__name__', loss_fn)!r}")
        neurons, targets, order = self._neurons_for(closure)
        group = self.param_groups[0]
        gamma, lam, iters = group["gamma"], group["lam"], group["cg_iters"]
        stack, batch = self.stack, len(neurons[0])
        linears, activations = stack.linears, stack.activations
        loss = loss_fn(forward(stack, neurons[0])[0][-1], targets)

        def image(i: int) -> torch.Tensor:  # sigma(F_i W_i^T + b_i) at the current values
            return activations[i].value(nnf.linear(neurons[i], linears[i].weight, linears[i].bias))

        top = neurons[-1]
        y = targets.reshape(top.shape).to(top)
        fit = 2 * _SQUARED_LOSSES[loss_fn] * batch / top.numel()  # L = fit/(2B) ||F_N - Y||^2
        neurons[-1] = (fit * y + gamma * image(len(linears) - 1)) / (fit + gamma)
        for i in reversed(range(len(linears))):
            weight, bias = prox_layer(neurons[i], linears[i].weight, linears[i].bias, activations[i],
                                      neurons[i + 1], gamma * lam / (2 * batch), iters)
            self._store(i, weight, bias)
            if i > 0:
                anchor = (gamma * lam * image(i - 1) + neurons[i]) / (gamma * lam + 1)
                problem = neuron_fit(weight, bias, activations[i], neurons[i + 1], anchor,
                                     gamma * lam / (2 * (gamma * lam + 1)))
                neurons[i] = nonlinear_cg(problem, neurons[i], iters)
        self._neurons = [f[order] for f in neurons[1:]]
        return loss.detach()
