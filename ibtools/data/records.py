"""What every loader returns: a :class:`Dataset` (a train/test split as tensors) or a
:class:`SequenceDataset` (variable-length sequences), and the few steps from NumPy arrays to
them that the sources share (a seeded split, standardisation with training statistics)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch


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
    :mod:`ibtools.data.music`. ``train`` and ``test`` are lists of float32 ``(T_i, D)``
    tensors (for music, piano rolls: T_i time steps of D = 88 notes, 1 where a note sounds)."""

    name: str
    train: list = field(repr=False)
    test: list = field(repr=False)
    source: str

    @property
    def n_features(self) -> int:
        return int(self.train[0].shape[1])


def split(x: np.ndarray, y: np.ndarray, seed: int, test_size: float | int, stratify: bool):
    """scikit-learn's ``train_test_split(x, y, test_size=..., random_state=seed)``, stratified
    by ``y`` when ``stratify``: ``(x_train, x_test, y_train, y_test)``."""
    # Imported here: scikit-learn takes a second to import and `ibtools list` needs none of it.
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=test_size, random_state=seed,
                            stratify=y if stratify else None)


def standardized(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays rescaled by the training rows' mean and std, so no test data leaks in.

    A column constant on the training rows (possible in small tables) has std 0: it is
    centred on its value, which makes it exactly 0 on the training rows, and left unscaled.
    Constancy is tested exactly, because a computed std of such a column can be a rounding
    error away from 0 rather than 0.
    """
    mean, std = train.mean(axis=0), train.std(axis=0)
    constant = np.ptp(train, axis=0) == 0
    mean = np.where(constant, train[0], mean)
    std = np.where(constant, 1.0, std)
    return (train - mean) / std, (test - mean) / std


def vector_dataset(name: str, x_train, x_test, y_train, y_test, *, task: str,
                   n_classes: int | None, source: str, standardize: bool) -> Dataset:
    """Arrays ``(N, D)`` as a :class:`Dataset`: features float32 (standardised by
    :func:`standardized` when ``standardize``, and so are regression targets), targets int64
    for classification and float32 for regression."""
    if standardize:
        x_train, x_test = standardized(x_train, x_test)
        if task == "regression":
            y_train, y_test = standardized(y_train, y_test)
    target_dtype = np.int64 if task == "classification" else np.float32
    return Dataset(name=name,
                   x_train=torch.from_numpy(x_train.astype(np.float32)),
                   y_train=torch.from_numpy(y_train.astype(target_dtype)),
                   x_test=torch.from_numpy(x_test.astype(np.float32)),
                   y_test=torch.from_numpy(y_test.astype(target_dtype)),
                   task=task, n_classes=n_classes, source=source)


def image_dataset(name: str, x_train, x_test, y_train, y_test, *, shape: tuple[int, ...],
                  source: str, n_classes: int = 10) -> Dataset:
    """Pixels in 0..255 become float32 ``(N, *shape)`` in [0, 1]; labels int64."""
    def images(pixels: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(pixels.reshape(-1, *shape).astype(np.float32) / 255)

    def labels(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(values.astype(np.int64))

    return Dataset(name=name, x_train=images(x_train), y_train=labels(y_train),
                   x_test=images(x_test), y_test=labels(y_test),
                   task="classification", n_classes=n_classes, source=source)
