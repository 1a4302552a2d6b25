"""Chapter 5: neural Taylor approximations and regret.

Balduzzi, Butler-Yeoman & McWilliams (2017), section 2.3 and appendix A.5. A network is trained
by Adam, RMSProp or SGD through the common loop :func:`ibtools.train.train`; before every
update a :class:`ibtools.taylor.TaylorRegret` records what back-propagation saw, and at
checkpoints evenly spaced in sqrt(N) the run adds rows of kind ``"regret"``: for each tracked
neuron (``scope="neuron"``) and whole layer (``scope="layer"``), the round ``step`` = N, the
cumulative training loss ``cum_loss``, the Taylor optimum in hindsight ``taylor_opt`` and
``regret`` (BBM (3)-(4); the book divides them by sqrt(N)). Layers are named by their
position in the network's ``nn.Sequential`` (``layer``) and counted among the weight layers
from 1 (``depth``).

Tasks:

- ``autoencoder``: 784 -> 50 -> 30 -> 20 -> 30 -> 50 -> 784, relu after every hidden layer,
  a linear output, the squared error to the input (pixels scaled to [0, 1]), mini-batches of 64. The
  Taylor optimum is computed in closed form.
- ``convnet``: three 5x5 convolutions of ``channels`` filters (64 in the paper), each with
  relu and 2x2 max pooling, a relu layer of ``fc`` units (192) and ten outputs, the
  cross-entropy, mini-batches of 128. The Taylor optimum is found by L-BFGS on the stored
  losses of ``examples`` examples of every ``record_every``-th round.

Learning rates (appendix A.5): autoencoder RMSProp 1e-3, Adam 1e-2; convnet RMSProp 5e-4, Adam
2e-4; the other settings of Adam and RMSProp are torch's defaults. The paper tunes SGD's rate
but does not give it; the presets use the rate chosen by the sweep recorded at
:data:`SGD_RATES`.

Reduced scale: mnist-5k (4,000 training digits), the autoencoder for 5 epochs (315 rounds);
the convnet with 16 filters and 64 units on digits for 5 epochs (160 rounds). Full scale: MNIST and
CIFAR-10 with the paper's networks (see the presets for epochs and what is tracked).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import data
from ..steps import torch_optimizer
from ..taylor import TaylorRegret, sqrt_checkpoints
from ..train import WatchedOptimizer, check_lr, train
from . import Experiment, register
from .ch01_isgd import check_choice

TASKS = ("autoencoder", "convnet")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
AUTOENCODER_WIDTHS = (784, 50, 30, 20, 30, 50, 784)

# Appendix A.5's rates. SGD's: the paper tuned it and does not say to what. On a 1-3-10 grid at
# reduced scale (seed 0, no tracking), the autoencoder's training loss after 5 epochs was 0.111,
# 0.097, 0.069, 0.064, 0.059, 0.056, 0.067 at rates 0.1, 0.3, 1, 3, 10, 30, 100 (Adam at 1e-2:
# 0.038, RMSProp at 1e-3: 0.048); the convnet's after 5 epochs 0.68, 0.61, 2.30 (no progress) at
# 0.1, 0.3, 1. The mean-squared error averages over 784 outputs, hence the large rate.
PAPER_RATES = {"autoencoder": {"rmsprop": 1e-3, "adam": 1e-2}, "convnet": {"rmsprop": 5e-4, "adam": 2e-4}}
SGD_RATES = {"autoencoder": 30.0, "convnet": 0.3}
# The reduced autoencoder runs each optimizer at its rate times these factors (the chapter's slider).
RATE_FACTORS = (0.3, 1.0, 3.0)


@dataclass(frozen=True)
class RegretConfig:
    """One training run with regret tracking. ``neurons_per_layer``: how many neurons of each
    hidden layer to track (a seeded random choice); ``layers``: depths (1 = first weight
    layer) of the layers tracked whole; ``examples``: for the cross-entropy, the examples of
    each recorded round whose Taylor losses are kept (None: all); ``record_every``: record
    every k-th round (the regret is then that of the recorded rounds); ``checkpoints``: how many
    checkpoints, evenly spaced in sqrt(N)."""

    task: str  # "autoencoder" | "convnet"
    method: str  # the optimizer: "adam" | "rmsprop" | "sgd"
    lr: float
    seed: int = 0
    dataset: str = "mnist-5k"
    epochs: int = 5
    batch_size: int = 64
    train_size: int | None = None
    neurons_per_layer: int = 5
    layers: tuple = ()
    examples: int | None = None
    record_every: int = 1
    checkpoints: int = 20
    channels: int = 64
    fc: int = 192


def autoencoder(widths=AUTOENCODER_WIDTHS) -> nn.Sequential:
    """Section 2.3's autoencoder: relu after every hidden layer, a linear output."""
    modules: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        modules += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*modules[:-1])


def convnet(input_shape: tuple, classes: int, channels: int = 64, fc: int = 192) -> nn.Sequential:
    """Section 2.3's convnet: three 5x5 convolutions (same padding), each with relu and 2x2 max
    pooling, a relu layer of ``fc`` units, ``classes`` outputs."""
    c, h, w = input_shape
    modules: list[nn.Module] = []
    for _ in range(3):
        modules += [nn.Conv2d(c, channels, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)]
        c, h, w = channels, h // 2, w // 2
    return nn.Sequential(*modules, nn.Flatten(), nn.Linear(c * h * w, fc), nn.ReLU(), nn.Linear(fc, classes))


def weight_layers(net: nn.Sequential) -> list[int]:
    """Positions of the Linear and Conv2d modules, in order (depth 1, 2, ...)."""
    return [i for i, m in enumerate(net) if isinstance(m, (nn.Linear, nn.Conv2d))]


@functools.lru_cache(maxsize=4)
def task_data(task: str, dataset: str, train_size: int | None) -> data.Dataset:
    loaded = data.load(dataset)
    if train_size is not None:
        loaded = dataclasses.replace(loaded, x_train=loaded.x_train[:train_size], y_train=loaded.y_train[:train_size])
    if task == "autoencoder":  # the targets are the images, as vectors
        return loaded.autoencoding()
    return loaded


def build(config: RegretConfig, dataset: data.Dataset) -> nn.Sequential:
    if config.task == "autoencoder":
        return autoencoder((dataset.x_train[0].numel(),) + AUTOENCODER_WIDTHS[1:-1] + (dataset.x_train[0].numel(),))
    return convnet(tuple(dataset.x_train.shape[1:]), dataset.n_classes, config.channels, config.fc)


def tracked(config: RegretConfig, net: nn.Sequential) -> tuple[dict[int, list[int]], list[int]]:
    """The neurons of every hidden weight layer (a seeded choice) and the whole layers tracked."""
    positions = weight_layers(net)
    generator = torch.Generator().manual_seed(config.seed)
    neurons = {}
    hidden = positions[:-1] if config.task == "autoencoder" else [p for p in positions if isinstance(net[p], nn.Conv2d)]
    for p in hidden:
        units = net[p].weight.shape[0]
        neurons[p] = sorted(torch.randperm(units, generator=generator)[:config.neurons_per_layer].tolist())
    for depth in config.layers:
        if not 1 <= depth <= len(positions):
            raise ValueError(f"layers are depths 1..{len(positions)} of the {config.task}'s weight layers, got {depth}")
    return neurons, [positions[d - 1] for d in config.layers]


class _Recording(WatchedOptimizer):
    """Shows every ``every``-th round's mini-batch to the recorder before the update."""

    def __init__(self, optimizer, recorder: TaylorRegret, every: int):
        super().__init__(optimizer)
        self.recorder, self.every = recorder, every

    def before(self, closure) -> None:
        if self.steps % self.every == 0:
            try:
                self.recorder.observe(closure.inputs, closure.targets)
            except FloatingPointError:  # a diverged round: the training loop records the divergence
                pass


def make_optimizer(name: str, lr: float, params):
    if name == "adam":
        return torch_optimizer(torch.optim.Adam, params, lr=lr)
    if name == "rmsprop":
        return torch_optimizer(torch.optim.RMSprop, params, lr=lr)
    return torch.optim.SGD(params, lr=lr)


def check_config(config: RegretConfig) -> None:
    check_choice("task", config.task, TASKS)
    check_choice("optimizer", config.method, OPTIMIZERS)
    check_lr(config.lr)
    for name in ("epochs", "batch_size", "neurons_per_layer", "record_every", "checkpoints"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if config.examples is not None and config.examples < 1:
        raise ValueError(f"examples must be >= 1 or None (all), got {config.examples}")


def run(config: RegretConfig, device=None) -> list[dict]:
    """Train with regret tracking; the loop's rows and the rows of kind "regret"."""
    check_config(config)
    dataset = task_data(config.task, config.dataset, config.train_size)
    torch.manual_seed(config.seed)
    net = build(config, dataset)
    neurons, layers = tracked(config, net)
    loss = "mse" if config.task == "autoencoder" else "cross_entropy"
    rounds = math.ceil(len(dataset.x_train) / config.batch_size) * config.epochs
    recorded = math.ceil(rounds / config.record_every)
    holder = {}

    def make(model):
        recorder = TaylorRegret(model, neurons=neurons, layers=layers, loss=loss,
                                checkpoints=sqrt_checkpoints(recorded, config.checkpoints),
                                examples=config.examples)
        holder["recorder"] = recorder
        return _Recording(make_optimizer(config.method, config.lr, model.parameters()), recorder,
                          config.record_every)

    result = train(net, dataset, make, loss=loss, epochs=config.epochs, batch_size=config.batch_size,
                   seed=config.seed, device=device)
    recorder = holder["recorder"]
    positions = weight_layers(net)
    rows = result.rows
    for row in recorder.rows:
        rows.append(dict(kind="regret", step=row["round"] * config.record_every, epoch=math.nan,
                         rounds=row["round"], layer=row["layer"], depth=positions.index(row["layer"]) + 1,
                         neuron=row["neuron"], scope=row["scope"], cum_loss=row["cum_loss"],
                         taylor_opt=row["taylor_opt"], regret=row["regret"], diverged=result.diverged))
    rows[-1]["recorder_mb"] = recorder.nbytes / 2 ** 20
    return rows


# --- regret on a convex problem ---------------------------------------------------------------------

def online_regret(rounds: int = 1600, *, dim: int = 4, classes: int = 3, radius: float = 4.0,
                  checkpoints: int = 12, seed: int = 0) -> pd.DataFrame:
    """Online gradient descent on a stream of convex losses, the setting of Theorem 1.

    A linear softmax classifier (its own Taylor approximation, so :class:`TaylorRegret`'s regret
    is Zinkevich's) sees one example a round, |x| <= 2, labels drawn from a fixed softmax model
    (a finite optimum), and takes the projected step D / (G sqrt(n)) onto the ball of radius
    D / 2 = ``radius``, with G = 2 sqrt(2) bounding the gradients; then Regret(N) <=
    (3/2) G D sqrt(N). Rows per checkpoint: ``rounds``, ``cum_loss``, ``taylor_opt``, ``regret``
    and that ``bound``; ``attrs["optimum_norm"]`` is the norm of the hindsight optimum."""
    generator = torch.Generator().manual_seed(seed)
    truth = torch.randn(classes, dim, generator=generator, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(dim, classes, bias=False)).double()
    nn.init.zeros_(model[0].weight)
    recorder = TaylorRegret(model, layers=[0], loss="cross_entropy", checkpoints=sqrt_checkpoints(rounds, checkpoints))
    G, D = 2.0 * math.sqrt(2.0), 2.0 * radius
    for n in range(1, rounds + 1):
        x = torch.randn(1, dim, generator=generator, dtype=torch.float64)
        x = x * torch.clamp(2.0 / x.norm(), max=1.0)
        y = torch.multinomial(torch.softmax(x @ truth.T, dim=1), 1, generator=generator)[:, 0]
        recorder.observe(x, y)
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            w = model[0].weight
            w -= D / (G * math.sqrt(n)) * w.grad
            w *= torch.clamp(radius / w.norm(), max=1.0)
    table = pd.DataFrame(recorder.rows).drop(columns=["layer", "neuron", "scope"]).rename(columns={"round": "rounds"})
    table["bound"] = 1.5 * G * D * np.sqrt(table["rounds"])
    table.attrs["optimum_norm"] = float(recorder.optimum(recorder.units[0])[1].norm())
    return table


# --- presets -------------------------------------------------------------------------------------

def preset_rate(task: str, optimizer: str) -> float:
    """The learning rate of ``optimizer`` on ``task``: appendix A.5's, or SGD's tuned one."""
    return (PAPER_RATES[task] | {"sgd": SGD_RATES[task]})[optimizer]


def _rates(task: str, optimizers, lrs, factors=(1.0,)) -> list[tuple[str, float]]:
    chosen = optimizers or OPTIMIZERS
    for name in chosen:
        check_choice("optimizer", name, OPTIMIZERS)
    return [(name, lr) for name in chosen
            for lr in (lrs or [float(f"{preset_rate(task, name) * f:.6g}") for f in factors])]


def autoencoder_configs(scale, lrs=None, methods=None, seeds=None):
    """Full: MNIST, 10 epochs (9,380 rounds), 50 neurons of each hidden layer (all of the
    narrower ones), layers 2-5 whole, each optimizer at its rate. Reduced: mnist-5k, 5 epochs
    (315 rounds), 5 neurons a layer, layer 3 (30 -> 20) whole, each optimizer at its rate
    times :data:`RATE_FACTORS`."""
    full = scale == "full"
    fixed = (dict(dataset="mnist", epochs=10, neurons_per_layer=50, layers=(2, 3, 4, 5)) if full
             else dict(dataset="mnist-5k", epochs=5, neurons_per_layer=5, layers=(3,)))
    return [RegretConfig(task="autoencoder", method=name, lr=lr, seed=s, batch_size=64, **fixed)
            for name, lr in _rates("autoencoder", methods, lrs, (1.0,) if full else RATE_FACTORS)
            for s in range(seeds if seeds is not None else 1)]


def convnet_configs(scale, lrs=None, methods=None, seeds=None):
    """Full: CIFAR-10, 64 filters, 192 units, 20 epochs (7,820 rounds), 10 neurons of each
    convolution, the first convolution whole, 4 examples of every 4th round (about 10 GB of
    stored Taylor losses on the GPU). Reduced: mnist-5k, 16 filters, 64 units, 5 epochs (160
    rounds), 3 neurons of each convolution, the first convolution whole, 8 examples a round,
    12 checkpoints."""
    full = scale == "full"
    fixed = (dict(dataset="cifar10", epochs=20, channels=64, fc=192, neurons_per_layer=10, layers=(1,),
                  examples=4, record_every=4) if full
             else dict(dataset="mnist-5k", epochs=5, channels=16, fc=64, neurons_per_layer=3, layers=(1,),
                       examples=8, checkpoints=12))
    return [RegretConfig(task="convnet", method=name, lr=lr, seed=s, batch_size=128, **fixed)
            for name, lr in _rates("convnet", methods, lrs) for s in range(seeds if seeds is not None else 1)]


def _experiment(name: str, title: str, configs) -> Experiment:
    return register(Experiment(name=name, chapter=5, title=title, run=run, configs=configs, metric="train_loss"))


regret_autoencoder = _experiment("taylor-autoencoder", "Regret and Taylor optimum of the MNIST autoencoder "
                                 "(Adam, RMSProp, SGD; Figures 4(b)-(c))", autoencoder_configs)
regret_convnet = _experiment("taylor-convnet", "Regret of the convnet's neurons and layers (Figures 3, 4(a))",
                             convnet_configs)


# --- the chapter's conclusions ---------------------------------------------------------------------

# The growth of a regret curve over the last part of training: the least-squares slope of log
# regret against log N over the checkpoints from half the last round to the last (for the
# reduced autoencoder, rounds 177 to 315, a window of 1.78x). A regret growing like sqrt(N) has
# exponent 1/2, one growing like N exponent 1. A curve is counted as consistent with sqrt(N)
# when its exponent is at most SQRT_EXPONENT, or when it ends no higher than it stood at the
# window's start (it falls, or changes sign downwards).
SQRT_EXPONENT = 0.6
# A regret whose size at the last checkpoint is below this fraction of the cumulative loss is at
# numerical zero: a difference of two float32-accumulated sums of that size, with no growth to fit.
NUMERICAL_ZERO = 1e-6
# A cross-entropy Taylor optimum below this fraction of the cumulative loss counts as zero: the
# stored losses are separable and L-BFGS approaches their infimum, 0 (see ibtools.taylor).
ZERO_OPTIMUM = 1e-6
# With one seed there is no spread to compare with: two final regrets within this fraction of the
# larger one are not called different.
SAME_GAP = 0.1


def growth_exponent(rounds, regret) -> float:
    """The least-squares slope of log(regret) against log(rounds) over the checkpoints at or
    after half the last round: the p of a regret growing like N^p there. NaN where the regret
    is not positive at every one of those checkpoints (no power law to fit)."""
    rounds, regret = np.asarray(rounds, dtype=float), np.asarray(regret, dtype=float)
    window = rounds >= rounds[-1] / 2
    if window.sum() < 2 or not (regret[window] > 0).all():
        return float("nan")
    return float(np.polyfit(np.log(rounds[window]), np.log(regret[window]), 1)[0])


def regret_growth(table: pd.DataFrame, exponent: float = SQRT_EXPONENT, zero: float = NUMERICAL_ZERO) -> pd.DataFrame:
    """One row per tracked unit of every run of a ``taylor-*`` results table (rows of kind
    "regret"): ``start`` and ``end``, the first checkpoint at or after half the last round and
    the last; ``mid`` and ``last``, regret / sqrt(N) at those two checkpoints; ``exponent``, :func:`growth_exponent` of the curve;
    ``zero``, whether the final regret is below ``zero`` times the final cumulative loss
    (numerical zero, left out of the verdicts); ``flattens``, whether the curve is consistent
    with sqrt(N): its exponent is at most ``exponent``, or its regret at the last checkpoint is
    no higher than at the window's start; ``relative``, the final regret as a fraction of the
    final cumulative loss."""
    keys = ["method", "lr", "scope", "depth", "neuron"]
    rows = []
    for key, curve in table[table.kind == "regret"].groupby(keys, dropna=False):
        curve = curve.sort_values("rounds")
        rounds = curve.rounds.to_numpy(dtype=float)
        regret = curve.regret.to_numpy(dtype=float)
        normalised = regret / np.sqrt(rounds)
        i = int(np.searchsorted(rounds, rounds[-1] / 2))
        p = growth_exponent(rounds, regret)
        rows.append(dict(zip(keys, key), start=int(rounds[i]), end=int(rounds[-1]), mid=normalised[i],
                         last=normalised[-1], exponent=p,
                         zero=bool(abs(regret[-1]) < zero * abs(curve.cum_loss.iloc[-1])),
                         flattens=bool(regret[-1] <= regret[i] or p <= exponent),
                         relative=float(regret[-1] / curve.cum_loss.iloc[-1])))
    return pd.DataFrame(rows)


def zero_optimum(table: pd.DataFrame, threshold: float = ZERO_OPTIMUM) -> pd.DataFrame:
    """Per run, scope, depth and checkpoint of a ``taylor-*`` results table: ``units`` tracked,
    ``zero`` how many of them have a Taylor optimum below ``threshold`` times the cumulative loss
    (their regret is then the cumulative loss itself)."""
    regret = table[table.kind == "regret"].assign(
        is_zero=lambda t: t.taylor_opt <= threshold * t.cum_loss)
    return (regret.groupby(["method", "lr", "scope", "depth", "rounds"], as_index=False)
            .agg(units=("is_zero", "size"), zero=("is_zero", "sum")))


def _final_regret(table: pd.DataFrame, method: str, lr: float | None = None, scope: str = "layer") -> pd.DataFrame:
    rows = table[(table.kind == "regret") & (table.method == method) & (table.scope == scope)]
    if lr is not None:
        rows = rows[np.isclose(rows.lr, lr, rtol=1e-9, atol=0)]
    return rows[rows.rounds == rows.rounds.max()]


NAMES = {"adam": "Adam", "rmsprop": "RMSProp", "sgd": "SGD"}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def claims(convex: pd.DataFrame, autoencoder: pd.DataFrame, convnet: pd.DataFrame) -> list:
    """The chapter's conclusions (:class:`ibtools.claims.Claim`) from the tables it shows:
    ``convex`` from :func:`online_regret`, ``autoencoder`` and ``convnet`` the committed
    ``taylor-autoencoder`` and ``taylor-convnet`` results (one seed each). Cheap: no training."""
    from ..claims import claim, compare

    found = []
    seeds = sorted(set(autoencoder.seed) | set(convnet.seed))
    one_seed = "one seed" if len(seeds) == 1 else f"{len(seeds)} seeds"

    # the convex check
    share = convex.regret / convex.bound
    found.append(claim(
        "convex-under-bound", bool((share <= 1).all()),
        "On convex losses the recorder's regret stays under Zinkevich's bound (3/2) G D sqrt(N) at every checkpoint.",
        "On convex losses the recorder's regret exceeds Zinkevich's bound: the recorder or the bound is wrong.",
        evidence=f"regret / bound at most {share.max():.2f} (at N = {int(convex.rounds[share.idxmax()])}), "
                 f"{share.iloc[-1]:.3f} at N = {int(convex.rounds.iloc[-1])}; one stream of {int(convex.rounds.iloc[-1])} rounds, "
                 f"{len(convex)} checkpoints"))
    growth = regret_growth(convex.assign(kind="regret", method="ogd", lr=0.0, scope="layer", depth=1, neuron=-1))
    g = growth.iloc[0]
    found.append(claim(
        "convex-flattens", bool(growth.flattens.all()),
        "Its ratio to sqrt(N) levels off: over the last half of the rounds it grows no faster than sqrt(N).",
        "Over the last half of the rounds it grows faster than sqrt(N).",
        evidence=f"regret ~ N^{g.exponent:.2f} over rounds {g.start} to {g.end} (least-squares slope of log regret on "
                 f"log N); regret / sqrt(N) {g.mid:.2f} at N = {g.start}, {g['last']:.2f} at N = {g.end}"))

    # the autoencoder
    ae = regret_growth(autoencoder)
    live = ae[~ae.zero]
    rising = live[~live.flattens]
    layers = ae[ae.scope == "layer"]
    runs = autoencoder[["method", "lr"]].drop_duplicates()
    window = f"rounds {int(ae.start.iloc[0])} to {int(ae.end.iloc[0])} (a window of {ae.end.iloc[0] / ae.start.iloc[0]:.2f}x)"

    def growth_of(r) -> str:
        return (f"N^{r.exponent:.2f}" if np.isfinite(r.exponent)
                else f"it falls, {r.mid * np.sqrt(r.start):.3f} to {r.last * np.sqrt(r.end):.3f}")

    preset = layers[[np.isclose(r.lr, preset_rate("autoencoder", r.method)) for r in layers.itertuples()]]
    fast = preset[~preset.flattens]
    slow = preset[preset.flattens]
    neuron_live = live[live.scope == "neuron"]
    found.append(claim(
        "autoencoder-sqrt-n", bool(live.flattens.all()),
        "On the autoencoder the regret grows no faster than sqrt(N) over the last part of training for every tracked "
        "neuron and for the whole layer, for all three optimizers at all three rates.",
        f"On the autoencoder the whole layer's regret grows faster than sqrt(N) over the last part of training for "
        + (" and ".join(f"{NAMES[r.method]} (like {growth_of(r)})" for r in fast.itertuples()) or "no optimizer")
        + " at their preset rates (one seed, 315 rounds); only "
        + (" and ".join(f"{NAMES[r.method]}'s curve ({growth_of(r)})" for r in slow.itertuples()) or "no curve")
        + f" is consistent with sqrt(N). Over all rates, {len(rising)} of {len(live)} curves grow faster than "
        f"N^{SQRT_EXPONENT:g}, though each of their regrets is below {rising.relative.abs().max():.2%} of the cumulative loss.",
        evidence=f"exponent p of regret ~ N^p fitted over {window}; layer 3: "
                 + ", ".join(f"{r.method} at {r.lr:g} {growth_of(r).replace('it falls, ', 'falls ')}" for r in layers.itertuples())
                 + f"; neurons, median p by optimizer: "
                 + ", ".join(f"{m} {neuron_live[neuron_live.method == m].exponent.median():.2f}" for m in OPTIMIZERS)
                 + f"; a curve counts as consistent with sqrt(N) when p <= {SQRT_EXPONENT:g} or it ends lower than at "
                 f"round {int(ae.start.iloc[0])}; {int(ae.zero.sum())} curves at numerical zero (|regret| below "
                 f"{NUMERICAL_ZERO:g} of the cumulative loss) left out; {len(runs)} runs (3 optimizers x 3 rates), "
                 f"{one_seed} each, {int(ae.end.iloc[0])} rounds",
        paper="Figure 4(b): the regret of all methods scales as sqrt(N)"))
    found.append(claim(
        "autoencoder-regret-small", bool(layers.relative.abs().max() < 0.05),
        "On the autoencoder the regret is small next to the loss: the Taylor optimum of one layer is barely better than "
        "what training paid.",
        "On the autoencoder the regret is not small next to the loss.",
        evidence=f"final layer-3 regret at most {layers.relative.abs().max():.1%} of the cumulative loss (under 5%) "
                 f"over the {len(layers)} runs; a neuron's at most {ae[ae.scope == 'neuron'].relative.abs().max():.2%}"))
    at_rate = {m: _final_regret(autoencoder, m, preset_rate("autoencoder", m)).iloc[0] for m in OPTIMIZERS}
    cum = {m: at_rate[m].cum_loss for m in OPTIMIZERS}
    best = min(cum, key=cum.get)
    found.append(claim(
        "autoencoder-paths", None,
        f"The guarantee is path dependent and the paths differ: at 315 rounds {NAMES[best]} has paid the least "
        "of the three optimizers at their rates.",
        evidence="cumulative loss " + ", ".join(f"{m} {cum[m]:.1f}" for m in OPTIMIZERS) + f"; {one_seed}"))
    gap = {m: at_rate[m].regret for m in OPTIMIZERS}

    def versus_sgd(m: str) -> str:
        if abs(gap[m] - gap["sgd"]) <= SAME_GAP * max(abs(gap[m]), abs(gap["sgd"])):
            return "same"
        return "below" if compare([gap[m]], [gap["sgd"]], (m, "sgd")).lower == "a" else "above"

    side = {m: versus_sgd(m) for m in ("adam", "rmsprop")}
    found.append(claim(
        "autoencoder-gap", all(v == "below" for v in side.values()),
        "The gap between the loss paid and the layer's Taylor optimum is smaller for the adaptive optimizers than for SGD.",
        "The adaptive optimizers' gaps to the layer's Taylor optimum are not all below SGD's: " + "; ".join(
            f"{NAMES[m]}'s is " + {"below": "below it", "above": "above it",
                                   "same": f"indistinguishable from it (within {SAME_GAP:.0%}, one seed)"}[v]
            for m, v in side.items()) + ".",
        evidence="layer-3 regret at 315 rounds, each at its rate: " + ", ".join(f"{m} {gap[m]:.3f}" for m in OPTIMIZERS)
                 + f"; {one_seed}, so no spread to compare with: a difference within {SAME_GAP:.0%} counts as none; "
                 "RMSProp's and SGD's still growing",
        paper="Figure 4(c): the gap is smaller for the adaptive optimizers"))
    adam = _final_regret(autoencoder, "adam")
    others = adam[~np.isclose(adam.lr, preset_rate("autoencoder", "adam"))].sort_values("lr")
    found.append(claim(
        "autoencoder-negative-regret", bool(gap["adam"] < 0),
        "At its preset rate only, Adam's layer-3 regret is negative at the end: the learner moves, the comparator is "
        "one fixed V. At the other two rates it is positive.",
        "Adam's layer-3 regret stays positive at its preset rate.",
        evidence=f"{gap['adam']:.3f} at 315 rounds at lr {preset_rate('autoencoder', 'adam'):g} "
                 f"({abs(gap['adam']) / cum['adam']:.1%} of the cumulative loss); "
                 + ", ".join(f"{r.regret:.3f} at lr {r.lr:g}" for r in others.itertuples()) + f"; {one_seed}"))

    # the convnet
    zero = zero_optimum(convnet)
    whole = zero[zero.scope == "layer"]
    spans = []
    for method, rows in whole.groupby("method"):
        hit = rows[rows.zero == rows.units]
        checkpoints = len(rows)
        last = int(hit.rounds.max()) if len(hit) else 0
        spans.append((method, len(hit), checkpoints, last))
    examples = int(convnet.examples.dropna().iloc[0]) if "examples" in convnet and convnet.examples.notna().any() else None
    longest = max(s[3] for s in spans)
    found.append(claim(
        "convnet-zero-optimum", longest > 0,
        "On the convnet the whole first convolution's Taylor optimum is zero at the first checkpoints: the few examples "
        "recorded per round are separable by its Taylor losses, so there the 'regret' is the cumulative loss itself, "
        "and its early rise says nothing about the optimizer.",
        "The whole first convolution's Taylor optimum is above zero from the first checkpoint.",
        evidence="zero at " + ", ".join(f"{m} {k} of {c} checkpoints (to round {r}, {r * (examples or 1)} examples)"
                                         for m, k, c, r in spans)
                 + f"; {examples} recorded examples a round of the batch of 128; {one_seed}",
        paper="rounds of 128 CIFAR-10 images, 64 filters"))
    neurons = zero[(zero.scope == "neuron") & (zero.rounds <= longest)]
    by_depth = neurons.groupby("depth")[["zero", "units"]].sum()
    most = int(by_depth.zero.idxmax())
    found.append(claim(
        "convnet-zero-neurons", None,
        f"Up to round {longest} single neurons' Taylor optima are often zero too, most often in convolution {most}.",
        evidence="zero optimum among neuron checkpoints up to that round, all optimizers: " + ", ".join(
            f"convolution {int(d)} {int(r.zero)} of {int(r.units)}" for d, r in by_depth.iterrows())))
    cv = regret_growth(convnet)
    cv_layers = cv[cv.scope == "layer"].set_index("method")
    share = {m: float(cv_layers.loc[m, "relative"]) for m in OPTIMIZERS}
    found.append(claim(
        "convnet-sqrt-n", bool(cv[~cv.zero].flattens.all()),
        "Past that phase, the regret of every tracked neuron and of the whole first convolution grows no faster than "
        "sqrt(N) over the second half of the rounds, for all three optimizers; but the layer's regret is most of the "
        "cumulative loss for " + " and ".join(NAMES[m] for m in OPTIMIZERS if share[m] > 0.5)
        + ", so its ratio to sqrt(N) mostly follows the decay of the training loss.",
        f"The regret of {int((~cv[~cv.zero].flattens).sum())} of {len(cv)} tracked neurons and layers of the convnet "
        "grows faster than sqrt(N) over the second half of the rounds.",
        evidence=f"exponent p of regret ~ N^p over rounds {int(cv.start.iloc[0])} to {int(cv.end.iloc[0])}; first "
                 "convolution: " + ", ".join(
                     f"{m} " + (f"N^{cv_layers.loc[m, 'exponent']:.2f}" if np.isfinite(cv_layers.loc[m, "exponent"])
                                else "falls") + f" ({share[m]:.0%} of the cumulative loss)" for m in OPTIMIZERS)
                 + "; neurons, largest p: " + ", ".join(
                     f"{m} {cv[(cv.scope == 'neuron') & (cv.method == m)].exponent.max():.2f}" for m in OPTIMIZERS)
                 + f"; {len(cv)} curves (3 optimizers x (9 neurons + 1 layer)), {one_seed}",
        paper="Figures 3(a) and 4(a): regret scales as sqrt(N)"))
    dominant = []
    for method in OPTIMIZERS:
        layer = _final_regret(convnet, method).regret.iloc[0]
        first = _final_regret(convnet, method, scope="neuron")
        first = first[first.depth == 1].regret
        dominant.append((method, layer, first.max(), bool(layer > first.max())))
    found.append(claim(
        "convnet-layer-regret", all(d[3] for d in dominant),
        "The regret of the whole first convolution is larger than any of its neurons': a fixed V of all its weights fits "
        "the few recorded Taylor losses far better than the moving network did.",
        "The regret of the whole first convolution is not always larger than its neurons'.",
        evidence="at 160 rounds, layer vs largest tracked neuron: " + ", ".join(f"{m} {a:.0f} vs {b:.1f}" for m, a, b, _ in dominant)
                 + f"; {one_seed}"))
    acc = {m: claims_per_seed(convnet, "test_acc", m) for m in OPTIMIZERS}
    top = max(acc, key=lambda m: acc[m].mean())
    found.append(claim(
        "convnet-accuracy", None,
        f"After 5 epochs on digits, not trained to convergence, {NAMES[top]} has the highest test accuracy of the three "
        "at their rates.",
        evidence="test accuracy " + ", ".join(f"{m} {acc[m].mean():.3f}" for m in OPTIMIZERS)
                 + f"; {one_seed}, 1,000 test digits, rates the paper tuned for CIFAR-10 (SGD's from chapter 5's sweep)",
        paper="a different quantity: training accuracy at convergence on CIFAR-10, >= 99% for all three"))
    return found


def claims_per_seed(table: pd.DataFrame, metric: str, method: str):
    """The final ``metric`` of each seed of ``method`` (rows of kind "epoch")."""
    from ..claims import per_seed

    return per_seed(table[table.kind == "epoch"], metric, method=method)
