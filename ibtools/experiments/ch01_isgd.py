"""Chapter 1: implicit (ISGD) versus explicit (ESGD) stochastic gradient descent.

Fagan & Iyengar, *Robust Implicit Backpropagation*, section 2 (Figure 1) and section 5
("Exact ISGD"). Three experiments:

- ``isgd-quadratic``: the loss theta^2/2, where both updates have closed forms;
- ``isgd-convex``: exact ISGD (closed-form least squares, a 1-D root for logistic
  regression) against ESGD on real data, across a learning-rate grid;
- ``isgd-exact-net``: "exact ISGD" for a neural network, eq. (1) solved by an inner gradient
  descent of 100 steps at a tenth of the learning rate, against ESGD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import data, isgd, models
from ..train import check_lr, train
from . import Experiment, register


def log_grid(low: float, high: float, per_decade: int) -> list[float]:
    """Learning rates log-spaced from ``low`` to ``high``, rounded to 3 significant digits."""
    count = int(round(np.log10(high / low) * per_decade)) + 1
    return [float(f"{lr:.3g}") for lr in np.logspace(np.log10(low), np.log10(high), count)]


def check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of {list(allowed)}")


# --- the quadratic of Figure 1 ----------------------------------------------------------------

@dataclass(frozen=True)
class QuadraticConfig:
    method: str  # "esgd" | "isgd"
    lr: float
    steps: int = 10
    theta0: float = 1.0
    seed: int = 0  # the quadratic is deterministic; kept so every table has a seed column


def run_quadratic(config: QuadraticConfig, device=None) -> list[dict]:
    check_lr(config.lr)
    check_choice("method", config.method, ("esgd", "isgd"))
    thetas = isgd.quadratic_trajectory(torch.tensor(config.theta0, dtype=torch.float64),
                                       config.lr, config.steps, config.method)
    losses = 0.5 * thetas**2
    finite = torch.isfinite(losses)
    diverged = bool(losses[-1] > 100 * losses[0]) or not bool(finite.all())
    last_finite = float(losses[finite][-1])
    return [dict(kind="step", step=t, epoch=float(t), theta=float(th), loss=float(l),
                 train_loss=float(l), diverged=diverged, last_finite_loss=last_finite)
            for t, (th, l) in enumerate(zip(thetas, losses))]


def quadratic_configs(scale: str, lrs=None, methods=None, seeds=None, steps=None) -> list[QuadraticConfig]:
    lrs = lrs or [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 1.9, 2.0, 2.1, 2.5, 3.0, 4.0, 8.0]
    steps = steps or 10
    return [QuadraticConfig(method=m, lr=lr, steps=steps) for m in (methods or ("esgd", "isgd")) for lr in lrs]


quadratic = register(Experiment(
    name="isgd-quadratic", chapter=1, title="ISGD vs ESGD on theta^2/2 (Figure 1)",
    run=run_quadratic, configs=quadratic_configs, metric="loss"))


# --- convex problems with exact proximal steps --------------------------------------------------

CONVEX_PROBLEMS = {
    # problem: (dataset, loss, optimizer class for ISGD)
    "least-squares": ("diabetes", "least_squares", isgd.ISGDLeastSquares),
    "logistic": ("breast-cancer", "logistic", isgd.ISGDLogistic),
}


@dataclass(frozen=True)
class ConvexConfig:
    problem: str  # "least-squares" | "logistic"
    method: str  # "esgd" | "isgd"
    lr: float
    seed: int = 0
    epochs: int = 2
    batch_size: int = 1
    mu: float = 0.0


def run_convex(config: ConvexConfig, device=None) -> list[dict]:
    check_lr(config.lr)
    check_choice("problem", config.problem, CONVEX_PROBLEMS)
    check_choice("method", config.method, ("esgd", "isgd"))
    dataset_name, loss, isgd_rule = CONVEX_PROBLEMS[config.problem]
    dataset = data.load(dataset_name, seed=0)
    model = models.linear_model(dataset.n_features)
    if config.method == "esgd":
        def make_optimizer(m):
            return torch.optim.SGD(m.parameters(), lr=config.lr, weight_decay=config.mu)
    else:
        def make_optimizer(m):
            return isgd_rule(m, lr=config.lr, mu=config.mu)
    steps = config.epochs * len(dataset.x_train) // config.batch_size
    result = train(model, dataset, make_optimizer, loss=loss, epochs=config.epochs,
                   batch_size=config.batch_size, seed=config.seed, device=device,
                   log_every=max(1, steps // 100), evals_per_epoch=20)
    return result.rows


def convex_configs(scale: str, lrs=None, methods=None, seeds=None, problems=None) -> list[ConvexConfig]:
    full = scale == "full"
    lrs = lrs or log_grid(1e-3, 1e2, 4 if full else 2)
    seeds = range(seeds if seeds is not None else (10 if full else 2))
    epochs = 20 if full else 2
    return [ConvexConfig(problem=p, method=m, lr=lr, seed=s, epochs=epochs)
            for p in (problems or CONVEX_PROBLEMS) for m in (methods or ("esgd", "isgd"))
            for lr in lrs for s in seeds]


convex = register(Experiment(
    name="isgd-convex", chapter=1,
    title="Exact ISGD vs ESGD: least squares (diabetes) and logistic regression (breast cancer)",
    run=run_convex, configs=convex_configs))


# --- exact ISGD for a neural network ------------------------------------------------------------

@dataclass(frozen=True)
class ExactNetConfig:
    method: str  # "esgd" | "exact-isgd"
    lr: float
    seed: int = 0
    dataset: str = "mnist-5k"
    architecture: str = "mlp"  # "mlp": the paper's dense head on raw pixels | "convnet": the paper's
    epochs: int = 1
    batch_size: int = 100
    inner_steps: int = 100
    inner_lr_ratio: float = 0.1


def build_network(architecture: str) -> torch.nn.Module:
    """The paper's MNIST classifier (``convnet``) or its dense head alone on raw pixels (``mlp``)."""
    check_choice("architecture", architecture, ("mlp", "convnet"))
    if architecture == "convnet":
        return models.MNISTConvNet()
    return models.MLP([784, 50, 10], ["arctan", "relu"])


def run_exact_net(config: ExactNetConfig, device=None) -> list[dict]:
    check_lr(config.lr)
    check_choice("method", config.method, ("esgd", "exact-isgd"))
    dataset = data.load(config.dataset, seed=0)
    torch.manual_seed(config.seed)
    model = build_network(config.architecture)
    if config.method == "esgd":
        def make_optimizer(m):
            return torch.optim.SGD(m.parameters(), lr=config.lr)
    else:
        def make_optimizer(m):
            return isgd.ExactISGD(m.parameters(), lr=config.lr, inner_steps=config.inner_steps,
                                  inner_lr_ratio=config.inner_lr_ratio)
    result = train(model, dataset, make_optimizer, loss="cross_entropy", epochs=config.epochs,
                   batch_size=config.batch_size, seed=config.seed, device=device, evals_per_epoch=8)
    return result.rows


def exact_net_configs(scale: str, lrs=None, methods=None, seeds=None) -> list[ExactNetConfig]:
    full = scale == "full"
    lrs = lrs or (log_grid(1e-2, 10, 3) if full else log_grid(0.03, 30, 2))
    seeds = range(seeds if seeds is not None else (20 if full else 1))
    shape = dict(dataset="mnist", architecture="convnet") if full else {}
    return [ExactNetConfig(method=m, lr=lr, seed=s, **shape)
            for m in (methods or ("esgd", "exact-isgd")) for lr in lrs for s in seeds]


exact_net = register(Experiment(
    name="isgd-exact-net", chapter=1,
    title="Exact ISGD (inner gradient descent on eq. 1) vs ESGD for an MNIST classifier",
    run=run_exact_net, configs=exact_net_configs))
