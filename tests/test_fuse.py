"""The IB layers' fused solve of eq. (8) (torch.compile) against the eager reference.

The fused solver is compiled here for the CPU (inductor's C++ backend); on CUDA, where it is
the default, tests/test_gpu.py checks it with Triton.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ibtools import ib_layers
from ibtools.ib import ACTIVATIONS, PiecewiseCubic, solve_alpha
from ibtools.ib_layers import IBElmanRNN, IBLinear, bind, set_fuse

# sigma(x) = x below 0, x - x^3 / 3 on [0, 1), 2/3 above: a piecewise cubic of our own
SOFT = PiecewiseCubic(breakpoints=(0.0, 1.0),
                      coefficients=((0.0, 1.0, 0.0, 0.0), (0.0, 1.0, 0.0, -1 / 3), (2 / 3, 0.0, 0.0, 0.0)))
TOLERANCE = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-12, atol=1e-14)}


@pytest.fixture
def fused():
    """The layers' solver fused for this test (on every device), then the default again."""
    set_fuse("on")
    yield
    set_fuse("auto")


def _inputs(seed: int, dtype, device, shape=(9, 6)):
    g = torch.Generator().manual_seed(seed)
    b = 3 * torch.randn(shape, generator=g, dtype=dtype)
    c = 3 * torch.randn(shape, generator=g, dtype=dtype)
    z_sq = 20 * torch.rand(*shape[:-1], 1, generator=g, dtype=dtype)
    return [t.to(device) for t in (b, c, z_sq)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("activation", [*ACTIVATIONS, SOFT], ids=[*ACTIVATIONS, "piecewise cubic"])
def test_the_fused_solve_is_the_eager_one(fused, activation, dtype):
    for seed, (lr, mu) in enumerate([(0.3, 0.0), (5.0, 0.1), (40.0, 1e-3)]):
        b, c, z_sq = _inputs(seed, dtype, "cpu")
        alpha = ib_layers.solve(activation, b, c, z_sq, lr, mu)
        assert ib_layers._fuse["failed"] is None
        torch.testing.assert_close(alpha, solve_alpha(activation, b, c, z_sq, lr, mu), **TOLERANCE[dtype])


def _gradients(model, inputs, targets):
    optimizer = bind(model, torch.optim.SGD(model.parameters(), lr=2.0, weight_decay=0.01))
    optimizer.zero_grad()
    nn.functional.mse_loss(model(inputs), targets).backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("minibatch", ["per-example", "loss-share"])
def test_layers_give_the_same_implicit_gradients_fused_or_not(minibatch, float64):
    torch.manual_seed(0)
    dense = nn.Sequential(IBLinear(5, 7, "arctan", minibatch=minibatch), IBLinear(7, 3, "relu", minibatch=minibatch))
    rnn = IBElmanRNN(4, 6, "arctan", minibatch=minibatch)
    cases = [(dense, torch.randn(11, 5), torch.randn(11, 3)), (rnn, torch.randn(8, 3, 4), torch.randn(8, 3, 6))]
    for model, inputs, targets in cases:
        set_fuse("off")
        eager = _gradients(model, inputs, targets)
        set_fuse("on")
        try:
            fused_grads = _gradients(model, inputs, targets)
        finally:
            set_fuse("auto")
        assert ib_layers._fuse["failed"] is None
        for a, b in zip(fused_grads, eager):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_auto_fuses_on_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setitem(ib_layers._fuse, "solver", lambda *args: calls.append(args) or solve_alpha(*args))
    set_fuse("auto")
    b, c, z_sq = _inputs(0, torch.float32, "cpu")
    ib_layers.solve("relu", b, c, z_sq, 0.1, 0.0)
    assert calls == []  # the CPU's tensors
    set_fuse("off")
    ib_layers.solve("relu", b, c, z_sq, 0.1, 0.0)
    assert calls == []
    set_fuse("on")
    try:
        ib_layers.solve("relu", b, c, z_sq, 0.1, 0.0)
    finally:
        set_fuse("auto")
    assert len(calls) == 1


def test_a_compiler_that_fails_leaves_the_layers_eager_with_one_warning(monkeypatch, fused):
    def broken(*args):
        raise torch._dynamo.exc.BackendCompilerFailed(lambda *a: None, RuntimeError("no C++ compiler found"), None)

    monkeypatch.setitem(ib_layers._fuse, "solver", broken)
    b, c, z_sq = _inputs(0, torch.float64, "cpu")
    with pytest.warns(RuntimeWarning, match="(?s)could not fuse .* no C\\+\\+ compiler found"):
        alpha = ib_layers.solve("arctan", b, c, z_sq, 0.5, 0.0)
    torch.testing.assert_close(alpha, solve_alpha("arctan", b, c, z_sq, 0.5, 0.0), rtol=0, atol=0)
    monkeypatch.setitem(ib_layers._fuse, "solver", lambda *args: pytest.fail("the fused solver was tried again"))
    ib_layers.solve("arctan", b, c, z_sq, 0.5, 0.0)


def test_the_callers_own_errors_are_raised_and_leave_the_fused_solver_on(fused):
    b, c, z_sq = _inputs(0, torch.float64, "cpu")
    with pytest.raises(RuntimeError, match="size of tensor"):
        ib_layers.solve("relu", b, c[:, :2], z_sq, 0.5, 0.0)
    assert ib_layers._fuse["failed"] is None


def test_set_fuse_takes_only_its_modes():
    with pytest.raises(ValueError, match="unknown fuse mode 'yes'"):
        set_fuse("yes")


def test_the_environment_sets_the_default(monkeypatch):
    monkeypatch.setenv("IBTOOLS_FUSE", "off")
    monkeypatch.setitem(ib_layers._fuse, "mode", None)
    assert ib_layers.fuse_mode() == "off"
    set_fuse("auto")
