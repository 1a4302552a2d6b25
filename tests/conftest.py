"""Shared fixtures: an isolated environment for every test, tiny data sets and a tiny experiment.

Tests never touch ``~/.cache``: every test gets its own ``$IBTOOLS_CACHE``. Matplotlib draws
with the Agg backend (no display). Tests run on the CPU unless they ask for a device: the
``device`` fixture gives each device present (:data:`DEVICES`).
"""

from __future__ import annotations

import os
import re

os.environ["MPLBACKEND"] = "Agg"  # before anything imports matplotlib.pyplot

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib  # noqa: E402
import pandas as pd  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# The devices of this machine that tests parametrised over devices run on.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    """A fresh results cache per test, none of the switches a developer may have set, and the
    CPU as the device wherever none is named (``$IBTOOLS_DEVICE=cpu``).

    ibtools resolves ``device=None`` to CUDA when a GPU is present; the tests that compare to
    committed results, to printed outputs or to bit-for-bit reruns were computed on the CPU
    and mean the CPU, so on a GPU machine they would otherwise run on the GPU and differ in
    the last bits (or more, where a long run amplifies them). A test of a GPU path names its
    device (the ``device`` fixture) or sets the variable itself."""
    cache = tmp_path_factory.mktemp("ibtools-cache")
    monkeypatch.setenv("IBTOOLS_CACHE", str(cache))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("IBTOOLS_DEVICE", "cpu")
    for name in ("IBTOOLS_BOOK", "IBTOOLS_TF32", "IBTOOLS_CAPTURE", "IBTOOLS_FUSE"):
        monkeypatch.delenv(name, raising=False)
    return cache


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each device of :data:`DEVICES` in turn: the CPU, and CUDA where a GPU is present."""
    return torch.device(request.param)


@pytest.fixture
def float64():
    """float64 as torch's default dtype for one test (for comparisons to 1e-9 and beyond), restored after."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.fixture
def results_cache_dir(isolated_environment) -> Path:
    """The directory ``$IBTOOLS_CACHE`` points to in this test."""
    return isolated_environment


@pytest.fixture
def subprocess_env() -> dict:
    """Environment for ``python -m ibtools`` / ``python -c`` children: this checkout first on
    the path (whatever the working directory), the CPU as their default device
    (``$IBTOOLS_DEVICE=cpu``, as in the test), the test's cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


# --- tiny data ----------------------------------------------------------------------------------

@dataclass
class TensorData:
    """The part of :class:`ibtools.data.Dataset` that :func:`ibtools.train.train` reads."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def make_regression(seed: int = 0, n_train: int = 64, n_test: int = 16, dim: int = 3,
                    noise: float = 0.1) -> TensorData:
    """y = x . w + noise, x standard normal: least squares with a known solution."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g)
    x = torch.randn(n_train + n_test, dim, generator=g)
    y = x @ w + noise * torch.randn(n_train + n_test, generator=g)
    return TensorData(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def make_classification(seed: int = 0, n_train: int = 96, n_test: int = 32, dim: int = 4,
                        classes: int = 3) -> TensorData:
    """Gaussian blobs around ``classes`` random centres; integer labels."""
    g = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(classes, dim, generator=g)
    y = torch.randint(0, classes, (n_train + n_test,), generator=g)
    x = centres[y] + torch.randn(n_train + n_test, dim, generator=g)
    return TensorData(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


@pytest.fixture
def regression_data() -> TensorData:
    return make_regression()


@pytest.fixture
def classification_data() -> TensorData:
    return make_classification()


# --- a tiny registered experiment -----------------------------------------------------------------

TINY_LRS = [0.01, 0.1, 1.0]


@dataclass(frozen=True)
class TinyConfig:
    method: str
    lr: float
    seed: int = 0
    epochs: int = 2


class TinyRun:
    """Least squares on :func:`make_regression` with SGD ("sgd") or SGD with momentum
    ("momentum"); counts its calls so tests can tell computed runs from cached ones."""

    def __init__(self):
        self.calls: list[TinyConfig] = []

    def __call__(self, config: TinyConfig, device=None) -> list[dict]:
        from ibtools.train import check_lr, train

        self.calls.append(config)
        check_lr(config.lr)
        torch.manual_seed(config.seed)
        model = torch.nn.Linear(3, 1)
        momentum = 0.9 if config.method == "momentum" else 0.0
        result = train(model, make_regression(), lambda m: torch.optim.SGD(m.parameters(), lr=config.lr,
                                                                           momentum=momentum),
                       loss="least_squares", epochs=config.epochs, batch_size=16, seed=config.seed,
                       device=device)
        return result.rows


def tiny_configs(scale: str, lrs=None, methods=None, seeds=None) -> list[TinyConfig]:
    epochs = 3 if scale == "full" else 2
    return [TinyConfig(method=m, lr=lr, seed=s, epochs=epochs)
            for m in (methods or ("sgd", "momentum")) for lr in (lrs or TINY_LRS)
            for s in range(seeds if seeds is not None else 2)]


def registered(name: str, run, configs):
    """Register an experiment for one test and remove it afterwards (a generator for fixtures)."""
    from ibtools.experiments import EXPERIMENTS, Experiment, register

    experiment = register(Experiment(name=name, chapter=99, title=f"{name}, for tests", run=run, configs=configs))
    try:
        yield experiment
    finally:
        EXPERIMENTS.pop(name, None)


@pytest.fixture
def tiny_experiment():
    """``tiny-test`` registered in :data:`ibtools.experiments.EXPERIMENTS` for this test only."""
    yield from registered("tiny-test", TinyRun(), tiny_configs)


def rerun_as_recorded(run, config, provenance: dict) -> pd.DataFrame:
    """``run(config)``'s rows, computed with the torch CPU thread count ``provenance`` records
    ("... (x86_64, N threads)"): products differ in their last bits between thread counts, and
    long runs at large rates amplify them, so a committed run is reproduced at its own count."""
    threads = int(re.search(r"(\d+) threads?\)", provenance["device"]).group(1))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return pd.DataFrame(run(config))
    finally:
        torch.set_num_threads(before)
