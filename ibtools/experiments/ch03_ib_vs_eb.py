"""Chapter 3: implicit (IB) against explicit (EB) backpropagation across learning rates.

Fagan & Iyengar, *Robust Implicit Backpropagation*, section 5 and appendices D-E. One run
function trains one of the paper's four dataset-architecture pairs (appendix D.3) by EB, by
IB or by "exact ISGD", with the paper's defaults (appendix D.4: no momentum, mu = 0,
Glorot-uniform weights, zero biases, the same seed for every method) and optional gradient
norm clipping (appendix D.6; for IB the implicit gradient (21) is clipped). Five experiments
are presets over it:

- ``ib-mnist``: the MNIST classifier, training loss after 1 epoch (Figure 3), with exact ISGD;
- ``ib-autoencoder``: the 784:500:300:100:30:100:300:500:784 relu autoencoder, 1 epoch;
- ``ib-music``: the 300-unit arctan RNN on polyphonic music, batch 1, 5 epochs;
- ``ib-uci``: three arctan layers and a linear layer, 10 epochs, on the UCI datasets, the
  paper's fixed grid of 10 learning rates (test accuracy at each method's best rate);
- ``ib-clipping``: EB and IB with norm clipping at the thresholds of appendix E.2 (Figure 4).

:func:`divergence_lrs` measures where each method starts to diverge by the paper's footnote 7.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .. import data, isgd, models
from ..ib_layers import bind
from ..train import check_lr, train
from . import Experiment, register
from .ch01_isgd import check_choice, log_grid

METHODS = ("eb", "ib", "exact-isgd")

# task: (loss, batch size, epochs, evaluations per epoch), appendix D.3-D.4 and section 5.
TASKS = {
    "mnist-classifier": ("cross_entropy", 100, 1, 1),
    "mnist-autoencoder": ("mse", 100, 1, 1),
    "music": ("next_frame_nll", 1, 5, 1),
    "uci": ("cross_entropy", 100, 10, 1),
}

MUSIC_DATASETS = ("jsb-chorales", "musedata", "nottingham", "piano-midi")

# The 121 UCI datasets of appendix E.15, as the paper names them (ibtools.uci lower-cases).
UCI_DATASETS = tuple(name.lower() for name in (
    "abalone", "acute-inflammation", "acute-nephritis", "adult", "annealing", "arrhythmia",
    "audiology-std", "balance-scale", "balloons", "bank", "blood", "breast-cancer",
    "breast-cancer-wisc", "breast-cancer-wisc-diag", "breast-cancer-wisc-prog", "breast-tissue",
    "car", "cardiotocography-10clases", "cardiotocography-3clases", "chess-krvk", "chess-krvkp",
    "congressional-voting", "conn-bench-sonar-mines-rocks", "conn-bench-vowel-deterding",
    "connect-4", "contrac", "credit-approval", "cylinder-bands", "dermatology", "echocardiogram",
    "ecoli", "energy-y1", "energy-y2", "fertility", "flags", "glass", "haberman-survival",
    "hayes-roth", "heart-cleveland", "heart-hungarian", "heart-switzerland", "heart-va",
    "hepatitis", "hill-valley", "horse-colic", "ilpd-indian-liver", "image-segmentation",
    "ionosphere", "iris", "led-display", "lenses", "letter", "libras", "low-res-spect",
    "lung-cancer", "lymphography", "magic", "mammographic", "mini-boone", "molec-biol-promoter",
    "molec-biol-splce", "monks-1", "monks-2", "monks-3", "mushroom", "musk-1", "musk-2", "nursery",
    "oocytes-merluccius-nucleus-4d", "oocytes-merluccius-states-2f",
    "oocytes-trisopterus-nucleus-2f", "oocytes-trisopterus-states-5b", "optical", "ozone",
    "page-blocks", "parkinsons", "pendigits", "pima", "pittsburg-bridges-MATERIAL",
    "pittsburg-bridges-REL-L", "pittsburg-bridges-SPAN", "pittsburg-bridges-T-OR-D",
    "pittsburg-bridges-TYPE", "planning", "plant-margin", "plant-shape", "plant-texture",
    "post-operative", "primary-tumor", "ringnorm", "seeds", "semeion", "soybean", "spambase",
    "spect", "spectf", "statlog-australian-credit", "statlog-german-credit", "statlog-heart",
    "statlog-image", "statlog-landsat", "statlog-shuttle", "statlog-vehicle", "steel-plates",
    "synthetic-control", "teaching", "thyroid", "tic-tac-toe", "titanic", "trains", "twonorm",
    "vertebral-column-2clases", "vertebral-column-3clases", "wall-following", "waveform",
    "waveform-noise", "wine", "wine-quality-red", "wine-quality-white", "yeast", "zoo",
))
UCI_REDUCED = ("iris", "wine", "breast-cancer")  # the UCI tables scikit-learn ships
UCI_LRS = (0.001, 0.01, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 30.0, 50.0)  # appendix D.5


@dataclass(frozen=True)
class IBRunConfig:
    """One training run. ``dataset``: "mnist-5k" or "mnist" for the MNIST tasks; "bach-chorales"
    or one of :data:`MUSIC_DATASETS` for music; an embedded table ("iris", "wine",
    "breast-cancer") or "uci:NAME" (NAME in :data:`UCI_DATASETS`) for UCI. ``clip``: the
    gradient-norm threshold, 0 for none."""

    task: str
    dataset: str
    method: str  # "eb" | "ib" | "exact-isgd"
    lr: float
    seed: int = 0
    clip: float = 0.0
    epochs: int | None = None  # None: the paper's, from TASKS
    inner_steps: int = 100  # exact ISGD: gradient steps on eq. (1) per update, at lr / 10


@functools.lru_cache(maxsize=8)
def task_data(task: str, dataset: str):
    """The dataset of a run, loaded once per process (datasets are immutable)."""
    check_choice("task", task, TASKS)
    loaded = data.load(dataset)
    if task == "mnist-autoencoder":  # the targets are the images themselves, as vectors
        return loaded.autoencoding()
    return loaded


def build_model(task: str, dataset, mode: str) -> torch.nn.Module:
    """The paper's architecture for ``task`` (appendix D.3), IB layers in ``mode``."""
    if task == "mnist-classifier":
        return models.IBMNISTClassifier(mode)
    if task == "mnist-autoencoder":
        return models.IBAutoencoder(mode)
    if task == "music":
        return models.MusicRNN(mode, notes=dataset.n_features)
    return models.UCINet(dataset.n_features, dataset.n_classes, mode)


def run(config: IBRunConfig, device=None) -> list[dict]:
    """Train one run; tidy rows as :func:`ibtools.train.train` gives them. A run is never
    stopped for a large loss, only when it becomes NaN or infinite: the paper reports the loss
    reached after the epoch budget, however large."""
    check_lr(config.lr)
    check_choice("task", config.task, TASKS)
    check_choice("method", config.method, METHODS)
    if config.clip < 0:
        raise ValueError(f"clip must be >= 0 (0: no clipping), got {config.clip}")
    loss, batch_size, epochs, evals = TASKS[config.task]
    dataset = task_data(config.task, config.dataset)
    torch.manual_seed(config.seed)  # the same initial weights for every method
    model = build_model(config.task, dataset, "implicit" if config.method == "ib" else "explicit")
    if config.method == "exact-isgd":
        def make_optimizer(m):
            return isgd.ExactISGD(m.parameters(), lr=config.lr, inner_steps=config.inner_steps)
    else:
        def make_optimizer(m):
            return bind(m, torch.optim.SGD(m.parameters(), lr=config.lr))
    result = train(model, dataset, make_optimizer, loss=loss, epochs=config.epochs or epochs,
                   batch_size=batch_size, seed=config.seed, device=device,
                   clip_norm=config.clip or None, evals_per_epoch=evals, diverge_factor=math.inf,
                   log_every=10 if config.task == "music" else 1)
    return result.rows


def _grid(tasks_datasets, methods, lrs, seeds, clips=(0.0,), **fixed) -> list[IBRunConfig]:
    return [IBRunConfig(task=task, dataset=dataset, method=m, lr=lr, seed=s, clip=clip, **fixed)
            for task, dataset in tasks_datasets for clip in clips for m in methods
            for lr in lrs for s in seeds]


# Learning-rate grids, chosen with EB alone as appendix D.5 prescribes: a coarse EB sweep
# locates where EB trains well, then a finer grid around it shows EB's U-shape (low rates
# train slowly, high rates diverge). The reduced grids come from a coarse EB sweep at reduced
# scale (one rate per decade from 1e-3 to 1e2: the classifier's EB loss is lowest at 0.1 and
# back at its start by 1; the autoencoder's lowest at 10, NaN at 100; the Bach chorales' lowest
# at 0.01, seven times higher at 0.1). Without full-scale EB
# sweeps to go by, the full grids span a wider range at twice the density, enough to contain
# EB's U-shape wherever 60,000 images move it.
MNIST_LRS = {"reduced": log_grid(0.01, 4.64, 3), "full": log_grid(0.003, 10.0, 6)}
AUTOENCODER_LRS = {"reduced": log_grid(0.1, 46.4, 3), "full": log_grid(0.03, 100.0, 6)}
MUSIC_LRS = {"reduced": log_grid(0.003, 0.3, 3), "full": log_grid(0.001, 1.0, 6)}


def mnist_configs(scale, lrs=None, methods=None, seeds=None):
    """EB and IB over 20 seeds (full) or 3 (reduced); exact ISGD, a hundred times dearer, over
    as many seeds at full scale and one at reduced scale."""
    full = scale == "full"
    tasks, lrs = [("mnist-classifier", "mnist" if full else "mnist-5k")], lrs or MNIST_LRS[scale]
    seeds = range(seeds if seeds is not None else (20 if full else 3))
    methods = methods or METHODS
    return (_grid(tasks, [m for m in methods if m != "exact-isgd"], lrs, seeds)
            + _grid(tasks, [m for m in methods if m == "exact-isgd"], lrs, seeds if full else seeds[:1]))


def autoencoder_configs(scale, lrs=None, methods=None, seeds=None):
    full = scale == "full"
    return _grid([("mnist-autoencoder", "mnist" if full else "mnist-5k")], methods or ("eb", "ib"),
                 lrs or AUTOENCODER_LRS[scale], range(seeds if seeds is not None else (5 if full else 3)))


def music_configs(scale, lrs=None, methods=None, seeds=None, datasets=None):
    full = scale == "full"
    datasets = datasets or (MUSIC_DATASETS if full else ("bach-chorales",))
    return _grid([("music", d) for d in datasets], methods or ("eb", "ib"), lrs or MUSIC_LRS[scale],
                 range(seeds if seeds is not None else (5 if full else 2)))


def uci_configs(scale, lrs=None, methods=None, seeds=None, datasets=None):
    full = scale == "full"
    datasets = datasets or ([f"uci:{name}" for name in UCI_DATASETS] if full else UCI_REDUCED)
    return _grid([("uci", d) for d in datasets], methods or ("eb", "ib"), lrs or UCI_LRS,
                 range(seeds if seeds is not None else 1))


# Appendix E.2: MNIST with threshold 1.0; music with 8.0 (after Pascanu et al.), and lower
# thresholds on the two smallest datasets.
CLIPPING = {
    "full": [("mnist-classifier", "mnist", (1.0,)), ("mnist-autoencoder", "mnist", (1.0,)),
             ("music", "jsb-chorales", (8.0, 1.0, 0.1)), ("music", "musedata", (8.0,)),
             ("music", "nottingham", (8.0,)), ("music", "piano-midi", (8.0, 1.0, 0.1, 0.01))],
    "reduced": [("mnist-classifier", "mnist-5k", (1.0,)), ("mnist-autoencoder", "mnist-5k", (1.0,)),
                ("music", "bach-chorales", (1.0,))],
}
_CLIPPING_LRS = {"mnist-classifier": MNIST_LRS, "mnist-autoencoder": AUTOENCODER_LRS, "music": MUSIC_LRS}


def clipping_configs(scale, lrs=None, methods=None, seeds=None):
    full = scale == "full"
    configs = []
    for task, dataset, clips in CLIPPING[scale]:
        default_seeds = (20 if task == "mnist-classifier" else 5) if full else (1 if task == "music" else 2)
        configs += _grid([(task, dataset)], methods or ("eb", "ib"), lrs or _CLIPPING_LRS[task][scale],
                         range(seeds if seeds is not None else default_seeds), clips=clips)
    return configs


def _experiment(name: str, title: str, configs) -> Experiment:
    return register(Experiment(name=name, chapter=3, title=title, run=run, configs=configs))


mnist = _experiment("ib-mnist", "IB vs EB (and exact ISGD): MNIST classifier, training loss after 1 epoch",
                    mnist_configs)
autoencoder = _experiment("ib-autoencoder", "IB vs EB: MNIST relu autoencoder, training loss after 1 epoch",
                          autoencoder_configs)
music = _experiment("ib-music", "IB vs EB: arctan RNN on polyphonic music, training loss after 5 epochs",
                    music_configs)
uci = _experiment("ib-uci", "IB vs EB: UCI classification, 10 epochs, the paper's 10 learning rates", uci_configs)
clipping = _experiment("ib-clipping", "IB vs EB with gradient-norm clipping (appendix E.2)", clipping_configs)


# --- analysis -----------------------------------------------------------------------------------

def final_losses(table: pd.DataFrame, metric: str = "train_loss") -> pd.DataFrame:
    """One row per run: its final ``metric`` (at the last evaluation), +inf for a run that
    diverged (its loss became NaN or infinite)."""
    last = table[table["kind"] == "epoch"].sort_values("step", kind="stable")
    keys = [c for c in ("task", "dataset", "clip", "method", "lr", "seed") if c in last.columns]
    last = last.groupby(keys, as_index=False, dropna=False).tail(1)
    value = last[metric].where(~last["diverged"].astype(bool), math.inf)
    return last[keys].assign(**{metric: value.to_numpy()}).reset_index(drop=True)


def loss_stats(table: pd.DataFrame, metric: str = "train_loss") -> pd.DataFrame:
    """Mean and standard deviation over seeds of the final ``metric`` per dataset, clipping
    threshold, method and learning rate; a learning rate at which any seed diverged has mean
    +inf (it is past divergence by any threshold)."""
    finals = final_losses(table, metric)
    keys = [c for c in ("task", "dataset", "clip", "method", "lr") if c in finals.columns]
    grouped = finals.groupby(keys, dropna=False)[metric]
    out = grouped.agg(mean="mean", std="std", seeds="count").reset_index()
    out["std"] = out["std"].fillna(0.0).where(np.isfinite(out["mean"]), math.nan)
    return out


def divergence_lrs(table: pd.DataFrame, metric: str = "train_loss") -> pd.DataFrame:
    """Where each method starts to diverge, by the paper's footnote 7: the threshold is the
    average of EB's smallest and largest (finite) mean loss over the learning rates of that
    dataset (and clipping threshold); a method's divergence learning rate is the first rate
    above its best one at which its mean loss exceeds the threshold (NaN: not on this grid).
    One row per dataset and clipping threshold, with the IB/EB ratio of the two rates."""
    stats = loss_stats(table, metric)
    keys = [c for c in ("task", "dataset", "clip") if c in stats.columns]
    rows = []
    for group, rows_of in stats.groupby(keys, dropna=False):
        eb = rows_of[(rows_of["method"] == "eb") & np.isfinite(rows_of["mean"])]["mean"]
        if eb.empty:
            continue
        threshold = (eb.min() + eb.max()) / 2
        row = dict(zip(keys, group if isinstance(group, tuple) else (group,)), threshold=threshold)
        for method, curve in rows_of.groupby("method"):
            curve = curve.sort_values("lr")
            best_lr = curve.loc[curve["mean"].idxmin(), "lr"] if np.isfinite(curve["mean"]).any() else -math.inf
            past = curve[(curve["lr"] > best_lr) & (curve["mean"] > threshold)]
            row[f"{method}_diverges_at"] = float(past["lr"].iloc[0]) if len(past) else math.nan
        if "ib_diverges_at" in row:
            row["ib/eb"] = row["ib_diverges_at"] / row["eb_diverges_at"]
        rows.append(row)
    return pd.DataFrame(rows)


def best_lr_accuracy(table: pd.DataFrame) -> pd.DataFrame:
    """Appendix D.5's UCI protocol: per dataset and method, the learning rate with the lowest
    final training loss (mean over seeds), and the test accuracy at that rate."""
    last = table[table["kind"] == "epoch"].sort_values("step", kind="stable")
    keys = ["dataset", "method", "lr", "seed"]
    last = last.groupby(keys, as_index=False).tail(1)
    last = last.assign(train_loss=last["train_loss"].where(~last["diverged"].astype(bool), math.inf))
    per_lr = last.groupby(["dataset", "method", "lr"], as_index=False)[["train_loss", "test_acc"]].mean()
    best = per_lr.loc[per_lr.groupby(["dataset", "method"])["train_loss"].idxmin()]
    return best.rename(columns={"lr": "best_lr"}).reset_index(drop=True)
