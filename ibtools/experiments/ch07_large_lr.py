"""Chapter 7: vanilla SGD with large learning rates.

*Training by Vanilla SGD with Larger Learning Rates* (ICLR 2021 submission; *VS* below).

Section 5 and Figure 2: incremental gradient descent on a regularised least-squares problem
(:mod:`ibtools.igd`). The paper draws its data as x = 1/(1 + e^z) + N(0, sigma^2) with z
uniform on (0, 10) and fits "the computed values x(t)" to the noisy data; we read this as
denoising: A = I (one component per data point), b the noisy curve, D the second-difference
matrix (a smoothness penalty), so that x(t) is a smoothed curve (:func:`figure2_problem`; the
curve is shifted to 1/(1 + e^{z - 5}) so that it turns inside the interval).

Section 6 and appendix A.3.1: SGDL, vanilla SGD with a learning rate at least 10 times the
best rate of SGD with momentum, against SGD, SGDM, Adam and AdaDelta (Table 1): weight decay
0.005 for SGD, SGDM and SGDL, momentum 0.9 for SGDM, Adam's betas (0.9, 0.999), AdaDelta at
rate 1.0 with rho = 0.9; every method but AdaDelta has its rate divided by 10 after one and
two thirds of training. Full scale: ResNet-56 on CIFAR-10 and CIFAR-100, 150 epochs, batch
256, random crops of the reflection-padded image and horizontal flips; SGDL at 1.0 (CIFAR-10)
and 1.3 (CIFAR-100), SGD(M) at 0.1, Adam at 0.001. Reduced scale: ResNet-8 (8 channels) on
mnist-5k for 12 epochs, batch 128, random crops with 2 pixels of padding and no flips (a
mirrored digit is another digit), SGD over a grid of rates for the chapter's slider.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .. import data, igd
from ..models import CIFARResNet
from ..train import StepDecay, check_lr, crop_and_flip, train
from . import Experiment, register
from .ch01_isgd import check_choice

METHODS = ("sgd", "sgdm", "sgdl", "adam", "adadelta")


# --- Figure 2: IGD on regularised least squares ------------------------------------------------------

def second_difference(n: int, dtype=torch.float64) -> torch.Tensor:
    """D = L^T L with L the (n - 2) x n second-difference matrix: x^T D x = sum (x_{i+1} - 2 x_i + x_{i-1})^2."""
    L = torch.zeros(n - 2, n, dtype=dtype)
    idx = torch.arange(n - 2)
    L[idx, idx], L[idx, idx + 1], L[idx, idx + 2] = 1.0, -2.0, 1.0
    return L.T @ L


def figure2_problem(n: int = 50, sigma: float = 0.05, seed: int = 0):
    """(A, b, D, z, clean): n noisy samples b of 1/(1 + e^{z - 5}) at sorted z ~ U(0, 10), A = I,
    D the second-difference matrix; the denoising reading of VS Figure 2 (module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.sort(10 * torch.rand(n, generator=generator, dtype=torch.float64)).values
    clean = 1 / (1 + torch.exp(z - 5))
    b = clean + sigma * torch.randn(n, generator=generator, dtype=torch.float64)
    return torch.eye(n, dtype=torch.float64), b, second_difference(n), z, clean


def figure2_tables(steps, mu: float = 1.0, epochs: int = 60, n: int = 50, sigma: float = 0.05, seed: int = 0):
    """For each step t: rho(K_N(t)) and the paper's bound (``radius``), the error |x_k - x*| of
    IGD's iterate after each epoch (``errors``), and the fixed point x(t) against the data
    (``fits``). Three tidy tables."""
    A, b, D, z, clean = figure2_problem(n, sigma, seed)
    steps = torch.as_tensor(steps, dtype=torch.float64)
    rho = igd.spectral_radius(A, D, mu, steps)
    bound = igd.step_bound(A, D, mu)
    radius = pd.DataFrame(dict(t=steps.numpy(), rho=rho.numpy(), bound=bound))
    x_star = igd.minimiser(A, b, D, mu)
    path = igd.iterate(A, b, steps, epochs, D, mu)  # (T, epochs + 1, n)
    error = (path - x_star).norm(dim=-1)
    errors = pd.DataFrame(dict(t=np.repeat(steps.numpy(), epochs + 1), epoch=np.tile(np.arange(epochs + 1), len(steps)),
                      error=error.reshape(-1).numpy()))
    converges = rho < 1
    fixed = torch.full((len(steps), n), math.nan, dtype=torch.float64)
    if converges.any():
        fixed[converges] = igd.fixed_point(A, b, steps[converges], D, mu)
    fits = pd.DataFrame(dict(t=np.repeat(steps.numpy(), n), z=np.tile(z.numpy(), len(steps)),
                    data=np.tile(b.numpy(), len(steps)), clean=np.tile(clean.numpy(), len(steps)),
                    x_star=np.tile(x_star.numpy(), len(steps)), fit=fixed.reshape(-1).numpy()))
    return radius, errors, fits


# --- section 6: SGDL against SGD, SGDM, Adam and AdaDelta -----------------------------------------

@dataclass(frozen=True)
class SGDLConfig:
    """One classifier run. ``depth`` and ``width``: the CIFAR ResNet (56 and 16 in the paper);
    ``pad``: the augmentation's padding (0: none); ``flip``: mirror images at random."""

    method: str  # "sgd" | "sgdm" | "sgdl" | "adam" | "adadelta"
    lr: float
    seed: int = 0
    dataset: str = "mnist-5k"
    depth: int = 8
    width: int = 8
    epochs: int = 12
    batch_size: int = 128
    weight_decay: float = 0.005
    pad: int = 2
    flip: bool = False


def make_optimizer(config: SGDLConfig, params):
    """Table 1's optimizers; SGD, SGDM and SGDL with weight decay, Adam and AdaDelta without."""
    if config.method in ("sgd", "sgdl"):
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.method == "sgdm":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    if config.method == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999))
    return torch.optim.Adadelta(params, lr=config.lr, rho=0.9)


def decay_steps(method: str, epochs: int, steps_per_epoch: int) -> list[int]:
    """The steps after which the rate is divided by 10: the ends of the epochs at one and two
    thirds of training (50 and 100 of 150), for every method but AdaDelta (none)."""
    return [] if method == "adadelta" else [round(epochs * k / 3) * steps_per_epoch for k in (1, 2)]


def run(config: SGDLConfig, device=None) -> list[dict]:
    """Train the ResNet; the loop's rows (with train and test accuracy each epoch)."""
    check_choice("method", config.method, METHODS)
    check_lr(config.lr)
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError(f"need epochs >= 1 and batch_size >= 1, got {config.epochs} and {config.batch_size}")
    if config.weight_decay < 0 or config.pad < 0:
        raise ValueError(f"weight_decay and pad must be >= 0, got {config.weight_decay} and {config.pad}")
    dataset = data.load(config.dataset)
    torch.manual_seed(config.seed)
    model = CIFARResNet(config.depth, dataset.n_classes, dataset.x_train.shape[1], config.width)
    milestones = decay_steps(config.method, config.epochs, math.ceil(len(dataset.x_train) / config.batch_size))

    def make(m):
        return StepDecay(make_optimizer(config, m.parameters()), milestones)

    augment = (lambda x, g: crop_and_flip(x, g, config.pad, config.flip)) if (config.pad or config.flip) else None
    result = train(model, dataset, make, loss="cross_entropy", epochs=config.epochs, batch_size=config.batch_size,
                   seed=config.seed, device=device, augment=augment, diverge_factor=math.inf)
    for row in result.rows:
        if row["kind"] == "epoch":
            row["train_error"], row["test_error"] = 1 - row["train_acc"], 1 - row["test_acc"]
    return result.rows


# Reduced rates: SGDM's and Adam's best of Table 1's grids are the paper's 0.1 and 0.001; SGDL
# at ten times SGDM's; SGD also over the grid the chapter's slider moves along.
REDUCED_SGD_RATES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
PRESETS = {
    "reduced": {"sgd": [0.1], "sgdm": [0.1], "sgdl": [1.0], "adam": [0.001], "adadelta": [1.0]},
    "cifar10": {"sgd": [0.1], "sgdm": [0.1], "sgdl": [1.0], "adam": [0.001], "adadelta": [1.0]},
    "cifar100": {"sgd": [0.1], "sgdm": [0.1], "sgdl": [1.3], "adam": [0.001], "adadelta": [1.0]},
}


def sgdl_configs(scale, lrs=None, methods=None, seeds=None):
    """Full: ResNet-56 on CIFAR-10 and CIFAR-100, 150 epochs, batch 256, crops and flips.
    Reduced: ResNet-8 (8 channels) on mnist-5k, 12 epochs, batch 128, crops; SGD also at
    :data:`REDUCED_SGD_RATES`."""
    chosen = methods or METHODS
    for m in chosen:
        check_choice("method", m, METHODS)
    count = seeds if seeds is not None else 1
    if scale == "full":
        return [SGDLConfig(method=m, lr=lr, seed=s, dataset=name, depth=56, width=16, epochs=150, batch_size=256,
                           pad=4, flip=True)
                for name in ("cifar10", "cifar100") for m in chosen for lr in (lrs or PRESETS[name][m])
                for s in range(count)]
    rates = {m: sorted(set(PRESETS["reduced"][m]) | (set(REDUCED_SGD_RATES) if m == "sgd" else set()))
             for m in chosen}
    return [SGDLConfig(method=m, lr=lr, seed=s) for m in chosen for lr in (lrs or rates[m]) for s in range(count)]


sgdl = register(Experiment(name="sgdl", chapter=7, title="SGDL against SGD, SGDM, Adam and AdaDelta on a CIFAR "
                           "ResNet (Figures 3-4)", run=run, configs=sgdl_configs, metric="test_error"))
