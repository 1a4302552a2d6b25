"""Polyphonic music as piano rolls: the four datasets of Boulanger-Lewandowski et al. (2012)
that Fagan & Iyengar's RNNs predict (appendix D.1-D.2), and an embedded stand-in.

A piece is a piano roll: ``T`` time steps by :data:`NOTES` = 88 piano keys (MIDI 21..108), 1
where a note sounds. The task is to predict each step's chord from the steps before it.

- **full scale** (the paper's data): ``jsb-chorales``, ``musedata``, ``nottingham`` and
  ``piano-midi``, the pickles published at http://www-etud.iro.umontreal.ca/~boulanni/icml2012,
  downloaded once into :func:`ibtools.data.data_dir`. No checksums are published for them, so
  every read parses the whole file; a file that fails is moved aside to ``NAME.corrupt``
  (never deleted, never used) and downloaded again.
- **embedded** (reduced scale, offline): ``bach-chorales``, the Bach chorales of music21's
  corpus as quarter-note piano rolls, like JSB Chorales. Parsing them takes music21 20 to 30
  seconds, so :func:`build_bach_chorales` did it once and its output ships in
  ``ibtools/data_files/bach_chorales.npz``; loading needs neither music21 nor a network.
  ``python -m ibtools.data.music`` rebuilds that file.

``load_music(name, seed=...)`` returns an :class:`ibtools.data.SequenceDataset` of float32
``(T_i, 88)`` tensors.
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import math
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..files import atomic_file
from .records import SequenceDataset
from .store import (CHECKSUMS, DataUnavailableError, fetch, quarantine, root, set_aside,
                    unavailable_message)

NOTES = 88  # piano keys
LOWEST_MIDI = 21  # A0, the lowest piano key; C8 = 108 is the highest
HIGHEST_MIDI = LOWEST_MIDI + NOTES - 1

MUSIC_DATASETS: dict[str, str] = {
    "jsb-chorales": "JSB Chorales, 229 train / 77 test Bach chorales of ~60 quarter-note steps "
                    "(download)",
    "musedata": "MuseData classical scores, 524 train / 124 test pieces of ~470 steps (download)",
    "nottingham": "Nottingham folk tunes, 694 train / 170 test pieces of ~250 steps (download)",
    "piano-midi": "Piano-midi.de classical piano, 87 train / 25 test pieces of ~870 steps "
                  "(download)",
    "bach-chorales": "350 Bach chorales from music21's corpus at quarter-note steps, "
                     "80/20 split (embedded)",
}

# name -> the dataset's name in the paper; the file each needs is in ibtools.data.CHECKSUMS
FULL_SCALE = {
    "jsb-chorales": "JSB Chorales",
    "musedata": "MuseData",
    "nottingham": "Nottingham",
    "piano-midi": "Piano-midi.de",
}
SPLITS = ("train", "valid", "test")

BACH_CHORALES_FILE = Path(__file__).resolve().parents[1] / "data_files" / "bach_chorales.npz"
BACH_TEST_FRACTION = 0.2


def load_music(name: str, *, seed: int = 0, data_dir: Path | str | None = None,
               download: bool = True) -> SequenceDataset:
    """Load music dataset ``name`` (one of :data:`MUSIC_DATASETS`) as piano rolls.

    The full-scale datasets keep Boulanger-Lewandowski's own split: his pickles hold
    'train', 'valid' and 'test' lists, and the paper's Table 3 counts (JSB Chorales 229 / 77,
    MuseData 524 / 124, Nottingham 694 / 170, Piano-midi.de 87 / 25) are exactly the 'train'
    and 'test' lists, so those are the train and test sets here and 'valid' is left out.
    (The paper's text speaks of a random 80%-20% split, but 229 / 77 is neither 80/20 nor
    random: it is the published split.)
    ``data_dir`` and ``download`` concern these only: where the pickles live (default
    :func:`ibtools.data.data_dir`) and whether a missing or corrupt one may be fetched. A
    pickle that fails to parse is moved aside to ``NAME.corrupt`` (see
    :func:`ibtools.data.store.quarantine`) and :class:`~ibtools.data.DataUnavailableError`
    says what was wrong with it.

    ``bach-chorales`` has no published split, so its pieces are split at random, 80% to train
    and 20% to test, as the paper's text describes; ``seed`` fixes that split and nothing
    else.
    """
    if name == "bach-chorales":
        return _load_bach_chorales(seed)
    if name in FULL_SCALE:
        return _load_full_scale(name, root(data_dir) / name, download)
    closest = difflib.get_close_matches(name, MUSIC_DATASETS, n=1)
    hint = f" Did you mean {closest[0]!r}?" if closest else ""
    raise ValueError(f"unknown music dataset {name!r}.{hint} "
                     f"Known music datasets: {', '.join(MUSIC_DATASETS)}")


def _tensors(rolls) -> list[torch.Tensor]:
    return [torch.from_numpy(roll.astype(np.float32)) for roll in rolls]


# --- the full-scale pickles -------------------------------------------------------------------


def _load_full_scale(name: str, directory: Path, download: bool) -> SequenceDataset:
    (filename,) = CHECKSUMS[name]
    path = directory / filename
    placed = path.is_file()
    path = fetch(name, filename, directory, download)
    try:
        splits = read_piano_rolls(path)
    except _CorruptPianoRolls as err:
        if not placed:  # just downloaded: fetching it again would give the same file
            raise _mirror_damaged(name, directory, path, err, "") from err
        # A file on disk may be a partial copy from outside ibtools, or one a mirror once
        # served damaged: it is set aside and downloaded once more.
        found = set_aside(path, f"is not a piano-roll pickle ({err.reason})")
        path = fetch(name, filename, directory, download, found=found)
        try:
            splits = read_piano_rolls(path)
        except _CorruptPianoRolls as again:
            raise _mirror_damaged(name, directory, path, again, f"{found};\nthen ") from again
    return SequenceDataset(
        name=name, train=_tensors(splits["train"]), test=_tensors(splits["test"]),
        source=f"{FULL_SCALE[name]} piano rolls of Boulanger-Lewandowski et al. (2012), "
               f"their own train / test lists ({len(splits['train'])} / "
               f"{len(splits['test'])} pieces; the {len(splits['valid'])} 'valid' pieces "
               f"unused), read from {path}")


def _mirror_damaged(name: str, directory: Path, path: Path, err: "_CorruptPianoRolls",
                    before: str) -> DataUnavailableError:
    """The error for a pickle that failed straight after its download, which is set aside."""
    return DataUnavailableError(unavailable_message(
        name, directory, f"{before}the downloaded {path} is not a piano-roll pickle "
        f"({err.reason}); moved to {quarantine(path)}. The mirror serves a damaged file: try "
        f"again later or place a good copy by hand"))


try:  # numpy >= 2 keeps the pickled constructors in numpy._core, numpy 1 in numpy.core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core import multiarray as _multiarray


class _PianoRollUnpickler(pickle.Unpickler):
    """Unpickling runs whatever code the file names, so a pickle is only ever read from the
    paper's own source. As a second guard this unpickler lets a file name only what the
    piano-roll pickles need: numpy's constructors for scalars and arrays (the notes are
    numpy numbers, pickled by Python 2 under ``numpy.core``). Anything else is refused
    before it runs."""

    ALLOWED = {
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
        **{(module, name): getattr(_multiarray, name)
           for module in ("numpy.core.multiarray", "numpy._core.multiarray")
           for name in ("scalar", "_reconstruct")},
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which no piano-roll "
                                         f"pickle does; it was not run") from None


def read_piano_rolls(path: Path | str) -> dict[str, list[np.ndarray]]:
    """Read one of Boulanger-Lewandowski's piano-roll pickles.

    The file (a Python 2 pickle) holds a dict with 'train', 'valid' and 'test' keys, each a
    list of pieces; a piece is a list of time steps, and a step the MIDI note numbers
    (21..108) sounding then, possibly none. Returns the same dict with each piece a bool
    array ``(T_i, 88)``, column ``n - 21`` true where note ``n`` sounds.

    Raises ValueError when the file is not in that format (not a pickle, truncated, other
    keys, a note out of range...): it is then corrupt, to be set aside and downloaded
    again. The unpickler accepts only numpy's scalar and array constructors (see
    :class:`_PianoRollUnpickler`), so a file naming anything else is refused unrun.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            # latin1: Python 2 wrote its str (the keys, numpy's raw scalar bytes) undecoded.
            contents = _PianoRollUnpickler(file, encoding="latin1").load()
    except Exception as err:  # any failure to unpickle means a damaged or foreign file
        raise _CorruptPianoRolls(path, f"it does not unpickle ({type(err).__name__}: "
                                       f"{err})") from err
    if not isinstance(contents, dict) or set(contents) != set(SPLITS):
        found = (f"a dict with keys {sorted(map(repr, contents))}"
                 if isinstance(contents, dict) else f"a {type(contents).__name__}")
        raise _CorruptPianoRolls(path, f"it holds {found}, not a dict with keys "
                                       f"{list(SPLITS)}")
    splits = {}
    for split in SPLITS:
        pieces = contents[split]
        if not isinstance(pieces, list):
            raise _CorruptPianoRolls(path, f"its {split!r} entry is a "
                                           f"{type(pieces).__name__}, not a list of pieces")
        splits[split] = [_roll_from_steps(path, f"{split} piece {i}", piece)
                         for i, piece in enumerate(pieces)]
    return splits


_NUMBER = (int, float, np.integer, np.floating)  # the notes are ints or numpy numbers


def _roll_from_steps(path: Path, where: str, piece) -> np.ndarray:
    if not isinstance(piece, (list, tuple)):
        raise _CorruptPianoRolls(path, f"{where} is a {type(piece).__name__}, not a list of "
                                       f"time steps")
    for t, step in enumerate(piece):
        if not (isinstance(step, (list, tuple))
                or isinstance(step, np.ndarray) and step.ndim == 1):
            raise _CorruptPianoRolls(path, f"{where} step {t} is {step!r}, not a list of "
                                           f"MIDI notes")
    notes = list(itertools.chain.from_iterable(piece))
    if not all(isinstance(note, _NUMBER) for note in notes):
        odd = next(note for note in notes if not isinstance(note, _NUMBER))
        raise _CorruptPianoRolls(path, f"{where} has the note {odd!r}, not a number")
    values = np.array(notes, dtype=np.float64)
    bad = (values != np.round(values)) | (values < LOWEST_MIDI) | (values > HIGHEST_MIDI)
    if bad.any():
        raise _CorruptPianoRolls(path, f"{where} has the note {values[bad][0]:g}, not the MIDI "
                                       f"number of a piano key ({LOWEST_MIDI}..{HIGHEST_MIDI})")
    roll = np.zeros((len(piece), NOTES), dtype=bool)
    steps = np.repeat(np.arange(len(piece)), [len(step) for step in piece])
    roll[steps, values.astype(np.int64) - LOWEST_MIDI] = True
    return roll


class _CorruptPianoRolls(ValueError):
    """A file that is not a piano-roll pickle; ``reason`` says how, without the advice."""

    def __init__(self, path: Path, reason: str):
        self.reason = reason
        super().__init__(f"{path} is not a piano-roll pickle of Boulanger-Lewandowski et al.: "
                         f"{reason}. The file is corrupt or truncated")


# --- the embedded Bach chorales ---------------------------------------------------------------


def _load_bach_chorales(seed: int) -> SequenceDataset:
    paths, rolls, version = read_bach_chorales()
    order = np.random.default_rng(seed).permutation(len(rolls))
    n_test = round(BACH_TEST_FRACTION * len(rolls))
    test, train = order[:n_test], order[n_test:]
    return SequenceDataset(
        name="bach-chorales", train=_tensors(rolls[i] for i in train),
        test=_tensors(rolls[i] for i in test),
        source=f"{len(rolls)} Bach chorales (Riemenschneider's collection) from the corpus of "
               f"music21 {version}, the notes of all parts sounding at each quarter note, "
               f"embedded as ibtools/data_files/{BACH_CHORALES_FILE.name}; "
               f"{len(train)} / {len(test)} pieces split at random with seed {seed}")


def read_bach_chorales(path: Path | str = BACH_CHORALES_FILE
                       ) -> tuple[list[str], list[np.ndarray], str]:
    """The embedded chorales as (music21 corpus paths, bool rolls ``(T_i, 88)``, the music21
    version that parsed them), in the order :func:`build_bach_chorales` made them."""
    path = Path(path)
    rebuild = "rebuild it with `python -m ibtools.data.music` (needs music21)"
    try:
        with np.load(path, allow_pickle=False) as stored:
            packed, lengths = stored["rolls"], stored["lengths"]
            paths, version = stored["paths"].tolist(), str(stored["music21_version"])
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise DataUnavailableError(f"the embedded Bach chorales in {path} cannot be read "
                                   f"({err}); {rebuild}") from err
    if (packed.ndim != 2 or packed.shape[1] != math.ceil(NOTES / 8) or len(lengths) != len(paths)
            or (lengths < 0).any() or lengths.sum() != len(packed)):
        raise DataUnavailableError(f"the embedded Bach chorales in {path} are inconsistent "
                                   f"(rolls {packed.shape}, {len(lengths)} lengths summing to "
                                   f"{lengths.sum()}, {len(paths)} names); {rebuild}")
    steps = np.unpackbits(packed, axis=1, count=NOTES).astype(bool)
    return paths, np.split(steps, np.cumsum(lengths)[:-1]), version


def bach_chorale_files(limit: int | None = None) -> list[str]:
    """The music21 corpus files of the Bach chorales, in Riemenschneider's order.

    music21 lists Riemenschneider's 371 chorales; 21 of them repeat an earlier harmonization
    (the same file) and are kept once. Each name is resolved to exactly one corpus file:
    music21's own lookup matches by prefix (``bach/bwv245.3`` also finds ``bwv245.37``), so
    the file whose name is exactly the chorale's wins, MusicXML before Humdrum.
    """
    from music21 import corpus
    from music21.corpus import chorales

    preference = {".mxl": 0, ".xml": 1, ".musicxml": 2, ".krn": 3}
    files: list[str] = []
    for name in chorales.Iterator(returnType="filename"):
        found = corpus.getWork(name)
        candidates = found if isinstance(found, list) else [found]
        if not candidates:
            raise ValueError(f"music21's corpus has no file for chorale {name!r}")
        exact = [p for p in candidates if p.stem == Path(name).name] or candidates
        best = min(exact, key=lambda p: preference.get(p.suffix, len(preference)))
        relative = f"{Path(name).parent}/{best.name}"
        if relative not in files:
            files.append(relative)
        if limit is not None and len(files) == limit:
            break
    return files


def build_bach_chorales(limit: int | None = None, *, progress: bool = True) -> list[np.ndarray]:
    """Parse the Bach chorales with music21 into bool piano rolls ``(T_i, 88)``, one time
    step per quarter note; ``limit`` keeps the first ``limit`` of :func:`bach_chorale_files`.

    Step ``t`` holds every note, of any part, that sounds at ``t`` quarter notes from the
    start: a note from ``a`` to ``b`` fills the steps ``a <= t < b``, so tied notes and held
    notes fill every step they span and shorter notes between the beats are not seen (the
    quarter-note grid of JSB Chorales). 0.06 to 0.08 s a chorale, 20 to 30 s for all of them.
    """
    return [_chorale_roll(file) for file in
            tqdm(bach_chorale_files(limit), desc="Bach chorales", unit="chorale",
                 disable=not progress)]


def _chorale_roll(corpus_file: str) -> np.ndarray:
    from music21 import common, converter

    score = converter.parse(Path(common.getCorpusFilePath()) / corpus_file, forceSource=True)
    return score_roll(score, name=corpus_file)


def score_roll(score, name: str = "the score") -> np.ndarray:
    """A music21 stream as a bool piano roll ``(T, 88)`` at quarter-note steps (see
    :func:`build_bach_chorales`), ``T`` the stream's length in quarter notes rounded up."""
    from music21 import harmony

    score.toSoundingPitch(inPlace=True)  # applies ottava lines and transposing instruments
    roll = np.zeros((math.ceil(score.highestTime), NOTES), dtype=bool)
    for element in score.flatten().notes:
        if isinstance(element, harmony.ChordSymbol):  # chord names, not sounding notes
            continue
        start = math.ceil(element.offset)
        stop = math.ceil(element.offset + element.quarterLength)
        for pitch in element.pitches:
            if not LOWEST_MIDI <= pitch.midi <= HIGHEST_MIDI:
                raise ValueError(f"{name} has {pitch.nameWithOctave} (MIDI {pitch.midi}) at "
                                 f"offset {element.offset}, off the piano's 88 keys")
            roll[start:stop, pitch.midi - LOWEST_MIDI] = True
    return roll


def write_bach_chorales(path: Path | str = BACH_CHORALES_FILE, limit: int | None = None,
                        *, progress: bool = True) -> Path:
    """Rebuild the embedded file (by default the one :func:`load_music` reads) from music21's
    corpus: all rolls stacked and packed 8 notes to a byte, their lengths and corpus files,
    and the music21 version, compressed."""
    import music21

    path = Path(path)
    files = bach_chorale_files(limit)
    rolls = build_bach_chorales(limit, progress=progress)
    with atomic_file(path, "wb") as file:
        np.savez_compressed(file, rolls=np.packbits(np.concatenate(rolls), axis=1),
                            lengths=np.array([len(roll) for roll in rolls], dtype=np.int32),
                            paths=np.array(files), music21_version=np.array(music21.__version__))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ibtools.data.music",
        description="Rebuild the embedded Bach chorale piano rolls from music21's corpus.")
    parser.add_argument("--out", type=Path, default=BACH_CHORALES_FILE,
                        help=f"where to write them (default: {BACH_CHORALES_FILE})")
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first LIMIT chorales (default: all)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path = write_bach_chorales(args.out, args.limit)
    files, rolls, version = read_bach_chorales(path)
    print(f"{path}: {len(rolls)} chorales, {sum(map(len, rolls))} quarter-note steps, "
          f"{path.stat().st_size:,} bytes; parsed with music21 {version} in "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
