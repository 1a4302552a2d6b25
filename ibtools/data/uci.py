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
may use either spelling of its folder's name. The paper's tables spell two datasets
otherwise (:data:`ARCHIVE_SPELLINGS`); both spellings load.

**Where the collection is.** The zip or an extracted copy of it (a "collection"): by
default ``data_dir()/uci/``, holding ``data_py.zip`` (downloaded there when nothing is) or
the extracted dataset folders; or the zip or folder that ``uci_dir=`` or the environment
variable ``$IBTOOLS_UCI`` names. An extracted folder may hold the dataset folders directly,
or under ``data/`` (as in the zip), ``classification/`` or ``data/classification/`` (as in
Fagan & Iyengar's repository, github.com/francoisfagan/NN_ISGD, whose checkout can so be
used as it is).

**Verified per dataset.** No checksum is published, so every dataset is verified by parsing
its four files (:func:`read_collection`; cached per process while the files stay the same).
The intact ones load; a damaged or incomplete one is reported, with what is wrong, by
:func:`uci_problems` and by the error :func:`load_uci` raises for it, and costs nothing
else. Nothing the reader placed is moved, except a ``data_py.zip`` in ``data_dir()/uci/``
that is not a zip at all: it is moved aside to ``data_py.zip.corrupt`` (never deleted) and
downloaded again.

**Features.** Klambauer et al.'s ``_py.dat`` features are, for most datasets, already
standardised over all rows (train and test together) with the sample standard deviation
(divisor n - 1). Measured on the 116 datasets of the copy in NN_ISGD
(``data/classification/``): in 103 every column has mean 0 (to 1e-4) and sample standard
deviation 1 (to 1e-3), constant columns 0. Of the other 13, annealing is not standardised
(column means up to 132, standard deviations up to 690); monks-1, monks-2, monks-3 and spectf
have column means up to 0.34; audiology-std, hayes-roth, horse-colic, image-segmentation,
optical, soybean, spect and thyroid have means 0 but standard deviations off 1 by up to
0.28. :func:`load_uci`'s ``standardize=True`` rescales the features again with the training
rows' statistics only; ``standardize=False`` gives them as read, as Fagan & Iyengar's code
uses them.
"""

from __future__ import annotations

import difflib
import io
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from .records import Dataset, split as train_test_split, standardized, vector_dataset
from .store import (MIRRORS, DataUnavailableError, fetch, quarantine, root, set_aside,
                    unavailable_message)

ARCHIVE = "data_py.zip"
N_DATASETS = 121  # the number of dataset folders in the published archive
UCI_ENV = "IBTOOLS_UCI"  # names a zip or folder to read instead of data_dir()/uci

# The three files every dataset folder holds under these exact names; the fourth, the
# features, is named after the folder.
LABELS, FOLDS, VALIDATION = "labels_py.dat", "folds_py.dat", "validation_folds_py.dat"
_FEATURES_SUFFIX = "_py.dat"
_FEATURES = "features"  # the key for the features file in a folder's listing

# The paper's tables (and so ch03_ib_vs_eb.UCI_DATASETS) spell two datasets otherwise than
# the archive's folders: paper spelling -> archive spelling.
ARCHIVE_SPELLINGS = {"mini-boone": "miniboone", "molec-biol-splce": "molec-biol-splice"}

# The train/test splits load_uci offers: "archive" is Klambauer et al.'s column 0 of
# folds_py.dat; "authors" is Fagan & Iyengar's, from their code (NN_ISGD, data_loaders.py,
# function classification): sklearn's train_test_split(x, y, test_size=0.2,
# random_state=1) over all rows, features as read.
SPLITS = ("archive", "authors")
AUTHORS_TEST_SIZE = 0.2
AUTHORS_RANDOM_STATE = 1


def dashed(name: str) -> str:
    """``name`` in the form datasets are known by: lower case, with every run of characters
    other than letters and digits replaced by one dash (``oocytes_merluccius_nucleus_4d`` ->
    ``oocytes-merluccius-nucleus-4d``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def archive_name(name: str) -> str:
    """The archive's name for dataset ``name``: :func:`dashed`, without a leading ``uci-``
    (the name :func:`load_uci` gives its datasets), in the archive's spelling where the
    paper's differs (:data:`ARCHIVE_SPELLINGS`)."""
    wanted = dashed(name)
    wanted = wanted.removeprefix("uci-")
    return ARCHIVE_SPELLINGS.get(wanted, wanted)


# --- the collection: a zip or an extracted folder ---------------------------------------------


class ArchiveError(ValueError):
    """``path`` is not a UCI collection at all: not a zip, or no dataset folder in it."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path} is not a UCI collection: {problem}")


@dataclass(frozen=True)
class _Zip:
    path: Path

    def files(self) -> list[str]:
        with zipfile.ZipFile(self.path) as archive:
            return archive.namelist()

    def stamp(self, members: Iterable[str]) -> tuple:
        # A zip's members change only with the zip itself.
        stat = self.path.stat()
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def reader(self) -> "_ZipReader":
        return _ZipReader(self.path)


class _ZipReader:
    """``read(member) -> bytes`` over one open zip, as a context manager."""

    def __init__(self, path: Path):
        self._archive = zipfile.ZipFile(path)

    def __enter__(self) -> Callable[[str], bytes]:
        return self._archive.read  # raises BadZipFile if the member fails its CRC-32

    def __exit__(self, *exc) -> None:
        self._archive.close()


@dataclass(frozen=True)
class _Folder:
    path: Path
    depth: int = 4  # NAME/file, data/NAME/file, data/classification/NAME/file

    def files(self) -> list[str]:
        found = []
        for folder, subfolders, filenames in os.walk(self.path):
            relative = Path(folder).relative_to(self.path)
            # hidden folders (.git, .ipynb_checkpoints) hold no datasets
            subfolders[:] = ([] if len(relative.parts) >= self.depth - 1 else
                             [s for s in subfolders if not s.startswith((".", "__"))])
            found += [(relative / filename).as_posix() for filename in filenames]
        return found

    def stamp(self, members: Iterable[str]) -> tuple:
        stats = [(self.path / member).stat() for member in members]
        return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)

    def reader(self) -> "_FolderReader":
        return _FolderReader(self.path)


@dataclass(frozen=True)
class _FolderReader:
    path: Path

    def __enter__(self) -> Callable[[str], bytes]:
        return lambda member: (self.path / member).read_bytes()

    def __exit__(self, *exc) -> None:
        pass


@dataclass(frozen=True)
class _Entry:
    """Where one dataset's four files are in its collection, and what checking them found."""

    features: str
    labels: str
    folds: str
    validation: str
    n_rows: int
    n_features: int
    n_classes: int


@dataclass(frozen=True)
class UCICollection:
    """What :func:`read_collection` found in a zip or folder of UCI datasets.

    ``location`` is the zip or folder read; ``intact`` maps each verified dataset's name
    (dashed) to its files; ``problems`` maps each other dataset folder's name to what is
    wrong with it (a missing file, a file that does not parse, rows that disagree...);
    ``notes`` says what was found and set aside on the way (a damaged ``data_py.zip``).
    """

    location: Path
    intact: Mapping[str, _Entry] = field(repr=False)
    problems: Mapping[str, str]
    notes: tuple[str, ...] = ()
    source: _Zip | _Folder | None = field(default=None, repr=False, compare=False)

    @property
    def names(self) -> list[str]:
        """The intact datasets' names, sorted."""
        return sorted(self.intact)

    def summary(self) -> str:
        """One paragraph: how many datasets are intact, and what is wrong with each other."""
        found = len(self.intact) + len(self.problems)
        text = (f"{len(self.intact)} of the {found} UCI dataset folders in {self.location} "
                f"are intact (the published archive has {N_DATASETS})")
        if self.problems:
            text += "; damaged or incomplete: " + "; ".join(
                f"{name} ({problem})" for name, problem in sorted(self.problems.items()))
        return "\n".join([*self.notes, text])


def read_collection(location: Path | str) -> UCICollection:
    """Verify every dataset of the UCI collection at ``location``: a zip (the archive), or a
    folder holding the dataset folders directly or below (``data/``, ``classification/``,
    ``data/classification/``), or a folder holding ``data_py.zip``.

    Each dataset folder must hold the four files, each a table of comma-separated numbers
    with one row per example; labels must be integers 0..K-1 with at least two classes;
    fold files must hold only 0 and 1, and column 0 of ``folds_py.dat`` must mark at least
    one test and one training row. A dataset that fails goes to ``problems`` with the
    reason; one damaged file (a zip member failing its CRC-32 included) costs only its
    dataset. Missing values (``nan``) in the features are allowed here; :func:`load_uci`
    reports them. Nothing is moved or changed.

    Raises :class:`ArchiveError` (a ValueError) when ``location`` is a file that is not a
    zip, or holds no dataset folder; FileNotFoundError when it does not exist. A dataset's
    check is cached per process for as long as its files' identity, size and modification
    time stay the same.
    """
    location = Path(location).expanduser()
    if not location.exists():
        raise FileNotFoundError(f"{location} does not exist")
    source: _Zip | _Folder = _Folder(location) if location.is_dir() else _Zip(location)
    try:
        folders, problems = _dataset_folders(source.files())
        if isinstance(source, _Folder) and not folders and (location / ARCHIVE).is_file():
            source = _Zip(location / ARCHIVE)
            folders, problems = _dataset_folders(source.files())
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ArchiveError(source.path, f"it is not a zip file ({err})") from err
    if not folders and not problems:
        raise ArchiveError(source.path, "it holds no dataset folder (a folder NAME/ with "
                                        f"NAME{_FEATURES_SUFFIX}, {LABELS}, {FOLDS} and "
                                        f"{VALIDATION})")
    intact: dict[str, _Entry] = {}
    with source.reader() as read:
        for name, (folder, files) in folders.items():
            checked = _checked(source, read, folder, files)
            if isinstance(checked, _Entry):
                intact[name] = checked
            else:
                problems[name] = checked
    return UCICollection(location=source.path, intact=intact, problems=problems, source=source)


# (source, folder, files, stamp) -> _Entry or the problem found. Unbounded: one entry per
# dataset version read, a few hundred bytes each.
_CHECKED: dict[tuple, _Entry | str] = {}


def _checked(source: _Zip | _Folder, read: Callable[[str], bytes], folder: str,
             files: dict[str, str]) -> _Entry | str:
    key = (source, folder, tuple(sorted(files.items())), source.stamp(files.values()))
    if key not in _CHECKED:
        try:
            _CHECKED[key] = _check_dataset(read, folder, files)
        except (ValueError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError,
                OSError) as err:
            # BadZipFile: a member failing its CRC-32 or truncated inside the zip.
            _CHECKED[key] = str(err)
    return _CHECKED[key]


def _dataset_folders(members: list[str]
                     ) -> tuple[dict[str, tuple[str, dict[str, str]]], dict[str, str]]:
    """({dataset name: (its folder, {file kind: member})}, {dataset name: problem}).

    A folder is a dataset's if it holds one of the three fixed files or a features file named
    after it; other files (the stray top-level ``abalone_py.dat``, macOS metadata, the
    ``.csv`` copy in NN_ISGD's horse-colic) are skipped. A folder with two features files,
    or two folders of the same name, is a problem of that dataset.
    """
    folders: dict[str, dict[str, list[str]]] = {}
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
        folders.setdefault("/".join(folder_parts), {}).setdefault(kind, []).append(member)
    by_name: dict[str, tuple[str, dict[str, str]]] = {}
    problems: dict[str, str] = {}
    for folder, files in sorted(folders.items()):
        name = dashed(PurePosixPath(folder).name)
        twice = [members for members in files.values() if len(members) > 1]
        if name in by_name or name in problems:
            other = by_name.pop(name, None)
            problems[name] = (f"folders {other[0] if other else 'others'!r} and {folder!r} are "
                              f"both named {name!r}")
        elif twice:
            problems[name] = (f"folder {folder!r} holds two {_kind_name(twice[0][0])} files: "
                              f"{twice[0][0]!r} and {twice[0][1]!r}")
        else:
            by_name[name] = (folder, {kind: members[0] for kind, members in files.items()})
    return by_name, problems


def _kind_name(member: str) -> str:
    filename = PurePosixPath(member).name
    return filename if filename in (LABELS, FOLDS, VALIDATION) else _FEATURES


def _check_dataset(read: Callable[[str], bytes], folder: str, files: dict[str, str]) -> _Entry:
    features_name = f"{PurePosixPath(folder).name}{_FEATURES_SUFFIX}"
    missing = [filename for kind, filename in ((_FEATURES, features_name), (LABELS, LABELS),
                                               (FOLDS, FOLDS), (VALIDATION, VALIDATION))
               if kind not in files]
    if missing:
        raise ValueError(f"folder {folder!r} lacks {', '.join(missing)}")
    features = _read_table(read, files[_FEATURES])
    tables = {kind: _read_table(read, files[kind]) for kind in (LABELS, FOLDS, VALIDATION)}
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


def _read_table(read: Callable[[str], bytes], member: str) -> np.ndarray:
    """A file as a float64 ``(rows, columns)`` array: comma-separated numbers, every row
    with the same number of them. Blank lines are skipped and ``nan`` is read as a missing
    value; an empty file or field, text, or a row of another length is an error."""
    raw = read(member)
    try:
        # Only "nan" counts as missing, so an empty field (a truncated row) is an error.
        table = pd.read_csv(io.BytesIO(raw), header=None, dtype=np.float64,
                            keep_default_na=False, na_values=["nan", "NaN"])
    except ValueError as err:  # also pandas' ParserError, EmptyDataError, UnicodeDecodeError
        raise ValueError(f"{member} is not a table of comma-separated numbers "
                         f"({str(err).strip()})") from err
    return table.to_numpy()


# --- finding the collection -------------------------------------------------------------------


def uci_collection(*, data_dir: Path | str | None = None, uci_dir: Path | str | None = None,
                   download: bool = True) -> UCICollection:
    """The verified UCI collection (see :func:`read_collection`), found as the module's
    docstring says: ``uci_dir`` (else ``$IBTOOLS_UCI``) when given, a zip or folder read as
    it is, never moved, changed or downloaded into; else ``DATA_DIR/uci/`` (``data_dir``,
    default :func:`ibtools.data.data_dir`): its ``data_py.zip``, else its extracted dataset
    folders, else a download of ``data_py.zip`` there (when ``download``).

    A ``data_py.zip`` in ``DATA_DIR/uci/`` that is not a zip, or holds no dataset folder, is
    moved aside to ``data_py.zip.corrupt`` and fetched again; the collection's ``notes``
    say so. Raises :class:`~ibtools.data.DataUnavailableError` saying what was found and
    how to fix it when there is no collection to read.
    """
    given = uci_dir if uci_dir is not None else os.environ.get(UCI_ENV) or None
    if given is not None:
        return _given_collection(Path(given).expanduser(), "uci_dir" if uci_dir is not None
                                 else f"${UCI_ENV}")
    directory = root(data_dir) / "uci"
    archive = directory / ARCHIVE
    found = None
    if archive.is_file():
        try:
            return read_collection(archive)
        except ArchiveError as err:
            found = set_aside(archive, err.problem)
    if directory.is_dir() and _dataset_folders(_Folder(directory).files())[0]:
        collection = read_collection(directory)
        return UCICollection(collection.location, collection.intact, collection.problems,
                             notes=(found,) if found else (), source=collection.source)
    path = fetch("uci", ARCHIVE, directory, download, found=found)
    try:
        collection = read_collection(path)
    except ArchiveError as err:
        before = f"{found};\nthen " if found else ""
        raise DataUnavailableError(unavailable_message(
            "uci", directory, f"{before}the downloaded {path} is not the UCI archive "
                              f"({err.problem}); moved to {quarantine(path)}")) from err
    return UCICollection(collection.location, collection.intact, collection.problems,
                         notes=(found,) if found else (), source=collection.source)


def _given_collection(location: Path, named_by: str) -> UCICollection:
    fix = (f"To fix: point {named_by} at Klambauer et al.'s {ARCHIVE} or a folder of its "
           f"extracted dataset folders (NAME/ with NAME{_FEATURES_SUFFIX}, {LABELS}, {FOLDS}, "
           f"{VALIDATION}, directly or under data/ or classification/), or leave it unset to "
           f"use ibtools.data.data_dir()/uci/")
    try:
        return read_collection(location)
    except FileNotFoundError as err:
        raise DataUnavailableError(f"the UCI collection {location} named by {named_by} does "
                                   f"not exist.\n{fix}") from err
    except ArchiveError as err:
        raise DataUnavailableError(f"{err} (named by {named_by}; left as it is).\n"
                                   f"{fix}") from err


def uci_names(*, data_dir: Path | str | None = None, uci_dir: Path | str | None = None,
              download: bool = True) -> list[str]:
    """The names of the intact datasets of the collection, sorted; the arguments are
    :func:`uci_collection`'s. Damaged ones are left out: :func:`uci_problems` lists them."""
    return uci_collection(data_dir=data_dir, uci_dir=uci_dir, download=download).names


def uci_problems(*, data_dir: Path | str | None = None, uci_dir: Path | str | None = None,
                 download: bool = True) -> dict[str, str]:
    """{name: what is wrong} for each dataset folder of the collection that failed its
    check; the arguments are :func:`uci_collection`'s."""
    collection = uci_collection(data_dir=data_dir, uci_dir=uci_dir, download=download)
    return dict(sorted(collection.problems.items()))


# --- the datasets -----------------------------------------------------------------------------


def load_uci(name: str, *, split: str = "archive", standardize: bool = True,
             data_dir: Path | str | None = None, uci_dir: Path | str | None = None,
             download: bool = True) -> Dataset:
    """One of the UCI datasets, e.g. ``"abalone"``, as a :class:`~ibtools.data.Dataset`:
    float32 features ``(N, D)``, int64 labels ``(N,)``, ``n_classes`` K (the largest label
    plus one), named ``"uci-" + NAME``.

    ``name`` may be dashed or use underscores, carry the ``uci-`` prefix, or use the paper's
    spelling (``mini-boone``, ``molec-biol-splce``; :data:`ARCHIVE_SPELLINGS`). ``split``:

    - ``"archive"`` (default): Klambauer et al.'s own split, rows with 0 in column 0 of
      ``folds_py.dat`` train (validation rows included), rows with 1 test, in file order;
    - ``"authors"``: Fagan & Iyengar's, as their code makes it (NN_ISGD, data_loaders.py,
      ``classification``): scikit-learn's ``train_test_split(x, y, test_size=0.2,
      random_state=1)`` over all rows, ignoring the fold files; 20% of the rows (rounded
      up) test, in that permutation's order.

    ``standardize`` rescales the features with the training rows' mean and standard
    deviation (a feature constant on the training rows becomes 0 there and is shifted but
    not scaled on the test rows, so nothing is divided by 0). The files' features are mostly
    standardised already, over all rows (see the module's docstring), and the authors' code
    uses them as read: ``split="authors", standardize=False`` is their data exactly.
    ``data_dir``, ``uci_dir`` and ``download`` are :func:`uci_collection`'s.

    Raises ValueError for an unknown ``split``, an unknown name (suggesting the closest) or
    missing feature values; :class:`~ibtools.data.DataUnavailableError` when there is no
    collection or the dataset is damaged there (naming the dataset and what is wrong).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown UCI split {split!r}: use 'archive' (Klambauer et al.'s "
                         f"column 0 of {FOLDS}) or 'authors' (Fagan & Iyengar's 80/20 "
                         f"train_test_split with random_state=1)")
    collection = uci_collection(data_dir=data_dir, uci_dir=uci_dir, download=download)
    wanted = archive_name(name)
    if wanted in collection.problems:
        good_copy = f"a good copy of {ARCHIVE} ({', '.join(_archive_mirrors())})"
        fix = (f"move {collection.location} aside and put {good_copy} in its place"
               if isinstance(collection.source, _Zip) else
               f"replace the dataset folder's four files from {good_copy}")
        raise DataUnavailableError(
            f"UCI dataset {wanted!r} in {collection.location} is damaged or incomplete: "
            f"{collection.problems[wanted]}. The collection's {len(collection.intact)} intact "
            f"datasets still load (ibtools.data.uci.uci_names()).\nTo fix: {fix}, or use "
            f"another dataset")
    if wanted not in collection.intact:
        closest = difflib.get_close_matches(wanted, collection.names, n=3)
        hint = f" Did you mean {' or '.join(map(repr, closest))}?" if closest else ""
        raise ValueError(f"unknown UCI dataset {name!r}: no folder of that name in "
                         f"{collection.location}.{hint} Its {len(collection.intact)} intact "
                         f"datasets are listed by ibtools.data.uci.uci_names().")
    entry = collection.intact[wanted]
    with collection.source.reader() as read:
        x = _read_table(read, entry.features)
        y = _read_table(read, entry.labels)[:, 0].astype(np.int64)
        test = _read_table(read, entry.folds)[:, 0] == 1
    if not np.isfinite(x).all():
        raise ValueError(f"UCI dataset {wanted!r} has {int((~np.isfinite(x)).sum())} missing or "
                         f"infinite feature values in {collection.location}; its models would "
                         f"train on NaN")
    if split == "archive":
        x_train, x_test, y_train, y_test = x[~test], x[test], y[~test], y[test]
        how = "the archive's own train/test split (column 0 of folds_py.dat)"
    else:
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, AUTHORS_RANDOM_STATE, test_size=AUTHORS_TEST_SIZE, stratify=False)
        how = ("Fagan & Iyengar's split (train_test_split, test_size=0.2, random_state=1, "
               "over all rows)")
    if standardize:
        x_train, x_test = standardized(x_train, x_test)
    return vector_dataset(
        f"uci-{wanted}", x_train, x_test, y_train, y_test, task="classification",
        n_classes=entry.n_classes, standardize=False,
        source=f"UCI dataset {wanted!r} (Fernandez-Delgado et al. 2014) as preprocessed by "
               f"Klambauer et al. (2017), read from the verified {collection.location}; {how}"
               f"{'; standardised with training statistics' if standardize else ''}")


def _archive_mirrors() -> list[str]:
    return [mirror + ARCHIVE for mirror in MIRRORS["uci"]]
