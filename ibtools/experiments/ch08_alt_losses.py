"""Chapter 8: which alternative losses training on the cross-entropy minimises implicitly.

*On the Implicit Minimization of Alternative Loss Functions When Training Deep Networks* (ICLR
submission; *IM* below), sections 4.2-4.3 and appendices A-B. A network whose top layer sees
its features normalised to |x| = 1 is trained on the cross-entropy by SGD with momentum 0.9,
no weight decay, at a constant learning rate; before training and after every epoch the run
evaluates on the whole training set (in evaluation mode) the Gcdf loss for several sigma, the
tempered cross-entropy for several T and the hinge loss for several margins gamma
(:mod:`ibtools.losses`), as rows of kind ``"alt"`` (``loss``, ``parameter``, ``value``), with
the training cross-entropy and error beside them (``train_ce``, ``train_error``).

Large batches are trained as the paper does: the gradient of a batch is accumulated over
"ghost" batches of 256, each normalised by its own batch statistics (ghost batch
normalisation, Hoffer et al. 2017), before one update.

Networks (widths are not given in IM; ours are stated here): ``mlp``, appendix A's six fully
connected layers with batch normalisation (five hidden layers of ``width`` units with batch
normalisation and relu, then the top layer); ``convnet``, appendix B's two 5x5 convolutions of
64 channels with batch normalisation, relu and max pooling, then fully connected layers of 384
and 192 units and the top layer.

Full scale: CIFAR-10 with the convnet and MNIST with the MLP, learning rates 0.1 and 0.001 at
batch 256 and batch sizes 256 and 16384 at rate 0.1, 200 epochs. Reduced: mnist-5k with the MLP
(256 units), rates 0.1 and 0.001 at batch 256, batch 2048 (ghost batches of 256) at 0.1, for
100 epochs (300 for the two runs that take more steps to reach the same training losses).

:func:`at_training_loss` reads every run's alternative losses where its training
cross-entropy first reaches a given level (Figure 7), by linear interpolation between epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .. import data, losses
from ..train import WatchedOptimizer, check_lr, train
from . import Experiment, register

SIGMAS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
TEMPERATURES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
MARGINS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
ARCHITECTURES = ("mlp", "convnet")


@dataclass(frozen=True)
class AltLossConfig:
    """One cross-entropy run under SGD with momentum 0.9 at a constant ``lr``; batches larger
    than ``ghost`` are accumulated over ghost batches of that size."""

    lr: float
    batch_size: int = 256
    method: str = "sgdm"
    seed: int = 0
    dataset: str = "mnist-5k"
    architecture: str = "mlp"
    width: int = 256
    epochs: int = 100
    ghost: int = 256
    track_every: int = 1  # evaluate the alternative losses every track_every epochs (and at the end)


class NormalizedTop(nn.Module):
    """``features``, then the features divided by their norm (IM section 3.2: |x| = 1), then a
    linear top layer; the alternative losses read its scores with x_norm = 1."""

    def __init__(self, features: nn.Module, feature_dim: int, classes: int):
        super().__init__()
        self.features, self.top = features, nn.Linear(feature_dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(F.normalize(self.features(x), dim=1))


def build(config: AltLossConfig, input_shape: tuple, classes: int) -> NormalizedTop:
    if config.architecture == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = math.prod(input_shape)
        for _ in range(5):
            layers += [nn.Linear(fan_in, config.width), nn.BatchNorm1d(config.width), nn.ReLU()]
            fan_in = config.width
        return NormalizedTop(nn.Sequential(*layers), config.width, classes)
    c, h, w = input_shape
    features = nn.Sequential(
        nn.Conv2d(c, 64, 5, padding=2), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 5, padding=2), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * (h // 4) * (w // 4), 384), nn.BatchNorm1d(384), nn.ReLU(),
        nn.Linear(384, 192), nn.BatchNorm1d(192), nn.ReLU())
    return NormalizedTop(features, 192, classes)


class GhostBatches(WatchedOptimizer):
    """One update per batch, its gradient accumulated over consecutive ghost batches of
    ``ghost`` examples, each forwarded on its own (so batch normalisation uses its statistics)
    and weighted by its share of the batch."""

    def __init__(self, optimizer, ghost: int):
        super().__init__(optimizer)
        self.ghost = ghost

    def update(self, closure):
        model, loss_fn, x, y = closure.model, closure.loss_fn, closure.inputs, closure.targets
        self.optimizer.zero_grad()
        total = torch.zeros((), device=x.device)
        for start in range(0, len(x), self.ghost):
            loss = loss_fn(model(x[start:start + self.ghost]), y[start:start + self.ghost])
            share = loss * (len(y[start:start + self.ghost]) / len(y))
            share.backward()
            total += share.detach()
        self.optimizer.step()
        return total


@torch.no_grad()
def alternative_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> list[dict]:
    """The alternative losses of ``model`` on (x, y) in evaluation mode, one row per loss and
    parameter, and the cross-entropy and error."""
    was_training = model.training
    model.eval()
    scores = torch.cat([model(x[i:i + chunk]) for i in range(0, len(x), chunk)])
    model.train(was_training)
    rows = [dict(loss="gcdf", parameter=s, value=float(losses.gcdf_loss(scores, y, s))) for s in SIGMAS]
    rows += [dict(loss="cross-entropy", parameter=t, value=float(losses.tempered_cross_entropy(scores, y, t)))
             for t in TEMPERATURES]
    rows += [dict(loss="hinge", parameter=g, value=float(losses.hinge_loss(scores, y, g))) for g in MARGINS]
    ce, error = float(F.cross_entropy(scores, y)), float((scores.argmax(1) != y).double().mean())
    return [r | dict(train_ce=ce, train_error=error) for r in rows]


class _Tracker(GhostBatches):
    """Ghost batches, and the alternative losses on the training set after every epoch."""

    def __init__(self, optimizer, ghost: int, model, x, y, steps_per_epoch: int, every: int, epochs: int):
        super().__init__(optimizer, ghost)
        self.model, self.x, self.y, self.steps_per_epoch = model, x, y, steps_per_epoch
        self.every, self.epochs = every, epochs
        self.rows = [r | dict(epoch=0) for r in alternative_losses(model, x, y)]

    def after(self, loss) -> None:
        epoch, rest = divmod(self.steps, self.steps_per_epoch)
        if rest == 0 and (epoch % self.every == 0 or epoch == self.epochs):
            self.rows += [r | dict(epoch=epoch) for r in alternative_losses(self.model, self.x, self.y)]


def run(config: AltLossConfig, device=None) -> list[dict]:
    """Train on the cross-entropy; the loop's rows and the rows of kind "alt"."""
    check_lr(config.lr)
    if config.method != "sgdm":
        raise ValueError(f"IM trains with SGD with momentum 0.9 only: method must be 'sgdm', got {config.method!r}")
    if config.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {config.architecture!r}; choose one of {list(ARCHITECTURES)}")
    for name in ("batch_size", "ghost", "epochs", "width", "track_every"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    dataset = data.load(config.dataset)
    torch.manual_seed(config.seed)
    model = build(config, tuple(dataset.x_train.shape[1:]), dataset.n_classes)
    steps_per_epoch = math.ceil(len(dataset.x_train) / config.batch_size)
    holder = {}

    def make(m):
        device_of = next(m.parameters()).device
        holder["tracker"] = _Tracker(torch.optim.SGD(m.parameters(), lr=config.lr, momentum=0.9), config.ghost, m,
                                     dataset.x_train.to(device_of), dataset.y_train.to(device_of), steps_per_epoch,
                                     config.track_every, config.epochs)
        return holder["tracker"]

    result = train(model, dataset, make, loss="cross_entropy", epochs=config.epochs, batch_size=config.batch_size,
                   seed=config.seed, device=device, diverge_factor=math.inf, log_every=steps_per_epoch)
    alt = [r | dict(kind="alt", step=r["epoch"] * steps_per_epoch, diverged=result.diverged)
           for r in holder["tracker"].rows]
    return result.rows + alt


def at_training_loss(alt, level: float):
    """Per run (``lr``, ``batch_size``), loss and parameter: the alternative loss where the
    training cross-entropy first falls to ``level``, interpolated linearly between the two
    epochs around that point; runs that never get there are left out."""
    out = []
    for (lr, batch), run_rows in alt.groupby(["lr", "batch_size"]):
        curve = run_rows.groupby("epoch").train_ce.first().sort_index()
        below = np.flatnonzero(curve.to_numpy() <= level)
        if not len(below) or below[0] == 0:
            continue
        k = below[0]
        (e0, c0), (e1, c1) = (curve.index[k - 1], curve.iloc[k - 1]), (curve.index[k], curve.iloc[k])
        w = (c0 - level) / (c0 - c1)
        for (loss, parameter), rows in run_rows.groupby(["loss", "parameter"]):
            values = rows.set_index("epoch").value
            out.append(dict(lr=lr, batch_size=batch, loss=loss, parameter=parameter, epoch=e0 + w * (e1 - e0),
                            value=(1 - w) * values[e0] + w * values[e1]))
    return pd.DataFrame(out)


def configs(scale, lrs=None, methods=None, seeds=None, batch_sizes=None):
    """Reduced: mnist-5k, MLP of 256 units, lr 0.1 and 0.001 at batch 256 and batch 2048 at
    0.1; 100 epochs at lr 0.1 and batch 256, 300 for the two slower runs (losses tracked every
    third epoch), so that every run passes the same training losses (Figures 6-7 compare them
    there); one step row an epoch. Full: MNIST (MLP, 512 units) and CIFAR-10 (convnet), lr 0.1 and 0.001 at
    batch 256 and batch 16384 at 0.1, 200 epochs."""
    if methods and set(methods) != {"sgdm"}:
        raise ValueError("IM trains with SGD with momentum only: methods must be ['sgdm']")
    full = scale == "full"
    large = 16384 if full else 2048
    pairs = [(lr, 256) for lr in (lrs or (0.1, 0.001))] + ([] if lrs else [(0.1, large)])
    if batch_sizes:
        pairs = [(lr, b) for lr in (lrs or (0.1,)) for b in batch_sizes]
    tasks = [("mnist", "mlp", 512), ("cifar10", "convnet", 512)] if full else [("mnist-5k", "mlp", 256)]
    return [AltLossConfig(lr=lr, batch_size=b, seed=s, dataset=name, architecture=arch, width=width,
                          epochs=200 if full else (100 if (lr >= 0.1 and b <= 256) else 300),
                          track_every=1 if full or (lr >= 0.1 and b <= 256) else 3)
            for name, arch, width in tasks for lr, b in pairs for s in range(seeds if seeds is not None else 1)]


alt_losses = register(Experiment(name="alt-losses", chapter=8, title="Alternative losses tracked while training on "
                                 "the cross-entropy: learning rate and batch size (Figures 2-7)", run=run,
                                 configs=configs, metric="train_loss"))
