"""How a step runs on its device (ibtools.steps) and the training loop's reads of the device.

On this CPU: the detector of host waits sees what a GPU would wait on (in autograd's backward
too); every step the book's sweeps take is free of them; GraphStep's bookkeeping (fixed
buffers, warm-up, recapture when the learning rate changes, eager for another shape) gives
the eager step's numbers, with a capture that replays by calling the step; and the loop's
records do not depend on how often it reads the losses, diverging runs included.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_classification

import ibtools.train as train_module
from ibtools.ib_layers import bind
from ibtools.models import MLP, CIFARResNet, IBAutoencoder, IBMNISTClassifier, MusicRNN
from ibtools.steps import (EagerStep, GraphStep, HostSync, graph_safe, host_syncs, host_waits, no_host_syncs,
                           precision, torch_optimizer)
from ibtools.train import BatchClosure, StepDecay, WatchedOptimizer, crop_and_flip, make_step, next_frame_nll, train

# --- the detector ---------------------------------------------------------------------------------


class _Doubling(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        if grad.abs().max() > 0:  # a host wait inside backward
            return 2 * grad
        return grad


def test_host_syncs_names_every_kind_of_wait_backward_included():
    x = torch.ones(4, requires_grad=True)
    with host_syncs() as calls:
        _Doubling.apply(x).sum().backward()
        y = x.detach()
        float(y[0]), int(y[1]), y.sum().item(), y.tolist(), y[y > 0], torch.nonzero(y)
    assert calls == ["__bool__", "__float__", "__int__", "item", "tolist", "boolean-mask indexing", "nonzero"]


def test_host_syncs_restores_torch_and_counts_nothing_outside():
    before = torch.Tensor.item, torch.Tensor.__bool__, torch.nonzero, torch.Tensor.__getitem__
    assert not host_waits(torch.ones(1))
    with host_syncs() as calls:
        assert host_waits(torch.ones(1))  # inside, the CPU takes the GPU's branches
    torch.ones(2).sum().item()
    assert calls == []
    assert (torch.Tensor.item, torch.Tensor.__bool__, torch.nonzero, torch.Tensor.__getitem__) == before


def test_no_host_syncs_raises_at_the_first_wait_and_restores():
    with pytest.raises(HostSync, match="__bool__"):
        with no_host_syncs():
            bool(torch.ones(1) > 0)
    assert bool(torch.ones(1) > 0)


# --- every step the sweeps take is free of host waits -------------------------------------------

def _ib_sgd(model):
    return bind(model, torch.optim.SGD(model.parameters(), lr=0.1))


def _cases():
    images, labels = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    digits, chords = torch.rand(8, 784), (torch.rand(12, 1, 88) < 0.1).float()
    yield "MNIST classifier, IB", IBMNISTClassifier("implicit"), images, labels, F.cross_entropy, _ib_sgd, None
    yield "MNIST classifier, EB", IBMNISTClassifier("explicit"), images, labels, F.cross_entropy, _ib_sgd, None
    yield "autoencoder, IB", IBAutoencoder("implicit"), digits, digits, F.mse_loss, _ib_sgd, None
    yield "RNN, IB, clipped", MusicRNN("implicit"), chords, chords, next_frame_nll, _ib_sgd, 1.0
    yield ("ResNet-8, SGD with momentum and a schedule", CIFARResNet(8), torch.rand(4, 3, 32, 32),
           torch.randint(0, 10, (4,)), F.cross_entropy,
           lambda m: StepDecay(torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4), [1]), None)


@pytest.mark.parametrize("name, model, inputs, targets, loss_fn, make, clip", list(_cases()),
                         ids=[case[0] for case in _cases()])
def test_the_books_training_steps_never_wait_for_the_device(name, model, inputs, targets, loss_fn, make, clip):
    torch.manual_seed(0)
    optimizer = make(model)
    assert graph_safe(optimizer)
    closure = BatchClosure(model, loss_fn, optimizer, inputs, targets, clip)
    optimizer.step(closure)  # the first step makes the optimizer's state
    with host_syncs() as calls:
        loss = optimizer.step(closure)
    assert calls == []
    assert math.isfinite(float(loss))


def test_graph_safe_says_no_to_what_cannot_be_replayed():
    model = MLP([3, 4, 1], ["relu", "identity"])
    assert graph_safe(torch.optim.SGD(model.parameters(), lr=0.1))
    assert not graph_safe(torch.optim.Adam(model.parameters(), lr=0.1))  # not declared graph-safe

    class Timed(WatchedOptimizer):
        def update(self, closure):  # an overridden update may do anything on the host
            return super().update(closure)

    for cls in (torch.optim.Adam, torch.optim.Adadelta, torch.optim.RMSprop):
        assert graph_safe(cls(model.parameters(), lr=0.1, capturable=True))  # step counts on the device
        assert not graph_safe(cls(model.parameters(), lr=0.1))
    assert graph_safe(WatchedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1)))
    assert not graph_safe(Timed(torch.optim.SGD(model.parameters(), lr=0.1)))


def test_torch_optimizer_makes_torchs_optimizers_capturable_on_cuda_only():
    model = MLP([3, 4, 1], ["relu", "identity"])
    adam = torch_optimizer(torch.optim.Adam, model.parameters(), lr=0.1, betas=(0.8, 0.9))
    assert adam.defaults["capturable"] is False and adam.defaults["betas"] == (0.8, 0.9)
    groups = torch_optimizer(torch.optim.RMSprop, [{"params": list(model.parameters())}], lr=0.1)
    assert groups.defaults["capturable"] is False and len(groups.param_groups[0]["params"]) == 4


def test_make_step_refuses_capture_where_it_cannot_be():
    model = MLP([3, 4, 1], ["relu", "identity"])
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    assert isinstance(make_step(sgd, torch.device("cpu")), EagerStep)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        make_step(sgd, torch.device("cpu"), capture=True)
    with pytest.raises(ValueError, match="cannot be captured"):
        make_step(torch.optim.Adam(model.parameters(), lr=0.1), torch.device("cuda"), capture=True)


def test_a_model_with_hooks_is_not_captured_since_a_replay_would_not_call_them():
    model = MLP([3, 4, 1], ["relu", "identity"])
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    assert isinstance(make_step(sgd, torch.device("cuda"), model=model), GraphStep)  # made, not yet run
    handle = model.net[1].register_forward_hook(lambda *args: None)
    assert isinstance(make_step(sgd, torch.device("cuda"), model=model), EagerStep)
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *args: None)
    try:
        assert isinstance(make_step(sgd, torch.device("cuda"), model=model), EagerStep)
    finally:
        handle.remove()


# --- GraphStep's bookkeeping, with a capture that replays by calling the step ---------------------

def replaying_capture(log=None):
    """A stand-in for cuda_graph: capturing runs nothing (as CUDA's does); each replay runs the
    step on the fixed buffers and leaves its loss in the one output tensor."""
    def capture(step):
        output = torch.empty(())
        if log is not None:
            log.append("capture")
        return (lambda: output.copy_(step())), output
    return capture


def _batches(data, batch_size, epochs, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(data.x_train), generator=g)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield data.x_train[idx], data.y_train[idx]


def _run(stepper_for, data, schedule=None):
    torch.manual_seed(0)
    model = MLP([4, 8, 3], ["tanh", "identity"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.5)
    stepper = stepper_for(optimizer)
    losses = []
    for k, (x, y) in enumerate(_batches(data, 20, epochs=3)):  # 96 rows: four of 20 and one of 16
        if schedule and k in schedule:
            optimizer.param_groups[0]["lr"] *= 0.1
        losses.append(stepper(BatchClosure(model, F.cross_entropy, optimizer, x, y)))
    return torch.stack(losses), [p.detach().clone() for p in model.parameters()], stepper


def test_a_graph_step_gives_the_eager_steps_numbers_and_recaptures_when_lr_changes():
    data = make_classification(n_train=96)
    log = []
    eager_losses, eager_params, _ = _run(EagerStep, data, schedule={7})
    graph_losses, graph_params, graph = _run(lambda o: GraphStep(o, capture=replaying_capture(log)), data,
                                             schedule={7})
    assert torch.equal(graph_losses, eager_losses)
    assert all(torch.equal(a, b) for a, b in zip(graph_params, eager_params))
    # 15 steps: 3 warm-up, then the 20-row steps replayed (captured at step 4; after the change
    # of lr, step 8 eager and captured again at step 9), the 16-row ones (steps 5, 10 and 15) eager
    assert (graph.calls, graph.captures, graph.replays) == (15, 2, 15 - 3 - 3 - 1)
    assert log == ["capture", "capture"]


def test_a_failed_capture_stops_the_run_naming_the_fix():
    def refusing(step):
        raise RuntimeError("operation not permitted when stream is capturing")

    data = make_classification(n_train=96)
    with pytest.raises(RuntimeError, match="could not capture SGD's step .* train\\(capture=False\\)") as caught:
        _run(lambda o: GraphStep(o, capture=refusing), data)
    assert "not permitted" in str(caught.value.__cause__)


def test_ibtools_capture_0_turns_capture_off(monkeypatch):
    model = MLP([3, 4, 1], ["relu", "identity"])
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    monkeypatch.setenv("IBTOOLS_CAPTURE", "0")
    assert isinstance(make_step(sgd, torch.device("cuda"), model=model), EagerStep)
    monkeypatch.setenv("IBTOOLS_CAPTURE", "1")
    assert isinstance(make_step(sgd, torch.device("cuda"), model=model), GraphStep)


def _rows(result):
    return [{k: v for k, v in row.items()} for row in result.rows]


def _same_rows(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == y[key] or (isinstance(x[key], float) and math.isnan(x[key]) and math.isnan(y[key])), key


def test_train_with_captured_steps_records_what_eager_train_records(monkeypatch):
    """Through train itself, a WatchedOptimizer's schedule included: the captured update runs
    between the host's hooks, and the lr change at a milestone makes a new capture."""
    data = make_classification(n_train=90)

    def run():
        torch.manual_seed(1)
        model = MLP([4, 16, 3], ["relu", "identity"])
        make = lambda m: StepDecay(torch.optim.SGD(m.parameters(), lr=0.3, momentum=0.9), milestones=[9, 14])
        return train(model, data, make, loss="cross_entropy", epochs=4, batch_size=20, seed=3, evals_per_epoch=2)

    eager = run()
    made = []

    def captured_make_step(optimizer, device, capture=None, model=None):
        step = train_module._WatchedStep(optimizer, GraphStep(optimizer.optimizer, capture=replaying_capture()))
        made.append(step)
        return step

    monkeypatch.setattr(train_module, "make_step", captured_make_step)
    captured = run()
    _same_rows(_rows(captured), _rows(eager))
    graph = made[0].update
    assert graph.captures == 3 and graph.replays > 0 and made[0].optimizer.steps == 20
    assert (captured.replays, eager.replays) == (graph.replays, 0)


# --- the loop reads the device when it must, and its records do not depend on when ---------------

@pytest.mark.parametrize("lr", [0.05, 3.0, 1e3])  # converging, diverging by growth, diverging to inf/NaN
@pytest.mark.parametrize("evals_per_epoch", [1, 3])
def test_records_do_not_depend_on_how_often_the_losses_are_read(regression_data, lr, evals_per_epoch):
    def run(read_every):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        return train(model, regression_data, lambda m: torch.optim.SGD(m.parameters(), lr=lr), loss="least_squares",
                     epochs=5, batch_size=8, seed=0, evals_per_epoch=evals_per_epoch, read_every=read_every)

    every_step = run(1)
    for read_every in (3, 8, 1000):
        late = run(read_every)
        assert (late.diverged, late.steps) == (every_step.diverged, every_step.steps)
        assert late.last_finite_loss == every_step.last_finite_loss
        _same_rows(_rows(late), _rows(every_step))
    assert every_step.diverged == (lr > 1)


def test_between_evaluations_the_loop_reads_the_device_once_per_read(regression_data, monkeypatch):
    monkeypatch.setattr(train_module, "evaluate", lambda *args, **kwargs: (1.0, math.nan))
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    with host_syncs() as calls:
        result = train(model, regression_data, lambda m: torch.optim.SGD(m.parameters(), lr=0.01),
                       loss="least_squares", epochs=3, batch_size=8, seed=0, evals_per_epoch=2, read_every=1000)
    assert calls == ["tolist"] * 6  # one read per evaluation point, nothing per step
    assert result.steps == 3 * 8


def test_read_every_must_be_a_positive_integer(regression_data):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="read_every"):
            train(torch.nn.Linear(3, 1), regression_data, lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
                  loss="least_squares", epochs=1, batch_size=8, seed=0, read_every=bad)


# --- augmentation where the data is ----------------------------------------------------------------

def test_crop_and_flip_takes_crops_of_the_reflected_image():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    out = crop_and_flip(x, g, pad=2)
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(2):
        windows = [padded[i, :, a:a + 8, b:b + 8] for a in range(5) for b in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


def test_precision_on_the_cpu_records_no_tf32():
    with precision(torch.device("cpu"), tf32=True) as settings:
        assert settings == {"tf32": False}
