"""ibtools.data.music: the piano-roll pickles read from tiny files written here in their format and
"downloaded" through file:// URLs, and the embedded Bach chorales checked against music21."""

import pickle
import struct

import numpy as np
import pytest
import torch

from ibtools import data
from ibtools.data import music, store

# Three pieces in the pickles' layout: steps as tuples or lists of MIDI numbers, silent steps
# as (), the lowest and highest piano keys, a note repeated within a step.
PIECES = {
    "train": [[(60, 64, 67), (), (21, 108)], [[62]]],
    "valid": [[(55, 59)]],
    "test": [[(72, 72), (48,), (48, 52, 55, 60)]],
}


def expected_roll(piece) -> np.ndarray:
    roll = np.zeros((len(piece), 88), dtype=bool)
    for t, step in enumerate(piece):
        for note in step:
            roll[t, note - 21] = True
    return roll


def assert_rolls_equal(rolls, pieces):
    assert len(rolls) == len(pieces)
    for roll, piece in zip(rolls, pieces):
        assert np.array_equal(np.asarray(roll, dtype=bool), expected_roll(piece))


# --- read_piano_rolls -------------------------------------------------------------------------


def test_read_piano_rolls_turns_note_lists_into_rolls(tmp_path):
    path = tmp_path / "rolls.pickle"
    path.write_bytes(pickle.dumps(PIECES, protocol=2))
    rolls = music.read_piano_rolls(path)
    assert set(rolls) == {"train", "valid", "test"}
    for split, pieces in PIECES.items():
        assert_rolls_equal(rolls[split], pieces)
    assert rolls["train"][0].shape == (3, music.NOTES)
    assert rolls["train"][0][2].nonzero()[0].tolist() == [0, 87]  # A0 and C8


class Python2Pickler(pickle._Pickler):
    """Pickles as Python 2 with numpy 1 did, as in the published files: byte strings as
    Python 2 str (read back as latin-1 text) and numpy's scalar constructor under
    ``numpy.core.multiarray``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", None) == "scalar":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def test_read_piano_rolls_reads_python2_pickles_of_numpy_numbers(tmp_path):
    as_numpy = {split.encode(): [[tuple(np.float64(n) for n in step) for step in piece]
                                 for piece in pieces] for split, pieces in PIECES.items()}
    as_numpy[b"test"][0][2] = np.array([48, 52, 55, 60], dtype=np.int64)  # a step as an array
    path = tmp_path / "python2.pickle"
    with open(path, "wb") as file:
        Python2Pickler(file, protocol=2).dump(as_numpy)
    assert b"numpy.core.multiarray\nscalar" in path.read_bytes()
    rolls = music.read_piano_rolls(path)
    for split, pieces in PIECES.items():
        assert_rolls_equal(rolls[split], pieces)


class OpensAFile:
    """Unpickled without restriction, this would create the file ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def damaged_pickle(kind: str, tmp_path) -> bytes:
    good = pickle.dumps(PIECES, protocol=2)
    with_notes = lambda note: pickle.dumps({**PIECES, "test": [[(60,), (note,)]]}, protocol=2)
    return {
        "not-a-pickle": b"<html>404 Not Found</html>",
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "missing-key": pickle.dumps({"train": PIECES["train"], "test": PIECES["test"]}),
        "extra-key": pickle.dumps({**PIECES, "extra": []}),
        "not-a-dict": pickle.dumps([PIECES["train"]]),
        "split-not-a-list": pickle.dumps({**PIECES, "valid": "abc"}),
        "step-not-a-list": pickle.dumps({**PIECES, "train": [[60, 64]]}),
        "note-too-high": with_notes(109),
        "note-too-low": with_notes(20),
        "fractional-note": with_notes(60.5),
        "note-not-a-number": with_notes("60"),
        "foreign-code": pickle.dumps({**PIECES, "valid": [OpensAFile(tmp_path / "marker")]}),
    }[kind]


@pytest.mark.parametrize("kind", ["not-a-pickle", "truncated", "empty", "missing-key",
                                  "extra-key", "not-a-dict", "split-not-a-list",
                                  "step-not-a-list", "note-too-high", "note-too-low",
                                  "fractional-note", "note-not-a-number", "foreign-code"])
def test_read_piano_rolls_rejects_damaged_files(tmp_path, kind):
    path = tmp_path / "damaged.pickle"
    path.write_bytes(damaged_pickle(kind, tmp_path))
    with pytest.raises(ValueError, match="not a piano-roll pickle.*corrupt or truncated"):
        music.read_piano_rolls(path)
    assert not (tmp_path / "marker").exists()  # the foreign code never ran


# --- the full-scale datasets, "downloaded" from a local mirror --------------------------------


@pytest.fixture
def jsb_mirror(tmp_path, monkeypatch):
    """A local mirror holding a tiny "JSB Chorales.pickle"; returns the file's path there.
    Downloads are counted in the returned list's length."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    served = mirror / "JSB Chorales.pickle"
    served.write_bytes(pickle.dumps(PIECES, protocol=2))
    monkeypatch.setitem(data.MIRRORS, "jsb-chorales", (mirror.as_uri() + "/",))
    downloads = []
    real_download = store.download_file

    def counting_download(url, destination, checksum):
        downloads.append(url)
        return real_download(url, destination, checksum)

    monkeypatch.setattr(store, "download_file", counting_download)
    return served, downloads


def test_every_music_dataset_is_known_to_the_downloader():
    assert set(music.MUSIC_DATASETS) == {"jsb-chorales", "musedata", "nottingham", "piano-midi",
                                         "bach-chorales"}
    for name in set(music.MUSIC_DATASETS) - {"bach-chorales"}:
        assert len(data.CHECKSUMS[name]) == 1 and data.MIRRORS[name]
        assert '"bach-chorales"' in data.EMBEDDED_ALTERNATIVE[name]


def test_jsb_chorales_is_downloaded_and_split_as_published(jsb_mirror, tmp_path):
    served, downloads = jsb_mirror
    dataset = music.load_music("jsb-chorales", data_dir=tmp_path / "data")
    assert dataset.name == "jsb-chorales" and dataset.n_features == 88
    assert_rolls_equal(dataset.train, PIECES["train"])  # the pickle's train list, in order
    assert_rolls_equal(dataset.test, PIECES["test"])  # its test list; 'valid' is left out
    assert all(piece.dtype == torch.float32 for piece in dataset.train + dataset.test)
    assert "JSB Chorales" in dataset.source and "valid" in dataset.source
    stored = tmp_path / "data" / "jsb-chorales"
    assert [p.name for p in stored.iterdir()] == [served.name]  # no partial files left
    assert stored.joinpath(served.name).read_bytes() == served.read_bytes()
    # the second load reads the file on disk without downloading
    offline = music.load_music("jsb-chorales", data_dir=tmp_path / "data", download=False)
    assert all(torch.equal(a, b) for a, b in zip(offline.train, dataset.train))
    assert len(downloads) == 1


def test_corrupt_pickle_in_place_is_quarantined_and_downloaded_again(jsb_mirror, tmp_path):
    served, downloads = jsb_mirror
    stored = tmp_path / "data" / "jsb-chorales" / served.name
    stored.parent.mkdir(parents=True)
    partial = served.read_bytes()[:-7]
    stored.write_bytes(partial)  # a partial copy
    dataset = music.load_music("jsb-chorales", data_dir=tmp_path / "data")
    assert_rolls_equal(dataset.test, PIECES["test"])
    assert stored.read_bytes() == served.read_bytes() and len(downloads) == 1
    assert stored.with_name(stored.name + ".corrupt").read_bytes() == partial


def test_corrupt_pickle_without_download_is_quarantined_and_reported(jsb_mirror, tmp_path):
    served, downloads = jsb_mirror
    stored = tmp_path / "data" / "jsb-chorales" / served.name
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"garbage")
    with pytest.raises(data.DataUnavailableError) as error:
        music.load_music("jsb-chorales", data_dir=tmp_path / "data", download=False)
    message = str(error.value)
    assert f"{stored} was on disk but is not a piano-roll pickle (it does not unpickle" in message
    assert f"moved to {stored}.corrupt; download=False" in message and "To fix" in message
    assert not stored.exists() and downloads == []
    assert stored.with_name(stored.name + ".corrupt").read_bytes() == b"garbage"


def test_a_bad_pickle_by_hand_then_a_damaged_download_says_both(jsb_mirror, tmp_path):
    served, downloads = jsb_mirror
    served.write_bytes(pickle.dumps({"train": [], "test": []}))
    stored = tmp_path / "data" / "jsb-chorales" / served.name
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"garbage")
    with pytest.raises(data.DataUnavailableError,
                       match="(?s)was on disk but is not a piano-roll pickle.*corrupt;\nthen the "
                             "downloaded .* is not a piano-roll pickle.*keys.*corrupt[.]1"):
        music.load_music("jsb-chorales", data_dir=tmp_path / "data")
    assert stored.with_name(stored.name + ".corrupt").read_bytes() == b"garbage"
    assert stored.with_name(stored.name + ".corrupt.1").read_bytes() == served.read_bytes()
    assert len(downloads) == 1


def test_a_mirror_serving_a_damaged_pickle_is_reported_and_set_aside(jsb_mirror, tmp_path):
    served, downloads = jsb_mirror
    served.write_bytes(pickle.dumps({"train": [], "test": []}))
    with pytest.raises(data.DataUnavailableError,
                       match="(?s)downloaded .* is not a piano-roll pickle.*keys.*bach-chorales"):
        music.load_music("jsb-chorales", data_dir=tmp_path / "data")
    stored = tmp_path / "data" / "jsb-chorales" / served.name
    assert not stored.exists()  # never used
    assert stored.with_name(stored.name + ".corrupt").read_bytes() == served.read_bytes()
    assert len(downloads) == 1  # a fresh download that fails is not fetched again


def test_missing_pickle_without_download_names_the_file_and_the_embedded_alternative(tmp_path):
    with pytest.raises(data.DataUnavailableError) as error:
        music.load_music("piano-midi", data_dir=tmp_path, download=False)
    message = str(error.value)
    assert "Piano-midi.de.pickle is missing; download=False" in message
    assert str(tmp_path / "piano-midi") in message and "Piano-midi.de.pickle" in message
    assert '"bach-chorales"' in message


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match="'jsb-chorales'.*Known music datasets: .*bach-chorales"):
        music.load_music("jsb_chorales")


# --- the embedded Bach chorales ---------------------------------------------------------------


def piece_key(roll) -> bytes:
    return np.packbits(np.asarray(roll, dtype=bool)).tobytes() + bytes(str(len(roll)), "ascii")


def test_bach_chorales_are_sane_piano_rolls_split_80_20():
    files, rolls, _ = music.read_bach_chorales()
    dataset = music.load_music("bach-chorales")
    assert len(rolls) == len(files) == len(set(files)) == 350
    assert len(dataset.train) == 280 and len(dataset.test) == 70
    # every stored piece is in exactly one of the two sets
    assert sorted(map(piece_key, dataset.train + dataset.test)) == sorted(map(piece_key, rolls))
    notes_per_step = []
    for piece in dataset.train + dataset.test:
        assert piece.dtype == torch.float32 and piece.ndim == 2 and piece.shape[1] == 88
        assert 20 <= len(piece) <= 200  # quarter notes: JSB Chorales averages 60
        assert set(piece.unique().tolist()) == {0.0, 1.0}
        notes_per_step.append(piece.sum(1))
    notes_per_step = torch.cat(notes_per_step)
    assert notes_per_step.max() <= 8  # four voices, and a few chorales with instruments
    assert (notes_per_step == 4).float().mean() > 0.8  # SATB
    assert (notes_per_step == 0).float().mean() < 0.02  # all parts rest
    sounding = torch.cat(dataset.train + dataset.test).sum(0).nonzero().flatten() + 21
    assert sounding.min() >= 36 and sounding.max() <= 88  # from C2 in the bass to E6
    assert "music21" in dataset.source and "seed 0" in dataset.source


def test_bach_chorales_split_is_reproducible_and_depends_on_the_seed():
    first, again, other = (music.load_music("bach-chorales", seed=s) for s in (0, 0, 1))
    assert [piece_key(p) for p in first.test] == [piece_key(p) for p in again.test]
    assert [piece_key(p) for p in first.train] == [piece_key(p) for p in again.train]
    assert set(map(piece_key, first.test)) != set(map(piece_key, other.test))


def test_embedded_chorales_are_what_music21_parses():
    import music21

    files, rolls, version = music.read_bach_chorales()
    assert version == music21.__version__  # rebuild the file when music21 is upgraded
    assert music.bach_chorale_files(limit=3) == files[:3]
    rebuilt = music.build_bach_chorales(limit=3, progress=False)
    assert len(rebuilt) == 3
    for fresh, stored in zip(rebuilt, rolls):
        assert fresh.dtype == bool and np.array_equal(fresh, stored)


def test_the_rebuild_command_writes_a_file_the_loader_reads(tmp_path, capsys):
    out = tmp_path / "chorales.npz"
    assert music.main(["--out", str(out), "--limit", "2"]) == 0
    assert "2 chorales" in capsys.readouterr().out
    files, rolls, _ = music.read_bach_chorales(out)
    stored_files, stored_rolls, _ = music.read_bach_chorales()
    assert files == stored_files[:2]
    assert all(np.array_equal(a, b) for a, b in zip(rolls, stored_rolls))


@pytest.mark.parametrize("damage", ["not-a-zip", "truncated"])
def test_an_unreadable_embedded_file_names_the_rebuild_command(tmp_path, damage):
    broken = tmp_path / "chorales.npz"
    whole = music.BACH_CHORALES_FILE.read_bytes()
    broken.write_bytes(b"not a zip" if damage == "not-a-zip" else whole[: len(whole) // 2])
    with pytest.raises(data.DataUnavailableError, match="python -m ibtools.data.music"):
        music.read_bach_chorales(broken)


def test_score_roll_samples_the_sounding_notes_at_each_quarter_note():
    from music21 import chord, note, stream

    upper, lower = stream.Part(), stream.Part()
    for element in (note.Note("C4", quarterLength=2), note.Rest(quarterLength=1),
                    note.Note("E4", quarterLength=0.5), note.Note("F4", quarterLength=0.5)):
        upper.append(element)
    lower.append(chord.Chord(["G3", "B3"], quarterLength=1.5))
    lower.append(note.Note("A0", quarterLength=2.5))
    score = stream.Score([upper, lower])
    roll = music.score_roll(score)
    # C4 = 60 held two beats; the chord until 1.5 sounds at beat 1; the rest leaves only A0;
    # F4 starts between beats and is not seen
    expected = [{60, 55, 59}, {60, 55, 59}, {21}, {64, 21}]
    assert [set((row.nonzero()[0] + 21).tolist()) for row in roll] == expected

    too_high = stream.Score([stream.Part([note.Note("C#8")])])
    with pytest.raises(ValueError, match="off the piano's 88 keys"):
        music.score_roll(too_high)
