"""The device paths, over every device this machine has (tests/conftest.py's ``device``).

Each test runs on the CPU and, where CUDA is present, on the GPU: a run there gives the CPU's
numbers (float64, to 1e-9), a captured step gives the eager step's, divergence ends a run
where checking every step would have, augmentation draws on the device. The tests marked
``cuda_only`` check what exists only there: replays from CUDA graphs, steps that never make
the host wait (``torch.cuda.set_sync_debug_mode("error")``), runs spread over every GPU.
``scripts/gpu-check`` runs this file (and the rest) on a GPU machine.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_classification
from torch import nn

from ibtools import ib_layers
from ibtools.ib import ACTIVATIONS, solve_alpha
from ibtools.ib_layers import IBLinear, bind, set_fuse
from ibtools.models import MLP, IBAutoencoder, IBMNISTClassifier, MusicRNN
from ibtools.sibp import SIBP, ProxBP
from ibtools.steps import EagerStep, GraphStep, torch_optimizer
from ibtools.sweep import pool_devices
from ibtools.train import BatchClosure, crop_and_flip, make_step, next_frame_nll, train

# What these check (graph replay, Triton kernels, CUDA's sync debug mode) exists on a CUDA GPU
# only; elsewhere there is nothing to run them on.
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="checks a path that exists only on a CUDA GPU, and torch sees none here; "
                                      "scripts/gpu-check runs it on a GPU machine")


def _ib_net(mode: str = "implicit") -> nn.Module:
    return nn.Sequential(IBLinear(4, 16, "arctan", mode), IBLinear(16, 3, "relu", mode))


def _run(device, *, lr=0.3, capture=None, read_every=None, epochs=3, mode="implicit"):
    torch.manual_seed(0)
    data = make_classification(n_train=96, n_test=32)
    return train(_ib_net(mode), data, lambda m: bind(m, torch.optim.SGD(m.parameters(), lr=lr)),
                 loss="cross_entropy", epochs=epochs, batch_size=20, seed=0, device=device, capture=capture,
                 read_every=read_every, evals_per_epoch=2)


def _losses(result, kind):
    return torch.tensor([row["loss"] for row in result.rows if row["kind"] == kind], dtype=torch.float64)


@pytest.mark.parametrize("mode", ["implicit", "explicit"])
def test_a_run_on_the_device_gives_the_cpu_runs_numbers(device, float64, mode):
    on_device, on_cpu = _run(device, mode=mode), _run("cpu", mode=mode)
    assert on_device.steps == on_cpu.steps == 3 * 5
    for kind in ("step", "epoch"):
        torch.testing.assert_close(_losses(on_device, kind), _losses(on_cpu, kind), rtol=1e-9, atol=1e-12)


def test_captured_and_eager_runs_agree(device, float64):
    captured, eager = _run(device, capture=None), _run(device, capture=False)
    for kind in ("step", "epoch"):
        torch.testing.assert_close(_losses(captured, kind), _losses(eager, kind), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lr", [30.0, 1e6])
def test_a_diverging_run_ends_where_checking_every_step_would_end_it(device, lr):
    every_step = _run(device, lr=lr, read_every=1)
    default = _run(device, lr=lr)  # on CUDA: read at evaluation points only
    assert every_step.diverged and default.diverged
    assert math.isfinite(default.last_finite_loss)
    assert (default.steps, default.last_finite_loss) == (every_step.steps, every_step.last_finite_loss)
    assert len(default.rows) == len(every_step.rows)


def test_augmentation_draws_on_the_images_device(device):
    dev = torch.device(device)
    images = torch.rand(16, 3, 32, 32, device=dev)
    generator = torch.Generator(device=dev).manual_seed(0)
    out = crop_and_flip(images, generator)
    assert out.device == images.device and out.shape == images.shape
    padded = F.pad(images, (4, 4, 4, 4), mode="reflect")
    for i in range(3):
        windows = [padded[i, :, a:a + 32, b:b + 32] for a in range(9) for b in range(9)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


# --- only where CUDA is --------------------------------------------------------------------------

def _book_steps(device):
    """(name, model, optimizer, inputs, targets, loss) of the steps the sweeps take, on ``device``."""
    dev = torch.device(device)
    torch.manual_seed(0)  # the same data and weights at every call
    images, labels = torch.rand(100, 1, 28, 28, device=dev), torch.randint(0, 10, (100,), device=dev)
    digits = torch.rand(100, 784, device=dev)
    chords = (torch.rand(40, 1, 88, device=dev) < 0.1).float()
    rows, classes = torch.rand(100, 784, device=dev), torch.randint(0, 10, (100,), device=dev)
    cases = [("classifier IB", IBMNISTClassifier("implicit"), images, labels, F.cross_entropy),
             ("classifier EB", IBMNISTClassifier("explicit"), images, labels, F.cross_entropy),
             ("autoencoder IB", IBAutoencoder("implicit"), digits, digits, F.mse_loss),
             ("RNN IB", MusicRNN("implicit"), chords, chords, next_frame_nll)]
    for name, model, x, y, loss in cases:
        model = model.to(dev)
        yield name, model, bind(model, torch.optim.SGD(model.parameters(), lr=0.01)), x, y, loss
    for name, make in (("SIBP", lambda m: SIBP(m, lr=1.0, lam=1.0)), ("SIBP l1", lambda m: SIBP(m, lr=1.0, l1=1e-4)),
                       ("ProxBP", lambda m: ProxBP(m, lr=0.1, lam=1.0))):
        model = MLP([784, 500, 10], ["relu", "identity"]).to(dev)
        yield name, model, make(model), rows, classes, F.cross_entropy


@cuda_only
@pytest.mark.parametrize("case", ["classifier IB", "classifier EB", "autoencoder IB", "RNN IB", "SIBP", "ProxBP"])
def test_the_books_steps_replay_from_a_cuda_graph_without_waiting(case):
    name, model, optimizer, x, y, loss = next(c for c in _book_steps("cuda") if c[0] == case)
    step = make_step(optimizer, torch.device("cuda"))
    assert isinstance(step, GraphStep)
    closure = BatchClosure(model, loss, optimizer, x, y)
    losses = [step(closure) for _ in range(4)]  # warm-up and capture
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses += [step(closure) for _ in range(6)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    values = torch.stack(losses).tolist()
    assert step.captures == 1 and step.replays == 7
    assert ib_layers._fuse["failed"] is None  # the IB layers' fused solver held through the capture
    assert all(math.isfinite(v) for v in values)
    if "classifier" not in name:  # no dropout: the same batch, steps going downhill
        assert values[-1] < values[0]


@cuda_only
@pytest.mark.parametrize("case", ["autoencoder IB", "SIBP", "SIBP l1", "ProxBP"])
def test_a_replayed_step_computes_what_the_eager_step_computes(case):
    """SIBP with l1 is not captured by train (not graph-safe: too costly), but can be."""
    results = []
    for stepper in (EagerStep, GraphStep):
        name, model, optimizer, x, y, loss = next(c for c in _book_steps("cuda") if c[0] == case)
        step = stepper(optimizer)
        closure = BatchClosure(model, loss, optimizer, x, y)
        results.append((torch.stack([step(closure) for _ in range(6)]), [p.detach().clone() for p in model.parameters()]))
    (eager_losses, eager_params), (graph_losses, graph_params) = results
    torch.testing.assert_close(graph_losses, eager_losses, rtol=1e-5, atol=1e-6)
    for a, b in zip(graph_params, eager_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@cuda_only
@pytest.mark.parametrize("cls, lr", [(torch.optim.Adam, 1e-3), (torch.optim.Adadelta, 1.0), (torch.optim.RMSprop, 1e-3)])
def test_torchs_counting_optimizers_replay_on_cuda(cls, lr):
    torch.manual_seed(0)
    model = MLP([784, 100, 10], ["relu", "identity"]).cuda()
    optimizer = torch_optimizer(cls, model.parameters(), lr=lr)
    step = make_step(optimizer, torch.device("cuda"), model=model)
    closure = BatchClosure(model, F.cross_entropy, optimizer, torch.rand(64, 784, device="cuda"),
                           torch.randint(0, 10, (64,), device="cuda"))
    losses = torch.stack([step(closure) for _ in range(8)]).tolist()
    assert isinstance(step, GraphStep) and step.replays == 5
    assert losses[-1] < losses[0]


def _matmul_precision():
    matmul = torch.backends.cuda.matmul
    return matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32


@cuda_only
@pytest.mark.parametrize("tf32", [True, False])
def test_tf32_holds_inside_a_run_from_its_first_evaluation_only(tf32):
    before = _matmul_precision()
    seen = []
    data = make_classification()

    class Probe(nn.Linear):
        def forward(self, x):
            seen.append(_matmul_precision())
            return super().forward(x)

    train(Probe(4, 3), data, lambda m: torch.optim.SGD(m.parameters(), lr=0.1), loss="cross_entropy", epochs=1,
          batch_size=32, seed=0, device="cuda", tf32=tf32, capture=False)
    assert len(set(seen)) == 1 and seen[0] in (("tf32", True) if tf32 else ("ieee", False))
    assert _matmul_precision() == before


@cuda_only
def test_sweeps_spread_their_workers_over_every_gpu():
    assert pool_devices("cuda") == [f"cuda:{i}" for i in range(torch.cuda.device_count())]


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_the_solve_fused_on_cuda_is_the_eager_one(activation, dtype):
    """On CUDA the layers fuse eq. (8) by default (Triton through torch.compile)."""
    set_fuse("auto")
    g = torch.Generator().manual_seed(0)
    b, c = (3 * torch.randn(100, 50, generator=g, dtype=dtype).cuda() for _ in range(2))
    z_sq = (300 * torch.rand(100, 1, generator=g, dtype=dtype)).cuda()
    alpha = ib_layers.solve(activation, b, c, z_sq, 0.5, 0.0)
    assert ib_layers._fuse["failed"] is None
    tolerance = dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(alpha, solve_alpha(activation, b, c, z_sq, 0.5, 0.0), **tolerance)
