"""What a sweep will cost before it starts, from a few steps of its runs.

:func:`probe` has the training loop (:func:`ibtools.train.train`) time a run's setup, a few
training steps, what the experiment does at the end of an epoch and an evaluation, and stop
it (:class:`Probe`).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from . import train
from .bench import sync


# --- the probe: what a run costs, from a few of its steps ----------------------------------------------

class _ProbeDone(Exception):
    """Ends a probed run once its :class:`Probe` has what it measures; :func:`probe` catches it."""


class _ProbeTimedOut(BaseException):
    """Interrupts a probed run at its time limit, wherever it is; :func:`probe` catches it. A
    BaseException, as KeyboardInterrupt is, so that no ``except Exception`` on the way swallows it."""


# The slices an evaluation is timed on, in examples (time steps of sequences): growing until
# one takes EVAL_TIMING_S, up to one batch of evaluate()'s. Small models evaluate a large
# batch faster per example than a small one; large ones take seconds for a small slice.
EVAL_SLICES = (16, 64, 256, 1024, 4096)
EVAL_TIMING_S = 0.5


def _units(x) -> int:
    """The size of a split as its evaluation's cost grows: examples, or time steps of sequences."""
    return sum(len(piece) for piece in x) if isinstance(x, list) else len(x)


def _head(x, y, units: int) -> tuple:
    """The first examples of the split (x, y), or its first sequences (at least one), that
    hold ``units`` examples or time steps."""
    if isinstance(x, list):
        totals = itertools.accumulate(len(piece) for piece in x)
        return x[:next((i + 1 for i, total in enumerate(totals) if total >= units), len(x))], None
    return x[:units], y[:units]


@dataclass
class Probe:
    """What one run costs, as :func:`ibtools.train.train` measures it inside :func:`probe`;
    times in seconds.

    How: after ``warmup`` untimed steps (as many of them as fit in ``budget_s``), ``steps``
    training steps are timed, fewer once they took ``budget_s`` (a first step slower than
    that is timed itself: its one-off costs are small beside it). The loop's own evaluations
    run on a few examples; after the steps an evaluation is timed on growing slices of both
    splits (:data:`EVAL_SLICES`) and scaled to the whole splits by their size (examples, or
    time steps of sequences). With ``limit_s``, the run is interrupted that many seconds
    after the probe began, wherever it is (in the main thread; elsewhere there is no limit),
    and ``timed_out`` says so: the part then running counts the time it had taken, and what
    was never reached counts nothing, so every figure is a lower bound.

    What: ``setup_s`` from entering :func:`probe` to the first step (data, model, the
    optimizer and its hooks; the evaluation before training not counted); ``step_s``, a
    training step as an epoch averages it (a step on sequences costs in proportion to the
    sequence's length); ``steps_per_epoch``, ``epochs``, ``evals_per_epoch`` as the run
    asked; ``eval_s``, one evaluation of both whole splits; ``epoch_end_s``, what an
    :class:`ibtools.train.WatchedOptimizer`'s ``after`` hook takes after the last step of an
    epoch (say, recording what an experiment watches each epoch), timed once on its own.
    ``timed_steps`` is how many steps ``step_s`` is from; ``stopped`` is False when the run
    ended before the probe had its steps (or never called :func:`ibtools.train.train`).
    Raises ValueError for unusable settings.
    """

    steps: int = 5
    warmup: int = 2
    budget_s: float = 3.0
    limit_s: float | None = None
    setup_s: float = math.nan
    step_s: float = math.nan
    steps_per_epoch: int = 0
    epochs: int = 0
    evals_per_epoch: int = 0
    eval_s: float = 0.0
    epoch_end_s: float = 0.0
    timed_steps: int = 0
    stopped: bool = False
    timed_out: bool = False

    def __post_init__(self):
        if self.steps < 1 or self.warmup < 0 or self.budget_s <= 0 or (self.limit_s is not None and self.limit_s <= 0):
            raise ValueError(f"a probe needs steps >= 1, warmup >= 0, budget_s > 0 and limit_s > 0 (or None), got "
                             f"{self.steps}, {self.warmup}, {self.budget_s} and {self.limit_s}")
        self._entered = time.perf_counter()
        self._mark = self._entered  # the end of the last thing timed
        self._running = ("setup_s", self._entered, 1.0)  # what the limit would interrupt: field, start, scale
        self._evaluated_s = 0.0  # wall time in the loop's evaluations, which no step or setup includes
        self._evaluations = 0
        self._warm_s: list[float] = []
        self._timed: list[tuple[float, float, bool]] = []  # (seconds, units, ended an epoch)

    def begin(self, device: torch.device, steps_per_epoch: int, epochs: int, evals_per_epoch: int,
              splits: list[tuple], evaluate_splits: Callable[[list[tuple]], object]) -> list[tuple]:
        """Note the run's shape and how it evaluates ``splits`` ([(x_train, y_train), (x_test,
        y_test)]); return the slices of them that the loop's evaluations are to use."""
        self._device, self.steps_per_epoch, self.epochs = device, steps_per_epoch, epochs
        self.evals_per_epoch, self._splits, self._evaluate_splits = evals_per_epoch, splits, evaluate_splits
        (x_train, y_train), _ = splits
        self._step_units = 1.0 if y_train is not None else _units(x_train) / steps_per_epoch
        sliced = [_head(x, y, EVAL_SLICES[0]) for x, y in splits]
        self._sliced_scale = sum(_units(x) for x, _ in splits) / sum(_units(x) for x, _ in sliced)
        return sliced

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """Keep an evaluation the loop makes out of the setup's and the steps' times; the first
        ends the setup."""
        start = time.perf_counter()
        yield
        self._mark = time.perf_counter()
        self._evaluated_s += self._mark - start
        self._evaluations += 1
        if math.isnan(self.setup_s):  # the evaluation before training: the steps begin
            self.setup_s = self._mark - self._entered - self._evaluated_s
        self._running = ("step_s", self._mark, 1.0)

    def stepped(self, optimizer, loss: float, units: int, ends_epoch: bool) -> None:
        """Time the step just taken (since the last mark); once enough are timed, time the end
        of an epoch and an evaluation, and raise :class:`_ProbeDone`."""
        sync(self._device)
        now = time.perf_counter()
        seconds, self._mark = now - self._mark, now
        self._running = ("step_s", now, 1.0)
        if not self._timed and len(self._warm_s) < self.warmup and sum(self._warm_s) + seconds <= self.budget_s:
            self._warm_s.append(seconds)
            return
        self._timed.append((seconds, units, ends_epoch))
        if len(self._timed) < self.steps and sum(t for t, _, _ in self._timed) < self.budget_s:
            return
        self.stopped = True
        if isinstance(optimizer, train.WatchedOptimizer):
            self.epoch_end_s = self._time_epoch_end(optimizer, loss)
        self.eval_s = self._time_evaluation()
        raise _ProbeDone

    def _time_epoch_end(self, optimizer: train.WatchedOptimizer, loss: float) -> float:
        """Seconds of ``optimizer.after`` as if the step just taken had been an epoch's last."""
        start = time.perf_counter()
        self._running = ("epoch_end_s", start, 1.0)
        optimizer.steps = self.steps_per_epoch
        optimizer.after(loss)
        sync(self._device)
        return time.perf_counter() - start

    def _time_evaluation(self) -> float:
        """One evaluation of the whole splits, from the first slice of :data:`EVAL_SLICES`
        that takes :data:`EVAL_TIMING_S` (or the last), timed warm: the model has stepped."""
        whole = sum(_units(x) for x, _ in self._splits)
        for size in EVAL_SLICES:
            sliced = [_head(x, y, size) for x, y in self._splits]
            scale = whole / sum(_units(x) for x, _ in sliced)
            start = time.perf_counter()
            self._running = ("eval_s", start, scale)
            self._evaluate_splits(sliced)
            seconds = time.perf_counter() - start
            if seconds >= EVAL_TIMING_S or scale == 1:
                break
        return seconds * scale

    def _interrupted(self) -> None:
        """At the time limit: the part running counts what it had taken."""
        self.timed_out = self.stopped = True
        name, start, scale = self._running
        spent = (time.perf_counter() - start) * scale
        if name == "setup_s":
            self.setup_s = spent - self._evaluated_s
        elif name == "step_s" and not (self._timed or self._warm_s):
            self._timed.append((spent, self._step_units, False))
        elif name != "step_s":
            setattr(self, name, spent)

    def _finish(self) -> None:
        """Turn the steps timed into ``step_s``; if the run ended first, use the warm-up steps
        where none was timed, and the evaluations the loop made (on slices, scaled)."""
        if not self.stopped and self._evaluations:
            self.eval_s = self._evaluated_s / self._evaluations * self._sliced_scale
        timed = self._timed or [(t, 1.0, False) for t in self._warm_s]
        if not timed:
            return
        self.timed_steps = len(timed)
        seconds = sum(t for t, _, _ in timed) - self.epoch_end_s * sum(end for _, _, end in timed)
        self.step_s = max(seconds, 0.0) / sum(u for _, u, _ in timed) * self._step_units


def _interrupt(signum, frame):
    raise _ProbeTimedOut


@contextlib.contextmanager
def probe(**settings) -> Iterator[Probe]:
    """Measure the cost of the run made in the block, and stop it early.

    ``with probe(steps=5) as p: experiment.run(config)``: the first
    :func:`ibtools.train.train` call in the block times its setup, ``p.steps`` steps, an
    epoch's end and an evaluation (see :class:`Probe`, whose fields ``settings`` sets), then
    stops the run by an exception that this context catches, so the run returns nothing and
    writes nothing after its training loop. A probed run never stops for divergence: the steps a full run would take are
    timed, on data that may well diverge (the planner's random stand-ins).
    Raises ValueError for unusable settings."""
    measured = Probe(**settings)
    limited = measured.limit_s is not None and threading.current_thread() is threading.main_thread()
    if limited:
        previous = signal.signal(signal.SIGALRM, _interrupt)
        signal.setitimer(signal.ITIMER_REAL, measured.limit_s)
    token = train.PROBE.set(measured)
    try:
        yield measured
    except _ProbeDone:
        pass
    except _ProbeTimedOut:
        measured._interrupted()
    finally:
        if limited:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        train.PROBE.reset(token)
        measured._finish()
