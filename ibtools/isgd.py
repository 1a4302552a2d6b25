"""Implicit stochastic gradient descent (ISGD): the exact updates, and optimizers around them.

Fagan & Iyengar, *Robust Implicit Backpropagation*, section 2. Where explicit SGD (ESGD)
steps along the gradient at the current point, ``theta+ = theta - lr (grad l(theta) + mu theta)``,
ISGD steps along the gradient at the point it lands on,
``theta+ = theta - lr (grad l(theta+) + mu theta+)``, which is the proximal update

    theta+ = argmin_theta { 2 lr (l(theta) + mu/2 ||theta||^2) + ||theta - theta_t||^2 }    (1)

The functions below compute (1) exactly where it has a closed form or a one-dimensional
root (quadratic, least squares, logistic regression), and approximately by an inner
gradient descent for any network (the paper's "exact ISGD", section 5). They are pure and
vectorised, run on CPU and GPU in float32 and float64, and take tensor learning rates that
broadcast over a leading batch dimension, so many runs or learning rates step at once. The
optimizers at the end are thin ``torch.optim.Optimizer`` wrappers around them.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ibtools.train import check_lr

__all__ = [
    "esgd_quadratic_step",
    "isgd_quadratic_step",
    "quadratic_trajectory",
    "prox_least_squares",
    "solve_implicit_sigmoid",
    "prox_logistic",
    "exact_isgd_inner",
    "ExactISGD",
    "ISGDLeastSquares",
    "ISGDLogistic",
]

# Halving a bracket of width <= 1 sixty times leaves less than 2**-60 ~ 9e-19, below the
# float64 spacing of any s in (0, 1) that matters for the step.
_BISECTION_STEPS = 60


def _as_tensor(value, like: torch.Tensor) -> torch.Tensor:
    """A learning rate or decay (number or tensor) as a tensor on ``like``'s dtype and device."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


# --- 1. the quadratic of Figure 1 ----------------------------------------------------------

def esgd_quadratic_step(theta, lr, curvature=1.0):
    """ESGD on l(theta) = curvature theta^2 / 2: theta+ = theta (1 - lr curvature).

    Figure 1: contracts only while lr < 2 / curvature, diverges beyond."""
    return theta * (1 - lr * curvature)


def isgd_quadratic_step(theta, lr, curvature=1.0):
    """ISGD, eq. (1), on l(theta) = curvature theta^2 / 2: theta+ = theta / (1 + lr curvature).

    Figure 1: contracts for every lr > 0."""
    return theta / (1 + lr * curvature)


_QUADRATIC_STEPS = {"esgd": esgd_quadratic_step, "isgd": isgd_quadratic_step}


def quadratic_trajectory(theta0, lr: float, steps: int, method: str, curvature: float = 1.0) -> torch.Tensor:
    """The iterates theta_0 ... theta_steps of ``method`` ("esgd" or "isgd") on the quadratic
    of Figure 1, stacked along a new first dimension: shape (steps + 1, *theta0.shape).

    A diverging ESGD run overflows to +-inf, which is the result, not an error."""
    if method not in _QUADRATIC_STEPS:
        raise ValueError(f"unknown method {method!r}; pass method='esgd' or method='isgd'")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    lr = check_lr(lr)
    step = _QUADRATIC_STEPS[method]
    theta = torch.as_tensor(theta0)
    if not theta.is_floating_point():
        theta = theta.to(torch.get_default_dtype())
    iterates = [theta]
    for _ in range(steps):
        iterates.append(step(iterates[-1], lr, curvature))
    return torch.stack(iterates)


# --- 2. least squares: exact mini-batch step -----------------------------------------------

def prox_least_squares(theta, X, y, lr, mu=0.0):
    """Exact ISGD step, eq. (1), for the mini-batch loss l(theta) = ||X theta - y||^2 / (2B).

    theta+ solves ((1 + lr mu) I + (lr/B) X^T X) theta+ = theta + (lr/B) X^T y. With the thin
    SVD X = U S V^T, c = 1 + lr mu and a = lr / B, that matrix is c on the complement of
    X's row space and c + a S^2 along V (the push-through identity in coordinates), so

        theta+ = (theta - V V^T theta) / c + V (V^T theta + a S U^T y) / (c + a S^2),

    at cost O(B d min(B, d)) instead of O(d^3). Solving in the eigenbasis, rather than the
    B x B system (c I + a X X^T) e = X theta - c y, keeps the step accurate when lr is
    large and X X^T is singular (B > d, repeated examples), where that system is not.

    Shapes: theta (..., d), X (..., B, d), y (..., B); ``lr`` and ``mu`` are numbers or
    tensors broadcasting over the leading dimensions. Append a column of ones to X for a bias.
    """
    lr, mu = _as_tensor(lr, theta)[..., None], _as_tensor(mu, theta)[..., None]
    c, a = 1 + lr * mu, lr / X.shape[-2]
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    coords = (Vh @ theta[..., None]).squeeze(-1)
    data = S * (U.mT @ y[..., None]).squeeze(-1)
    new_coords = (coords + a * data) / (c + a * S**2)
    return (theta - (Vh.mT @ coords[..., None]).squeeze(-1)) / c + (Vh.mT @ new_coords[..., None]).squeeze(-1)


# --- 3. logistic regression: exact single-example step -------------------------------------

def solve_implicit_sigmoid(margin, sq_norm, lr, mu=0.0):
    """The root s in (0, 1) of s = sigmoid(-(margin + lr s sq_norm) / (1 + lr mu)).

    For the logistic loss l(theta) = log(1 + exp(-y x^T theta)), s = sigmoid(-y x^T theta+)
    is the gradient's weight at the new point of eq. (1); here margin = y x^T theta_t and
    sq_norm = ||x||^2. The right side decreases in s, so the root is unique and lies between
    its values at s = 1 and s = 0; vectorised bisection on that bracket finds it for any
    lr > 0 (also lr = 1e6, and sq_norm = 0, where the bracket is a single point). Bisection
    fixes s to an absolute 1e-18; a final Newton step makes that relative, which matters
    at large lr, where s is tiny and lr s sets the step.
    """
    c = 1 + lr * mu
    scaled = lr * sq_norm / c
    lo = torch.sigmoid(-(margin / c + scaled))
    hi = torch.sigmoid(-margin / c)
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        below_root = mid < torch.sigmoid(-(margin / c + scaled * mid))
        lo = torch.where(below_root, mid, lo)
        hi = torch.where(below_root, hi, mid)
    s = (lo + hi) / 2
    rhs = torch.sigmoid(-(margin / c + scaled * s))
    newton = s - (s - rhs) / (1 + rhs * (1 - rhs) * scaled)
    return newton.clamp(lo, hi)


def prox_logistic(theta, x, y, lr, mu=0.0):
    """Exact ISGD step, eq. (1), for one example of logistic regression,
    l(theta) = log(1 + exp(-y x^T theta)) with y in {-1, +1}:

        theta+ = (theta + lr y s x) / (1 + lr mu),   s = sigmoid(-y x^T theta+),

    with s from :func:`solve_implicit_sigmoid`. Shapes: theta (..., d), x (..., d), y (...):
    a leading dimension holds independent problems (runs, learning rates); ``lr`` and ``mu``
    are numbers or tensors broadcasting over it.
    """
    lr, mu = _as_tensor(lr, theta), _as_tensor(mu, theta)
    margin = y * (x * theta).sum(-1)
    s = solve_implicit_sigmoid(margin, (x * x).sum(-1), lr, mu)
    return (theta + (lr * y * s)[..., None] * x) / (1 + lr * mu)[..., None]


# --- 4. exact ISGD for any network: inner gradient descent ---------------------------------

def exact_isgd_inner(theta, grad, anchor, lr, inner_lr, mu=0.0):
    """One inner gradient-descent step on eq. (1) divided by 2 lr,

        l(theta) + mu/2 ||theta||^2 + ||theta - anchor||^2 / (2 lr),

    given grad = grad l(theta) and anchor = theta_t:
    theta - inner_lr (grad + mu theta + (theta - anchor) / lr). Its fixed point is the ISGD
    step theta+ = anchor - lr (grad l(theta+) + mu theta+)."""
    return theta - inner_lr * (grad + mu * theta + (theta - anchor) / lr)


def _check_mu(mu: float) -> float:
    if not isinstance(mu, (int, float)) or not math.isfinite(mu) or mu < 0:
        raise ValueError(f"weight decay mu must be a finite number >= 0, got {mu!r}; pass mu=0.0 for none")
    return float(mu)


class ExactISGD(torch.optim.Optimizer):
    """The paper's "exact ISGD" (section 5): each step approximately solves eq. (1) for the
    current mini-batch by ``inner_steps`` gradient-descent steps (:func:`exact_isgd_inner`)
    at learning rate ``lr * inner_lr_ratio``, starting from theta_t. The paper uses 100
    steps at a tenth of the outer learning rate, so a step costs about 100 gradients.

    ``step(closure)`` needs a closure, as ``torch.optim.LBFGS`` does: it zeroes the grads,
    computes the loss on the current batch, calls ``backward`` and returns the loss. It is
    called once per inner step; ``step`` returns its first value, the loss at theta_t.
    Parameters without a gradient are left alone, as in ``torch.optim.SGD``.

    The scale of the inner objective is the book's reading of the paper, which says only "100
    gradient descent steps of (1) at a learning rate 10 times smaller": the inner steps descend
    eq. (1) divided by 2 lr (see :func:`exact_isgd_inner`).

    A closure that draws random numbers (dropout in training mode) draws new ones at every
    inner step by default, so the inner steps descend a different sample of eq. (1) each.
    With ``fixed_noise=True`` the generators of the CPU and of the parameters' CUDA devices are
    reset before each inner step to their state at the start of the outer step, so every inner
    step sees the same draws (one dropout mask per outer step) and the descent minimises one
    fixed eq. (1); afterwards they are left as one closure call leaves them. A closure that
    draws nothing gives the same result either way.
    """

    def __init__(self, params, lr: float, mu: float = 0.0, inner_steps: int = 100,
                 inner_lr_ratio: float = 0.1, fixed_noise: bool = False):
        if not isinstance(inner_steps, int) or inner_steps < 1:
            raise ValueError(f"inner_steps must be an integer >= 1, got {inner_steps!r}; the paper uses 100")
        if not isinstance(inner_lr_ratio, (int, float)) or not 0 < inner_lr_ratio < math.inf:
            raise ValueError(
                f"inner_lr_ratio must be a finite number > 0, got {inner_lr_ratio!r}; the paper uses 0.1")
        defaults = dict(lr=check_lr(lr), mu=_check_mu(mu), inner_steps=inner_steps,
                        inner_lr_ratio=inner_lr_ratio)
        super().__init__(params, defaults)
        self.fixed_noise = bool(fixed_noise)

    def _rng_state(self):
        devices = sorted({p.device.index or 0 for group in self.param_groups for p in group["params"]
                          if p.device.type == "cuda"})
        return torch.get_rng_state(), [(d, torch.cuda.get_rng_state(d)) for d in devices]

    @staticmethod
    def _set_rng_state(state) -> None:
        cpu, cuda = state
        torch.set_rng_state(cpu)
        for device, device_state in cuda:
            torch.cuda.set_rng_state(device_state, device)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        if closure is None:
            raise ValueError(
                "ExactISGD.step needs a closure that re-evaluates the mini-batch loss, as "
                "torch.optim.LBFGS does: def closure(): optimizer.zero_grad(); "
                "loss = loss_fn(model(x), y); loss.backward(); return loss; "
                "then call optimizer.step(closure)"
            )
        anchors = [[p.detach().clone() for p in group["params"]] for group in self.param_groups]
        first_loss = None
        start = self._rng_state() if self.fixed_noise else None
        after_first = None
        for k in range(max(group["inner_steps"] for group in self.param_groups)):
            if start is not None and k > 0:
                self._set_rng_state(start)
            with torch.enable_grad():
                loss = closure()
            if first_loss is None:
                first_loss = loss
                after_first = self._rng_state() if self.fixed_noise else None
            for group, group_anchors in zip(self.param_groups, anchors):
                if k >= group["inner_steps"]:
                    continue
                lr, mu = group["lr"], group["mu"]
                inner_lr = lr * group["inner_lr_ratio"]
                for p, anchor in zip(group["params"], group_anchors):
                    if p.grad is not None:
                        p.copy_(exact_isgd_inner(p, p.grad, anchor, lr, inner_lr, mu))
        if after_first is not None:
            self._set_rng_state(after_first)
        return first_loss


# --- 5. optimizers for a linear model ------------------------------------------------------

class _LinearISGD(torch.optim.Optimizer):
    """Shared wrapper: theta = [weight, bias] of a one-output ``nn.Linear`` (the bias's input
    is 1), the batch read from ``closure.inputs`` and ``closure.targets``; a subclass's
    ``_prox(theta, X, targets, lr, mu)`` returns the new theta."""

    def __init__(self, linear: torch.nn.Linear, lr: float, mu: float = 0.0):
        if not isinstance(linear, torch.nn.Linear) or linear.out_features != 1:
            raise ValueError(
                f"{type(self).__name__} updates a torch.nn.Linear(d, 1) (one output); "
                f"got {linear!r}. Pass the linear model itself, not model.parameters()"
            )
        self.linear = linear
        super().__init__(linear.parameters(), dict(lr=check_lr(lr), mu=_check_mu(mu)))

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None or not hasattr(closure, "inputs") or not hasattr(closure, "targets"):
            raise ValueError(
                f"{type(self).__name__}.step needs the mini-batch: pass a closure object with "
                "attributes inputs (B, d) and targets (B,), such as ibtools.train.BatchClosure"
            )
        with torch.enable_grad():
            loss = closure()
        weight, bias = self.linear.weight, self.linear.bias
        X = closure.inputs.reshape(-1, self.linear.in_features).to(weight)
        targets = closure.targets.reshape(-1).to(weight)
        theta = weight.reshape(-1)
        if bias is not None:
            X = torch.cat([X, X.new_ones(len(X), 1)], dim=1)
            theta = torch.cat([theta, bias])
        group = self.param_groups[0]
        theta = self._prox(theta, X, targets, group["lr"], group["mu"])
        weight.copy_(theta[: weight.numel()].reshape(weight.shape))
        if bias is not None:
            bias.copy_(theta[weight.numel():])
        return loss


class ISGDLeastSquares(_LinearISGD):
    """Exact mini-batch ISGD, eq. (1), for a linear model under the least-squares loss
    ||X theta - y||^2 / (2B) (:func:`prox_least_squares`)."""

    def _prox(self, theta, X, targets, lr, mu):
        return prox_least_squares(theta, X, targets, lr, mu)


class ISGDLogistic(_LinearISGD):
    """Exact ISGD, eq. (1), for logistic regression with 0/1 labels, one example per step
    (:func:`prox_logistic`)."""

    def _prox(self, theta, X, targets, lr, mu):
        if len(X) != 1:
            raise ValueError(
                f"exact logistic ISGD is per-example, got a batch of {len(X)}: train with "
                "batch_size=1, or use ExactISGD or SGD for mini-batches"
            )
        return prox_logistic(theta, X[0], 2 * targets[0] - 1, lr, mu)
