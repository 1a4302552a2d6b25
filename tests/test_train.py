"""The training loop: it learns, records tidy rows, is reproducible, and treats divergence as a result."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_regression
from hypothesis import given
from hypothesis import strategies as st

from ibtools.train import LOSSES, BatchClosure, WatchedOptimizer, check_lr, resolve_device, train

EPOCH_COLUMNS = {"kind", "epoch", "step", "loss", "train_loss", "test_loss", "train_acc", "test_acc",
                 "diverged", "last_finite_loss"}
STEP_COLUMNS = {"kind", "epoch", "step", "loss", "diverged", "last_finite_loss"}


def sgd(lr, **kwargs):
    return lambda model: torch.optim.SGD(model.parameters(), lr=lr, **kwargs)


def linear(seed=0, dim=3, out=1):
    torch.manual_seed(seed)
    return torch.nn.Linear(dim, out)


def epochs_of(result):
    return [row for row in result.rows if row["kind"] == "epoch"]


def steps_of(result):
    return [row for row in result.rows if row["kind"] == "step"]


# --- it learns ----------------------------------------------------------------------------------

def test_sgd_decreases_the_least_squares_loss(regression_data):
    result = train(linear(), regression_data, sgd(0.1), loss="least_squares", epochs=5, batch_size=8,
                   seed=0, device="cpu")
    epochs = epochs_of(result)
    assert not result.diverged
    assert result.steps == 5 * 64 // 8
    assert epochs[-1]["train_loss"] < 0.05 * epochs[0]["train_loss"]
    assert epochs[-1]["test_loss"] < 0.05 * epochs[0]["test_loss"]
    # the noise floor of the problem is noise^2 / 2 = 0.005: SGD gets close to it
    assert epochs[-1]["train_loss"] < 0.02
    assert result.last_finite_loss == epochs[-1]["train_loss"]


def test_epoch_metrics_are_the_losses_over_the_whole_splits(regression_data):
    model = linear()
    result = train(model, regression_data, sgd(0.05), loss="least_squares", epochs=2, batch_size=16,
                   seed=0, device="cpu")
    with torch.no_grad():
        train_loss = 0.5 * (model(regression_data.x_train).squeeze(1) - regression_data.y_train).pow(2).mean()
        test_loss = 0.5 * (model(regression_data.x_test).squeeze(1) - regression_data.y_test).pow(2).mean()
    last = epochs_of(result)[-1]
    assert last["train_loss"] == pytest.approx(float(train_loss), rel=1e-5)
    assert last["test_loss"] == pytest.approx(float(test_loss), rel=1e-5)
    assert last["loss"] == last["train_loss"]


# --- the rows -----------------------------------------------------------------------------------

def test_rows_schema_for_regression(regression_data):
    epochs, batch_size = 3, 16
    result = train(linear(), regression_data, sgd(0.05), loss="least_squares", epochs=epochs,
                   batch_size=batch_size, seed=0, device="cpu")
    steps_per_epoch = math.ceil(64 / batch_size)
    first = result.rows[0]
    assert (first["kind"], first["epoch"], first["step"]) == ("epoch", 0.0, 0)

    epoch_rows, step_rows = epochs_of(result), steps_of(result)
    assert len(epoch_rows) == epochs + 1 and len(step_rows) == epochs * steps_per_epoch
    assert len(result.rows) == len(epoch_rows) + len(step_rows)
    assert [r["epoch"] for r in epoch_rows] == [0.0, 1.0, 2.0, 3.0]
    assert [r["step"] for r in epoch_rows] == [0, 4, 8, 12]
    assert [r["step"] for r in step_rows] == list(range(epochs * steps_per_epoch))
    for row in epoch_rows:
        assert set(row) == EPOCH_COLUMNS
        assert math.isnan(row["train_acc"]) and math.isnan(row["test_acc"])  # regression: no accuracy
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["test_loss"])
    for row in step_rows:
        assert set(row) == STEP_COLUMNS
        # a step of epoch e (1-based) lies in [e - 1, e)
        assert row["epoch"] == pytest.approx((row["step"] // steps_per_epoch)
                                             + (row["step"] % steps_per_epoch) / steps_per_epoch)
    assert all(row["diverged"] is False for row in result.rows)
    assert {row["last_finite_loss"] for row in result.rows} == {result.last_finite_loss}
    # the rows make a tidy table as they are
    table = pd.DataFrame(result.rows)
    assert set(table["kind"]) == {"epoch", "step"}


def test_log_every_thins_the_step_rows_but_not_the_epoch_rows(regression_data):
    result = train(linear(), regression_data, sgd(0.05), loss="least_squares", epochs=2, batch_size=8,
                   seed=0, device="cpu", log_every=3)
    assert [r["step"] for r in steps_of(result)] == [s for s in range(16) if s % 3 == 0]
    assert len(epochs_of(result)) == 3
    assert result.steps == 16


@pytest.mark.parametrize("loss", ["cross_entropy", "logistic"])
def test_classification_rows_carry_accuracies(classification_data, loss):
    data = classification_data
    if loss == "logistic":
        data = copy.copy(data)
        data.y_train, data.y_test = (data.y_train == 0).float(), (data.y_test == 0).float()
    out = 3 if loss == "cross_entropy" else 1
    model = linear(dim=4, out=out)
    result = train(model, data, sgd(0.5), loss=loss, epochs=4, batch_size=16, seed=0, device="cpu")
    epoch_rows = epochs_of(result)
    for row in epoch_rows:
        assert set(row) == EPOCH_COLUMNS
        assert 0.0 <= row["train_acc"] <= 1.0 and 0.0 <= row["test_acc"] <= 1.0
    # the blobs are separable enough for a linear model to learn
    assert epoch_rows[-1]["train_acc"] > 0.8
    assert epoch_rows[-1]["train_loss"] < epoch_rows[0]["train_loss"]
    with torch.no_grad():
        logits = model(data.x_test)
        predicted = logits.argmax(1) if loss == "cross_entropy" else (logits.squeeze(1) > 0).float()
    assert epoch_rows[-1]["test_acc"] == pytest.approx(float((predicted == data.y_test).float().mean()))


def test_zero_epochs_records_the_starting_point_only(regression_data):
    result = train(linear(), regression_data, sgd(0.1), loss="least_squares", epochs=0, batch_size=8,
                   seed=0, device="cpu")
    assert len(result.rows) == 1 and result.rows[0]["kind"] == "epoch" and result.steps == 0
    assert result.last_finite_loss == result.rows[0]["train_loss"]


def test_training_emits_no_warnings(regression_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(linear(), regression_data, sgd(0.1), loss="least_squares", epochs=1, batch_size=8, seed=0,
              device="cpu")


# --- reproducibility ------------------------------------------------------------------------------

def dropout_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                               torch.nn.Linear(16, 1))


def test_same_seed_gives_bit_identical_rows_on_cpu(regression_data):
    """Same seed: the same data order and the same dropout masks, whatever the global RNG did before."""
    initial = dropout_net()
    runs = []
    for noise in (1, 2):
        torch.rand(noise * 7)  # disturb the global generators between the runs
        np.random.rand(noise)
        runs.append(train(copy.deepcopy(initial), regression_data, sgd(0.05), loss="least_squares", epochs=3,
                          batch_size=8, seed=123, device="cpu"))
    first, second = (pd.DataFrame(r.rows) for r in runs)
    assert first.equals(second)  # exact equality, NaN accuracies included
    assert runs[0].last_finite_loss == runs[1].last_finite_loss


def test_different_seed_gives_different_rows(regression_data):
    initial = dropout_net()
    a = train(copy.deepcopy(initial), regression_data, sgd(0.05), loss="least_squares", epochs=2, batch_size=8,
              seed=1, device="cpu")
    b = train(copy.deepcopy(initial), regression_data, sgd(0.05), loss="least_squares", epochs=2, batch_size=8,
              seed=2, device="cpu")
    assert a.rows[0]["train_loss"] == b.rows[0]["train_loss"]  # same model before training
    assert [r["loss"] for r in steps_of(a)] != [r["loss"] for r in steps_of(b)]
    assert epochs_of(a)[-1]["train_loss"] != epochs_of(b)[-1]["train_loss"]


# --- divergence is a result -------------------------------------------------------------------------

def test_huge_learning_rate_diverges_and_stops_early(regression_data):
    result = train(linear(), regression_data, sgd(50.0), loss="least_squares", epochs=20, batch_size=8,
                   seed=0, device="cpu")
    start = result.rows[0]["train_loss"]
    assert result.diverged
    assert result.steps < 20 * 8  # stopped early
    assert math.isfinite(result.last_finite_loss)
    assert result.last_finite_loss <= 100 * start  # it is a loss recorded before the blow-up
    assert all(row["diverged"] is True for row in result.rows)
    assert all(row["last_finite_loss"] == result.last_finite_loss for row in result.rows)
    assert all(math.isfinite(row["loss"]) for row in result.rows)  # nothing non-finite is recorded
    recorded = [row["loss"] for row in result.rows]
    assert result.last_finite_loss in recorded


def test_a_moderate_learning_rate_does_not_diverge(regression_data):
    result = train(linear(), regression_data, sgd(0.05), loss="least_squares", epochs=20, batch_size=8,
                   seed=0, device="cpu")
    assert not result.diverged and result.steps == 20 * 8


class PoisonAfterFirstStep(torch.optim.SGD):
    """An update rule that leaves NaN parameters behind after its first step."""

    def step(self, closure=None):
        loss = super().step(closure)
        with torch.no_grad():
            for p in self.param_groups[0]["params"]:
                p.fill_(math.nan)
        return loss


def test_nan_loss_after_a_step_is_caught_even_without_a_growth_threshold(regression_data):
    result = train(linear(), regression_data, lambda m: PoisonAfterFirstStep(m.parameters(), lr=0.01),
                   loss="least_squares", epochs=3, batch_size=8, seed=0, device="cpu",
                   diverge_factor=math.inf)
    assert result.diverged
    assert result.steps == 1
    step_rows = steps_of(result)
    assert len(step_rows) == 1
    assert result.last_finite_loss == step_rows[0]["loss"] and math.isfinite(result.last_finite_loss)
    assert len(epochs_of(result)) == 1  # only the starting point: no epoch of NaNs


def test_nan_at_the_end_of_an_epoch_is_caught(regression_data):
    """One step per epoch: the NaN shows up first in the full-split evaluation."""
    result = train(linear(), regression_data, lambda m: PoisonAfterFirstStep(m.parameters(), lr=0.01),
                   loss="least_squares", epochs=3, batch_size=64, seed=0, device="cpu",
                   diverge_factor=math.inf)
    assert result.diverged and result.steps == 1
    assert math.isfinite(result.last_finite_loss)


def test_non_finite_loss_before_training_is_an_error(regression_data):
    model = linear()
    with torch.no_grad():
        model.weight.fill_(math.nan)
    with pytest.raises(ValueError, match="not finite before training"):
        train(model, regression_data, sgd(0.1), loss="least_squares", epochs=1, batch_size=8, seed=0,
              device="cpu")


# --- gradient clipping -------------------------------------------------------------------------------

def one_full_batch_step(data, clip_norm, lr=0.1):
    model = torch.nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.fill_(5.0)
        model.bias.fill_(-3.0)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    train(model, data, sgd(lr), loss="least_squares", epochs=1, batch_size=len(data.x_train), seed=0,
          device="cpu", clip_norm=clip_norm, diverge_factor=math.inf)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    return after - before


def full_batch_gradient_norm(data):
    model = torch.nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.fill_(5.0)
        model.bias.fill_(-3.0)
    LOSSES["least_squares"](model(data.x_train), data.y_train).backward()
    return float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm())


def test_clip_norm_bounds_the_step(regression_data):
    lr, clip = 0.1, 0.5
    grad_norm = full_batch_gradient_norm(regression_data)
    assert grad_norm > 10 * clip  # the clip is active
    free = one_full_batch_step(regression_data, None, lr)
    clipped = one_full_batch_step(regression_data, clip, lr)
    assert float(free.norm()) == pytest.approx(lr * grad_norm, rel=1e-5)
    assert float(clipped.norm()) == pytest.approx(lr * clip, rel=1e-4)
    # the same direction, just shorter
    assert torch.nn.functional.cosine_similarity(free, clipped, dim=0) == pytest.approx(1.0, abs=1e-6)


def test_a_loose_clip_changes_nothing(regression_data):
    grad_norm = full_batch_gradient_norm(regression_data)
    free = one_full_batch_step(regression_data, None)
    loose = one_full_batch_step(regression_data, 10 * grad_norm)
    assert torch.equal(free, loose)


# --- the closure carries the batch for exact update rules ---------------------------------------------

def test_batch_closure_exposes_the_batch_and_returns_a_detached_loss(regression_data):
    model = linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = regression_data.x_train[:5], regression_data.y_train[:5]
    closure = BatchClosure(model, LOSSES["least_squares"], optimizer, x, y)
    loss = closure()
    assert closure.inputs is x and closure.targets is y
    assert not loss.requires_grad
    assert loss == LOSSES["least_squares"](model(x), y).detach()
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0
    grad = model.weight.grad.clone()
    closure()  # gradients are zeroed, not accumulated
    assert torch.equal(model.weight.grad, grad)


def test_exact_isgd_rule_trains_through_the_loop_where_sgd_diverges():
    """The loop hands the exact ISGD rule of ibtools.isgd its mini-batch; at a learning rate where
    explicit SGD blows up, the implicit step stays stable."""
    from ibtools.isgd import ISGDLeastSquares

    data = make_regression(seed=3)
    lr = 100.0
    implicit = train(linear(), data, lambda m: ISGDLeastSquares(m, lr=lr), loss="least_squares", epochs=3,
                     batch_size=4, seed=0, device="cpu")
    explicit = train(linear(), data, sgd(lr), loss="least_squares", epochs=3, batch_size=4, seed=0,
                     device="cpu")
    assert explicit.diverged
    assert not implicit.diverged
    assert epochs_of(implicit)[-1]["train_loss"] < epochs_of(implicit)[0]["train_loss"]


# --- bad input names the fix ----------------------------------------------------------------------------

@pytest.mark.parametrize("lr", [0, 0.0, -0.1, -1e-12, math.nan, math.inf, -math.inf, None, "0.1"])
def test_check_lr_rejects_unusable_learning_rates(lr):
    with pytest.raises(ValueError) as err:
        check_lr(lr)
    message = str(err.value)
    assert "finite number > 0" in message and repr(lr) in message
    assert "lr=0.1" in message  # what to pass instead


@given(st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False))
def test_check_lr_accepts_every_finite_positive_number(lr):
    assert check_lr(lr) == lr and isinstance(check_lr(lr), float)


def test_check_lr_accepts_integers_and_numpy_floats():
    assert check_lr(2) == 2.0 and type(check_lr(2)) is float
    assert check_lr(np.float64(0.5)) == 0.5


def test_unknown_loss_is_rejected_with_the_choices(regression_data):
    with pytest.raises(ValueError, match="unknown loss 'hinge'.*cross_entropy.*least_squares.*logistic"):
        train(linear(), regression_data, sgd(0.1), loss="hinge", epochs=1, batch_size=8, seed=0, device="cpu")


@pytest.mark.parametrize("epochs, batch_size, evals", [(-1, 8, 1), (1, 0, 1), (1, 8, 0)])
def test_bad_budget_is_rejected(regression_data, epochs, batch_size, evals):
    with pytest.raises(ValueError, match="epochs >= 0, batch_size >= 1 and evals_per_epoch >= 1"):
        train(linear(), regression_data, sgd(0.1), loss="least_squares", epochs=epochs, batch_size=batch_size,
              evals_per_epoch=evals, seed=0, device="cpu")


def test_evaluations_within_epochs_are_evenly_spaced_and_end_each_epoch(regression_data):
    result = train(linear(), regression_data, sgd(0.05), loss="least_squares", epochs=2, batch_size=8,
                   evals_per_epoch=4, seed=0, device="cpu")
    evals = [r for r in result.rows if r["kind"] == "epoch"]
    assert [r["epoch"] for r in evals][:1] + [r["epoch"] for r in evals][4::4] == [0.0, 1.0, 2.0]
    assert len(evals) == 1 + 2 * 4
    assert all(b["epoch"] > a["epoch"] and b["step"] > a["step"] for a, b in zip(evals, evals[1:]))


# --- devices -----------------------------------------------------------------------------------------

@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as a CPU-only one, whatever it really has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_names_the_fix(no_cuda, device):
    with pytest.raises(ValueError, match="no CUDA device") as err:
        resolve_device(device)
    assert "--device cpu" in str(err.value) and "CUDA build of torch" in str(err.value)


def test_train_on_cuda_without_a_gpu_fails_before_doing_anything(no_cuda, regression_data):
    model = linear()
    weight = model.weight.detach().clone()
    with pytest.raises(ValueError, match="--device cpu"):
        train(model, regression_data, sgd(0.1), loss="least_squares", epochs=1, batch_size=8, seed=0,
              device="cuda")
    assert torch.equal(model.weight, weight)


def test_cpu_and_auto_resolve_to_the_cpu(no_cuda):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_ibtools_device_environment_variable_is_respected(no_cuda, monkeypatch):
    monkeypatch.setenv("IBTOOLS_DEVICE", "cpu")
    assert resolve_device() == torch.device("cpu")
    monkeypatch.setenv("IBTOOLS_DEVICE", "cuda")
    with pytest.raises(ValueError, match="'cuda' was requested"):
        resolve_device()  # the variable is read ...
    assert resolve_device("cpu") == torch.device("cpu")  # ... and an explicit device wins over it


@pytest.mark.parametrize("device", ["gpu", "cuda:x"])
def test_a_malformed_device_is_a_clear_error(device):
    with pytest.raises(ValueError, match=f"unknown device '{device}'.*use cpu, cuda or cuda:N"):
        resolve_device(device)


def test_a_watched_optimizer_calls_its_hooks_around_each_step_and_trains_as_the_optimizer_does(regression_data):

    events = []

    class Watch(WatchedOptimizer):
        def before(self, closure):
            events.append(("before", self.steps, len(closure.inputs)))

        def after(self, loss):
            events.append(("after", self.steps, float(loss)))

    runs = []
    for wrap in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        make = (lambda m: Watch(torch.optim.SGD(m.parameters(), lr=0.1))) if wrap else \
            (lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
        runs.append(train(model, regression_data, make, loss="least_squares", epochs=1, batch_size=16, seed=0).rows)
    pd.testing.assert_frame_equal(pd.DataFrame(runs[0]), pd.DataFrame(runs[1]))  # the wrapper changes nothing
    steps = [r for r in runs[1] if r["kind"] == "step"]
    assert [e[:2] for e in events] == [(kind, k) for n in range(len(steps)) for kind, k in (("before", n), ("after", n + 1))]
    assert [e[2] for e in events if e[0] == "after"] == pytest.approx([r["loss"] for r in steps])


def test_step_decay_divides_every_learning_rate_after_its_milestones():
    from ibtools.train import StepDecay

    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = StepDecay(torch.optim.SGD([{"params": params, "lr": 1.0}]), milestones=[2, 4], gamma=0.1)

    def closure():
        return torch.zeros(())

    rates = []
    for _ in range(5):
        optimizer.step(closure)
        rates.append(optimizer.optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([1.0, 0.1, 0.1, 0.01, 0.01])


def test_crop_and_flip_crops_a_reflection_padded_image_and_mirrors_it():
    from ibtools.train import crop_and_flip

    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    seen_flip, seen_plain = False, False
    for seed in range(20):
        out = crop_and_flip(x, torch.Generator().manual_seed(seed), pad=2)
        assert out.shape == x.shape
        for b in range(2):  # each image is one window of its own padded image, maybe mirrored
            windows = [padded[b, :, i:i + 5, j:j + 6] for i in range(5) for j in range(5)]
            plain = any(torch.equal(out[b], w) for w in windows)
            mirrored = any(torch.equal(out[b], w.flip(-1)) for w in windows)
            assert plain or mirrored
            seen_plain |= plain and not mirrored
            seen_flip |= mirrored and not plain
    assert seen_flip and seen_plain
    same = crop_and_flip(x, torch.Generator().manual_seed(0), pad=0, flip=False)
    assert torch.equal(same, x)  # nothing to crop, nothing to mirror


def test_train_augments_the_training_batches_only(classification_data):
    seen = []

    def augment(inputs, generator):
        seen.append(inputs.shape)
        return inputs + 0.0

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    plain = train(copy.deepcopy(model), classification_data, lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
                  loss="cross_entropy", epochs=1, batch_size=32, seed=0).rows
    augmented = train(copy.deepcopy(model), classification_data, lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
                      loss="cross_entropy", epochs=1, batch_size=32, seed=0, augment=augment).rows
    assert len(seen) == 3  # the 96 training examples in batches of 32
    pd.testing.assert_frame_equal(pd.DataFrame(plain), pd.DataFrame(augmented))
