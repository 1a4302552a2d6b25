"""Chapter 6: shattered gradients and how optimizers explore activation configurations.

Balduzzi, Butler-Yeoman & McWilliams (2017), section 3.3, Figure 5 and appendix A.6. The
networks of chapter 5 (:mod:`ibtools.experiments.ch05_taylor`) are trained by RMSProp, Adam and
SGD at several learning rates (Hypothesis 1: RMS-normalised updates explore more); before
training and after every epoch a :class:`ibtools.configurations.ConfigurationRecorder` records
the activation configuration of every relu unit on a fixed set of training points. At the end
the run adds the three measures of Figure 5:

- rows of kind ``"hamming"``: ``step`` = epoch n >= 1, ``value`` = min_{k < n} ||A_n - A_k||^2
  (and ``fraction``, the same over D x M);
- rows of kind ``"switches"``: the switches of each data point's configuration over all epochs
  as a fraction of the possible ones, sorted in decreasing order and sampled at 201 evenly
  spaced ranks (``rank`` in [0, 1]);
- rows of kind ``"volume"``: the log-product of the first 50 singular values of each neuron's
  (epochs x points) matrix with its time-mean removed, over the first ``volume_epochs`` epochs,
  sorted in decreasing order and sampled the same way.

Reduced scale: mnist-5k; the autoencoder for 20 epochs, the convnet (16 filters, 64 units)
for 5, configurations on 1,000 training digits (at most 2,000 units of each convolution).
Full scale: MNIST for the autoencoder, every training image and unit recorded, 100 epochs;
CIFAR-10 for the convnet, 1% of the images (500) and at most 10,000 units of each
convolution (A.6), 50 epochs. The singular values use the first 50 epochs (A.6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..configurations import ConfigurationRecorder, log_singular_volume, min_hamming_to_previous, switches_per_point
from ..train import WatchedOptimizer, train
from . import Experiment, register
from .ch01_isgd import check_choice
from .ch05_taylor import OPTIMIZERS, TASKS, build, make_optimizer, preset_rate, task_data

RANKS = 201  # points at which the sorted curves are kept


@dataclass(frozen=True)
class ExplorationConfig:
    """One run whose activation configurations are recorded each epoch on ``record_points``
    training points (None: all), at most ``max_units`` units of each convolution (None: all)."""

    task: str  # "autoencoder" | "convnet"
    method: str  # the optimizer: "adam" | "rmsprop" | "sgd"
    lr: float
    seed: int = 0
    dataset: str = "mnist-5k"
    epochs: int = 20
    batch_size: int = 64
    record_points: int | None = 1000
    max_units: int | None = None
    singular_values: int = 50
    volume_epochs: int = 50
    channels: int = 64
    fc: int = 192


class _EpochRecorder(WatchedOptimizer):
    """Records the configuration after the last step of every epoch."""

    def __init__(self, optimizer, recorder: ConfigurationRecorder, steps_per_epoch: int):
        super().__init__(optimizer)
        self.recorder, self.steps_per_epoch = recorder, steps_per_epoch

    def after(self, loss) -> None:
        if self.steps % self.steps_per_epoch == 0:
            self.recorder.record()


def _sorted_curve(kind: str, values: torch.Tensor) -> list[dict]:
    """A sorted curve kept at RANKS evenly spaced ranks (first and last included)."""
    values = values.cpu().numpy()
    index = np.unique(np.round(np.linspace(0, len(values) - 1, min(RANKS, len(values)))).astype(int))
    return [dict(kind=kind, step=int(i), rank=float(i / max(len(values) - 1, 1)), value=float(values[i]))
            for i in index]


def run(config: ExplorationConfig, device=None) -> list[dict]:
    """Train, recording the configuration each epoch; the loop's rows and the three measures."""
    check_choice("task", config.task, TASKS)
    check_choice("optimizer", config.method, OPTIMIZERS)
    for name in ("epochs", "batch_size", "singular_values", "volume_epochs"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if config.epochs < 2:
        raise ValueError("the measures compare epochs: use epochs >= 2")
    dataset = task_data(config.task, config.dataset, None)
    torch.manual_seed(config.seed)
    net = build(config, dataset)
    points = dataset.x_train[:config.record_points] if config.record_points else dataset.x_train
    loss = "mse" if config.task == "autoencoder" else "cross_entropy"
    steps_per_epoch = math.ceil(len(dataset.x_train) / config.batch_size)
    holder = {}

    def make(model):
        recorder = ConfigurationRecorder(model, points.to(next(model.parameters()).device),
                                         max_units=config.max_units, seed=config.seed)
        recorder.record()  # the configuration before training
        holder["recorder"] = recorder
        return _EpochRecorder(make_optimizer(config.method, config.lr, model.parameters()), recorder, steps_per_epoch)

    result = train(net, dataset, make, loss=loss, epochs=config.epochs, batch_size=config.batch_size,
                   seed=config.seed, device=device)
    recorder = holder["recorder"]
    A = recorder.tensor()
    rows = result.rows
    if len(recorder) >= 2:
        hamming = min_hamming_to_previous(A)
        rows += [dict(kind="hamming", step=n + 1, value=float(h), fraction=float(h) / (A.shape[1] * A.shape[2]))
                 for n, h in enumerate(hamming.tolist())]
        rows += _sorted_curve("switches", switches_per_point(A))
        rows += _sorted_curve("volume", log_singular_volume(recorder.tensor(slice(0, config.volume_epochs + 1)),
                                                            k=config.singular_values))
    for row in rows:
        row.setdefault("diverged", result.diverged)
    rows[-1].update(points=A.shape[1], units=A.shape[2], recorded_epochs=A.shape[0], packed_mb=recorder.nbytes / 2**20)
    return rows


# --- presets -------------------------------------------------------------------------------------

# Hypothesis 1 is tested against SGD at several rates, the tuned one among them (chapter 5's).
SGD_FACTORS = (0.1, 1.0)


def _configs(task: str, scale: str, lrs, methods, seeds, **fixed) -> list[ExplorationConfig]:
    chosen = methods or OPTIMIZERS
    for name in chosen:
        check_choice("optimizer", name, OPTIMIZERS)
    pairs = [(m, lr) for m in chosen for lr in (lrs or [
        float(f"{preset_rate(task, m) * f:.6g}") for f in (SGD_FACTORS if m == "sgd" else (1.0,))])]
    return [ExplorationConfig(task=task, method=m, lr=lr, seed=s, **fixed)
            for m, lr in pairs for s in range(seeds if seeds is not None else 1)]


def autoencoder_configs(scale, lrs=None, methods=None, seeds=None):
    """Full: MNIST, 100 epochs, every image and unit. Reduced: mnist-5k, 20 epochs, 1,000 digits."""
    fixed = (dict(dataset="mnist", epochs=100, record_points=None) if scale == "full"
             else dict(dataset="mnist-5k", epochs=20, record_points=1000))
    return _configs("autoencoder", scale, lrs, methods, seeds, batch_size=64, **fixed)


def convnet_configs(scale, lrs=None, methods=None, seeds=None):
    """Full: CIFAR-10, 50 epochs, 500 images (1%), at most 10,000 units a convolution, 64
    filters. Reduced: mnist-5k, 5 epochs, 1,000 digits, at most 2,000 units, 16 filters."""
    fixed = (dict(dataset="cifar10", epochs=50, record_points=500, max_units=10000, channels=64, fc=192)
             if scale == "full" else dict(dataset="mnist-5k", epochs=5, record_points=1000, max_units=2000,
                                          channels=16, fc=64))
    return _configs("convnet", scale, lrs, methods, seeds, batch_size=128, **fixed)


def _experiment(name: str, title: str, configs) -> Experiment:
    return register(Experiment(name=name, chapter=6, title=title, run=run, configs=configs, metric="train_loss"))


exploration_autoencoder = _experiment("explore-autoencoder", "Activation configurations explored by RMSProp, Adam "
                                      "and SGD: MNIST autoencoder (Figure 5, bottom)", autoencoder_configs)
exploration_convnet = _experiment("explore-convnet", "Activation configurations explored by RMSProp, Adam and SGD: "
                                  "convnet (Figure 5, top)", convnet_configs)
