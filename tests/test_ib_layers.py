"""ibtools.ib_layers: IB layers whose gradient is the implicit gradient (21) of Fagan & Iyengar,
so that torch.optim.SGD lands on the IB update (7).

References here are independent of the layers: eq. (7) from ibtools.ib.ib_update for one
example, explicit gradients from autograd through plain torch code, back-propagated b_t
of the RNN from autograd through an unrolled loop."""

from __future__ import annotations

import copy
import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES, TensorData
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ibtools import ib
from ibtools.ib_layers import MINIBATCH, IBElmanRNN, IBLinear, bind, set_minibatch, set_mode
from ibtools.train import BatchClosure, train

F32, F64 = torch.float32, torch.float64
# A leaky relu as a piecewise cubic: any PiecewiseCubic works where a name does.
LEAKY_RELU = ib.PiecewiseCubic(breakpoints=(0.0,), coefficients=((0.0, 0.1, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0)))
LEAKY = pytest.param(LEAKY_RELU, id="leaky_relu")
ACTIVATIONS = ["identity", "relu", "arctan", "hardtanh", "smoothstep", LEAKY]
STEP_ACTIVATIONS = ["relu", "arctan", "hardtanh", "identity", "smoothstep", LEAKY]
MAX_SLOPE = {"smoothstep": 1.5}  # sup |sigma'|, 1 for the others
DTYPES = [F32, F64]
# The GPU cases run wherever a GPU is present.

property_test = settings(deadline=None, max_examples=40, derandomize=True)
seeds = st.integers(0, 2**31 - 1)
log_lrs = st.floats(-3, 2)
mus = st.sampled_from([0.0, 0.1, 1.0])


def tolerance(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == F32 else dict(rtol=1e-10, atol=1e-11)


def generator(seed):
    return torch.Generator().manual_seed(seed)


def randn(seed, *shape, dtype=F64, device="cpu", scale=1.0):
    return (scale * torch.randn(*shape, generator=generator(seed), dtype=F64)).to(dtype=dtype, device=device)


def linear_layer(seed, n, m, activation, dtype=F64, device="cpu", mode="implicit", minibatch="per-example"):
    torch.manual_seed(seed)
    layer = IBLinear(n, m, activation, mode, minibatch).to(dtype=dtype, device=device)
    with torch.no_grad():  # a nonzero bias, so its column of theta is tested too
        layer.bias.copy_(randn(seed + 1, m, dtype=dtype, device=device, scale=0.5))
    return layer


def theta_of(layer: IBLinear) -> torch.Tensor:
    """(W, bias) as the paper's theta, the bias as the last column."""
    return torch.cat([layer.weight, layer.bias[:, None]], dim=1).detach().clone()


def with_one(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_ones(*x.shape[:-1], 1)], dim=-1)


def linear_gradients(layer, x, directions):
    """Gradients of W and bias for the batch-mean loss mean_i <directions_i, output_i>, whose
    per-example gradient with respect to the output is b_i = directions_i."""
    layer.zero_grad(set_to_none=True)
    (layer(x) * directions).sum(-1).mean().backward()
    return torch.cat([layer.weight.grad, layer.bias.grad[:, None]], dim=1)


# --- explicit mode is plain backpropagation ----------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@property_test
@given(seed=seeds, batch=st.integers(1, 6), n=st.integers(1, 6), m=st.integers(1, 6))
def test_explicit_linear_is_plain_autograd(activation, dtype, seed, batch, n, m):
    layer = linear_layer(seed, n, m, activation, dtype, mode="explicit")
    x = randn(seed + 2, batch, n, dtype=dtype, scale=2.0).requires_grad_(True)
    weights = [x, layer.weight, layer.bias]
    out = layer(x)
    expected = ib.activation_fn(activation)(F.linear(x, layer.weight, layer.bias))
    upstream = randn(seed + 3, batch, m, dtype=dtype)
    assert torch.equal(out, expected)
    for got, want in zip(torch.autograd.grad((out * upstream).sum(), weights),
                         torch.autograd.grad((expected * upstream).sum(), weights)):
        assert torch.equal(got, want)


def unrolled_rnn(rnn: IBElmanRNN, x: torch.Tensor, keep: list | None = None) -> torch.Tensor:
    """The recurrence written out, for autograd; ``keep`` collects every h_t (grads retained)."""
    sigma = ib.activation_fn(rnn.activation)
    h, hidden = x.new_zeros(x.shape[1], rnn.hidden_size), []
    for x_t in x:
        h = sigma(x_t @ rnn.weight_ih.T + h @ rnn.weight_hh.T + rnn.bias)
        if keep is not None:
            h.retain_grad()
            keep.append(h)
        hidden.append(h)
    return torch.stack(hidden)


def rnn_layer(seed, input_size, hidden_size, activation, dtype=F64, device="cpu", mode="implicit"):
    torch.manual_seed(seed)
    rnn = IBElmanRNN(input_size, hidden_size, activation, mode).to(dtype=dtype, device=device)
    with torch.no_grad():
        rnn.bias.copy_(randn(seed + 1, hidden_size, dtype=dtype, device=device, scale=0.5))
    return rnn


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("activation", ["arctan", "relu", "hardtanh"])
@property_test
@given(seed=seeds, steps=st.integers(1, 7), batch=st.integers(1, 4), n=st.integers(1, 5), m=st.integers(1, 6))
def test_explicit_rnn_is_autograd_through_the_unrolled_loop(activation, dtype, seed, steps, batch, n, m):
    rnn = rnn_layer(seed, n, m, activation, dtype, mode="explicit")
    x = randn(seed + 2, steps, batch, n, dtype=dtype).requires_grad_(True)
    upstream = randn(seed + 3, steps, batch, m, dtype=dtype)
    weights = [x, rnn.weight_ih, rnn.weight_hh, rnn.bias]
    out, expected = rnn(x), unrolled_rnn(rnn, x)
    torch.testing.assert_close(out, expected, **tolerance(dtype))
    for got, want in zip(torch.autograd.grad((out * upstream).sum(), weights),
                         torch.autograd.grad((expected * upstream).sum(), weights)):
        torch.testing.assert_close(got, want, **tolerance(dtype))


# --- implicit mode: one SGD step is the IB update (7) --------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("activation", STEP_ACTIVATIONS)
@property_test
@given(seed=seeds, n=st.integers(1, 6), m=st.integers(1, 6), log_lr=log_lrs, mu=mus)
def test_one_sgd_step_of_a_one_layer_network_is_eq_7(activation, dtype, device, seed, n, m, log_lr, mu):
    lr = 10**log_lr
    layer = linear_layer(seed, n, m, activation, dtype, device)
    optimizer = bind(layer, torch.optim.SGD(layer.parameters(), lr=lr, weight_decay=mu))
    x = randn(seed + 2, 1, n, dtype=dtype, device=device, scale=2.0)
    b = randn(seed + 3, 1, m, dtype=dtype, device=device, scale=3.0)
    theta = theta_of(layer)
    linear_gradients(layer, x, b)
    optimizer.step()
    expected = ib.ib_update(theta, with_one(x[0]), b[0], lr, mu, activation)
    # SGD's theta - lr (g + mu theta) meets (7)'s theta / (1 + lr mu) up to lr mu rounding errors.
    torch.testing.assert_close(theta_of(layer), expected, **tolerance(dtype))


@pytest.mark.parametrize("activation", ["relu", "arctan"])
@property_test
@given(seed=seeds, n=st.integers(1, 5), m=st.integers(1, 5), log_lr=log_lrs, mu=mus)
def test_rnn_of_one_step_and_one_example_is_eq_7(activation, seed, n, m, log_lr, mu):
    lr = 10**log_lr
    rnn = rnn_layer(seed, n, m, activation)
    optimizer = bind(rnn, torch.optim.SGD(rnn.parameters(), lr=lr, weight_decay=mu))
    x, b = randn(seed + 2, 1, 1, n, scale=2.0), randn(seed + 3, 1, 1, m, scale=3.0)
    theta = torch.cat([rnn.weight_hh, rnn.weight_ih, rnn.bias[:, None]], dim=1).detach().clone()
    (rnn(x) * b).sum().backward()
    optimizer.step()
    z = torch.cat([torch.zeros(m, dtype=F64), with_one(x[0, 0])])  # (h_0 = 0, x_1, 1)
    expected = ib.ib_update(theta, z, b[0, 0], lr, mu, activation)
    got = torch.cat([rnn.weight_hh, rnn.weight_ih, rnn.bias[:, None]], dim=1).detach()
    torch.testing.assert_close(got, expected, **tolerance(F64))


@pytest.mark.parametrize("activation", ["relu", "arctan"])
@property_test
@given(seed=seeds, steps=st.integers(1, 6), batch=st.integers(1, 4), log_lr=log_lrs, mu=mus)
def test_rnn_gradient_sums_an_ib_step_per_time_step_given_its_bptt_gradient(activation, seed, steps, batch,
                                                                           log_lr, mu):
    n, m, lr = 3, 4, 10**log_lr
    rnn = rnn_layer(seed, n, m, activation)
    optimizer = bind(rnn, torch.optim.SGD(rnn.parameters(), lr=lr, weight_decay=mu))  # held: layers hold it weakly
    x = randn(seed + 2, steps, batch, n)
    target = randn(seed + 3, steps, batch, m)
    loss = lambda hidden: (hidden - target).pow(2).sum((0, 2)).mean()  # noqa: E731 (batch mean)
    loss(rnn(x)).backward()
    got = torch.cat([rnn.weight_hh.grad, rnn.weight_ih.grad, rnn.bias.grad[:, None]], dim=1)
    # The reference: b_t from autograd through the unrolled loop, one eq. (7) per (t, example).
    hidden = []
    loss(unrolled_rnn(rnn, x, keep=hidden)).backward()
    theta = torch.cat([rnn.weight_hh, rnn.weight_ih, rnn.bias[:, None]], dim=1).detach()
    previous = torch.cat([torch.zeros(1, batch, m, dtype=F64), torch.stack(hidden)[:-1].detach()])
    z = torch.cat([previous, with_one(x)], dim=-1)
    expected = torch.zeros_like(theta)
    for t in range(steps):
        for i in range(batch):
            new = ib.ib_update(theta, z[t, i], batch * hidden[t].grad[i], lr, mu, activation)
            # (21) for one (t, i), less the decay term, which SGD's weight decay adds once
            expected += (theta - new) / lr - mu * theta / (1 + lr * mu)
    expected = expected / batch + mu * theta / (1 + lr * mu) - mu * theta
    torch.testing.assert_close(got, expected, **tolerance(F64))


# --- mini-batches ----------------------------------------------------------------------------------

@pytest.mark.parametrize("minibatch", MINIBATCH)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("activation", STEP_ACTIVATIONS)
@property_test
@given(seed=seeds, batch=st.integers(1, 8), log_lr=log_lrs, mu=mus)
def test_batch_gradient_combines_single_example_implicit_gradients(activation, dtype, minibatch, seed, batch,
                                                                   log_lr, mu):
    """per-example: the mean of the B one-example gradients, each on its example's whole loss;
    loss-share: the sum of the B one-example gradients, each on its 1/B share of the mean loss,
    with the decay correction (which each one-example gradient carries) counted once."""
    n, m, lr = 4, 3, 10**log_lr
    layer = linear_layer(seed, n, m, activation, dtype, minibatch=minibatch)
    optimizer = bind(layer, torch.optim.SGD(layer.parameters(), lr=lr, weight_decay=mu))  # held: layers hold it weakly
    x = randn(seed + 2, batch, n, dtype=dtype, scale=2.0)
    b = randn(seed + 3, batch, m, dtype=dtype, scale=3.0)
    together = linear_gradients(layer, x, b)
    if minibatch == "per-example":
        alone = torch.stack([linear_gradients(layer, x[i:i + 1], b[i:i + 1]) for i in range(batch)])
        expected = alone.mean(0)
    else:
        alone = torch.stack([linear_gradients(layer, x[i:i + 1], b[i:i + 1] / batch) for i in range(batch)])
        decay = lr * mu * mu / (1 + lr * mu) * theta_of(layer)
        expected = alone.sum(0) + (batch - 1) * decay
    torch.testing.assert_close(together, expected, **tolerance(dtype))


@pytest.mark.parametrize("activation", ["relu", "arctan"])
@property_test
@given(seed=seeds, batch=st.integers(2, 8), log_lr=st.floats(0, 2))
def test_the_conventions_agree_for_one_example_and_where_sigma_is_linear(activation, seed, batch, log_lr):
    """For B = 1 both are eq. (7); for the identity activation (linear: mu = 0 makes (8)'s
    alpha = b) both are EB's gradient."""
    lr = 10**log_lr
    x, b = randn(seed + 2, batch, 4), randn(seed + 3, batch, 3)
    grads = {}
    for minibatch in MINIBATCH:
        layer = linear_layer(seed, 4, 3, activation, minibatch=minibatch)
        optimizer = bind(layer, torch.optim.SGD(layer.parameters(), lr=lr))  # noqa: F841
        grads[minibatch] = (linear_gradients(layer, x[:1], b[:1]), linear_gradients(layer, x, b))
    torch.testing.assert_close(grads["per-example"][0], grads["loss-share"][0], **tolerance(F64))
    identity = {}
    for minibatch in MINIBATCH:
        layer = linear_layer(seed, 4, 3, "identity", minibatch=minibatch)
        optimizer = bind(layer, torch.optim.SGD(layer.parameters(), lr=lr))  # noqa: F841
        identity[minibatch] = linear_gradients(layer, x, b)
    torch.testing.assert_close(identity["per-example"], identity["loss-share"], **tolerance(F64))


def test_on_a_saturating_relu_batch_the_conventions_differ_by_the_batch_size():
    """B identical examples whose relu unit a long step pushes past its hinge (b > 0, c > 0):
    the proximal step on their mean loss (one example's loss) stops at the hinge, and so does
    per-example; under loss-share each share's step stops at the hinge on its own, so their
    sum moves the pre-activation B times as far."""
    batch, lr = 5, 10.0
    x = torch.ones(batch, 1, dtype=F64)
    grads = {}
    for minibatch in MINIBATCH:
        layer = IBLinear(1, 1, "relu", "implicit", minibatch).to(F64)
        with torch.no_grad():
            layer.weight.fill_(0.5)
            layer.bias.fill_(0.5)
        optimizer = bind(layer, torch.optim.SGD(layer.parameters(), lr=lr))  # noqa: F841
        grads[minibatch] = linear_gradients(layer, x, torch.ones(batch, 1, dtype=F64))
    c = 1.0  # z = (1, 1): c = 0.5 + 0.5
    step = lambda g: lr * (g @ torch.tensor([1.0, 1.0], dtype=F64)).item()  # noqa: E731 (the move of c)
    assert step(grads["per-example"]) == pytest.approx(c)  # to the hinge, the prox of the mean loss
    assert step(grads["loss-share"]) == pytest.approx(batch * c)  # B times as far


def test_set_minibatch_reaches_every_layer_and_checks_the_name():
    model = nn.Sequential(IBLinear(3, 3, "relu"), IBLinear(3, 2, "arctan"), IBElmanRNN(2, 2))
    assert {layer.minibatch for layer in model} == {"per-example"}
    set_minibatch(model, "loss-share")
    assert {layer.minibatch for layer in model} == {"loss-share"}
    assert "minibatch='loss-share'" in repr(model)
    with pytest.raises(ValueError, match="per-example.*loss-share"):
        set_minibatch(model, "mean")
    with pytest.raises(ValueError, match="unknown minibatch convention"):
        IBLinear(3, 3, "relu", minibatch="sum")


@pytest.mark.parametrize("minibatch", MINIBATCH)
def test_float32_tends_to_eb_at_tiny_rates_on_a_wide_arctan_batch(minibatch):
    """The classifier's arctan layer (320 -> 50), batch 100, float32: at lr 1e-6 the implicit
    gradient is EB's to 1e-3 (a cubic solved in closed form can lose this to cancellation)."""
    layer = linear_layer(0, 320, 50, "arctan", F32, minibatch=minibatch)
    optimizer = bind(layer, torch.optim.SGD(layer.parameters(), lr=1e-6))
    x, b = randn(1, 100, 320, dtype=F32), randn(2, 100, 50, dtype=F32)
    implicit = linear_gradients(layer, x, b)
    explicit = linear_gradients(set_mode(layer, "explicit"), x, b)
    assert ((implicit - explicit).norm() / explicit.norm()).item() < 1e-3
    del optimizer


@pytest.mark.parametrize("minibatch", MINIBATCH)
@pytest.mark.parametrize("activation", ["relu", "arctan"])
@property_test
@given(seed=seeds, batch=st.integers(1, 4), log_lr=log_lrs)
def test_rnn_batch_gradient_combines_single_sequence_gradients(activation, minibatch, seed, batch, log_lr):
    rnn = rnn_layer(seed, 3, 4, activation)
    rnn.minibatch = minibatch
    optimizer = bind(rnn, torch.optim.SGD(rnn.parameters(), lr=10**log_lr))  # held: layers hold it weakly
    x, upstream = randn(seed + 2, 5, batch, 3), randn(seed + 3, 5, batch, 4, scale=2.0)

    def gradients(i, share=1.0):
        rnn.zero_grad(set_to_none=True)
        (rnn(x[:, i]) * upstream[:, i] * share).sum((0, 2)).mean().backward()
        return torch.cat([rnn.weight_hh.grad, rnn.weight_ih.grad, rnn.bias.grad[:, None]], dim=1)

    together = gradients(slice(None))
    if minibatch == "per-example":
        expected = torch.stack([gradients(slice(i, i + 1)) for i in range(batch)]).mean(0)
    else:
        expected = torch.stack([gradients(slice(i, i + 1), 1 / batch) for i in range(batch)]).sum(0)
    torch.testing.assert_close(together, expected, **tolerance(F64))


# --- learning rates: small, large, scheduled ----------------------------------------------------

@pytest.mark.parametrize("activation", STEP_ACTIVATIONS)
@property_test
@given(seed=seeds, batch=st.integers(1, 5), mu=mus)
def test_implicit_gradient_tends_to_the_explicit_one_as_lr_goes_to_zero(activation, seed, batch, mu):
    layer = linear_layer(seed, 4, 3, activation)
    optimizer = bind(layer, torch.optim.SGD(layer.parameters(), lr=1.0, weight_decay=mu))
    x, b = randn(seed + 2, batch, 4), randn(seed + 3, batch, 3)
    explicit = linear_gradients(set_mode(layer, "explicit"), x, b)
    set_mode(layer, "implicit")
    errors = []
    for lr in (1e-3, 1e-5, 1e-7):
        optimizer.param_groups[0]["lr"] = lr
        errors.append((linear_gradients(layer, x, b) - explicit).abs().max().item())
    assert errors[-1] <= 1e-5 * (1 + explicit.abs().max().item())
    assert errors[2] <= errors[0] + 1e-12
    optimizer.param_groups[0]["lr"] = 0.0  # the limit itself: EB's gradient
    torch.testing.assert_close(linear_gradients(layer, x, b), explicit, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("activation", STEP_ACTIVATIONS)
@property_test
@given(seed=seeds, log_lr=st.floats(3, 10), mu=st.sampled_from([0.01, 0.1, 1.0]))
def test_huge_learning_rates_with_ridge_take_bounded_steps(activation, seed, log_lr, mu):
    """From (8), alpha = b sigma'(q) / (1 + lr mu), so by (7) ||theta+_j|| <= ||theta_j|| / (1 + lr mu)
    + sup|sigma'| |b_j| ||z|| / mu for every lr; EB's step grows with lr.
    In float64: SGD's weight decay meets (7)'s 1 / (1 + lr mu) only up to lr mu eps |theta|,
    which float32 would make of the order of theta itself at lr mu = 1e7."""
    lr = 10**log_lr
    layer = linear_layer(seed, 4, 3, activation)
    optimizer = bind(layer, torch.optim.SGD(layer.parameters(), lr=lr, weight_decay=mu))
    x, b = randn(seed + 2, 1, 4, scale=2.0), randn(seed + 3, 1, 3, scale=3.0)
    theta = theta_of(layer)
    linear_gradients(layer, x, b)
    optimizer.step()
    max_slope = MAX_SLOPE.get(activation, 1.0) if isinstance(activation, str) else 1.0
    bound = theta.norm(dim=1) / (1 + lr * mu) + max_slope * b[0].abs() * with_one(x[0]).norm() / mu
    assert torch.all(theta_of(layer).norm(dim=1) <= bound * (1 + 1e-6) + 1e-9)


def test_a_scheduler_changes_the_ib_step_with_no_extra_call():
    layer = linear_layer(0, 4, 3, "arctan")
    optimizer = bind(layer, torch.optim.SGD(layer.parameters(), lr=10.0, weight_decay=0.1))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)
    x, b = randn(2, 1, 4, scale=2.0), randn(3, 1, 3, scale=3.0)
    for lr in (10.0, 1.0, 0.1):
        theta = theta_of(layer)
        linear_gradients(layer, x, b)
        optimizer.step()
        scheduler.step()
        torch.testing.assert_close(theta_of(layer), ib.ib_update(theta, with_one(x[0]), b[0], lr, 0.1, "arctan"),
                                   **tolerance(F64))
    optimizer.param_groups[0]["lr"] = 3.0  # a manual change, too
    theta = theta_of(layer)
    linear_gradients(layer, x, b)
    optimizer.step()
    torch.testing.assert_close(theta_of(layer), ib.ib_update(theta, with_one(x[0]), b[0], 3.0, 0.1, "arctan"),
                               **tolerance(F64))


def test_loading_the_optimizers_state_keeps_the_layer_bound():
    layer = linear_layer(0, 4, 3, "relu")
    optimizer = bind(layer, torch.optim.SGD(layer.parameters(), lr=0.5))
    optimizer.load_state_dict(torch.optim.SGD(layer.parameters(), lr=2.0).state_dict())
    x, b = randn(2, 1, 4), randn(3, 1, 3, scale=3.0)
    theta = theta_of(layer)
    linear_gradients(layer, x, b)
    optimizer.step()
    torch.testing.assert_close(theta_of(layer), ib.ib_update(theta, with_one(x[0]), b[0], 2.0, 0.0, "relu"))


# --- binding: the errors name the fix ---------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: IBLinear(3, 2, "relu"), lambda: IBElmanRNN(3, 2)])
def test_implicit_mode_without_bind_says_to_call_bind(make):
    layer = make()
    x = torch.randn(4, 1, 3) if isinstance(layer, IBElmanRNN) else torch.randn(4, 3)
    with pytest.raises(RuntimeError, match=r"bind\(model, optimizer\)"):
        layer(x)
    with torch.no_grad():
        layer(x)  # no backward coming: nothing to bind
    set_mode(layer, "explicit")(x).sum().backward()
    set_mode(layer, "implicit")
    optimizer = bind(layer, torch.optim.SGD(layer.parameters(), lr=0.1))
    layer(x).sum().backward()
    with pytest.raises(RuntimeError, match=r"bind\(model, optimizer\) with the optimizer of this model"):
        copy.deepcopy(layer)(x)  # a copy is not what the optimizer steps
    del optimizer
    with pytest.raises(RuntimeError, match="keep a reference to the optimizer"):
        layer(x)


def test_bind_refuses_layers_the_optimizer_does_not_step_whole():
    model = nn.Sequential(IBLinear(3, 4, "relu"), IBLinear(4, 2, "arctan"))
    with pytest.raises(ValueError, match="model.parameters"):
        bind(model, torch.optim.SGD(model[0].parameters(), lr=0.1))
    groups = [{"params": [model[0].weight, model[1].weight]}, {"params": [model[0].bias, model[1].bias]}]
    with pytest.raises(ValueError, match="same group"):
        bind(model, torch.optim.SGD(groups, lr=0.1))


def test_modes_and_activations_are_checked():
    with pytest.raises(ValueError, match="mode"):
        IBLinear(3, 2, "relu", mode="exact")
    model = set_mode(nn.Sequential(IBLinear(3, 4, "relu"), nn.ReLU(), IBElmanRNN(4, 2)), "explicit")
    assert [layer.mode for layer in (model[0], model[2])] == ["explicit", "explicit"]
    with pytest.raises(ValueError, match="mode"):
        set_mode(model, "EB")
    with pytest.raises(ValueError):
        IBLinear(3, 2, "tanh")  # IB has no update for tanh: ibtools.ib says what to use instead


# --- clipping and training --------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["relu", "arctan"])
@pytest.mark.parametrize("clip_norm", [1e-3, 0.5, 1e6])
def test_clipping_then_sgd_steps_lr_times_the_clipped_implicit_gradient(activation, clip_norm):
    """Appendix D.6: the IB gradient (21) is clipped, then SGD steps along it."""
    lr = 3.0
    torch.manual_seed(0)
    model = nn.Sequential(IBLinear(5, 4, "relu"), IBLinear(4, 3, activation)).double()
    optimizer = bind(model, torch.optim.SGD(model.parameters(), lr=lr))
    x, y = randn(1, 1, 5, scale=2.0), randn(2, 1, 3)
    loss_fn = lambda out, target: 0.5 * (out - target).pow(2).sum()  # noqa: E731
    before = [p.detach().clone() for p in model.parameters()]
    BatchClosure(model, loss_fn, optimizer, x, y)()  # the unclipped implicit gradient
    gradient = [p.grad.clone() for p in model.parameters()]
    # The last layer's gradient is (21) for its own IB step (7), b = output - y.
    b = (model(x) - y).detach()[0]
    top = model[1]
    z = with_one(model[0](x).detach()[0])
    new = ib.ib_update(theta_of(top), z, b, lr, 0.0, activation)
    torch.testing.assert_close(torch.cat([gradient[2], gradient[3][:, None]], 1), (theta_of(top) - new) / lr)
    norm = torch.cat([g.reshape(-1) for g in gradient]).norm()
    optimizer.step(BatchClosure(model, loss_fn, optimizer, x, y, clip_norm=clip_norm))
    for p, p0, g in zip(model.parameters(), before, gradient):
        torch.testing.assert_close(p.detach(), p0 - lr * g * min(1.0, clip_norm / (norm.item() + 1e-6)))


def small_images(seed=0, n=96, classes=3) -> TensorData:
    """6x6 one-channel images: class k brightens row 2k, plus noise."""
    g = generator(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = 0.5 * torch.randn(n, 1, 6, 6, generator=g)
    x[torch.arange(n), 0, 2 * y] += 2.0
    return TensorData(x[:64], y[:64], x[64:], y[64:])


@pytest.mark.parametrize("mode", ["implicit", "explicit"])
def test_ib_layers_train_beside_convolutions_with_the_shared_loop(mode):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(),
                          IBLinear(64, 16, "arctan", mode), IBLinear(16, 3, "relu", mode))
    conv_before = model[0].weight.detach().clone()
    result = train(model, small_images(), lambda m: bind(m, torch.optim.SGD(m.parameters(), lr=0.5)),
                   loss="cross_entropy", epochs=4, batch_size=16, seed=0, device="cpu")
    epochs = [row for row in result.rows if row["kind"] == "epoch"]
    assert not result.diverged
    assert epochs[-1]["train_loss"] < 0.7 * epochs[0]["train_loss"]
    assert not torch.equal(model[0].weight, conv_before)  # the explicit layer below learns too


def test_the_rnn_learns_a_sequence():
    torch.manual_seed(0)
    rnn, readout = IBElmanRNN(4, 16), nn.Linear(16, 4)
    model = nn.ModuleList([rnn, readout])
    optimizer = bind(model, torch.optim.SGD(model.parameters(), lr=1.0))
    chords = (torch.rand(12, 2, 4, generator=generator(1)) < 0.4).float()

    def loss():
        return F.binary_cross_entropy_with_logits(readout(rnn(chords))[:-1], chords[1:])

    start = loss().item()
    for _ in range(30):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert math.isfinite(loss().item()) and loss().item() < 0.8 * start


# --- the benchmark's flop bound -------------------------------------------------------------------

def test_the_benchmarks_flop_bound_gives_section_4_5s_numbers():
    """(2n + c m) / (3nm): 4% (relu) and 34% (arctan) at n = m = 100; 0.4% and 3.4% at 1000."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ib_overhead.py"
    spec = importlib.util.spec_from_file_location("ib_overhead", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for size, activation, expected in [(100, "relu", 0.04), (100, "arctan", 0.34),
                                       (1000, "relu", 0.004), (1000, "arctan", 0.034)]:
        layer = [(size, size, activation, (7, size))]
        arch = bench.Architecture("one layer", None, None, None, None, layer, 7 * size * size, "", "")
        assert arch.flop_bounds() == pytest.approx((expected, expected))
    assert [a.name for a in bench.architectures(torch.device("cpu"))][0].startswith("MNIST classifier")
