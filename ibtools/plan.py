"""What a sweep will cost before it starts: ``python -m ibtools plan NAME``.

A grid's runs fall into *kinds*: runs that differ only in fields that do not change what a
run costs (its learning rate, its seed, ...: :data:`COST_FREE`) cost the same, so one run
of each kind is probed. The probes run in a fresh worker process (what a sweep's workers
are), on stand-ins of the full-scale data (:mod:`ibtools.standin`: random values of the real
shapes, nothing downloaded), with the CPU threads the sweep's runs will have;
:func:`probe` has the training loop (:func:`ibtools.train.train`) time each one's setup, a
few training steps, what the experiment does at the end of an epoch and an evaluation, and
stop it. From these:

- a run's seconds, :func:`run_seconds`: setup + evaluations + epochs x (steps x s/step +
  the end of an epoch);
- the sweep's wall time at ``--jobs N``, :func:`projected_wall_s`: every run of the grid, in
  grid order, list-scheduled onto N workers as the process pool hands them out
  (:func:`makespan`), plus the workers' start-up (measured once), slowed down where N
  single-threaded workers share fewer CPU cores;
- each run's peak memory above its worker's level before it: resident memory on the CPU
  (the dataset included, as the real run holds it), the caching allocator's on CUDA;
- the download the real data needs (:func:`ibtools.standin.download_bytes`).

A probe that reaches its time limit (``--limit``; one step of some full presets takes
minutes on a CPU) stops there, and its kind's figures are lower bounds, marked so.

On CUDA, ``--jobs best`` also measures the throughput of the sweep's heaviest kind with 1,
2, 4, ... workers sharing the GPU (as many as its memory and the CPU's cores allow) and
recommends the fewest that come within 5% of the best (:func:`choose_jobs`);
:func:`default_jobs` is the number of workers ``run`` starts by default.

A plan is a table with one row per kind, totals, notes on what the probes leave out, and
provenance, written as ``OUT/NAME/SCALE/plan-DEVICE.json`` (:func:`write_plan`) and read
back by :func:`load_plan`, for the chapters to show the committed plans of
``book/results/NAME/full/``.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime as dt
import gc
import heapq
import itertools
import json
import math
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import __version__, standin, train
from .bench import sync
from .experiments import EXPERIMENTS, RESULTS_DIR, Experiment, ch05_taylor, ch06_configurations, ch08_alt_losses, get
from .files import write_atomic
from .steps import CALLS_BEFORE_REPLAY
from .sweep import RUN_THREADS, config_dict, process_pool

# Fields of the experiments' configs (ibtools/experiments/) that change what a run computes
# but not what it costs: step sizes and proximal weights, decays (weight decay adds an
# elementwise operation per step, nothing beside the step), seeds and initial values, and
# which of the rows computed are kept; and chapter 3's protocol choices that keep every
# shape: IB's mini-batch convention (a factor on ||z||^2), rescaling the features, the order
# of the batches, the initialisation and how the losses are averaged.
COST_FREE = frozenset({"lr", "lam", "mu", "inner_lr_ratio", "weight_decay", "seed", "theta0",
                       "init_mean", "init_std", "noise", "log_every",
                       "minibatch", "standardize", "shuffle", "init", "loss_measure"})
# Fields whose value does not change the cost but whether it is zero does: clipping the
# gradient's norm costs the norm, at any threshold; SIBP's l1 penalty replaces each layer's
# conjugate-gradient solve by an accelerated proximal-gradient one (sibp.l1_fit), at any weight.
ON_OFF = frozenset({"clip", "l1"})

# What the probes of some run functions cannot see or average well: work done at points of
# a run that a few steps never reach, or every few steps. Their plans say so.
NOTES = {
    ch05_taylor.run: "left out: the Taylor optimum at each regret checkpoint (about 20 a run; for the "
                     "cross-entropy an L-BFGS fit over every stored round, so later ones cost more) and the memory "
                     "of the stored Taylor losses, which grows with the rounds; where every k-th round is recorded "
                     "(record_every), the few steps timed average the recording only roughly",
    ch06_configurations.run: "left out: the measures computed after training (Hamming distances, switches, "
                             "singular values of every unit's configurations over the epochs) and the memory of "
                             "the configurations recorded each epoch, which grows with the epochs",
    ch08_alt_losses.run: "the alternative losses are counted after every epoch: runs that track them every few "
                         "epochs (track_every > 1) cost less",
}
NOTE_DIVERGENCE = ("a run that diverges stops early: every run is projected at its full budget, and the probes "
                   "time the steps on random data whatever its loss does")
# Training steps a probe times (--steps), fewer where they take longer than its budget.
STEPS = 20
# Seconds a probe may take (--limit): the full presets are sized for a GPU, and on a CPU one
# step of some takes minutes (sibp-deep's BCD, 8 minutes on 2 cores).
LIMIT_S = 20.0
# What a CUDA worker process holds on its GPU outside the caching allocator (its context),
# where it cannot be measured; about what torch 2's context takes on recent cards.
CUDA_CONTEXT_BYTES = 512 * 2**20
# --jobs best: the fewest workers whose throughput is within this fraction of the best.
BEST_TOLERANCE = 0.05


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
EVAL_REPEATS = 5


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


# Steps a probe on CUDA leaves untimed whatever they take: ibtools.steps.GraphStep's warm-up
# and capture, and one more.
CUDA_WARMUP = CALLS_BEFORE_REPLAY + 1


@dataclass
class Probe:
    """What one run costs, as :func:`ibtools.train.train` measures it inside :func:`probe`;
    times in seconds.

    How: after ``warmup`` untimed steps (as many of them as fit in ``budget_s``: a run's
    first steps are slower, its first twenty some 15% on a CPU; on CUDA at least
    :data:`CUDA_WARMUP` whatever they take, for a CUDA graph's capture and compiling), ``steps`` training steps are
    timed, fewer once they took ``budget_s`` (a first step slower than that is timed itself:
    its one-off costs are small beside it). The loop's own evaluations run on a few
    examples; after the steps an evaluation is timed on growing slices of both splits
    (:data:`EVAL_SLICES`) and scaled to the whole splits by their size (examples, or time
    steps of sequences). With ``limit_s``, the run is interrupted that many seconds
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
    warmup: int = 10
    budget_s: float = 2.0
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
        # On CUDA the first steps are one-off costs whatever they take (a CUDA graph's warm-up
        # and capture, torch.compile compiling the IB layers' solver): never a step's time.
        one_off = self._device.type == "cuda" and len(self._warm_s) < CUDA_WARMUP
        if not self._timed and (one_off or (len(self._warm_s) < self.warmup
                                            and sum(self._warm_s) + seconds <= self.budget_s)):
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
        """One evaluation of the whole splits, timed warm (the model has stepped) on the first
        slice of :data:`EVAL_SLICES` that takes :data:`EVAL_TIMING_S`, or else the last,
        evaluated again until that long (at most :data:`EVAL_REPEATS` times), and scaled."""
        whole = sum(_units(x) for x, _ in self._splits)
        for size in EVAL_SLICES:
            sliced = [_head(x, y, size) for x, y in self._splits]
            scale = whole / sum(_units(x) for x, _ in sliced)
            times = [self._time_slices(sliced, scale)]
            if times[0] >= EVAL_TIMING_S or scale == 1 or size == EVAL_SLICES[-1]:
                break
        while sum(times) < EVAL_TIMING_S and len(times) < EVAL_REPEATS:
            times.append(self._time_slices(sliced, scale))
        return sum(times) / len(times) * scale

    def _time_slices(self, sliced: list[tuple], scale: float) -> float:
        """Seconds of one evaluation of ``sliced``, slices ``scale`` times smaller than the splits."""
        start = time.perf_counter()
        self._running = ("eval_s", start, scale)
        self._evaluate_splits(sliced)
        return time.perf_counter() - start

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
    writes nothing after its training loop. A probed run never stops for divergence: the
    steps a full run would take are timed, on data that may well diverge (the planner's
    random stand-ins).
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


# --- kinds -------------------------------------------------------------------------------------------

def cost_key(config) -> tuple:
    """What sets the cost of ``config``'s run: its fields as (name, value) pairs, without
    :data:`COST_FREE` ones and with :data:`ON_OFF` ones as whether they are on."""
    return tuple((name, bool(value) if name in ON_OFF else value)
                 for name, value in config_dict(config).items() if name not in COST_FREE)


def group_kinds(configs) -> dict[tuple, list]:
    """The distinct configs by :func:`cost_key`, kinds and their runs in grid order."""
    kinds: dict[tuple, list] = {}
    for config in dict.fromkeys(configs):
        kinds.setdefault(cost_key(config), []).append(config)
    return kinds


def kind_labels(keys: list[tuple]) -> list[str]:
    """A short name for each kind: the fields whose values differ between ``keys``."""
    varying = [i for i in range(len(keys[0])) if len({repr(key[i][1]) for key in keys}) > 1] if keys else []
    return [", ".join(f"{key[i][0]}={_short(key[i][1])}" for i in varying) or "all runs" for key in keys]


def _short(value) -> str:
    return "-".join(map(str, value)) if isinstance(value, tuple) else str(value)


# --- probing, in a worker process ----------------------------------------------------------------------

def warm_up(device: torch.device) -> None:
    """Pay the one-off costs of a fresh process that every later run shares, so that no
    probe counts them as its own: autograd's and the thread pools' state, on CUDA the
    context, and the compiler modules torch imports when the first optimizer is made (about
    1.5 s on a CPU)."""
    layer = torch.nn.Linear(4, 4, device=device)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(torch.ones(2, 4, device=device)).sum().backward()
    optimizer.step()


def _worker_ready() -> str:
    """In a new worker (its imports done by unpickling this function): warm up; the
    description of its device (at the one thread a sweep's runs have)."""
    from .__main__ import device_description  # the CLI imports this module

    device = train.resolve_device(None)
    warm_up(device)
    gc.freeze()  # what is here now stays: each probe's collection then looks at its own objects only
    return device_description(device)


def _probe(run, config, steps: int, limit_s: float | None, barrier=None) -> dict:
    """In a worker: probe ``run(config)`` on stand-ins, at the worker's one thread, for ``steps``
    steps, for ``limit_s`` seconds at most (after ``barrier``, when several workers are to
    probe at once); the probe's measurements, the wall time, peak memory and the full-scale
    datasets loaded."""
    device = train.resolve_device(None)  # the worker's $IBTOOLS_DEVICE, as a sweep's run has
    with standin.use_stand_ins() as names:
        before = _reset_peaks(device)
        if barrier is not None:
            barrier.wait(timeout=600)
        start = time.perf_counter()
        with probe(steps=steps, limit_s=limit_s) as measured:
            run(config, device=None)
        wall_s = time.perf_counter() - start
        peaks = _peaks(device, before)
    return {**dataclasses.asdict(measured), "wall_s": wall_s, **peaks, "datasets": sorted(names)}


def _status_bytes(key: str) -> int | None:
    """``VmRSS`` or ``VmHWM`` (the resident peak) of /proc/self/status in bytes; None without /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peaks(device: torch.device) -> dict:
    """Free what earlier probes left, reset the peaks; the levels the peaks are measured from."""
    gc.collect()
    try:  # hand freed heap back to the system, or a probe reusing it would not raise the peak
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
        host = _status_bytes("VmRSS")
    except OSError:
        host = None
    gpu = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        gpu = torch.cuda.memory_reserved(device)
    return {"host": host, "gpu": gpu}


def _peaks(device: torch.device, before: dict) -> dict:
    """Peak memory since :func:`_reset_peaks`: ``host_peak_bytes`` (resident memory), and
    ``peak_bytes``, the run's device's (the host's on the CPU)."""
    high = _status_bytes("VmHWM")
    host = math.nan if before["host"] is None or high is None else float(high - before["host"])
    if device.type == "cuda":
        return {"peak_bytes": float(torch.cuda.max_memory_reserved(device) - before["gpu"]), "host_peak_bytes": host}
    return {"peak_bytes": host, "host_peak_bytes": host}


# --- projection --------------------------------------------------------------------------------------

def epoch_seconds(kind) -> float:
    """One epoch of a run of ``kind`` (a row of a plan's table): its steps, the experiment's
    end-of-epoch work and its evaluations."""
    return (kind["steps_per_epoch"] * kind["s_per_step"] + kind["epoch_end_s"]
            + kind["evals_per_epoch"] * kind["eval_s"])


def run_seconds(kind) -> float:
    """One run of ``kind``: setup, the evaluation before training and every epoch; a run
    whose probe never reached the training loop (it has none, or the probe's time limit came
    first) as timed whole."""
    if kind["steps_per_epoch"] == 0:
        return kind["wall_s"]
    return kind["setup_s"] + kind["eval_s"] + kind["epochs"] * epoch_seconds(kind)


def makespan(durations, workers: int) -> float:
    """When the last of ``durations`` ends if each, in order, starts on whichever of
    ``workers`` workers is free first (greedy list scheduling, as a process pool hands out
    tasks). Raises ValueError for ``workers < 1``."""
    if workers < 1:
        raise ValueError(f"need at least one worker, got {workers}")
    free = [0.0] * workers
    for seconds in durations:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free)


def projected_wall_s(durations, jobs: int, startup_s: float, slowdown: float = 1.0) -> float:
    """Wall time of a sweep of runs of ``durations`` seconds each (in grid order): one after
    another in this process for ``jobs=1``; else on ``jobs`` workers that take ``startup_s``
    to start, every run ``slowdown`` times as long as alone."""
    if jobs == 1:
        return float(sum(durations))
    return startup_s + slowdown * makespan(durations, jobs)


def cpu_slowdown(jobs: int, cores: int) -> float:
    """How much longer each run of ``jobs`` one-thread workers takes on ``cores`` cores."""
    return max(1.0, jobs / cores)


def gpu_slowdown(jobs_per_gpu: int, throughputs: dict[int, float] | None) -> float:
    """How much longer each run takes with ``jobs_per_gpu`` workers sharing a GPU, from the
    throughputs measured with so many workers (runs per second, :func:`measure_concurrency`);
    1 where there is no measurement for that count (the plan then says so)."""
    if not throughputs or jobs_per_gpu not in throughputs or 1 not in throughputs:
        return 1.0
    return jobs_per_gpu * throughputs[1] / throughputs[jobs_per_gpu]


# --- how many workers fill a GPU -------------------------------------------------------------------------

def jobs_that_fit(peak_bytes: float, device_bytes: float, cores: int, context_bytes: float = CUDA_CONTEXT_BYTES) -> int:
    """The most workers that fit on one GPU of ``device_bytes``, each holding a run's
    ``peak_bytes`` and its ``context_bytes``, and at most one per CPU core (at least 1)."""
    fit = int(device_bytes // (max(peak_bytes, 0.0) + context_bytes)) if math.isfinite(peak_bytes) else 1
    return max(1, min(fit, cores))


def concurrency_counts(most: int) -> list[int]:
    """The worker counts to measure: 1, 2, 4, ... up to ``most``, and ``most`` itself."""
    counts = [2 ** k for k in range(most.bit_length()) if 2 ** k <= most]
    return counts + ([most] if counts[-1] != most else [])


def choose_jobs(throughputs: dict[int, float], tolerance: float = BEST_TOLERANCE) -> int:
    """The fewest workers whose measured throughput (runs per second, by worker count) is
    within ``tolerance`` of the best: more workers than that only hold more memory. Raises
    ValueError without a measurement."""
    if not throughputs:
        raise ValueError("no throughput measured: measure at least one worker count")
    best = max(throughputs.values())
    return min(n for n, rate in throughputs.items() if rate >= (1 - tolerance) * best)


def measure_concurrency(run, config, steps: int, counts: list[int], device: str, limit_s: float | None = LIMIT_S
                        ) -> dict[int, float]:
    """Runs per second of ``run(config)`` on ``device`` (one GPU) with each of ``counts``
    workers probing it at once; the workers wait for each other before their probes, so that the timed steps overlap."""
    context = multiprocessing.get_context("spawn")
    throughputs = {}
    with context.Manager() as manager:
        for n in counts:
            barrier = manager.Barrier(n)
            with process_pool(n, device) as pool:
                futures = [pool.submit(_probe, run, config, steps, limit_s, barrier) for _ in range(n)]
                rows = [kind_row("", "", 1, future.result()) for future in futures]
            throughputs[n] = sum(1.0 / row["s_per_run"] for row in rows)
    return throughputs


# --- the plan --------------------------------------------------------------------------------------------

@dataclass
class Plan:
    """What a sweep of ``experiment`` at ``scale`` costs on ``device`` ("cpu" or "cuda") at
    ``jobs`` workers: ``kinds``, one row per kind of run (:data:`COLUMNS`), ``totals``
    (seconds and bytes), ``notes`` on what the projection leaves out or assumes, and
    ``provenance``."""

    experiment: str
    scale: str
    device: str
    jobs: int
    kinds: pd.DataFrame
    totals: dict
    notes: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)


# The table's columns: times in seconds, memory in bytes; ``timed_out``: the probe reached its
# limit, so the kind's times are lower bounds; ``wall_s`` is the probe's own time.
COLUMNS = ["experiment", "kind", "runs", "s_per_step", "steps_per_epoch", "epochs", "evals_per_epoch", "eval_s",
           "epoch_end_s", "setup_s", "s_per_epoch", "s_per_run", "peak_bytes", "host_peak_bytes", "timed_steps",
           "timed_out", "wall_s"]


def kind_row(experiment: str, label: str, runs: int, measured: dict) -> dict:
    """A row of a plan's table from one probe's measurements (what :func:`_probe` returns)."""
    row = {"experiment": experiment, "kind": label, "runs": runs, "s_per_step": measured["step_s"],
           **{k: measured[k] for k in COLUMNS if k in measured}}
    row["s_per_epoch"] = epoch_seconds(row) if row["steps_per_epoch"] else math.nan
    row["s_per_run"] = run_seconds(row)
    return {k: row[k] for k in COLUMNS}


def probe_in_worker(run, config, device=None, steps: int = STEPS, limit_s: float | None = LIMIT_S) -> dict:
    """Probe ``run(config)`` alone, in a fresh worker on ``device``, as a sweep's worker runs
    it: its row of a plan's table (``experiment`` and ``kind`` left empty)."""
    with process_pool(1, str(train.resolve_device(device))) as pool:
        pool.submit(_worker_ready).result()
        return kind_row("", "", 1, pool.submit(_probe, run, config, steps, limit_s).result())


def iter_plans(names: list[str], scale: str = "full", device=None, jobs: int | str = 1, steps: int = STEPS,
               limit_s: float | None = LIMIT_S, command: str = "", progress: bool = False, configs=None):
    """Probe every kind of run of each experiment in ``names`` at ``scale`` and project its
    sweep at ``jobs`` workers on ``device``, each probe ``steps`` steps and ``limit_s``
    seconds at most; yield a :class:`Plan` as each is done. ``configs``, with one name, plans
    those runs instead of the preset grid (what a live panel is about to compute).
    ``jobs="best"`` (or ``"auto"``) measures, on CUDA, how many workers share a GPU best
    (:func:`measure_concurrency`) and plans for them. Raises ValueError for an unknown
    experiment or scale, an unusable device, or ``"best"`` off CUDA."""
    experiments = [get(name) for name in names]
    if configs is not None and len(experiments) != 1:
        raise ValueError("configs= plans the runs of one experiment; give one name")
    grids = [(experiment, experiment.grid(scale) if configs is None else list(configs)) for experiment in experiments]
    dev = train.resolve_device(device)
    measure = jobs in ("best", "auto")
    if measure and dev.type != "cuda":
        raise ValueError(f"--jobs {jobs} measures how many workers share a GPU best; on the CPU give a number "
                         f"(one single-threaded worker per core: --jobs {os.cpu_count() or 1})")
    if not measure and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be a whole number >= 1 or 'best', got {jobs!r}")
    free_before = torch.cuda.mem_get_info(dev)[0] if dev.type == "cuda" else 0
    started = time.perf_counter()
    with process_pool(1, str(dev)) as pool:
        description = pool.submit(_worker_ready).result()
        startup_s = time.perf_counter() - started
        machine = dict(device=description, threads=RUN_THREADS, startup_s=startup_s, cores=os.cpu_count() or 1)
        if dev.type == "cuda":
            free = torch.cuda.mem_get_info(dev)[0]
            machine.update(free_bytes=free, gpus=torch.cuda.device_count(),
                           context_bytes=free_before - free if free_before > free else CUDA_CONTEXT_BYTES)
        for experiment, configs in grids:
            kinds = group_kinds(configs)
            rows, datasets = [], set()
            labels = tqdm(kind_labels(list(kinds)), desc=f"probing {experiment.name}", unit="kind",
                          disable=not progress, leave=False)
            for label, members in zip(labels, kinds.values()):
                try:
                    measured = pool.submit(_probe, experiment.run, members[0], steps, limit_s).result()
                except Exception as err:
                    raise RuntimeError(f"probing {experiment.name} ({label}: {members[0]!r}) failed: {err}") from err
                rows.append(kind_row(experiment.name, label, len(members), measured))
                datasets.update(measured["datasets"])
            table = pd.DataFrame(rows, columns=COLUMNS)
            seconds = dict(zip(kinds, table["s_per_run"]))
            durations = [seconds[cost_key(config)] for config in dict.fromkeys(configs)]
            throughputs = None
            if measure:
                heaviest = int((table["runs"] * table["s_per_run"]).idxmax())
                most = jobs_that_fit(table["peak_bytes"].max(), machine["free_bytes"],
                                     machine["cores"] // machine["gpus"], machine["context_bytes"])
                throughputs = measure_concurrency(experiment.run, list(kinds.values())[heaviest][0], steps,
                                                  concurrency_counts(most), f"cuda:{dev.index or 0}", limit_s)
            yield _plan(experiment, scale, dev, jobs, table, durations, datasets, machine, throughputs,
                        dict(command=command, steps=steps, limit_s=limit_s))


def plan_grid(experiment: Experiment, configs, **settings) -> Plan:
    """The plan of just these runs of ``experiment`` (:func:`iter_plans`' settings)."""
    return next(iter_plans([experiment.name], configs=configs, **settings))


def plan_experiments(names: list[str], **settings) -> list[Plan]:
    """:func:`iter_plans` as a list."""
    return list(iter_plans(names, **settings))


def _plan(experiment: Experiment, scale: str, dev: torch.device, jobs, table: pd.DataFrame, durations: list[float],
          datasets: set[str], machine: dict, throughputs: dict[int, float] | None, settings: dict) -> Plan:
    """Project the sweep from its kinds' costs; the totals, notes and provenance."""
    totals = dict(runs=len(durations), kinds=len(table), lower_bound=bool(table["timed_out"].any()),
                  compute_s=float(sum(durations)),
                  startup_s=machine["startup_s"], download_bytes=standin.download_bytes(datasets),
                  datasets=sorted(datasets), peak_bytes=float(table["peak_bytes"].max()),
                  host_peak_bytes=float(table["host_peak_bytes"].max()), threads=machine["threads"])
    notes = []
    if dev.type == "cuda":
        gpus = machine["gpus"]
        fit = jobs_that_fit(totals["peak_bytes"], machine["free_bytes"], machine["cores"] // gpus,
                            machine["context_bytes"])
        totals.update(gpus=gpus, context_bytes=machine["context_bytes"], jobs_fit_per_gpu=fit)
        if throughputs:
            totals.update(throughputs=throughputs, jobs_best_per_gpu=choose_jobs(throughputs))
            jobs = totals["jobs_best_per_gpu"] * gpus
        per_gpu = math.ceil(jobs / gpus)
        slowdown = gpu_slowdown(per_gpu, throughputs)
        if per_gpu > 1 and not (throughputs and per_gpu in throughputs):
            notes.append(f"{per_gpu} workers share each GPU: projected as if each ran as fast as alone; "
                         "--jobs best measures how they slow each other down")
    else:
        slowdown = cpu_slowdown(jobs, machine["cores"])
        if jobs > machine["cores"]:
            notes.append(f"--jobs {jobs} on {machine['cores']} CPU cores: the single-threaded workers share the "
                         f"cores, so each run is projected {slowdown:.2g} times as long as its probe alone")
    totals.update(jobs=jobs, slowdown=slowdown, wall_s=projected_wall_s(durations, jobs, machine["startup_s"],
                                                                          slowdown))
    limited = table.loc[table["timed_out"], "kind"].tolist()
    if limited:
        notes.append(f"probes stopped at the {settings['limit_s']:g} s limit, so their times and the totals are lower "
                     f"bounds (what each part had taken by then): {', '.join(limited)}; raise --limit, or plan on a "
                     "faster device")
    whole = table.loc[(table["steps_per_epoch"] == 0) & ~table["timed_out"], "kind"].tolist()
    if whole:
        notes.append(f"timed whole (no training loop): {', '.join(whole)}")
    if experiment.run in NOTES:
        notes.append(NOTES[experiment.run])
    notes.append(NOTE_DIVERGENCE)
    # The machine's 1-minute load average as the probes ended (theirs included): probes on a
    # machine busy with other work time slower than the runs will.
    provenance = dict(device=machine["device"], threads=machine["threads"], steps=settings["steps"],
                      limit_s=settings["limit_s"], load_average=os.getloadavg()[0], command=settings["command"],
                      date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), torch=torch.__version__,
                      ibtools=__version__, git_commit=_git_commit())
    return Plan(experiment.name, scale, dev.type, jobs, table, totals, notes, provenance)


def _git_commit() -> str:
    from .__main__ import git_commit  # the CLI imports this module

    return git_commit()


# --- files --------------------------------------------------------------------------------------------

def plan_path(out: str | Path, experiment: str, scale: str, device: str) -> Path:
    """Where a plan is kept: ``OUT/EXPERIMENT/SCALE/plan-DEVICE.json``."""
    return Path(out) / experiment / scale / f"plan-{device}.json"


def write_plan(plan: Plan, out: str | Path) -> Path:
    """Write ``plan`` atomically to :func:`plan_path` under ``out``; the path."""
    path = plan_path(out, plan.experiment, plan.scale, plan.device)
    record = dict(experiment=plan.experiment, scale=plan.scale, device=plan.device, jobs=plan.jobs,
                  kinds=plan.kinds.to_dict(orient="records"), totals=plan.totals, notes=plan.notes,
                  provenance=plan.provenance)
    write_atomic(path, json.dumps(record, indent=1, default=_plain) + "\n")
    return path


def _plain(value):
    """numpy numbers, which pandas' records hold, as Python's."""
    return value.item() if hasattr(value, "item") else str(value)


def read_plan(path: str | Path) -> Plan:
    """The plan in the file ``path`` (written by :func:`write_plan`)."""
    record = json.loads(Path(path).read_text())
    totals = record["totals"]
    if "throughputs" in totals:  # JSON keys are strings
        totals["throughputs"] = {int(n): rate for n, rate in totals["throughputs"].items()}
    return Plan(record["experiment"], record["scale"], record["device"], record["jobs"],
                pd.DataFrame(record["kinds"], columns=COLUMNS), totals, record["notes"], record["provenance"])


def load_plan(name: str, scale: str = "full", device: str = "cuda", results_dir: str | Path | None = None
              ) -> Plan | None:
    """The plan of experiment ``name`` for ``device`` in ``results_dir/NAME/SCALE/`` (default:
    the book's ``book/results``), or None if there is none."""
    path = plan_path(RESULTS_DIR if results_dir is None else results_dir, name, scale, device)
    return read_plan(path) if path.exists() else None


def full_scale_summary(name: str, results_dir: str | Path | None = None) -> str:
    """What a chapter says of experiment ``name`` at full scale: the command that runs the
    sweep, the committed result if there is one, and the committed plans (any device) with
    their provenance: runs, projected wall time at their ``--jobs``, a run's seconds per epoch
    and peak memory, the download."""
    from .experiments import load_results

    lines = [f"{name}: python -m ibtools run {name} --scale full --out book/results"]
    found = load_results(name, "full", results_dir)
    if found is None:
        lines.append("  no full-scale result is committed yet")
    else:
        provenance = found[1]
        lines.append(f"  result: {provenance['runs']} runs on {provenance['device']}, {provenance['date'][:10]}")
    for device in ("cuda", "cpu"):
        plan = load_plan(name, "full", device, results_dir)
        if plan is None:
            continue
        totals, kinds = plan.totals, plan.kinds
        epoch = kinds["s_per_epoch"].dropna()
        per_epoch = (f"; an epoch of one run {format_seconds(epoch.min())}" if len(epoch) and epoch.min() == epoch.max()
                     else f"; an epoch of one run {format_seconds(epoch.min())} to {format_seconds(epoch.max())}"
                     if len(epoch) else "")
        lines.append(f"  plan on {plan.provenance['device']}, {plan.provenance['date'][:10]} "
                     f"({plan.provenance['command']}): {totals['runs']} runs of {totals['kinds']} kind(s), "
                     f"projected {'>= ' if totals['lower_bound'] else ''}{format_seconds(totals['wall_s'])} "
                     f"with --jobs {plan.jobs}{per_epoch}; "
                     f"peak memory {format_bytes(totals['peak_bytes'])} a run; download "
                     f"{format_bytes(totals['download_bytes'])}")
    return "\n".join(lines)


# --- how many workers run should start ----------------------------------------------------------------

def fill_jobs(plan: Plan) -> int:
    """The workers that fill the plan's GPUs: the best measured per GPU (``--jobs best``),
    else as many as fit in its memory, times the GPUs; 1 for a CPU plan."""
    if plan.device != "cuda":
        return 1
    totals = plan.totals
    return totals.get("jobs_best_per_gpu", totals["jobs_fit_per_gpu"]) * totals["gpus"]


def default_jobs(experiment: str, scale: str = "full", device=None,
                 plans_dirs: tuple = ("results", RESULTS_DIR)) -> int:
    """How many workers ``run`` should start by default: 1 on the CPU; on a GPU, what fills
    the card, from this device's plan in ``plans_dirs`` if one was made on a card of the same
    name, else from a quick probe (one step of each kind) of the memory each run takes."""
    dev = train.resolve_device(device)
    if dev.type != "cuda":
        return 1
    name = torch.cuda.get_device_name(dev)
    for folder in plans_dirs:
        found = load_plan(experiment, scale, "cuda", folder)
        if found is not None and found.provenance.get("device") == name:
            return fill_jobs(found)
    return fill_jobs(plan_experiments([experiment], scale=scale, device=dev, steps=1)[0])


# --- printing -------------------------------------------------------------------------------------------

_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def format_seconds(seconds: float) -> str:
    """Seconds as people read them: 35 ms, 4.2 s, 12 min 5 s, 3 h 20 min, 2 d 4 h; "-" for NaN
    (not applicable)."""
    if math.isnan(seconds):
        return "-"
    if math.isinf(seconds):
        return "?"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    unit, size = next((unit, size) for unit, size in _UNITS if seconds >= size)
    small, small_size = _UNITS[[u for u, _ in _UNITS].index(unit) + 1]
    whole, rest = divmod(round(seconds / small_size), size // small_size)
    return f"{whole} {unit} {rest} {small}" if rest else f"{whole} {unit}"


def format_bytes(count: float) -> str:
    """Bytes in MB or GB (powers of 1000), to three digits."""
    if not math.isfinite(count):
        return "?"
    return f"{count / 1e9:.3g} GB" if abs(count) >= 1e9 else f"{count / 1e6:.3g} MB"


def format_plan(plan: Plan) -> str:
    """The plan as a table and a few lines, for the terminal; ">=" marks lower bounds."""
    totals, kinds = plan.totals, plan.kinds

    def seconds(column: str) -> list[str]:
        return ["-" if math.isnan(value) else (">= " if bound else "") + format_seconds(value)
                for value, bound in zip(kinds[column], kinds["timed_out"])]

    shown = pd.DataFrame({"kind": kinds["kind"], "runs": kinds["runs"], "s/step": seconds("s_per_step"),
                          "steps/epoch": kinds["steps_per_epoch"], "epochs": kinds["epochs"],
                          "s/epoch": seconds("s_per_epoch"), "s/run": seconds("s_per_run"),
                          "peak memory": kinds["peak_bytes"].map(format_bytes)})
    bound = ">= " if totals["lower_bound"] else ""
    lines = [f"{plan.experiment} at {plan.scale} scale on {plan.provenance['device']}, --jobs {plan.jobs}: "
             f"{totals['runs']} runs of {totals['kinds']} kind(s) (probed at load average "
             f"{plan.provenance['load_average']:.1f})", shown.to_string(index=False),
             f"projected wall time {bound}{format_seconds(totals['wall_s'])} (runs' compute "
             f"{bound}{format_seconds(totals['compute_s'])}"
             + (f", workers start in {format_seconds(totals['startup_s'])})" if plan.jobs > 1 else ")"),
             f"download {format_bytes(totals['download_bytes'])} ({', '.join(totals['datasets']) or 'nothing'}); "
             f"peak memory a run {format_bytes(totals['peak_bytes'])}"]
    if "throughputs" in totals:
        rates = ", ".join(f"{n}: {rate * 3600:.3g}" for n, rate in totals["throughputs"].items())
        lines.append(f"runs per hour by workers on a GPU: {rates}; best: {totals['jobs_best_per_gpu']} per GPU")
    lines += [f"note: {note}" for note in plan.notes]
    return "\n".join(lines)


def format_total(plans: list[Plan]) -> str:
    """One line for several experiments' plans, their sweeps run one after another."""
    datasets = sorted({name for plan in plans for name in plan.totals["datasets"]})
    bound = ">= " if any(plan.totals["lower_bound"] for plan in plans) else ""
    wall = sum(plan.totals["wall_s"] for plan in plans)
    compute = sum(plan.totals["compute_s"] for plan in plans)
    runs = sum(plan.totals["runs"] for plan in plans)
    return (f"total for {len(plans)} experiments: {runs} runs, projected wall time {bound}{format_seconds(wall)} one "
            f"sweep after another (runs' compute {bound}{format_seconds(compute)}); download "
            f"{format_bytes(standin.download_bytes(datasets))} ({len(datasets)} datasets)")


def run_command(args, command: str) -> int:
    """``python -m ibtools plan`` (``command``, for the provenance): plan, print and write each
    experiment's plan (the CLI's help says what ``args`` holds)."""
    if bool(args.experiment) == bool(args.all):
        raise ValueError("give one experiment name (python -m ibtools list names them) or --all")
    names = sorted(EXPERIMENTS, key=lambda n: (EXPERIMENTS[n].chapter, n)) if args.all else [args.experiment]
    plans = []
    for plan in iter_plans(names, scale=args.scale, device=args.device, jobs=args.jobs, steps=args.steps,
                           limit_s=args.limit, command=command, progress=True):
        path = write_plan(plan, args.out)
        print(format_plan(plan) + f"\nwrote {path}\n", flush=True)
        plans.append(plan)
    if len(plans) > 1:
        print(format_total(plans))
    return 0
