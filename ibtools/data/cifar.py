"""CIFAR-10 and CIFAR-100 at full scale: the python tarball of each, downloaded into
:func:`ibtools.data.store.data_dir` and verified against its published checksum, and its
pickled batches extracted beside it and verified against theirs (:data:`CIFAR10_BATCHES`,
:data:`CIFAR100_FILES`) every time they are read."""

from __future__ import annotations

import functools
import pickle
import tarfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_file
from .records import Dataset, image_dataset
from .store import (CHECKSUMS, DataUnavailableError, checksum_problem, fetch, quarantine,
                    unavailable_message)

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
    paths = _member_paths(name, directory, download)
    batches = [read_cifar_batch(path, cifar.label_key) for path in paths]
    train, test = batches[:-1], batches[-1]
    return image_dataset(name, np.concatenate([images for images, _ in train]), test[0],
                         np.concatenate([labels for _, labels in train]), test[1],
                         shape=(3, 32, 32), n_classes=cifar.n_classes,
                         source=f"{cifar.title}, checksum-verified, read from {directory}")


LOADERS = {name: functools.partial(_load_cifar, name) for name in _CIFAR}


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


def _member_paths(dataset: str, directory: Path, download: bool) -> list[Path]:
    """The verified files of CIFAR ``dataset`` (its members table in :data:`_CIFAR`, in that
    order), extracted from the (verified) tarball when any is missing or fails its checksum;
    one that fails is quarantined first, never overwritten."""
    cifar = _CIFAR[dataset]
    members = cifar.members
    paths = [directory / name for name in members]
    intact = True
    for path in paths:
        if not path.is_file():
            intact = False
        elif checksum_problem(path, members[path.name]) is not None:
            quarantine(path)
            intact = False
    if intact:
        return paths
    (tarball_name,) = CHECKSUMS[dataset]
    _extract_batches(fetch(dataset, tarball_name, directory, download), directory, members)
    for path in paths:
        problem = checksum_problem(path, members[path.name]) if path.is_file() else "it is absent"
        if problem is not None:
            raise DataUnavailableError(unavailable_message(
                dataset, directory, f"{path.name} extracted from the verified tarball does "
                f"not match its checksum in ibtools.data.cifar.{cifar.members_table} "
                f"({problem}); that table is wrong"))
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
