"""The 121 UCI classification datasets of Fagan & Iyengar's "Robust Implicit Backpropagation".

The paper (appendix D) takes them from Fernandez-Delgado et al. (2014) as preprocessed by
Klambauer et al. (2017) for their self-normalising networks: one zip archive,
``data_py.zip`` (about 39 MB), listed at github.com/bioinf-jku/SNNs. Inside, under a top
folder ``data/``, each dataset has a folder ``NAME/`` with four comma-separated files:

- ``NAME_py.dat``: the features, one row per example;
- ``labels_py.dat``: one integer class label per row, 0..K-1;
- ``folds_py.dat``: 0/1 columns, one per cross-validation fold; column 0 is the pre-made
  train/test split (1 = test row, 0 = training row);
- ``validation_folds_py.dat``: the same shape, 1 marking validation rows.

The archive has two quirks: a stray ``data/abalone_py.dat`` outside any folder (ignored
here), and some ``oocytes_*`` folders named with underscores. Datasets are therefore named
by their folder with every run of characters other than letters and digits turned into a
dash (``oocytes-merluccius-nucleus-4d``), the names the paper's tables use; a features file
may use either spelling of its folder's name.

No checksum is published for the archive, so it is verified by parsing: the first use in a
process checks every dataset in it (:func:`read_archive`), a file that fails is deleted, and
datasets are then read straight from the verified zip, never extracted.
"""

from __future__ import annotations

import difflib
import functools
import io
import re
import types
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from .data import (DataUnavailableError, Dataset, _fetch, _root,
                   _unavailable_message, _vector_dataset)

ARCHIVE = "data_py.zip"
N_DATASETS = 121  # the number of dataset folders in the published archive

# The three files every dataset folder holds under these exact names; the fourth, the
# features, is named after the folder.
LABELS, FOLDS, VALIDATION = "labels_py.dat", "folds_py.dat", "validation_folds_py.dat"
_FEATURES_SUFFIX = "_py.dat"
_FEATURES = "features"  # the key for the features file in a folder's listing


def dashed(name: str) -> str:
    """``name`` in the form datasets are known by: lower case, with every run of characters
    other than letters and digits replaced by one dash (``oocytes_merluccius_nucleus_4d`` ->
    ``oocytes-merluccius-nucleus-4d``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# --- checking the archive ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """Where one dataset's four files are in the zip, and what checking them found."""

    features: str
    labels: str
    folds: str
    validation: str
    n_rows: int
    n_features: int
    n_classes: int


class ArchiveError(ValueError):
    """A file that is not the UCI archive: truncated, corrupt, or another file altogether."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path} is not a valid UCI archive {ARCHIVE}: {problem}. Delete it "
                         f"so it can be downloaded again")


def read_archive(path: Path | str) -> list[str]:
    """Check the zip at ``path`` and return its sorted dataset names (dashed).

    Every dataset folder must hold the four files, each a table of comma-separated numbers
    with one row per example; labels must be integers 0..K-1 with at least two classes;
    fold files must hold only 0 and 1, and column 0 of ``folds_py.dat`` must mark at least
    one test and one training row; and there must be :data:`N_DATASETS` folders. Otherwise
    raises ValueError naming the problem (the file should then be deleted and downloaded
    again); the error is an :class:`ArchiveError`. Missing values (``nan``) in the features
    are allowed here; :func:`load_uci` reports them.

    The check reads and parses the whole archive (a few seconds), so its result is cached
    per process for as long as the file's identity, size and modification time stay the same.
    """
    return sorted(_checked(Path(path)))


def _checked(path: Path) -> Mapping[str, _Entry]:
    """Dataset name -> its checked entry, for the archive at ``path`` (see read_archive)."""
    stat = path.stat()
    entries = _checked_entries(str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if len(entries) != N_DATASETS:
        raise ArchiveError(path, f"it holds {len(entries)} dataset folders, not the "
                                 f"{N_DATASETS} of {ARCHIVE}")
    return entries


@functools.lru_cache(maxsize=8)
def _checked_entries(path: str, inode: int, size: int, mtime_ns: int) -> Mapping[str, _Entry]:
    # inode, size and mtime_ns are only the cache key: a file replaced or rewritten is
    # checked again. Exceptions are not cached, so a failed check is repeated on each call.
    try:
        with zipfile.ZipFile(path) as archive:
            folders = _dataset_folders(archive.namelist())
            entries = {name: _check_dataset(archive, folder, members)
                       for name, (folder, members) in folders.items()}
    except (ValueError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
        # BadZipFile covers a truncated file and a member failing its CRC-32.
        raise ArchiveError(Path(path), str(err)) from err
    return types.MappingProxyType(entries)


def _dataset_folders(members: list[str]) -> dict[str, tuple[str, dict[str, str]]]:
    """Dataset name -> (its folder in the zip, {file kind: member}).

    A folder is a dataset's if it holds one of the three fixed files or a features file named
    after it; other files (the stray top-level ``abalone_py.dat``, macOS metadata) are skipped.
    """
    folders: dict[str, dict[str, str]] = {}
    for member in members:
        parts = PurePosixPath(member).parts
        if member.endswith("/") or len(parts) < 2:
            continue  # a directory entry, or a file outside any folder
        if any(part.startswith((".", "__MACOSX")) for part in parts):
            continue
        *folder_parts, filename = parts
        if filename in (LABELS, FOLDS, VALIDATION):
            kind = filename
        elif (filename.endswith(_FEATURES_SUFFIX)
              and dashed(filename[:-len(_FEATURES_SUFFIX)]) == dashed(folder_parts[-1])):
            kind = _FEATURES
        else:
            continue
        folder = "/".join(folder_parts)
        files = folders.setdefault(folder, {})
        if kind in files:
            raise ValueError(f"folder {folder!r} holds two {kind} files: {files[kind]!r} and "
                             f"{member!r}")
        files[kind] = member
    by_name: dict[str, tuple[str, dict[str, str]]] = {}
    for folder, files in folders.items():
        name = dashed(PurePosixPath(folder).name)
        if name in by_name:
            raise ValueError(f"folders {by_name[name][0]!r} and {folder!r} are both named "
                             f"{name!r}")
        by_name[name] = (folder, files)
    return by_name


def _check_dataset(archive: zipfile.ZipFile, folder: str, files: dict[str, str]) -> _Entry:
    features_name = f"{PurePosixPath(folder).name}{_FEATURES_SUFFIX}"
    missing = [filename for kind, filename in ((_FEATURES, features_name), (LABELS, LABELS),
                                               (FOLDS, FOLDS), (VALIDATION, VALIDATION))
               if kind not in files]
    if missing:
        raise ValueError(f"folder {folder!r} lacks {', '.join(missing)}")
    features = _read_table(archive, files[_FEATURES])
    tables = {kind: _read_table(archive, files[kind]) for kind in (LABELS, FOLDS, VALIDATION)}
    for kind, table in tables.items():
        if len(table) != len(features):
            raise ValueError(f"{files[kind]} has {len(table)} rows but {files[_FEATURES]} has "
                             f"{len(features)}")
    n_classes = _check_labels(tables[LABELS], files[LABELS])
    for kind in (FOLDS, VALIDATION):
        if not np.isin(tables[kind], (0, 1)).all():
            raise ValueError(f"{files[kind]} holds values other than 0 and 1")
    test = tables[FOLDS][:, 0] == 1
    if test.all() or not test.any():
        raise ValueError(f"column 0 of {files[FOLDS]} marks {'every' if test.all() else 'no'} "
                         f"row as a test row")
    return _Entry(features=files[_FEATURES], labels=files[LABELS], folds=files[FOLDS],
                  validation=files[VALIDATION], n_rows=len(features),
                  n_features=features.shape[1], n_classes=n_classes)


def _check_labels(labels: np.ndarray, member: str) -> int:
    """K, the number of classes, after checking ``labels`` is one column of integers
    0..K-1 holding at least two distinct classes."""
    if labels.shape[1] != 1:
        raise ValueError(f"{member} has {labels.shape[1]} columns, not one label per row")
    values = labels[:, 0]
    if not (np.isfinite(values).all() and (values == np.round(values)).all()
            and values.min() >= 0):
        raise ValueError(f"{member} holds labels that are not integers 0, 1, 2, ...")
    if len(np.unique(values)) < 2:
        raise ValueError(f"{member} holds a single class")
    return int(values.max()) + 1


def _read_table(archive: zipfile.ZipFile, member: str) -> np.ndarray:
    """A member as a float64 ``(rows, columns)`` array: comma-separated numbers, every row
    with the same number of them. Blank lines are skipped and ``nan`` is read as a missing
    value; an empty field, text, or a row of another length is an error."""
    raw = archive.read(member)  # raises BadZipFile if the member fails its CRC-32
    try:
        # Only "nan" counts as missing, so an empty field (a truncated row) is an error.
        table = pd.read_csv(io.BytesIO(raw), header=None, dtype=np.float64,
                            keep_default_na=False, na_values=["nan", "NaN"])
    except ValueError as err:  # also pandas' ParserError, EmptyDataError, UnicodeDecodeError
        raise ValueError(f"{member} is not a table of comma-separated numbers "
                         f"({str(err).strip()})") from err
    return table.to_numpy()


# --- the datasets -----------------------------------------------------------------------------


def uci_names(*, data_dir: Path | str | None = None, download: bool = True) -> list[str]:
    """The names of the datasets in the archive, sorted (fetching and checking it if needed).

    ``data_dir`` is the folder of full-scale datasets (default :func:`ibtools.data.data_dir`);
    the archive lives in its ``uci/`` subfolder. With ``download=False`` a missing archive
    raises :class:`~ibtools.data.DataUnavailableError` instead of being downloaded.
    """
    _, entries = _verified_archive(_root(data_dir) / "uci", download)
    return sorted(entries)


def load_uci(name: str, *, standardize: bool = True, data_dir: Path | str | None = None,
             download: bool = True) -> Dataset:
    """One of the UCI datasets, e.g. ``"abalone"``, as a :class:`~ibtools.data.Dataset`.

    The split is the archive's own: rows with 0 in column 0 of ``folds_py.dat`` train
    (validation rows included), rows with 1 test. Features are float32, standardised with
    the training rows' mean and standard deviation when ``standardize`` (a feature constant
    on the training rows becomes 0 there and is shifted but not scaled on the test rows, so
    nothing is divided by 0); labels are int64; ``n_classes`` is K. The returned dataset is
    named ``"uci-" + name``, which ``load_uci`` also accepts. Underscores may stand for
    dashes. An unknown name raises ValueError suggesting the closest; ``data_dir`` and
    ``download`` are as in :func:`uci_names`.
    """
    directory = _root(data_dir) / "uci"
    path, entries = _verified_archive(directory, download)
    wanted = dashed(name)
    if wanted.startswith("uci-") and wanted not in entries:
        wanted = wanted[len("uci-"):]
    if wanted not in entries:
        closest = difflib.get_close_matches(wanted, sorted(entries), n=3)
        hint = f" Did you mean {' or '.join(map(repr, closest))}?" if closest else ""
        raise ValueError(f"unknown UCI dataset {name!r}.{hint} The {len(entries)} names are "
                         f"listed by ibtools.uci.uci_names().")
    entry = entries[wanted]
    x, y, test = _read_dataset(path, entry)
    if not np.isfinite(x).all():
        raise ValueError(f"UCI dataset {wanted!r} has {int((~np.isfinite(x)).sum())} missing or "
                         f"infinite feature values in {path}; its models would train on NaN")
    x_train, x_test, y_train, y_test = x[~test], x[test], y[~test], y[test]
    if standardize:
        x_train, x_test = _standardize_guarded(x_train, x_test)
    return _vector_dataset(
        f"uci-{wanted}", x_train, x_test, y_train, y_test, task="classification",
        n_classes=entry.n_classes, standardize=False,
        source=f"UCI dataset {wanted!r} (Fernandez-Delgado et al. 2014) as preprocessed by "
               f"Klambauer et al. (2017), read from the verified {path}; the archive's own "
               f"train/test split (column 0 of folds_py.dat)")


def _verified_archive(directory: Path, download: bool) -> tuple[Path, Mapping[str, _Entry]]:
    """The archive's path and checked entries, fetched if needed.

    A file that fails the check is deleted; with ``download`` it is downloaded once more and
    checked again, so a damaged file is replaced but a mirror serving a wrong one is not
    fetched over and over.
    """
    path = _fetch("uci", ARCHIVE, directory, download)
    try:
        return path, _checked(path)
    except ArchiveError as err:
        path.unlink(missing_ok=True)
        if not download:
            raise DataUnavailableError(_unavailable_message(
                "uci", directory, f"{path} is not a valid UCI archive ({err.problem}) and has "
                                  f"been removed; pass download=True to fetch it again")) from err
    path = _fetch("uci", ARCHIVE, directory, download)
    try:
        return path, _checked(path)
    except ArchiveError as err:
        path.unlink(missing_ok=True)
        raise DataUnavailableError(_unavailable_message(
            "uci", directory, f"the downloaded {ARCHIVE} failed its check and has been "
                              f"removed: {err.problem}")) from err


def _read_dataset(path: Path, entry: _Entry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (float64), labels (int64) and the test-row mask of one checked dataset."""
    try:
        with zipfile.ZipFile(path) as archive:
            x = _read_table(archive, entry.features)
            y = _read_table(archive, entry.labels)[:, 0].astype(np.int64)
            test = _read_table(archive, entry.folds)[:, 0] == 1
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise ArchiveError(path, str(err)) from err
    return x, y, test


def _standardize_guarded(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays rescaled by the training rows' mean and std, so no test data leaks in.

    A feature constant on the training rows (possible in small UCI tables) has std 0: it is
    centred on its value, which makes it exactly 0 on the training rows, and left unscaled.
    Constancy is tested exactly, because a computed std of such a column can be a rounding
    error away from 0 rather than 0.
    """
    mean, std = train.mean(axis=0), train.std(axis=0)
    constant = np.ptp(train, axis=0) == 0
    mean[constant] = train[0, constant]
    std[constant] = 1
    return (train - mean) / std, (test - mean) / std

