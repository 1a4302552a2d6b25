"""Implicit backpropagation (IB) as torch layers that train with ``torch.optim.SGD``.

Fagan & Iyengar, *Robust Implicit Backpropagation*, sections 3-4. IB updates the parameters
theta = (W, bias) of a layer sigma(W x + bias) by the proximal step (4) on the loss with the
higher layers linearised; per unit j and example (z = (x, 1), b = dL/d output) that is

    theta_j+ = theta_j / (1 + lr mu) - lr alpha_j z,    alpha_j from eq. (8)    (7)

(:func:`ibtools.ib.ib_update`, :func:`ibtools.ib.solve_alpha`). A layer here does not step
itself: its backward returns the *implicit gradient* of appendix D.6, eq. (21),

    g = (theta_t - theta+) / lr,

chosen so that ``torch.optim.SGD`` with the same ``lr`` and ``weight_decay=mu`` lands exactly
on (7). SGD steps theta - lr (g + mu theta); solving for g per unit gives

    g_j = alpha_j z^T - lr mu^2 / (1 + lr mu) theta_j,

whose second term turns SGD's decay 1 - lr mu into IB's 1 / (1 + lr mu). (That exchange is
exact in exact arithmetic; in floating point SGD's theta - lr (g + mu theta) cancels to
theta / (1 + lr mu) with an error of about lr mu eps |theta|: 1e-3 relative in float32 at
lr mu = 1e4. Beyond that, use float64, or mu = 0 as the paper does.) So IB layers sit in
any model beside ordinary (explicit) layers, and everything that works on gradients works
on them: ``clip_grad_norm_`` clips the implicit gradient as appendix D.6 prescribes, a
learning-rate scheduler changes the IB step. With ``weight_decay > 0`` clipping acts on g,
the gradient without the decay term, as it does for ordinary layers under torch's SGD.

What a layer passes down to the layers below it is EB's back-propagated gradient
(b * sigma'(W x + bias)) W: IB's approximation (b) linearises the higher layers, so a lower
layer sees the ordinary gradient of the loss at theta_t.

The learning rate and mu reach the layers through :func:`bind`, called once after the
optimizer is made: every IB layer then reads ``lr`` and ``weight_decay`` from its param group
at each backward. :func:`set_mode` switches a whole model between IB and EB. On CUDA the
layers solve (8) fused by ``torch.compile`` (:func:`set_fuse`, :func:`solve`).
"""

from __future__ import annotations

import os
import warnings
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from ibtools.ib import activation_derivative, activation_fn, explicit_alpha, solve_alpha
from ibtools.steps import capturing

__all__ = ["MODES", "MINIBATCH", "FUSE", "IBLinear", "IBElmanRNN", "bind", "set_mode", "set_minibatch", "set_fuse",
           "fuse_mode", "solve"]

MODES = ("implicit", "explicit")
# How a mini-batch of B examples combines their implicit steps (the paper is silent; chapter 2
# derives both and sets them against the proximal step on the batch's mean loss):
# "per-example" (the default): each example's step is taken on its whole loss, and the steps
#     are averaged (with mu = 0, exact when the batch repeats one example);
# "loss-share": each example's step is taken on its share, 1/B, of the mean loss, and the steps
#     are summed (with mu = 0, exact when the inputs z_i = (x_i, 1) are mutually orthogonal;
#     Fagan & Iyengar's code, github.com/francoisfagan/NN_ISGD, isgd_fns.py).
MINIBATCH = ("per-example", "loss-share")


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use mode='implicit' (IB) or mode='explicit' (EB)")
    return mode


def _check_minibatch(minibatch: str) -> str:
    if minibatch not in MINIBATCH:
        raise ValueError(f"unknown minibatch convention {minibatch!r}; use 'per-example' (each example's "
                         "implicit step on its whole loss, averaged) or 'loss-share' (each example's "
                         "step on its 1/B share of the batch's mean loss, summed)")
    return minibatch


def _lr_and_mu(group: dict) -> tuple[float, float]:
    return float(group["lr"]), float(group.get("weight_decay", 0.0))


def _refuse_double_backward() -> None:
    # Cheaper than torch.autograd.function.once_differentiable, which costs more per call
    # than the rest of a small layer's backward.
    if torch.is_grad_enabled():
        raise RuntimeError("IB layers give no second derivatives (backward with create_graph=True); "
                           "use set_mode(model, 'explicit') for those")


def _decay_correction(lr: float, mu: float) -> float:
    """lr mu^2 / (1 + lr mu): what the implicit gradient subtracts times theta so that SGD's
    weight decay, theta (1 - lr mu), becomes IB's theta / (1 + lr mu)."""
    return lr * mu * mu / (1 + lr * mu)


def _squared_norm(x: torch.Tensor) -> torch.Tensor:
    """||x||^2 over the last dimension, kept (the fastest of torch's reductions for it on CPU)."""
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_()


def _batch_z_sq(x: torch.Tensor, scale: int) -> torch.Tensor:
    """scale ||(x_i, 1)||^2 per example, over the last dimension of x: what the layers pass to
    solve_alpha as z_sq, with b = grad_out, the gradient of the batch's mean loss.

    "loss-share" (scale 1) solves (8) for example i's share of the mean loss as it is.
    "per-example" (scale B) wants alpha(B grad_out_i, c_i, ||z_i||^2) / B, example i's own
    implicit gradient (its own loss's gradient is B grad_out_i) averaged over the batch; since
    alpha(k b, c, z_sq) = k alpha(b, c, k z_sq) (put alpha = k a in (8)), that is
    alpha(grad_out_i, c_i, B ||z_i||^2), which saves two passes over the (B, m) elements."""
    z_sq = _squared_norm(x).add_(1)
    return z_sq.mul_(scale) if scale != 1 else z_sq


def _z_scale(minibatch: str, batch: int) -> int:
    """The factor :func:`_batch_z_sq` puts on ||z||^2 for a batch of ``batch`` examples."""
    return batch if minibatch == "per-example" else 1


def _weight_gradient(alpha, inputs, weight, decay):
    """alpha^T inputs - decay weight, as one matmul (alpha (N, m), inputs (N, n))."""
    return torch.addmm(weight, alpha.mT, inputs, beta=-decay)


def _bias_gradient(alpha, bias, decay):
    """sum_i alpha_i - decay bias (the bias's input is 1)."""
    grad = alpha.sum(0)
    return grad.sub_(bias, alpha=decay) if decay else grad


# --- the implicit step's element-wise work, fused into few kernels ----------------------------
#
# solve_alpha is some twenty element-wise passes over the (B, m) elements (Cardano's formula
# for the arctan). On a CPU each pass costs its arithmetic; on a GPU each is a kernel whose
# launch and memory round trip cost more than its arithmetic at these sizes, and together they
# are most of what IB adds to EB's step. torch.compile fuses them into far fewer kernels.

# "auto" (the default, or $IBTOOLS_FUSE): fused on CUDA, eager elsewhere; "on": fused on
# every device (torch.compile needs a C++ compiler on the CPU, Triton on a GPU); "off": eager.
FUSE = ("auto", "on", "off")
_fuse = {"mode": None, "solver": None, "failed": None}


def set_fuse(mode: str) -> None:
    """How the IB layers solve eq. (8) in their backward: "auto" (fused by ``torch.compile`` on
    CUDA, eager :func:`ibtools.ib.solve_alpha` elsewhere), "on" (fused everywhere) or "off"
    (eager everywhere, the reference). The fused solver is the same arithmetic, rounded
    differently (the tests hold it to the eager one within 2e-5 relative in float32, 1e-12 in
    float64). If compiling fails, the layers warn once and stay eager. The default is
    ``$IBTOOLS_FUSE``, else "auto". Raises ValueError for another mode."""
    if mode not in FUSE:
        raise ValueError(f"unknown fuse mode {mode!r}; use 'auto' (fused on CUDA), 'on' or 'off'")
    _fuse["mode"], _fuse["failed"] = mode, None


def fuse_mode() -> str:
    """The mode :func:`set_fuse` set ("auto", "on" or "off"), else ``$IBTOOLS_FUSE``'s, else "auto"."""
    if _fuse["mode"] is None:
        set_fuse(os.environ.get("IBTOOLS_FUSE", "auto"))
    return _fuse["mode"]


def solve(activation, b, c, z_sq, lr, mu=0.0) -> torch.Tensor:
    """alpha of eq. (8) as the IB layers solve it: :func:`ibtools.ib.solve_alpha` (same
    arguments, shapes and result), fused by ``torch.compile`` where :func:`set_fuse` says so.

    If the compiler fails (no C++ compiler, no Triton, too many recompiles), the layers warn
    once and solve eagerly from then on; any other error is the caller's and is raised. Inside
    a CUDA graph's capture nothing is caught: a capture cannot go on past a failure, and
    :class:`ibtools.steps.GraphStep` runs each step eagerly once (compiling what it needs)
    before capturing it."""
    mode = fuse_mode()
    if _fuse["failed"] is None and (mode == "on" or (mode == "auto" and b.is_cuda)):
        if _fuse["solver"] is None:
            # dynamic=None: a shape or a learning rate that changes is made symbolic at its
            # second value rather than compiled anew for every value.
            _fuse["solver"] = torch.compile(solve_alpha, fullgraph=True)
        # One compiled entry per activation and dtype a process meets (the tests meet
        # dozens): more than torch's default limit of 8 before it gives up.
        with torch._dynamo.config.patch(recompile_limit=64):
            if capturing(b):
                return _fuse["solver"](activation, b, c, z_sq, lr, mu)
            try:
                return _fuse["solver"](activation, b, c, z_sq, lr, mu)
            except torch._dynamo.exc.TorchRuntimeError:
                pass  # an error of the arguments, met while tracing: the eager call below raises it as it is
            except torch._dynamo.exc.TorchDynamoException as err:  # the compiler's own failures
                _fuse["failed"] = f"{type(err).__name__}: {err}"
                warnings.warn(f"could not fuse the IB layers' solve of eq. (8) with torch.compile "
                              f"({_fuse['failed'][:300]}); solving it eagerly", RuntimeWarning, stacklevel=2)
    return solve_alpha(activation, b, c, z_sq, lr, mu)


# --- binding layers to the optimizer's learning rate ---------------------------------------

def bind(model: nn.Module, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Let every IB layer in ``model`` read its learning rate and mu from ``optimizer``.

    Call once, after making the optimizer; returns the optimizer, so
    ``make_optimizer = lambda m: bind(m, torch.optim.SGD(m.parameters(), lr=0.1))`` works with
    :func:`ibtools.train.train`. Each layer then reads ``group["lr"]`` and
    ``group["weight_decay"]`` of the param group holding its weights at every backward, so a
    scheduler's change reaches it with no further calls. (7) holds for ``torch.optim.SGD``
    without momentum; other optimizers receive the implicit gradient (21) as their gradient.

    The layer keeps the optimizer (weakly) and the position of its weight in it, rather than
    the group dict, so ``optimizer.load_state_dict``, which replaces the dicts, keeps it bound.
    """
    locations = {id(p): (g, k) for g, group in enumerate(optimizer.param_groups)
                 for k, p in enumerate(group["params"])}
    for name, layer in model.named_modules():
        if not isinstance(layer, _IBModule):
            continue
        found = {locations.get(id(p), (None, None))[0] for p in layer.parameters()}
        if None in found:
            raise ValueError(
                f"IB layer {name or type(layer).__name__!r} has parameters the optimizer does not "
                "update; make the optimizer from model.parameters() (after moving the model to "
                "its device), then call bind(model, optimizer)")
        if len(found) > 1:
            raise ValueError(
                f"IB layer {name or type(layer).__name__!r} has its parameters in {len(found)} param "
                "groups; one IB step (7) moves them together with one learning rate and mu, so put "
                "all of a layer's parameters (weights and bias) in the same group")
        layer._ib_binding = (weakref.ref(optimizer), *locations[id(layer._weights()[0])])
    return optimizer


def _bound_group(layer: nn.Module) -> dict:
    """The param group holding ``layer``'s weights, or an error that says how to bind it."""
    name = type(layer).__name__
    if layer._ib_binding is None:
        raise RuntimeError(
            f"{name} in implicit mode takes its learning rate and weight decay from the optimizer, "
            "and is not bound to one: call ibtools.ib_layers.bind(model, optimizer) once after "
            "creating the optimizer, or set_mode(model, 'explicit') for ordinary backpropagation")
    optimizer_ref, g, k = layer._ib_binding
    optimizer = optimizer_ref()
    if optimizer is None:
        raise RuntimeError(
            f"the optimizer {name} was bound to no longer exists: keep a reference to the optimizer "
            "you step, and call bind(model, optimizer) with it")
    groups = optimizer.param_groups
    if g >= len(groups) or k >= len(groups[g]["params"]) or groups[g]["params"][k] is not layer._weights()[0]:
        raise RuntimeError(
            f"the optimizer {name} was bound to does not step its weights (a copied model, or "
            "changed param groups): call bind(model, optimizer) with the optimizer of this model")
    return groups[g]


def set_mode(model: nn.Module, mode: str) -> nn.Module:
    """Switch every IB layer in ``model`` to ``mode``: "implicit" (IB) or "explicit" (EB,
    plain backpropagation through the same layers). Returns the model."""
    mode = _check_mode(mode)
    for layer in model.modules():
        if isinstance(layer, _IBModule):
            layer.mode = mode
    return model


def set_minibatch(model: nn.Module, minibatch: str) -> nn.Module:
    """Set how every IB layer in ``model`` combines a mini-batch's implicit steps:
    "per-example" or "loss-share" (see :class:`IBLinear`). Returns the model; raises
    ValueError for another name."""
    minibatch = _check_minibatch(minibatch)
    for layer in model.modules():
        if isinstance(layer, _IBModule):
            layer.minibatch = minibatch
    return model


class _IBModule(nn.Module):
    """What IB layers share: the mode, and the binding to an optimizer (:func:`bind`)."""

    _ib_binding = None

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self._mode = _check_mode(mode)

    @property
    def minibatch(self) -> str:
        return self._minibatch

    @minibatch.setter
    def minibatch(self, minibatch: str) -> None:
        self._minibatch = _check_minibatch(minibatch)

    def _group_for_backward(self) -> dict | None:
        """The param group an implicit backward reads, None when there will be no backward."""
        if self._mode == "explicit" or not torch.is_grad_enabled():
            return None
        if not (self.bias.requires_grad or any(w.requires_grad for w in self._weights())):
            return None
        return _bound_group(self)


# --- a fully connected layer -----------------------------------------------------------------

class _IBLinearFunction(torch.autograd.Function):
    """sigma(x W^T + bias) with IB's implicit gradient for W and bias, EB's for x."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation, group, minibatch):
        c = F.linear(x, weight, bias)
        ctx.save_for_backward(x, weight, bias, c)
        ctx.activation, ctx.group, ctx.minibatch = activation, group, minibatch
        return activation_fn(activation)(c)

    @staticmethod
    def backward(ctx, grad_out):
        _refuse_double_backward()
        x, weight, bias, c = ctx.saved_tensors
        activation = ctx.activation
        lr, mu = _lr_and_mu(ctx.group)
        alpha = grad_x = None
        if ctx.needs_input_grad[0] or lr == 0:
            alpha = explicit_alpha(activation, grad_out, c)
            if ctx.needs_input_grad[0]:
                grad_x = alpha @ weight
        if lr > 0:  # else IB's limit as lr -> 0, EB
            z_sq = _batch_z_sq(x, _z_scale(ctx.minibatch, x.shape[0]))
            alpha = solve(activation, grad_out, c, z_sq, lr, mu)
        decay = _decay_correction(lr, mu)
        return (grad_x, _weight_gradient(alpha, x, weight, decay),
                _bias_gradient(alpha, bias, decay), None, None, None)


class IBLinear(nn.Linear, _IBModule):
    """A fully connected layer fused with its element-wise activation: sigma(x W^T + bias).

    Weights Glorot-uniform, bias zero (appendix D.4). ``activation`` is any activation
    :func:`ibtools.ib.solve_alpha` solves (8) for: "identity", "relu", "arctan",
    "hardtanh", "smoothstep" or a piecewise cubic.

    ``mode="explicit"``: plain autograd of ``activation_fn(activation)(F.linear(x, W, bias))``,
    i.e. EB. ``mode="implicit"`` (IB; needs :func:`bind`): the gradient of W and bias is the
    implicit gradient (21) of a mini-batch x of shape (B, in_features), assuming the loss is
    the mean over the batch (dim 0). With b_i = dL/d output_i (the mean loss's gradient, so
    B b_i is example i's own), c_i = W x_i + bias and z_i = (x_i, 1), the layer's gradient is
    one of two sums, chosen by ``minibatch`` (the paper, written for one example, is silent):

    - ``"per-example"`` (default): g = (1/B) sum_i solve_alpha(B b_i, c_i, ||z_i||^2, lr, mu)
      z_i^T, each example's implicit step on its whole loss, averaged. With mu = 0 it is the
      proximal step on the batch's mean loss (higher layers linearised) when the batch
      repeats one example.
    - ``"loss-share"``: g = sum_i solve_alpha(b_i, c_i, ||z_i||^2, lr, mu) z_i^T, each
      example's implicit step on its share 1/B of the mean loss, summed (the convention of
      Fagan & Iyengar's code). With mu = 0 it is that proximal step when the z_i are mutually
      orthogonal.

    Either way minus lr mu^2 / (1 + lr mu) theta, the decay correction, and one matmul
    alpha^T Z (the cost of EB's weight gradient). The two agree where sigma is linear over
    the step and part where it saturates (for the relu by up to a factor B); for B = 1 both
    are exactly eq. (7), and as lr -> 0 both tend to EB's gradient. The gradient passed down
    to x is EB's. Chapter 2 derives both and measures each against the proximal step on real
    batches: where IB departs from EB, "loss-share" steps about as far as EB, farther than the
    prox, and "per-example" less far; the default errs on the short side.
    ``minibatch`` other than these two raises ValueError.
    """

    def __init__(self, in_features: int, out_features: int, activation, mode: str = "implicit",
                 minibatch: str = "per-example"):
        activation_fn(activation)  # an activation IB cannot handle fails here, not at backward
        super().__init__(in_features, out_features)
        self.activation = activation
        self.mode = mode
        self.minibatch = minibatch

    def reset_parameters(self) -> None:  # appendix D.4, as ibtools.models.glorot_
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def _weights(self) -> list[nn.Parameter]:
        return [self.weight]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        group = self._group_for_backward()
        if group is None:
            return activation_fn(self.activation)(F.linear(x, self.weight, self.bias))
        if x.dim() != 2:
            raise ValueError(f"IBLinear in implicit mode takes a batch of shape (B, {self.in_features}), "
                             f"got {tuple(x.shape)}; flatten the input first (nn.Flatten)")
        return _IBLinearFunction.apply(x, self.weight, self.bias, self.activation, group, self.minibatch)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, activation={self.activation!r}, mode={self.mode!r}, "
                f"minibatch={self.minibatch!r}")


# --- a simple recurrent network ----------------------------------------------------------------

class _ElmanFunction(torch.autograd.Function):
    """The whole sequence h_t = sigma(W_h h_{t-1} + W_x x_t + bias), h_0 = 0, with back-propagation
    through time by hand and the IB step of every (time step, example) at once."""

    @staticmethod
    def forward(ctx, x, weight_ih, weight_hh, bias, activation, group, minibatch):
        steps, batch, _ = x.shape
        sigma = activation_fn(activation)
        # The input part and bias of every pre-activation in one matmul; the loop adds W_h h_{t-1}.
        c = torch.addmm(bias, x.reshape(steps * batch, -1), weight_ih.mT).view(steps, batch, -1)
        hidden = [sigma(c[0])]
        for t in range(1, steps):
            hidden.append(sigma(c[t].addmm_(hidden[-1], weight_hh.mT)))
        hidden = torch.stack(hidden)
        ctx.save_for_backward(x, weight_ih, weight_hh, bias, c, hidden)
        ctx.activation, ctx.group, ctx.minibatch = activation, group, minibatch
        return hidden

    @staticmethod
    def backward(ctx, grad_hidden):
        _refuse_double_backward()
        x, weight_ih, weight_hh, bias, c, hidden = ctx.saved_tensors
        steps, batch, m = c.shape
        # b_t = dL/dh_t: from above, plus from step t + 1 through sigma'(c_{t+1}) and W_h.
        slope = activation_derivative(ctx.activation)(c)
        b = torch.empty_like(c)
        delta = torch.empty_like(c)  # dL/dc_t = b_t sigma'(c_t), EB's alpha
        b[-1] = grad_hidden[-1]
        torch.mul(b[-1], slope[-1], out=delta[-1])
        for t in range(steps - 2, -1, -1):
            torch.addmm(grad_hidden[t], delta[t + 1], weight_hh, out=b[t])
            torch.mul(b[t], slope[t], out=delta[t])
        group, decay = ctx.group, 0.0
        lr, mu = _lr_and_mu(group) if group is not None else (0.0, 0.0)
        if lr > 0:
            # k ||z_t||^2 = k (||h_{t-1}||^2 + ||x_t||^2 + 1) for every (t, example) at once,
            # k as in IBLinear (b is the gradient of the batch-mean loss).
            scale = _z_scale(ctx.minibatch, batch)
            z_sq = _batch_z_sq(x, scale)
            z_sq[1:] += _squared_norm(hidden[:-1]).mul_(scale)
            alpha = solve(ctx.activation, b, c, z_sq, lr, mu)
            decay = _decay_correction(lr, mu)
        else:
            alpha = delta
        flat = alpha.view(steps * batch, m)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (delta.view(steps * batch, m) @ weight_ih).view_as(x)
        grad_ih = _weight_gradient(flat, x.reshape(steps * batch, -1), weight_ih, decay)
        grad_hh = _weight_gradient(flat[batch:], hidden[:-1].reshape(-1, m), weight_hh, decay)
        return grad_x, grad_ih, grad_hh, _bias_gradient(flat, bias, decay), None, None, None


class IBElmanRNN(_IBModule):
    """A simple (Elman) recurrent layer, h_t = sigma(W_h h_{t-1} + W_x x_t + bias), h_0 = 0:
    the paper's music model (appendix D.3: arctan, 300 hidden units). Input (T, B, input_size),
    output every h_t, (T, B, hidden_size). Weights Glorot-uniform per matrix, bias zero.

    The whole sequence is one autograd Function: W_h, W_x and bias are shared by every time
    step, so a Function per step would make T small solves, T weight-gradient matmuls and T
    Python backward calls; here the forward runs the recurrence and the backward
    back-propagates through time by hand, b_t = dL/dh_t (from above, plus
    W_h^T (sigma'(c_{t+1}) b_{t+1}) from step t + 1), then solves eq. (8) for every
    (time step, example) in one vectorised :func:`ibtools.ib.solve_alpha` over
    (T, B, hidden_size), with c_t the pre-activation and z_t = (h_{t-1}, x_t, 1).

    ``mode="implicit"`` (needs :func:`bind`): each time step's contribution is the IB update
    (7) of that step's linear map theta z_t given the BPTT gradient b_t at that step; these
    implicit gradients are summed over time and combined over the batch (dim 1) by
    ``minibatch`` as in :class:`IBLinear` ("per-example": alpha solved with B b_{t,i} and
    averaged; "loss-share": solved with b_{t,i}, the batch mean loss's gradient, and summed):

        g = sum_i sum_t alpha_{t,i} z_{t,i}^T - lr mu^2 / (1 + lr mu) theta,

    one matmul alpha^T Z over all (t, i) per weight matrix, as EB's weight gradients are. The
    decay correction enters once, so SGD with ``weight_decay=mu`` shrinks theta by
    1 / (1 + lr mu) once per step. For T = B = 1 this is eq. (7).

    ``mode="explicit"``: the same recurrence with alpha = sigma'(c_t) b_t, EB's gradient, equal
    to autograd through the unrolled loop up to rounding. The gradient passed down to x is EB's.
    """

    def __init__(self, input_size: int, hidden_size: int, activation="arctan", mode: str = "implicit",
                 minibatch: str = "per-example"):
        super().__init__()
        activation_fn(activation)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.activation = activation
        self.mode = mode
        self.minibatch = minibatch
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight_ih)
        nn.init.xavier_uniform_(self.weight_hh)
        nn.init.zeros_(self.bias)

    def _weights(self) -> list[nn.Parameter]:
        return [self.weight_ih, self.weight_hh]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.input_size or x.shape[0] == 0:
            raise ValueError(f"IBElmanRNN takes a sequence of shape (T >= 1, B, {self.input_size}), "
                             f"got {tuple(x.shape)}")
        group = self._group_for_backward()
        return _ElmanFunction.apply(x, self.weight_ih, self.weight_hh, self.bias, self.activation, group,
                                    self.minibatch)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, activation={self.activation!r}, "
                f"mode={self.mode!r}, minibatch={self.minibatch!r}")
