"""Neural Taylor approximations, Taylor losses and regret.

Balduzzi, Butler-Yeoman & McWilliams, *Neural Taylor Approximations: Convergence and
Exploration in Rectifier Networks* (ICLR 2017), section 2 and appendix A; *BBM (n)* below is
their equation (n).

On round n the network f_W is trained on a mini-batch (x^n, y^n) at weights W^n. Its
**neural Taylor approximation** is the first-order expansion of the output in the weights,

    T^n(V) = f_{W^n}(x^n) + sum_l <G_l, V_l - W_l^n>,      G_l = J_l^L (x) x_{l-1}   (Definition 1)

where J_l^L is the Jacobian of the output with respect to the pre-activations a_l of layer l
and x_{l-1} the layer's input. Restricting the sum to one layer gives T_l^n, to the weights
of one neuron alpha (a row of W_l, or one output channel of a convolution) T_alpha^n. The
**Taylor loss** l(T^n(V), y^n) is convex in V and agrees with the network's loss in value
and gradient at V = W^n (T1-T3 of appendix A.2), so an optimiser with O(sqrt N) regret on
convex losses satisfies BBM (3)-(4): the running mean of the training losses approaches the
**Taylor optimum in hindsight** min_V (1/N) sum_n l(T^n(V), y^n). Such optimisers include
online gradient descent with steps proportional to 1/sqrt(n) and AdaGrad, but not gradient
descent at a rate fixed independently of N, nor Adam or RMSProp, whose O(sqrt N) regret (BBM
Theorem 1, after Kingma & Ba) fails on convex counterexamples (Reddi, Kale & Kumar, ICLR 2018):
for them the recorder measures the regret, it does not presume a bound on it.

:func:`taylor_output` and :func:`taylor_loss` evaluate T^n and the Taylor loss directly, by
one forward-mode Jacobian-vector product (no Jacobian is formed); :func:`output_jacobian` and
:func:`jacobian_tensor` build J_l^L and G_l for one layer. :class:`TaylorRegret` records, on
every round, what back-propagation saw and keeps the cumulative loss, the Taylor optimum and
the regret of chosen neurons and layers.

Memory and time at full scale. The recorder never stores G_l. For the squared error the
Taylor loss of a neuron or a layer is a quadratic in its weights v (bias included),
l^n(v) = |c^n + M^n v|^2 / (B p_L), so the sum over rounds is fixed by three running sums,
H = sum M^T M, g = sum M^T c and k = sum |c|^2, updated each round in place; the optimum in
hindsight after N rounds is k - g^T H^+ g (closed form), computed at chosen checkpoints. For
a dense layer M is the outer product J (x) [x_{l-1}, 1], so a neuron needs only the scalars
|J_alpha|^2 and J_alpha . (f - y) per example and H costs (p_{l-1} + 1)^2 numbers per neuron
(4.9 MB in float64 for the autoencoder's first layer), a whole layer (p_l (p_{l-1} + 1))^2
(enabled up to ``max_layer_params``). For the cross-entropy there is no finite summary; the
recorder keeps c^n and M^n (p_L by the unit's weights) for ``examples`` examples of each
round, so memory grows as rounds x examples x p_L x weights, and the optimum is found by
L-BFGS on the stored convex problem at each checkpoint (where the stored problem is
separable its infimum, 0, is approached rather than attained).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacfwd, jacrev, jvp, vmap

with warnings.catch_warnings():  # torch scripts its forward-mode rules when first loaded, with a
    warnings.simplefilter("ignore", DeprecationWarning)  # deprecation warning about itself
    import torch._decomp.decompositions_for_jvp  # noqa: F401,E402

LOSSES = ("mse", "cross_entropy")


def _loss(name: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if name == "mse":
        return F.mse_loss(output, target.reshape(output.shape))
    if name == "cross_entropy":
        return F.cross_entropy(output, target)
    raise ValueError(f"unknown loss {name!r}; the Taylor losses here are {list(LOSSES)} (convex in the output)")


def sequential(model: nn.Module) -> nn.Sequential:
    """The ``nn.Sequential`` a model is made of (the model itself, or its ``net``, as in
    :class:`ibtools.models.MLP`)."""
    if isinstance(model, nn.Sequential):
        return model
    if isinstance(getattr(model, "net", None), nn.Sequential):
        return model.net
    raise ValueError(f"{type(model).__name__} is not an nn.Sequential: build the network as one "
                     "(layers indexed in order) so its layers can be named by position")


def _check_layer(net: nn.Sequential, index: int) -> nn.Module:
    if not 0 <= index < len(net) or not isinstance(net[index], (nn.Linear, nn.Conv2d)):
        layers = [i for i, m in enumerate(net) if isinstance(m, (nn.Linear, nn.Conv2d))]
        raise ValueError(f"module {index} is not a Linear or Conv2d layer of the network; its layers are at "
                         f"positions {layers}")
    return net[index]


# --- the Taylor approximation, directly ----------------------------------------------------------

def taylor_output(model: nn.Module, x: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """T^n(V) = f_W(x) + J_W f(x) . (V - W) for the parameters named in ``values`` (the others
    held at W): the network's (all parameters), a layer's or a neuron's Taylor approximation
    (Definition 1). One forward-mode Jacobian-vector product; differentiable in ``values``."""
    params = dict(model.named_parameters())
    unknown = set(values) - set(params)
    if unknown:
        raise ValueError(f"no parameters {sorted(unknown)} in the model; it has {sorted(params)}")
    base = {name: p.detach() for name, p in params.items()}
    tangents = {name: (values[name] - base[name]) if name in values else torch.zeros_like(base[name])
                for name in base}
    output, change = jvp(lambda p: functional_call(model, p, (x,)), (base,), (tangents,))
    return output + change


def unit_values(model: nn.Module, index: int, v: torch.Tensor, neuron: int | None = None) -> dict[str, torch.Tensor]:
    """The parameters of layer ``index`` with one neuron's weights (``neuron``: a row of a dense
    layer, an output channel of a convolution) or all of them (``neuron`` None) replaced by
    ``v``, laid out as the recorder's minimisers are: each unit's weights with its bias last.
    ``taylor_output(model, x, unit_values(...))`` is then T_alpha^n or T_l^n (Definition 1)."""
    layer = _check_layer(sequential(model), index)
    if layer.bias is None:
        raise ValueError("unit_values needs a layer with a bias (the bias is the last weight of each unit)")
    rows = list(range(layer.weight.shape[0])) if neuron is None else [neuron]
    v = v.reshape(len(rows), -1)
    chosen = torch.tensor(rows, device=v.device)
    weight = layer.weight.detach().reshape(layer.weight.shape[0], -1).index_put((chosen,), v[:, :-1])
    bias = layer.bias.detach().index_put((chosen,), v[:, -1])
    prefix = next(name for name, module in model.named_modules() if module is layer)
    return {f"{prefix}.weight": weight.reshape(layer.weight.shape), f"{prefix}.bias": bias}


def taylor_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, values: dict[str, torch.Tensor],
                loss: str = "mse") -> torch.Tensor:
    """The Taylor loss l(T^n(V), y^n) of Definition 1 (mean over the mini-batch)."""
    return _loss(loss, taylor_output(model, x, values), y)


def split(model: nn.Module, index: int) -> tuple[nn.Sequential, nn.Module, nn.Sequential]:
    """(modules before layer ``index``, the layer, modules after it)."""
    net = sequential(model)
    layer = _check_layer(net, index)
    return net[:index], layer, net[index + 1:]


def output_jacobian(model: nn.Module, index: int, x: torch.Tensor) -> torch.Tensor:
    """J_l^L for every example of ``x``: the Jacobian of the network's output with respect to
    the pre-activations of layer ``index``, shape (B, p_L, *a_l.shape[1:]). Forward mode when
    the layer has fewer units than the network has outputs, reverse mode otherwise."""
    head, layer, tail = split(model, index)
    with torch.no_grad():
        a = layer(head(x))

    def out(a_one):
        return tail(a_one.unsqueeze(0)).squeeze(0)

    outputs = out(a[0]).numel()
    transform = jacfwd if a[0].numel() <= outputs else jacrev
    return vmap(transform(out))(a)


def jacobian_tensor(model: nn.Module, index: int, x: torch.Tensor) -> torch.Tensor:
    """G_l = J_l^L (x) x_{l-1} of Definition 1 for one input ``x`` (a batch of one) and a dense
    layer: the (p_L, p_l, p_{l-1}) tensor of derivatives of the output with respect to W_l."""
    head, layer, _ = split(model, index)
    if not isinstance(layer, nn.Linear) or len(x) != 1:
        raise ValueError("jacobian_tensor forms G_l for one input (a batch of one) and a Linear layer; "
                         "for convolutions use output_jacobian and the layer's input patches")
    with torch.no_grad():
        inputs = head(x).reshape(-1)
    return torch.einsum("ja,b->jab", output_jacobian(model, index, x)[0], inputs)


# --- the pieces of a layer's Taylor approximation ------------------------------------------------

def _patches(layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The inputs each unit of the layer sees, with a 1 appended for the bias: (B, P, q + 1),
    P the number of positions (1 for a dense layer), q the fan-in."""
    if isinstance(layer, nn.Linear):
        z = inputs.reshape(len(inputs), 1, -1)
    else:
        if layer.groups != 1 or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError("Taylor regret supports Conv2d with groups=1, zero padding given as numbers")
        z = F.unfold(inputs, layer.kernel_size, dilation=layer.dilation, padding=layer.padding,
                     stride=layer.stride).transpose(1, 2)
    return torch.cat([z, torch.ones_like(z[..., :1])], dim=-1)


def _unit_weights(layer: nn.Module) -> torch.Tensor:
    """Each unit's weights with its bias last: (p_l, q + 1)."""
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    b = layer.bias.detach() if layer.bias is not None else torch.zeros_like(w[:, 0])
    return torch.cat([w, b[:, None]], dim=1)


@dataclass
class LayerView:
    """What back-propagation sees of one layer on one round: the output ``f`` (B, p_L), the
    Jacobian ``jac`` = J_l^L (B, p_L, p_l, P), the patches ``z`` (B, P, q + 1) and the units'
    weights ``w`` (p_l, q + 1), so that a_l = w z^T and T_l(V) = f + sum J (V - W) z."""

    f: torch.Tensor
    jac: torch.Tensor
    z: torch.Tensor
    w: torch.Tensor

    @property
    def dense(self) -> bool:
        return self.z.shape[1] == 1

    def unit_matrix(self, units: Sequence[int]) -> torch.Tensor:
        """M with T(v) = f + M (v - w) for the weights of ``units`` together: (B, p_L, n, q + 1)."""
        return torch.einsum("bjnp,bpk->bjnk", self.jac[:, :, list(units)], self.z)


def layer_view(model: nn.Module, index: int, x: torch.Tensor, f: torch.Tensor | None = None) -> LayerView:
    head, layer, _ = split(model, index)
    with torch.no_grad():
        inputs = head(x)
        if f is None:
            f = model(x)
    jac = output_jacobian(model, index, x)
    jac = jac.reshape(*jac.shape[:3], -1)  # (B, p_L, p_l, P)
    return LayerView(f=f.reshape(len(x), -1).detach(), jac=jac.detach(), z=_patches(layer, inputs).detach(),
                     w=_unit_weights(layer))


# --- regret --------------------------------------------------------------------------------------

@dataclass
class _Quadratic:
    """sum_n |c^n + M^n v|^2 / (B_n p_L), held as (H, g, k): v^T H v + 2 g^T v + k."""

    H: torch.Tensor
    g: torch.Tensor
    k: torch.Tensor

    def add(self, H, g, k) -> None:
        self.H += H
        self.g += g
        self.k += k

    def minimum(self) -> tuple[float, torch.Tensor]:
        """min_v and its minimiser (least norm), by a symmetric eigendecomposition."""
        values, vectors = torch.linalg.eigh(self.H)
        keep = values > values.abs().max() * self.H.shape[0] * torch.finfo(values.dtype).eps
        coords = vectors.T @ self.g
        v = -(vectors[:, keep] @ (coords[keep] / values[keep]))
        return float(self.k + self.g @ v), v


@dataclass
class _Stored:
    """The cross-entropy Taylor losses of the recorded examples: logits c + M v, labels y,
    each example weighted 1/(examples of its round)."""

    c: list = field(default_factory=list)
    M: list = field(default_factory=list)
    y: list = field(default_factory=list)
    weight: list = field(default_factory=list)

    def minimum(self, start: torch.Tensor, iters: int) -> tuple[float, torch.Tensor]:
        c, M, y, weight = (torch.cat(t) for t in (self.c, self.M, self.y, self.weight))

        def total(v):
            return (F.cross_entropy(c + M @ v, y, reduction="none") * weight).sum()

        v = start.clone().requires_grad_(True)
        solver = torch.optim.LBFGS([v], lr=1, max_iter=iters, tolerance_grad=1e-10, tolerance_change=1e-14,
                                   history_size=20, line_search_fn="strong_wolfe")

        def closure():
            solver.zero_grad()
            value = total(v)
            value.backward()
            return value

        solver.step(closure)
        with torch.no_grad():
            return float(total(v)), v.detach()


@dataclass(frozen=True)
class Unit:
    """A tracked unit: one neuron of a layer, or the whole layer (``neuron`` None)."""

    layer: int
    neuron: int | None

    @property
    def scope(self) -> str:
        return "layer" if self.neuron is None else "neuron"


class TaylorRegret:
    """Cumulative loss, Taylor optimum in hindsight and regret (BBM (3)-(4)) of chosen neurons
    and layers of a network as it trains.

    ``neurons`` maps a layer's position in the network's ``nn.Sequential`` to the neurons
    (rows of a dense layer, output channels of a convolution) to track; ``layers`` lists the
    layers tracked whole. Call :meth:`observe` with each round's mini-batch *before* the
    update (the round's weights W^n are the ones its loss was incurred at); at every round
    in ``checkpoints`` the Taylor optimum of the rounds so far is computed and a row per unit
    is added to :attr:`rows`: ``round`` N, ``cum_loss`` = sum_n l^n(W^n), ``taylor_opt`` =
    min_v sum_n l^n(v), ``regret`` = their difference. Divide by sqrt(N) to compare with
    BBM's figures. ``examples``: for the cross-entropy, the number of examples of each round
    kept (the first of the batch; the batch order is random); the incurred losses are then
    those of the same examples, so that both sides of the regret see the same losses."""

    def __init__(self, model: nn.Module, *, neurons: dict[int, Sequence[int]] | None = None,
                 layers: Sequence[int] = (), loss: str = "mse", checkpoints: Sequence[int] = (),
                 examples: int | None = None, max_layer_params: int = 4096, solver_iters: int = 200):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; the Taylor losses here are {list(LOSSES)}")
        net = sequential(model)
        self.model, self.loss, self.solver_iters = model, loss, solver_iters
        self.examples = examples if loss == "cross_entropy" else None
        if examples is not None and examples < 1:
            raise ValueError(f"examples must be >= 1 (or None for all), got {examples}")
        self.units: list[Unit] = []
        for index, chosen in (neurons or {}).items():
            layer = _check_layer(net, index)
            units = layer.weight.shape[0]
            for alpha in chosen:
                if not 0 <= alpha < units:
                    raise ValueError(f"layer {index} has {units} neurons; neuron {alpha} does not exist")
                self.units.append(Unit(index, int(alpha)))
        for index in layers:
            layer = _check_layer(net, index)
            size = layer.weight.numel() + layer.weight.shape[0]
            if loss == "mse" and size > max_layer_params:
                raise ValueError(f"layer {index} has {size} weights; its closed-form Taylor optimum needs a "
                                 f"{size} x {size} matrix. Track its neurons instead, or raise max_layer_params")
            self.units.append(Unit(index, None))
        if not self.units:
            raise ValueError("nothing to track: give neurons={layer: [neurons]} and/or layers=[...]")
        self.checkpoints = sorted({int(n) for n in checkpoints})
        self.round = 0
        self.cum_loss = 0.0
        self.state: dict[Unit, _Quadratic | _Stored] = {}
        self.rows: list[dict] = []

    # -- one round ---------------------------------------------------------------------------

    def observe(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Record round n at the current weights; returns the round's (recorded) loss."""
        if self.examples is not None:
            x, y = x[:self.examples], y[:self.examples]
        with torch.no_grad():
            f = self.model(x)
            incurred = float(_loss(self.loss, f, y))
        if not math.isfinite(incurred):
            raise FloatingPointError(f"the loss at round {self.round + 1} is {incurred}: the run diverged")
        views = {index: layer_view(self.model, index, x, f) for index in {u.layer for u in self.units}}
        for unit in self.units:
            self._add(unit, views[unit.layer], y)
        self.round += 1
        self.cum_loss += incurred
        if self.round in self.checkpoints:
            self.checkpoint()
        return incurred

    def _add(self, unit: Unit, view: LayerView, y: torch.Tensor) -> None:
        wide = torch.float64
        units = [unit.neuron] if unit.neuron is not None else list(range(view.w.shape[0]))
        w = view.w[units].reshape(-1).to(wide)
        if self.loss == "cross_entropy":
            M = view.unit_matrix(units).reshape(len(y), view.f.shape[1], -1).to(wide)
            state = self.state.setdefault(unit, _Stored())
            state.c.append(view.f.to(wide) - M @ w)
            state.M.append(M)
            state.y.append(y)
            state.weight.append(torch.full((len(y),), 1.0 / len(y), dtype=wide, device=y.device))
            return
        H, g, k = self._squared_terms(view, units, y, w)
        if unit not in self.state:
            self.state[unit] = _Quadratic(torch.zeros_like(H), torch.zeros_like(g), torch.zeros((), dtype=wide,
                                                                                             device=H.device))
        self.state[unit].add(H, g, k)

    @staticmethod
    def _squared_terms(view: LayerView, units: list[int], y: torch.Tensor, w: torch.Tensor):
        """(H, g, k) of this round's squared-error Taylor loss |c + M v|^2 / (B p_L), c = f - y - M w."""
        wide = torch.float64
        B, outputs = view.f.shape
        scale = 1.0 / (B * outputs)
        error = (view.f - y.reshape(view.f.shape)).to(wide)  # f - y
        if view.dense:  # M = J (x) z: never formed
            z = view.z[:, 0].to(wide)  # (B, q + 1)
            J = view.jac[..., 0][:, :, units].to(wide)  # (B, p_L, n)
            a = z @ w.reshape(len(units), -1).T  # (B, n) pre-activations
            residual = error - torch.einsum("bjn,bn->bj", J, a)  # c, (B, p_L)
            JtJ = torch.einsum("bjn,bjm->bnm", J, J)
            H = torch.einsum("bnm,bk,bl->nkml", JtJ, z, z).reshape(w.numel(), w.numel())
            g = torch.einsum("bjn,bj,bk->nk", J, residual, z).reshape(-1)
            return H * scale, g * scale, residual.pow(2).sum() * scale
        M = view.unit_matrix(units).reshape(B, outputs, -1).to(wide)
        residual = error - M @ w
        return (torch.einsum("bji,bjk->ik", M, M) * scale, torch.einsum("bji,bj->i", M, residual) * scale,
                residual.pow(2).sum() * scale)

    # -- the optimum in hindsight ------------------------------------------------------------------

    def optimum(self, unit: Unit) -> tuple[float, torch.Tensor]:
        """min_v sum_{n <= N} l^n(v) over the unit's weights (bias last), and a minimiser.

        Unconstrained: v ranges over all weights, not over the bounded set H of diameter D
        against which BBM (3)-(4) and the O(sqrt N) regret bounds hold (BBM section 2.1), so the
        regret measured against it is not bounded by that theory. For the squared error the
        minimiser is the least-norm one; for the cross-entropy L-BFGS approaches the infimum,
        which is 0, at infinity, when the stored examples are separable."""
        state = self.state[unit]
        if isinstance(state, _Quadratic):
            return state.minimum()
        net = sequential(self.model)
        start = _unit_weights(net[unit.layer])
        start = (start[unit.neuron] if unit.neuron is not None else start).reshape(-1).to(torch.float64)
        return state.minimum(start, self.solver_iters)

    def checkpoint(self) -> None:
        """Add a row per unit for the rounds so far."""
        for unit in self.units:
            value, _ = self.optimum(unit)
            self.rows.append(dict(round=self.round, layer=unit.layer, neuron=-1 if unit.neuron is None else unit.neuron,
                                  scope=unit.scope, cum_loss=self.cum_loss, taylor_opt=value,
                                  regret=self.cum_loss - value))

    @property
    def nbytes(self) -> int:
        """Memory held by the recorded statistics."""
        total = 0
        for state in self.state.values():
            tensors = [state.H, state.g] if isinstance(state, _Quadratic) else state.c + state.M + state.weight
            total += sum(t.numel() * t.element_size() for t in tensors)
        return total


def sqrt_checkpoints(rounds: int, count: int = 20) -> list[int]:
    """About ``count`` checkpoints from round 1 to ``rounds``, evenly spaced in sqrt(N) (so that
    a curve of regret / sqrt(N) is sampled evenly where it flattens), always ending at ``rounds``."""
    if rounds < 1:
        raise ValueError(f"need rounds >= 1, got {rounds}")
    points = {max(1, round((k / count) ** 2 * rounds)) for k in range(1, count + 1)}
    return sorted(points | {rounds})
