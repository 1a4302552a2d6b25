"""Seconds for one epoch of the training loop, as the full-scale sweeps run it.

The targets, on one H200-class GPU: an epoch of the MNIST classifier (EB or IB) in at
most 0.5 s, an epoch of ResNet-56 on CIFAR-10 in at most 3 s, and an SIBP epoch of 784-500-10
in at most 5 times SGD's. Each epoch runs through :func:`ibtools.train.train` itself: the
training set held on the device, batches drawn (and augmented) there, the step made by
:func:`ibtools.train.make_step` (replayed from a CUDA graph where the optimizer is graph-safe),
on CUDA the step losses read only at the epoch's end, and there one evaluation of the training
and test splits (the sweeps evaluate once an epoch). The data are random, of the papers' shapes (this
benchmark downloads nothing); a step costs the same whatever the numbers, as long as they stay
finite (the ``steps`` column shows that every step was taken). TF32 matrix products are allowed
on CUDA, as ``python -m ibtools run --scale full`` allows them.

The tasks, each with its chapter's full-scale configuration:

- MNIST classifier (Fagan & Iyengar, appendix D.3), EB against IB: ``ib-mnist`` at full scale
  (:func:`ibtools.experiments.ch03_ib_vs_eb.mnist_configs`, :data:`~ibtools.experiments.ch03_ib_vs_eb.TASKS`):
  60,000 28 x 28 training images and 10,000 test images, batch 100, SGD at the grid's rate
  nearest 0.1, IB under the layers' default mini-batch convention.
- ResNet-56 on CIFAR-10 (VS, section 6 and appendix A.3.1), SGD with momentum: ``sgdl`` at full
  scale (:func:`ibtools.experiments.ch07_large_lr.sgdl_configs`): 50,000 32 x 32 x 3 training
  images and 10,000 test images, batch 256, momentum 0.9, weight decay 0.005, rate 0.1 with the
  step decays of :func:`~ibtools.experiments.ch07_large_lr.decay_steps`, crops of the
  4-pixel reflection-padded image and horizontal flips (:func:`ibtools.train.crop_and_flip`).
- 784-500-10 relu network (Liu & Zhang, section 5.2, Table 2), SIBP against SGD:
  ``sibp-mnist`` at full scale (:func:`ibtools.experiments.ch04_sibp.mnist_configs`): 60,000
  rows of 784 features, batch 100, SGD at rate 0.1, SIBP at eta = lambda = 1 with 5 CG
  iterations.

How an epoch is timed: ``train`` for two epochs and for one, the difference being the second
epoch with its evaluation, after the first epoch's setup, warm-up and graph capture. The
evaluation of both splits (:func:`ibtools.train.evaluate`, as ``train`` calls it) is also timed
alone ("evaluation s", a part of "epoch s"). Each method of a task takes its turn in blocks
(``repeats`` of them, their order alternating, :func:`ibtools.bench.timed_blocks`); the times
are medians over blocks and a ratio (IB/EB, SIBP/SGD) the median of the blocks' ratios.

``fraction``: the share of each split trained and evaluated; the seconds are scaled to the
whole split (multiplied by its size over the rows timed) and the output says so. 1.0 on CUDA;
0.01 on the CPU, where a full ResNet-56 epoch took 12 to 18 minutes on one core. On CUDA a
fraction must leave the first epoch at least four steps (a graph step's three eager warm-up
steps and its capture), or the second epoch would time a capture.

    python -m ibtools bench epoch            # on CUDA the targets; on the CPU, scaled seconds
"""

# No `from __future__ import annotations`: the CLI runs this file without registering it as a
# module (as benchmarks/ib_overhead.py notes).
import math
import statistics
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch

from ibtools.bench import full_scale_precision, median_ratio, timed_blocks
from ibtools.data import Dataset
from ibtools.experiments import ch03_ib_vs_eb as ch03
from ibtools.experiments import ch04_sibp as ch04
from ibtools.experiments import ch07_large_lr as ch07
from ibtools.ib_layers import MINIBATCH, bind
from ibtools.models import CIFARResNet
from ibtools.sibp import SIBP
from ibtools.train import StepDecay, crop_and_flip, evaluate, resolve_device, train

CPU_FRACTION = 0.01
QUICK_BATCHES = 3  # training rows of a quick measurement, in batches: enough to outweigh the timer's noise
TEST_ROWS = 10_000  # MNIST's and CIFAR-10's test splits


@dataclass
class Method:
    """One way of training a task: its model and optimizer (``make_optimizer(model)``)."""

    name: str
    make_model: Callable[[], torch.nn.Module]
    make_optimizer: Callable[[torch.nn.Module], object]


@dataclass
class Task:
    """What one epoch trains: ``rows`` training rows of ``shape`` (and :data:`TEST_ROWS` test
    rows), ten classes, by each of ``methods`` (the first the baseline of the ratios), with
    ``train``'s ``loss``, ``batch_size`` and ``augment``; ``target``: the speed the book aims
    at for the task on one H200-class GPU."""

    name: str
    shape: tuple
    rows: int
    loss: str
    batch_size: int
    methods: list[Method]
    target: str
    augment: Callable | None = None


def _ib_run(config) -> Method:
    """EB or IB of an ``ib-mnist`` config: the classifier in explicit or implicit mode, SGD."""
    mode = "implicit" if config.method == "ib" else "explicit"
    return Method(config.method.upper(),
                  lambda: ch03.build_model(config.task, None, mode, config.minibatch),
                  lambda model: bind(model, torch.optim.SGD(model.parameters(), lr=config.lr)))


def mnist_classifier() -> Task:
    """EB and IB on the MNIST classifier, as ``ib-mnist`` runs them at full scale (at the grid's
    rate nearest 0.1; IB under the layers' default mini-batch convention)."""
    lr = min(ch03.MNIST_LRS["full"], key=lambda rate: abs(math.log(rate / 0.1)))
    configs = ch03.mnist_configs("full", lrs=[lr], methods=["eb", "ib"], seeds=1, minibatches=MINIBATCH[:1])
    loss, batch_size, _, _ = ch03.TASKS[configs[0].task]
    return Task("MNIST classifier", (1, 28, 28), 60_000, loss, batch_size, [_ib_run(c) for c in configs],
                "epoch <= 0.5 s")


def resnet(quick: bool = False) -> Task:
    """ResNet-56 on CIFAR-10 with SGD and momentum, as ``sgdl`` runs it at full scale; ``quick``:
    the chapter's reduced ResNet (depth 8, width 8, batch 128, 2-pixel crops) on the same shapes."""
    config = ch07.sgdl_configs("reduced" if quick else "full", methods=["sgdm"], seeds=1)[0]
    rows = 50_000
    milestones = ch07.decay_steps(config.method, config.epochs, math.ceil(rows / config.batch_size))
    method = Method("SGDM", lambda: CIFARResNet(config.depth, 10, 3, config.width),
                    lambda model: StepDecay(ch07.make_optimizer(config, model.parameters()), milestones))
    return Task(f"ResNet-{config.depth} CIFAR-10", (3, 32, 32), rows, "cross_entropy", config.batch_size, [method],
                "epoch <= 3 s", augment=lambda x, g: crop_and_flip(x, g, config.pad, config.flip))


def _sibp_run(config) -> Method:
    """SGD or SIBP of a ``sibp-mnist`` config."""
    if config.method == "sgd":
        def make_optimizer(model):
            return torch.optim.SGD(model.parameters(), lr=config.lr)
    else:
        def make_optimizer(model):
            return SIBP(model, config.lr, lam=config.lam, cg_iters=config.cg_iters)
    return Method(config.method.upper(), lambda: ch04.build_network(config.sizes, config.init_std), make_optimizer)


def sibp_network() -> Task:
    """SGD and SIBP on 784-500-10, as ``sibp-mnist`` runs them at full scale: Table 2's SGD at
    0.1 and SIBP at eta = lambda = 1."""
    chosen = [("sgd", 0.1, 0.0), ("sibp", 1.0, 1.0)]
    grid = {(c.method, c.lr, c.lam): c for c in ch04.mnist_configs("full", methods=("sgd", "sibp"), seeds=1)}
    configs = [grid[key] for key in chosen]
    return Task("784-500-10", (configs[0].sizes[0],), 60_000, "cross_entropy", configs[0].batch_size,
                [_sibp_run(c) for c in configs], "SIBP/SGD <= 5")


def tasks(quick: bool = False) -> list[Task]:
    """The three tasks of the module docstring (``quick``: with the reduced ResNet)."""
    return [mnist_classifier(), resnet(quick), sibp_network()]


def random_split(task: Task, rows: int, test_rows: int, device: torch.device, seed: int = 0) -> Dataset:
    """Inputs uniform in [0, 1] of ``task.shape``, ten random classes, made on ``device``."""
    generator = torch.Generator(device).manual_seed(seed)
    made = dict(generator=generator, device=device)
    return Dataset(name=f"random {task.name}", x_train=torch.rand(rows, *task.shape, **made),
                   y_train=torch.randint(0, 10, (rows,), **made), x_test=torch.rand(test_rows, *task.shape, **made),
                   y_test=torch.randint(0, 10, (test_rows,), **made), task="classification", n_classes=10,
                   source="random numbers of the task's shapes")


def measure(device: torch.device | None = None, quick: bool = False, fraction: float | None = None,
            repeats: int = 2) -> pd.DataFrame:
    """One row per task and method: ``rows`` (training rows timed), ``steps`` (steps an epoch
    took; ceil(rows / batch)), ``epoch s`` (one epoch with its evaluation, scaled to the whole
    training set), ``evaluation s`` (that evaluation alone, scaled), ``ratio`` (against the
    task's first method: IB/EB, SIBP/SGD; NaN for it), the task's ``target``, ``captured``
    ("graph" where train replayed the steps from a CUDA graph, as :func:`ibtools.train.make_step`
    decides, read from the run's ``replays``; else "eager") and
    ``scale`` (what the seconds were multiplied by). ``table.attrs["tf32"]``: whether TF32 was
    allowed.

    ``fraction``: the share of each split timed (default 1 on CUDA, :data:`CPU_FRACTION` on the
    CPU); ``quick``: :data:`QUICK_BATCHES` batches of training rows and the reduced ResNet (for
    tests); ``repeats``: blocks per method (at least 2). Raises ValueError for a fraction
    outside (0, 1] or fewer than 2 repeats."""
    device = device or resolve_device()
    if fraction is None:
        fraction = 1.0 if device.type == "cuda" else CPU_FRACTION
    if not 0 < fraction <= 1 or repeats < 2:
        raise ValueError(f"need 0 < fraction <= 1 and repeats >= 2, got {fraction} and {repeats}")
    rows = []
    with full_scale_precision(device) as precision:
        for task in tasks(quick):
            rows += _measure_task(task, device, quick, fraction, repeats, precision["tf32"])
    table = pd.DataFrame(rows)
    table.attrs["tf32"] = precision["tf32"]
    return table


def _measure_task(task: Task, device: torch.device, quick: bool, fraction: float, repeats: int,
                  tf32: bool) -> list[dict]:
    n = QUICK_BATCHES * task.batch_size if quick else max(task.batch_size, round(fraction * task.rows))
    scale = task.rows / n
    data = random_split(task, n, max(1, round(TEST_ROWS / scale)), device)
    runs, functions = {}, {}
    for method in task.methods:
        functions[method.name, 1], functions[method.name, 2] = (
            _train(method, task, data, device, tf32, epochs, runs) for epochs in (1, 2))
        torch.manual_seed(0)
        model = method.make_model().to(device)
        optimizer = method.make_optimizer(model)  # binds an IB model, which its forward pass needs
        functions[method.name, "evaluation"] = _evaluation(model, data, task.loss)
    if not quick:  # the process's first run pays for what later ones reuse (CUDA's kernels, cuDNN's choices)
        for method in task.methods:
            functions[method.name, 1]()
    samples = timed_blocks(functions, device, blocks=repeats, number=1, warmup=0)
    epochs = {m.name: [two - one for one, two in zip(samples[m.name, 1], samples[m.name, 2])] for m in task.methods}
    baseline = task.methods[0].name
    return [{
        "task": task.name, "method": m.name, "batch": task.batch_size, "rows": n,
        "steps": runs[m.name, 2].steps - runs[m.name, 1].steps,
        "epoch s": statistics.median(epochs[m.name]) * scale,
        "evaluation s": statistics.median(samples[m.name, "evaluation"]) * scale,
        "ratio": median_ratio(epochs[m.name], epochs[baseline]) if m.name != baseline else float("nan"),
        "target": task.target, "captured": "graph" if runs[m.name, 2].replays else "eager", "scale": scale,
    } for m in task.methods]


def _train(method: Method, task: Task, data: Dataset, device: torch.device, tf32: bool, epochs: int,
           runs: dict) -> Callable[[], None]:
    """A call of ``train`` for ``epochs`` epochs of ``method`` on ``data``, from the same initial
    weights every time; its RunResult goes to ``runs[method.name, epochs]``."""
    def run():
        torch.manual_seed(0)
        runs[method.name, epochs] = train(method.make_model(), data, method.make_optimizer, loss=task.loss,
                                          epochs=epochs, batch_size=task.batch_size, seed=0, device=device,
                                          augment=task.augment, diverge_factor=math.inf, tf32=tf32)
    return run


def _evaluation(model: torch.nn.Module, data: Dataset, loss: str) -> Callable[[], None]:
    """What ``train`` evaluates at an epoch's end: both splits, by :func:`ibtools.train.evaluate`."""
    def run():
        evaluate(model, data.x_train, data.y_train, loss)
        evaluate(model, data.x_test, data.y_test, loss)
    return run


def main(device: torch.device) -> None:
    table = measure(device)
    print(f"device: {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"TF32 {'allowed' if table.attrs['tf32'] else 'off'}")
    print("one epoch of ibtools.train.train on random data of the papers' shapes: the second epoch of a two-epoch "
          "run (the time of two epochs less that of one), its end-of-epoch evaluation of both splits included; "
          "medians over alternating blocks\n")
    if (table["scale"] > 1).any():
        print("SCALED: each split timed on a fraction of its rows (column rows: the training rows timed); the "
              "seconds are multiplied by scale (whole split / rows timed) to give seconds per full epoch\n")
    formats = {"epoch s": "{:.3f}", "evaluation s": "{:.3f}", "ratio": "{:.2f}", "scale": "{:.4g}"}
    print(table.to_string(index=False, formatters={k: f.format for k, f in formats.items()}))
    print("\nratio: against the task's first method (IB/EB, SIBP/SGD), the median of the blocks' ratios")
    print("target: the speed aimed at on one H200-class GPU (epoch s, its evaluation included)")
    print("captured: graph where train replays the steps from a CUDA graph, else eager")
