"""The one training loop every chapter uses.

A run is: a model, a dataset, an update rule (any ``torch.optim.Optimizer``, ours included),
a loss, and a budget of epochs. The loop records the mini-batch loss at every step and the
full training/test metrics at every epoch, and treats divergence as a result: a run whose
loss becomes NaN/inf or grows past ``diverge_factor`` times its starting loss stops and is
reported as diverged, with its last finite loss.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import os
import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ibtools.steps import EagerStep, GraphStep, graph_safe, precision


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``device`` if given, else ``$IBTOOLS_DEVICE``, else CUDA when
    available, else CPU."""
    choice = device if device not in (None, "auto") else os.environ.get("IBTOOLS_DEVICE", "auto")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(choice)
    except RuntimeError as err:
        raise ValueError(f"unknown device {choice!r} ({err}); use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {choice!r} was requested but this torch has no CUDA device "
            f"(torch {torch.__version__}). Use --device cpu, or install the CUDA build of "
            "torch as the README's 'A GPU' section explains."
        )
    return resolved


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for data order.

    On the CPU this makes a run bit-reproducible (same seed, same thread count)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def check_lr(lr: float) -> float:
    """Validate a learning rate, naming the fix when it is unusable."""
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(
            f"learning rate must be a finite number > 0, got {lr!r}; "
            "pass e.g. lr=0.1 (the book's sweeps use log-spaced grids such as 1e-3 ... 1e2)"
        )
    return float(lr)


# --- losses --------------------------------------------------------------------------------

def least_squares(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of (output - target)^2 / 2: the loss whose ISGD step has a closed form."""
    return 0.5 * (output.reshape(target.shape) - target).pow(2).mean()


def logistic(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary logistic loss log(1 + exp(-y f)) with labels 0/1 and one logit per example."""
    return F.binary_cross_entropy_with_logits(output.reshape(target.shape), target.to(output.dtype))


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, target)


def mean_squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of (output - target)^2 over all entries: the autoencoder's loss."""
    return F.mse_loss(output, target.reshape(output.shape))


def next_frame_nll(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Music prediction (Fagan & Iyengar, appendix D.2): ``output`` (T, B, D) holds at step t
    the logits of each of the D notes sounding at step t + 1 of the piece ``target`` (T, B, D).
    The loss is the negative log-likelihood of the frames 2..T under independent Bernoullis,
    divided by the number of frames predicted, so that long and short pieces weigh alike."""
    if output.shape[0] < 2:
        raise ValueError("next_frame_nll needs sequences of at least 2 time steps")
    nll = F.binary_cross_entropy_with_logits(output[:-1], target[1:], reduction="sum")
    return nll / (output.shape[0] - 1) / output.shape[1]


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "least_squares": least_squares,
    "logistic": logistic,
    "cross_entropy": cross_entropy,
    "mse": mean_squared_error,
    "next_frame_nll": next_frame_nll,
}


def correct_predictions(output: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor | None:
    """Number of correct predictions, or None when the loss is not a classification loss."""
    if loss == "cross_entropy":
        return (output.argmax(dim=1) == target).sum()
    if loss == "logistic":
        return ((output.reshape(target.shape) > 0).long() == target.long()).sum()
    return None


# --- the loop -------------------------------------------------------------------------------

class BatchClosure:
    """Re-evaluates the loss on the current mini-batch and back-propagates it.

    Passed to ``optimizer.step(closure)``. torch's optimizers simply call it; update rules
    that need the data itself (the exact ISGD steps of :mod:`ibtools.isgd`) read
    ``inputs`` and ``targets``."""

    def __init__(self, model, loss_fn, optimizer, inputs, targets, clip_norm=None):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.inputs, self.targets, self.clip_norm = inputs, targets, clip_norm

    def __call__(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=False)
        loss = self.loss_fn(self.model(self.inputs), self.targets)
        loss.backward()
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        return loss.detach()  # the graph is spent; a detached loss converts to float silently


class WatchedOptimizer:
    """An optimizer as the training loop sees it, with hooks an experiment uses to look at each
    step: :meth:`before` gets the step's closure (and so its mini-batch), :meth:`update` takes
    the step (override it to time it), :meth:`after` gets the loss once ``steps`` counts it."""

    def __init__(self, optimizer):
        self.optimizer, self.steps = optimizer, 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def before(self, closure) -> None:
        pass

    def update(self, closure):
        return self.optimizer.step(closure)

    def after(self, loss) -> None:
        pass

    def step(self, closure, update=None):
        """``before``, the update (``update(closure)`` if given, else :meth:`update`), the count,
        ``after``; :func:`train` passes a :class:`ibtools.steps.GraphStep` of the watched
        optimizer as ``update`` to replay it from a CUDA graph while the hooks run on the host."""
        self.before(closure)
        loss = (update or self.update)(closure)
        self.steps += 1
        self.after(loss)
        return loss


class StepDecay(WatchedOptimizer):
    """Multiplies every learning rate by ``gamma`` after each step count in ``milestones``
    (e.g. the ends of epochs 50 and 100 of 150: divide by 10 at one and two thirds)."""

    def __init__(self, optimizer, milestones, gamma: float = 0.1):
        super().__init__(optimizer)
        self.milestones, self.gamma = set(milestones), gamma

    def after(self, loss) -> None:
        if self.steps in self.milestones:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.gamma


def crop_and_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """The standard CIFAR augmentation (VS appendix A.3.1): each image of the batch ``x``
    (B, C, H, W) padded by ``pad`` pixels with reflections of itself, cropped back to H x W at
    a random offset, and with ``flip`` mirrored left-right with probability 1/2. Vectorised
    over the batch; ``generator`` draws the offsets and flips on its own device (one on the
    images' device keeps a CUDA step free of host-to-device copies)."""
    if x.ndim != 4:
        raise ValueError(f"crop_and_flip takes a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    B, _, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x
    drawn = dict(generator=generator, device=generator.device)  # drawn where the generator is
    dy = torch.randint(0, 2 * pad + 1, (B,), **drawn).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (B,), **drawn).to(x.device)
    rows = dy[:, None] + torch.arange(H, device=x.device)  # (B, H)
    cols = dx[:, None] + torch.arange(W, device=x.device)  # (B, W)
    if flip:
        mirrored = torch.rand(B, **drawn).to(x.device) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    batch = torch.arange(B, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def make_step(optimizer, device: torch.device, capture: bool | None = None,
              model: torch.nn.Module | None = None) -> Callable:
    """How :func:`train` takes a step: ``step(closure)`` -> the batch loss, a 0-d tensor on
    ``device`` that nobody has waited for. ``capture`` True (or None on CUDA with a
    :func:`ibtools.steps.graph_safe` optimizer and a ``model`` without Python hooks, which
    a replay would not call, unless ``$IBTOOLS_CAPTURE`` is ``0``) replays the step from a
    CUDA graph (:class:`ibtools.steps.GraphStep`); a :class:`WatchedOptimizer`'s hooks then
    run on the host around the replayed update of the optimizer it watches.

    Raises ValueError for ``capture=True`` on the CPU, or with an optimizer that is not
    graph-safe."""
    if capture is None:
        capture = (device.type == "cuda" and os.environ.get("IBTOOLS_CAPTURE", "1") != "0"
                   and graph_safe(optimizer) and not _has_hooks(model))
    if not capture:
        return EagerStep(optimizer)
    if device.type != "cuda":
        raise ValueError(f"capture=True needs a CUDA device, got {device}; CUDA graphs do not exist on the CPU")
    if not graph_safe(optimizer):
        raise ValueError(f"{type(optimizer).__name__}.step cannot be captured in a CUDA graph (see "
                         "ibtools.steps.graph_safe); use capture=None or False")
    if isinstance(optimizer, WatchedOptimizer):
        return _WatchedStep(optimizer, GraphStep(optimizer.optimizer))
    return GraphStep(optimizer)


def _has_hooks(model: torch.nn.Module | None) -> bool:
    """Whether a forward or backward hook (a module's, or a global one) would run in a step."""
    from torch.nn.modules import module as torch_module

    if any(getattr(torch_module, name, None) for name in (
            "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
            "_global_backward_pre_hooks")):
        return True
    return model is not None and any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or getattr(m, "_backward_pre_hooks", None)
        for m in model.modules())


class _WatchedStep:
    """A WatchedOptimizer's step whose update is a captured step of the optimizer it watches."""

    captured = True

    def __init__(self, optimizer: WatchedOptimizer, update: GraphStep):
        self.optimizer, self.update = optimizer, update

    @property
    def replays(self) -> int:
        return self.update.replays

    def __call__(self, closure) -> torch.Tensor:
        return self.optimizer.step(closure, update=self.update)


# Inside :func:`ibtools.plan.probe`, what measures the next :func:`train` call's cost (an
# :class:`ibtools.plan.Probe`: train tells it its shape with ``begin``, wraps its evaluations
# in ``evaluation()`` and reports every step to ``stepped``, which stops the run by raising
# once it has what it measures); None otherwise, at no cost.
PROBE: contextvars.ContextVar = contextvars.ContextVar("ibtools_probe", default=None)


@dataclass
class RunResult:
    """What one run produced: tidy rows, and how it ended."""

    rows: list[dict] = field(default_factory=list)
    diverged: bool = False
    last_finite_loss: float = math.nan
    steps: int = 0
    replays: int = 0  # steps replayed from a CUDA graph (ibtools.steps.GraphStep)


@torch.no_grad()
def evaluate(model, x, y, loss: str, batch_size: int = 4096, *, batch_means: bool = False) -> tuple[float, float]:
    """Mean loss and accuracy (NaN for regression) of ``model`` over a whole split. With
    ``y`` None, ``x`` is a list of sequences (a :class:`ibtools.data.SequenceDataset` split),
    each its own target: the mean over sequences of their losses, and NaN accuracy.

    ``batch_means=True``: the loss is instead the mean over consecutive batches of
    ``batch_size`` rows of each batch's mean loss, so a last, smaller batch weighs as much as
    a full one (how Fagan & Iyengar's code reports its losses: github.com/francoisfagan/NN_ISGD,
    train_test.py, ``test``). Accuracy is over rows either way."""
    was_training = model.training
    model.eval()
    loss_fn = LOSSES[loss]
    total_loss, total_correct = 0.0, 0.0
    if y is None:
        total_loss = sum(float(loss_fn(model(piece[:, None]), piece[:, None])) for piece in x)
        total_correct = math.nan
    else:
        for start in range(0, len(x), batch_size):
            out = model(x[start:start + batch_size])
            target = y[start:start + batch_size]
            total_loss += float(loss_fn(out, target)) * (1 if batch_means else len(target))
            correct = correct_predictions(out, target, loss)
            total_correct += math.nan if correct is None else float(correct)
        if batch_means:
            model.train(was_training)
            return total_loss / math.ceil(len(x) / batch_size), total_correct / len(x)
    model.train(was_training)
    return total_loss / len(x), total_correct / len(x)


def _splits(data, device: torch.device):
    """(x_train, y_train, x_test, y_test) on ``device``; for a SequenceDataset the x are lists
    of sequences and the y are None (each sequence is its own target)."""
    if hasattr(data, "x_train"):
        return (data.x_train.to(device), data.y_train.to(device),
                data.x_test.to(device), data.y_test.to(device))
    return [p.to(device) for p in data.train], None, [p.to(device) for p in data.test], None


def _batch(x, y, idx: torch.Tensor):
    """The mini-batch ``idx`` of a split: rows of tensors, or one sequence (T, 1, D) that is
    its own target."""
    if y is None:
        piece = x[int(idx[0])][:, None]
        return piece, piece
    return x[idx], y[idx]


def train(
    model: torch.nn.Module,
    data,
    make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer],
    *,
    loss: str,
    epochs: int,
    batch_size: int,
    seed: int,
    device: str | torch.device | None = None,
    clip_norm: float | None = None,
    log_every: int = 1,
    evals_per_epoch: int = 1,
    diverge_factor: float = 100.0,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    shuffle: bool = True,
    eval_batch_means: bool = False,
    capture: bool | None = None,
    tf32: bool | None = None,
    read_every: int | None = None,
) -> RunResult:
    """Train ``model`` on ``data`` (an :class:`ibtools.data.Dataset`) and record everything.

    ``data`` may also be an :class:`ibtools.data.SequenceDataset` (with ``batch_size=1``): each
    step then trains on one whole sequence, as the paper's RNNs do.

    Rows of kind ``"step"`` hold the mini-batch loss before every ``log_every``-th update.
    Rows of kind ``"epoch"`` hold ``train_loss``, ``test_loss``, ``train_acc`` and
    ``test_acc`` over the full splits: before training (epoch 0), at the end of every epoch
    and, with ``evals_per_epoch > 1``, at evenly spaced points within it (fractional epochs).
    ``augment(inputs, generator)``, if given, transforms each training mini-batch's inputs
    (e.g. :func:`crop_and_flip`); evaluations see the data as it is. ``shuffle=False`` visits
    the training rows in their stored order every epoch (a fixed sequence of batches);
    ``eval_batch_means=True`` reports each split's loss as the mean of its ``batch_size``-row
    batches' mean losses (:func:`evaluate`).

    On CUDA the loop waits for the device only at evaluation points: the step losses are read
    there (and divergence found there, at most one evaluation interval late, the records
    ending where they would have ended had every step been checked; the model, though, has
    taken the steps in between), the data sits on the device and augmentation draws there.
    ``read_every`` sets how many steps may pass between reads besides (None: every step on
    the CPU, where a read costs nothing, and one epoch on CUDA). ``capture`` replays each step
    from a CUDA graph (:class:`ibtools.steps.GraphStep`); None (the default) captures on CUDA
    when the optimizer is :func:`ibtools.steps.graph_safe` (and ``$IBTOOLS_CAPTURE`` is not
    ``0``), never on the CPU, where graphs do not exist. ``tf32`` allows TF32 matrix products on CUDA (about 10 bits of mantissa in their
    products, float32's range); None reads ``$IBTOOLS_TF32`` (``1``: allowed), which
    ``python -m ibtools run --scale full`` sets on CUDA and records in the provenance.

    Inside :func:`ibtools.plan.probe` the call measures what it costs and stops early.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
    if epochs < 0 or batch_size < 1 or evals_per_epoch < 1:
        raise ValueError(f"need epochs >= 0, batch_size >= 1 and evals_per_epoch >= 1, "
                         f"got {epochs}, {batch_size} and {evals_per_epoch}")
    if read_every is not None and (isinstance(read_every, bool) or not isinstance(read_every, int) or read_every < 1):
        raise ValueError(f"read_every must be an integer >= 1 (steps between reads of the losses), got {read_every!r}")
    dev = resolve_device(device)
    tf32 = tf32 if tf32 is not None else os.environ.get("IBTOOLS_TF32") == "1"
    # The device current (so that CUDA graphs are captured on this run's GPU, not cuda:0) and
    # its precision, from the first evaluation to the last.
    with (torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()), precision(dev, tf32):
        generator = seed_everything(seed)
        # Augmentation draws where the images are (on CUDA a generator there, so no copy waits; on
        # the CPU the data-order generator, as before).
        augment_generator = generator if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(seed)
        model = model.to(dev)
        optimizer = make_optimizer(model)
        loss_fn = LOSSES[loss]
        x_train, y_train, x_test, y_test = _splits(data, dev)
        if y_train is None and batch_size != 1:
            raise ValueError(f"sequences of different lengths train one at a time: use batch_size=1, got {batch_size}")
        n = len(x_train)
        steps_per_epoch = math.ceil(n / batch_size)
        evaluate_after = {math.ceil(k * steps_per_epoch / evals_per_epoch) for k in range(1, evals_per_epoch + 1)}
        result = RunResult()
        probe = PROBE.get()
        evaluated = [(x_train, y_train), (x_test, y_test)]

        def evaluate_splits(splits) -> list[tuple[float, float]]:
            if eval_batch_means:
                return [evaluate(model, x, y, loss, batch_size, batch_means=True) for x, y in splits]
            return [evaluate(model, x, y, loss) for x, y in splits]

        if probe is not None:
            evaluated = probe.begin(dev, steps_per_epoch, epochs, evals_per_epoch, evaluated, evaluate_splits)

        def record_evaluation(epoch: float) -> float:
            with probe.evaluation() if probe is not None else contextlib.nullcontext():
                (train_loss, train_acc), (test_loss, test_acc) = evaluate_splits(evaluated)
            result.rows.append(dict(kind="epoch", epoch=epoch, step=result.steps, loss=train_loss,
                                    train_loss=train_loss, test_loss=test_loss,
                                    train_acc=train_acc, test_acc=test_acc))
            return train_loss

        start_loss = record_evaluation(0.0)
        if not math.isfinite(start_loss):
            raise ValueError("the model's loss is not finite before training: check the data and initialisation")
        result.last_finite_loss = start_loss
        threshold = diverge_factor * max(start_loss, 1e-12)

        def blew_up(value: float) -> bool:
            return probe is None and (not math.isfinite(value) or value > threshold)

        model.train()
        stepper = make_step(optimizer, dev, capture, model)
        # The step losses stay on the device until they are read together (a single wait for the
        # device): at every step on the CPU, where reading costs nothing, else at evaluation points
        # and epoch ends. Divergence is found when they are read, so on CUDA a diverging run may go
        # on for up to one evaluation interval of wasted steps; its records end where they would
        # have ended had it been checked at every step.
        if read_every is None:
            read_every = 1 if dev.type == "cpu" else steps_per_epoch
        if probe is not None:
            read_every = 1
        pending: list[tuple[float, torch.Tensor]] = []  # (epoch, loss) of steps not yet read

        def read_pending() -> bool:
            """Record the pending steps' losses; True once one of them has diverged."""
            if len(pending) == 1:  # the CPU's every step: a plain read, without a stack
                values = [float(pending[0][1])]
            else:
                values = torch.stack([loss for _, loss in pending]).tolist() if pending else []
            moments = [moment for moment, _ in pending]
            pending.clear()
            for moment, value in zip(moments, values):
                if blew_up(value):
                    result.diverged = True
                    return True
                result.last_finite_loss = value
                if result.steps % log_every == 0:
                    result.rows.append(dict(kind="step", epoch=moment, step=result.steps, loss=value))
                result.steps += 1
            return False

        for epoch in range(1, epochs + 1):
            order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
            if y_train is not None:
                order = order.to(dev)  # sequences are picked on the host, rows on the device
            for i in range(steps_per_epoch):
                inputs, targets = _batch(x_train, y_train, order[i * batch_size:(i + 1) * batch_size])
                if augment is not None:
                    inputs = augment(inputs, augment_generator)
                closure = BatchClosure(model, loss_fn, optimizer, inputs, targets, clip_norm)
                pending.append(((epoch - 1) + i / steps_per_epoch, stepper(closure)))
                if probe is not None:
                    probe.stepped(optimizer, float(pending[-1][1]), len(inputs) if y_train is None else 1,
                                  i + 1 == steps_per_epoch)
                evaluation = i + 1 in evaluate_after
                if (evaluation or len(pending) >= read_every) and read_pending():
                    break
                if evaluation:
                    train_loss = record_evaluation((epoch - 1) + (i + 1) / steps_per_epoch)
                    if blew_up(train_loss):
                        result.diverged = True
                        break
                    result.last_finite_loss = train_loss
            if result.diverged or read_pending():
                break
        for row in result.rows:
            row.update(diverged=result.diverged, last_finite_loss=result.last_finite_loss)
        result.replays = stepper.replays
        return result
