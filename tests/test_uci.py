"""ibtools.data.uci: the UCI collection's loader, run end to end on a tiny archive written here
in the layout of Klambauer et al.'s data_py.zip and "downloaded" through a file:// URL, and on
four small real datasets (tests/fixtures/uci/, from Fagan & Iyengar's copy) laid out as the
zip and as extracted folders."""

import io
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ibtools import data, standin
from ibtools.data import uci

# The tiny archive: three datasets, as {folder: (features file, features, labels, folds)}.
# "tiny-a" has a feature constant on its training rows (column 2) but not on its test rows;
# "oocytes_tiny_4d" is a folder spelled with underscores, like the archive's oocytes datasets;
# "b-c" is a dashed folder whose features file is spelled with underscores.
RNG = np.random.default_rng(0)
TINY_A = np.column_stack([RNG.normal(5, 3, 8), RNG.normal(-2, 0.5, 8),
                          [0.25, 0.25, 0.25, 0.25, 0.25, 3.0, 0.25, 0.25]])
DATASETS = {
    "tiny-a": ("tiny-a_py.dat", TINY_A, [0, 1, 2, 0, 1, 2, 0, 1], [0, 0, 1, 0, 0, 1, 0, 0]),
    "oocytes_tiny_4d": ("oocytes_tiny_4d_py.dat", RNG.normal(size=(6, 2)), [0, 1, 0, 1, 1, 0],
                        [0, 1, 0, 0, 1, 0]),
    "b-c": ("b_c_py.dat", RNG.normal(size=(5, 1)), [1, 0, 1, 0, 0], [0, 0, 0, 1, 0]),
}
NAMES = ["b-c", "oocytes-tiny-4d", "tiny-a"]


def text(rows, fmt: str = "%.18e") -> bytes:
    """Rows as comma-separated numbers, the way numpy.savetxt writes them."""
    out = io.BytesIO()
    np.savetxt(out, np.asarray(rows, dtype=np.float64).reshape(len(rows), -1), fmt=fmt,
               delimiter=",")
    return out.getvalue()


def archive_members() -> dict[str, bytes]:
    """Member path -> contents of the tiny archive, including the real archive's stray
    top-level data/abalone_py.dat and some macOS metadata, which must both be ignored."""
    members = {"data/abalone_py.dat": text([[1, 2, 3]] * 3),
               "__MACOSX/data/tiny-a/._labels_py.dat": b"\x00\x05\x16\x07"}
    for folder, (features_file, features, labels, test_column) in DATASETS.items():
        n = len(labels)
        other_folds = RNG.integers(0, 2, (n, 3))
        members[f"data/{folder}/{features_file}"] = text(features)
        # labels as integers in one dataset, as savetxt's floats in the others
        members[f"data/{folder}/labels_py.dat"] = text(labels, "%d" if folder == "b-c"
                                                       else "%.18e")
        members[f"data/{folder}/folds_py.dat"] = text(
            np.column_stack([test_column, other_folds]), "%d")
        members[f"data/{folder}/validation_folds_py.dat"] = text(
            RNG.integers(0, 2, (n, 4)), "%d")
    return members


def write_zip(path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> None:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for directory in sorted({member.rsplit("/", 1)[0] + "/" for member in members}):
            archive.writestr(directory, b"")  # directory entries, as unzip tools write them
        for member, contents in members.items():
            archive.writestr(member, contents)


@pytest.fixture(autouse=True)
def no_uci_folder_named(monkeypatch):
    """Every test here says where its collection is; a reader's $IBTOOLS_UCI must not leak in."""
    monkeypatch.delenv(uci.UCI_ENV, raising=False)


@pytest.fixture
def tiny_archive(tmp_path, monkeypatch):
    """A mirror folder serving the tiny archive as data_py.zip."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    write_zip(mirror / "data_py.zip", archive_members())
    monkeypatch.setitem(data.MIRRORS, "uci", (mirror.as_uri() + "/",))
    return mirror / "data_py.zip"


# --- names, splits and standardisation --------------------------------------------------------


def test_names_are_the_dashed_folder_names_and_the_archive_is_kept(tiny_archive, tmp_path):
    assert uci.uci_names(data_dir=tmp_path / "data") == NAMES
    stored = tmp_path / "data" / "uci"
    assert [p.name for p in stored.iterdir()] == ["data_py.zip"]  # no partial files left
    assert (stored / "data_py.zip").read_bytes() == tiny_archive.read_bytes()
    collection = uci.read_collection(stored / "data_py.zip")
    assert collection.names == NAMES and collection.problems == {}
    assert "3 of the 3 UCI dataset folders" in collection.summary()
    # offline, the verified file is used as it is
    assert uci.uci_names(data_dir=tmp_path / "data", download=False) == NAMES


@pytest.mark.parametrize("folder", DATASETS)
def test_the_split_is_the_archives_own_column_0(tiny_archive, tmp_path, folder):
    _, features, labels, test_column = DATASETS[folder]
    test = np.array(test_column) == 1
    dataset = uci.load_uci(folder, standardize=False, data_dir=tmp_path / "data")
    assert dataset.name == "uci-" + uci.dashed(folder)
    assert dataset.task == "classification" and dataset.n_classes == max(labels) + 1
    assert dataset.x_train.dtype == dataset.x_test.dtype == torch.float32
    assert dataset.y_train.dtype == dataset.y_test.dtype == torch.int64
    # every training row (validation rows included) and every test row, in archive order
    assert torch.equal(dataset.x_train, torch.from_numpy(features[~test].astype(np.float32)))
    assert torch.equal(dataset.x_test, torch.from_numpy(features[test].astype(np.float32)))
    assert dataset.y_train.tolist() == np.array(labels)[~test].tolist()
    assert dataset.y_test.tolist() == np.array(labels)[test].tolist()


def test_standardisation_uses_training_statistics_and_never_divides_by_zero(tiny_archive,
                                                                            tmp_path):
    dataset = uci.load_uci("tiny-a", data_dir=tmp_path / "data")
    train, test = dataset.x_train.double(), dataset.x_test.double()
    assert torch.isfinite(train).all() and torch.isfinite(test).all()
    # the varying features: mean 0 and std 1 on the training rows
    assert torch.allclose(train[:, :2].mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(train[:, :2].std(0, unbiased=False),
                          torch.ones(2, dtype=torch.float64), atol=1e-6)
    # the test rows are rescaled with the training rows' statistics, not their own
    is_test = np.array(DATASETS["tiny-a"][3]) == 1
    raw_train, raw_test = TINY_A[~is_test, :2], TINY_A[is_test, :2]
    expected = (raw_test - raw_train.mean(0)) / raw_train.std(0)
    assert np.allclose(test[:, :2].numpy(), expected, atol=1e-6)
    # the feature constant (0.25) on the training rows is 0 there, and shifted, not
    # scaled, on the test rows (0.25 -> 0, 3.0 -> 2.75)
    assert train[:, 2].tolist() == [0.0] * 6
    assert np.allclose(test[:, 2].numpy(), [0.0, 2.75])


def test_names_may_use_underscores_or_the_returned_name(tiny_archive, tmp_path):
    first = uci.load_uci("oocytes_tiny_4d", data_dir=tmp_path / "data")
    for name in ("oocytes-tiny-4d", first.name):
        again = uci.load_uci(name, data_dir=tmp_path / "data", download=False)
        assert torch.equal(again.x_train, first.x_train) and torch.equal(again.y_test,
                                                                          first.y_test)


def test_unknown_name_suggests_the_closest(tiny_archive, tmp_path):
    with pytest.raises(ValueError, match=r"unknown UCI dataset 'tiny-b': no folder of that name "
                                         r"in .*data_py\.zip\. Did you mean 'tiny-a'"):
        uci.load_uci("tiny-b", data_dir=tmp_path / "data")


def test_unknown_split_is_refused(tiny_archive, tmp_path):
    with pytest.raises(ValueError, match="unknown UCI split 'paper'.*'archive'.*'authors'"):
        uci.load_uci("tiny-a", split="paper", data_dir=tmp_path / "data")


def test_each_dataset_is_checked_once_per_process_and_again_when_replaced(
        tiny_archive, tmp_path, monkeypatch):
    checked = []
    check_dataset = uci._check_dataset
    monkeypatch.setattr(uci, "_check_dataset",
                        lambda read, folder, files: checked.append(folder) or
                        check_dataset(read, folder, files))
    for name in NAMES * 2:
        uci.load_uci(name, data_dir=tmp_path / "data")
    uci.uci_names(data_dir=tmp_path / "data")
    assert sorted(checked) == sorted(f"data/{folder}" for folder in DATASETS)
    stored = tmp_path / "data" / "uci" / "data_py.zip"
    write_zip(stored, archive_members(), compression=zipfile.ZIP_STORED)
    uci.load_uci("b-c", data_dir=tmp_path / "data")
    assert len(checked) == 2 * len(DATASETS)


def test_missing_feature_values_are_reported_not_trained_on(tmp_path, monkeypatch):
    members = archive_members()
    members["data/b-c/b_c_py.dat"] = b"1.5\nnan\n0.5\n2.5\n-1\n"
    write_zip(tmp_path / "data_py.zip", members)
    assert uci.read_collection(tmp_path / "data_py.zip").names == NAMES  # well-formed, so kept
    monkeypatch.setitem(data.MIRRORS, "uci", (tmp_path.as_uri() + "/",))
    with pytest.raises(ValueError, match="'b-c' has 1 missing or infinite feature values"):
        uci.load_uci("b-c", data_dir=tmp_path / "data")
    uci.load_uci("tiny-a", data_dir=tmp_path / "data")  # the other datasets are fine


def test_more_or_fewer_than_121_datasets_is_no_reason_to_reject_them(tmp_path):
    members = archive_members()
    for filename in ("labels_py.dat", "folds_py.dat", "validation_folds_py.dat"):
        members[f"data/extra/{filename}"] = members[f"data/b-c/{filename}"]
    members["data/extra/extra_py.dat"] = members["data/b-c/b_c_py.dat"]
    write_zip(tmp_path / "data_py.zip", members)
    collection = uci.read_collection(tmp_path / "data_py.zip")
    assert collection.names == sorted([*NAMES, "extra"])
    assert "4 of the 4 UCI dataset folders" in collection.summary()
    assert f"the published archive has {uci.N_DATASETS}" in collection.summary()


# --- a damaged dataset costs only itself ------------------------------------------------------


def drop_a_label_row(members):
    members["data/tiny-a/labels_py.dat"] = b"\n".join(
        members["data/tiny-a/labels_py.dat"].splitlines()[:-1])


def truncated_features(members):
    members["data/tiny-a/tiny-a_py.dat"] = members["data/tiny-a/tiny-a_py.dat"][:-30]


def fractional_label(members):
    members["data/b-c/labels_py.dat"] = b"1\n0\n0.5\n0\n0\n"


def negative_label(members):
    members["data/b-c/labels_py.dat"] = b"1\n0\n-1\n0\n0\n"


def one_class(members):
    members["data/b-c/labels_py.dat"] = b"0\n0\n0\n0\n0\n"


def remove_validation_folds(members):
    del members["data/b-c/validation_folds_py.dat"]


def remove_features(members):
    del members["data/oocytes_tiny_4d/oocytes_tiny_4d_py.dat"]


def fold_value_2(members):
    members["data/b-c/folds_py.dat"] = members["data/b-c/folds_py.dat"].replace(b"1", b"2", 1)


def no_test_rows(members):
    members["data/b-c/folds_py.dat"] = b"0,1\n0,1\n0,0\n0,0\n0,1\n"


def ragged_features(members):
    members["data/tiny-a/tiny-a_py.dat"] = members["data/tiny-a/tiny-a_py.dat"].replace(
        b"\n", b",\n", 1)


def text_in_features(members):
    members["data/b-c/b_c_py.dat"] = b"1.5\nabc\n0.5\n2.5\n-1\n"


def empty_labels(members):
    members["data/b-c/labels_py.dat"] = b""


def two_features_files(members):
    members["data/b-c/b-c_py.dat"] = members["data/b-c/b_c_py.dat"]


# damage -> (the dataset it costs, what its problem says)
DAMAGE = {
    drop_a_label_row: ("tiny-a", r"labels_py\.dat has 7 rows but data/tiny-a/tiny-a_py\.dat has 8"),
    truncated_features: ("tiny-a", r"rows but data/tiny-a/tiny-a_py\.dat has 7|not a table"),
    fractional_label: ("b-c", "not integers"),
    negative_label: ("b-c", "not integers"),
    one_class: ("b-c", "a single class"),
    remove_validation_folds: ("b-c", "folder 'data/b-c' lacks validation_folds_py.dat"),
    remove_features: ("oocytes-tiny-4d", "folder 'data/oocytes_tiny_4d' lacks oocytes_tiny_4d_py.dat"),
    fold_value_2: ("b-c", "values other than 0 and 1"),
    no_test_rows: ("b-c", "marks no row as a test row"),
    ragged_features: ("tiny-a", "not a table of comma-separated numbers"),
    text_in_features: ("b-c", "not a table of comma-separated numbers"),
    empty_labels: ("b-c", "not a table of comma-separated numbers"),
    two_features_files: ("b-c", "two features files"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda damage: damage.__name__)
def test_a_damaged_dataset_costs_only_itself(tmp_path, damage):
    members = archive_members()
    damage(members)
    stored = tmp_path / "data" / "uci" / "data_py.zip"
    stored.parent.mkdir(parents=True)
    write_zip(stored, members)
    placed = stored.read_bytes()
    damaged, problem = DAMAGE[damage]
    collection = uci.read_collection(stored)
    assert collection.names == [name for name in NAMES if name != damaged]
    assert list(collection.problems) == [damaged]
    assert re.search(problem, collection.problems[damaged])
    assert uci.uci_problems(data_dir=tmp_path / "data") == collection.problems
    with pytest.raises(data.DataUnavailableError) as error:
        uci.load_uci(damaged, data_dir=tmp_path / "data")
    assert f"UCI dataset {damaged!r} in {stored} is damaged or incomplete" in str(error.value)
    assert re.search(problem, str(error.value))
    assert f"To fix: move {stored} aside and put a good copy of data_py.zip" in str(error.value)
    for name in collection.names:
        assert uci.load_uci(name, data_dir=tmp_path / "data").n_classes >= 2
    assert stored.read_bytes() == placed  # nothing moved, nothing rewritten


def test_a_member_failing_its_crc_costs_only_its_dataset(tmp_path):
    path = tmp_path / "data_py.zip"
    write_zip(path, archive_members(), compression=zipfile.ZIP_STORED)
    whole = path.read_bytes()
    features = archive_members()["data/tiny-a/tiny-a_py.dat"]
    at = whole.index(features) + 5  # one byte of a stored member changed: bit rot
    path.write_bytes(whole[:at] + bytes([whole[at] ^ 1]) + whole[at + 1:])
    collection = uci.read_collection(path)
    assert collection.names == ["b-c", "oocytes-tiny-4d"]
    assert "Bad CRC-32" in collection.problems["tiny-a"]
    for name in collection.names:  # the zip's other members still read
        assert uci.load_uci(name, uci_dir=path).n_classes == 2
    with pytest.raises(data.DataUnavailableError, match="'tiny-a'.*Bad CRC-32"):
        uci.load_uci("tiny-a", uci_dir=path)


@pytest.mark.parametrize("raw", [b"<html>404 Not Found</html>", "half"], ids=["page", "truncated"])
def test_a_file_that_is_not_a_zip_is_rejected_whole(tmp_path, raw):
    path = tmp_path / "data_py.zip"
    write_zip(path, archive_members(), compression=zipfile.ZIP_STORED)
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2] if raw == "half" else raw)
    with pytest.raises(uci.ArchiveError, match="is not a UCI collection: it is not a zip file"):
        uci.read_collection(path)


def test_a_non_zip_on_disk_is_quarantined_and_reported_without_download(tiny_archive, tmp_path):
    stored = tmp_path / "data" / "uci" / "data_py.zip"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"not a zip")
    with pytest.raises(data.DataUnavailableError) as error:
        uci.load_uci("b-c", data_dir=tmp_path / "data", download=False)
    message = str(error.value)
    assert f"{stored} was on disk but it is not a zip file" in message
    assert f"moved to {stored}.corrupt; download=False" in message
    assert '"iris"' in message
    assert not stored.exists() and Path(f"{stored}.corrupt").read_bytes() == b"not a zip"


def test_a_non_zip_on_disk_is_quarantined_and_downloaded_again(tiny_archive, tmp_path):
    stored = tmp_path / "data" / "uci" / "data_py.zip"
    stored.parent.mkdir(parents=True)
    half = tiny_archive.read_bytes()[:1000]
    stored.write_bytes(half)
    assert uci.load_uci("b-c", data_dir=tmp_path / "data").n_classes == 2
    assert stored.read_bytes() == tiny_archive.read_bytes()
    assert Path(f"{stored}.corrupt").read_bytes() == half
    collection = uci.uci_collection(data_dir=tmp_path / "data")
    assert collection.names == NAMES


def test_a_mirror_serving_a_non_zip_is_reported_and_set_aside(tiny_archive, tmp_path):
    tiny_archive.write_bytes(b"<html>moved</html>")
    with pytest.raises(data.DataUnavailableError,
                       match='(?s)downloaded .*data_py.zip is not the UCI archive.*not a zip file'
                             '.*moved to .*data_py.zip.corrupt.*"wine"'):
        uci.uci_names(data_dir=tmp_path / "data")
    stored = tmp_path / "data" / "uci"
    assert [p.name for p in stored.iterdir()] == ["data_py.zip.corrupt"]


def test_nothing_on_disk_and_no_download_names_the_fix(tmp_path):
    directory = tmp_path / "data" / "uci"
    with pytest.raises(data.DataUnavailableError) as error:
        uci.load_uci("abalone", data_dir=tmp_path / "data", download=False)
    message = str(error.value)
    assert f"{directory / 'data_py.zip'} is missing; download=False" in message
    assert f"place these files by hand in {directory}: data_py.zip" in message
    assert all(f'"{name}"' in message for name in ("iris", "wine", "breast-cancer"))


def test_unreachable_mirror_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(data.MIRRORS, "uci", ("file:///nonexistent/",))
    with pytest.raises(data.DataUnavailableError,
                       match='(?s)download of data_py.zip failed.*by hand.*"breast-cancer"'):
        uci.uci_names(data_dir=tmp_path)


# --- real datasets: the zip and every extracted layout ----------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "uci"
REAL = ["balloons", "fertility", "lenses", "trains"]
# where the dataset folders sit below the folder a reader names: as in the zip, as in
# NN_ISGD's data/classification/ (named at the repository or at classification/), directly
LAYOUTS = {"zip-layout": "data", "authors-repository": "data/classification",
           "classification": "classification", "flat": ""}


def real_files() -> dict[str, bytes]:
    """Relative path (NAME/FILE) -> contents of the committed real datasets."""
    return {path.relative_to(FIXTURES).as_posix(): path.read_bytes()
            for path in sorted(FIXTURES.glob("*/*.dat"))}


def lay_out(folder: Path, below: str) -> Path:
    """The real datasets extracted under ``folder/below``; returns ``folder``."""
    for relative, raw in real_files().items():
        path = folder / below / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)
    return folder


def real_zip(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_zip(path, {f"data/{relative}": raw for relative, raw in real_files().items()})
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_fixtures_are_the_four_real_datasets():
    assert sorted({relative.split("/")[0] for relative in real_files()}) == REAL
    assert sum(len(raw) for raw in real_files().values()) < 40_000
    assert uci.read_collection(FIXTURES).names == REAL


@pytest.mark.parametrize("split", uci.SPLITS)
@pytest.mark.parametrize("standardize", [True, False])
def test_real_datasets_load_identically_from_the_zip_and_every_layout(tmp_path, split,
                                                                      standardize):
    from_zip = real_zip(tmp_path / "zip" / "data_py.zip")
    places = {"the zip": {"uci_dir": from_zip},
              "the zip's folder": {"uci_dir": from_zip.parent},
              "data_dir()/uci, extracted": {"data_dir": lay_out(tmp_path / "store", "uci/data")}}
    for layout, below in LAYOUTS.items():
        places[layout] = {"uci_dir": lay_out(tmp_path / layout, below)}
    expected = {name: uci.load_uci(name, split=split, standardize=standardize, uci_dir=from_zip)
                for name in REAL}
    for where, place in places.items():
        assert uci.uci_names(**place) == REAL, where
        for name in REAL:
            dataset = uci.load_uci(name, split=split, standardize=standardize, **place)
            for part in ("x_train", "y_train", "x_test", "y_test"):
                assert torch.equal(getattr(dataset, part), getattr(expected[name], part)), \
                    (where, name, part)


def test_load_honours_the_uci_folder_in_the_environment(tmp_path, monkeypatch):
    folder = lay_out(tmp_path / "NN_ISGD", "data/classification")
    monkeypatch.setenv(uci.UCI_ENV, str(folder))
    monkeypatch.setenv("IBTOOLS_DATA", str(tmp_path / "empty"))
    monkeypatch.setitem(data.MIRRORS, "uci", ("file:///nonexistent/",))
    dataset = data.load("uci:lenses", split="authors", standardize=False)
    assert dataset.name == "uci-lenses" and dataset.n_classes == 3
    assert len(dataset.x_train) + len(dataset.x_test) == 24
    assert "Fagan & Iyengar's split" in dataset.source
    assert not (tmp_path / "empty").exists()  # nothing downloaded


def test_the_authors_split_is_sklearns_80_20_with_random_state_1(tmp_path):
    from sklearn.model_selection import train_test_split

    folder = lay_out(tmp_path, "")
    for name in REAL:
        features = np.loadtxt(FIXTURES / name / f"{name}_py.dat", delimiter=",", ndmin=2)
        labels = np.loadtxt(FIXTURES / name / "labels_py.dat", ndmin=1).astype(np.int64)
        n = len(labels)
        train_rows, test_rows = train_test_split(np.arange(n), test_size=0.2, random_state=1)
        dataset = uci.load_uci(name, split="authors", standardize=False, uci_dir=folder)
        assert len(dataset.x_test) == int(np.ceil(0.2 * n)) and len(dataset.x_train) == n - len(dataset.x_test)
        # the features as read (float32), in the permutation's order
        assert torch.equal(dataset.x_train, torch.from_numpy(features[train_rows].astype(np.float32)))
        assert torch.equal(dataset.x_test, torch.from_numpy(features[test_rows].astype(np.float32)))
        assert dataset.y_test.tolist() == labels[test_rows].tolist()
        archive = uci.load_uci(name, standardize=False, uci_dir=folder)
        folds = np.loadtxt(FIXTURES / name / "folds_py.dat", delimiter=",", ndmin=2)
        assert len(archive.x_test) == int(folds[:, 0].sum())


def test_the_real_features_are_already_standardised_with_the_sample_std():
    for name in REAL:
        features = np.loadtxt(FIXTURES / name / f"{name}_py.dat", delimiter=",", ndmin=2)
        varying = features.std(0) > 0
        assert np.allclose(features.mean(0), 0, atol=1e-4)
        assert np.allclose(features[:, varying].std(0, ddof=1), 1, atol=1e-3)


def test_a_folder_missing_a_features_file_is_reported_and_left_as_it_is(tmp_path):
    # as in NN_ISGD's stored snapshot, where 5 large features files are missing
    folder = lay_out(tmp_path / "NN_ISGD", "data/classification")
    (folder / "data" / "classification" / "trains" / "trains_py.dat").unlink()
    before = snapshot(folder)
    assert uci.uci_names(uci_dir=folder) == ["balloons", "fertility", "lenses"]
    assert uci.uci_problems(uci_dir=folder) == {
        "trains": "folder 'data/classification/trains' lacks trains_py.dat"}
    with pytest.raises(data.DataUnavailableError,
                       match="UCI dataset 'trains' in .*NN_ISGD is damaged or incomplete: folder "
                             "'data/classification/trains' lacks trains_py.dat"):
        uci.load_uci("trains", uci_dir=folder)
    assert uci.load_uci("balloons", uci_dir=folder).n_classes == 2
    assert snapshot(folder) == before  # nothing moved, renamed or written
    # the same copy extracted into data_dir()/uci/ as it is in the repository
    store = tmp_path / "store"
    shutil.copytree(folder / "data", store / "uci" / "data")
    assert uci.uci_names(data_dir=store, download=False) == ["balloons", "fertility", "lenses"]
    assert list(uci.uci_problems(data_dir=store, download=False)) == ["trains"]
    assert snapshot(store) == {f"uci/{path}": raw for path, raw in before.items()}


@pytest.mark.parametrize("damage", ["truncated", "label-out-of-range", "row-count"])
def test_a_damaged_real_dataset_in_a_folder_costs_only_itself(tmp_path, damage):
    folder = lay_out(tmp_path, "classification")
    fertility = folder / "classification" / "fertility"
    if damage == "truncated":
        path = fertility / "fertility_py.dat"
        path.write_bytes(path.read_bytes()[:-25])
    elif damage == "label-out-of-range":
        (fertility / "labels_py.dat").write_bytes(b"-1\n" + (fertility / "labels_py.dat").read_bytes()[2:])
    else:
        path = fertility / "folds_py.dat"
        path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))
    before = snapshot(folder)
    assert uci.uci_names(uci_dir=folder) == ["balloons", "lenses", "trains"]
    assert list(uci.uci_problems(uci_dir=folder)) == ["fertility"]
    with pytest.raises(data.DataUnavailableError,
                       match="(?s)'fertility'.*To fix: replace the dataset folder's four files"):
        uci.load_uci("fertility", uci_dir=folder)
    assert snapshot(folder) == before


def test_a_named_folder_is_never_changed_even_when_its_zip_is_not_a_zip(tmp_path):
    (tmp_path / "data_py.zip").write_bytes(b"not a zip")
    with pytest.raises(data.DataUnavailableError, match="(?s)not a zip file.*left as it is"):
        uci.uci_names(uci_dir=tmp_path)
    assert (tmp_path / "data_py.zip").read_bytes() == b"not a zip"
    with pytest.raises(data.DataUnavailableError, match="(?s)does not exist.*To fix"):
        uci.uci_names(uci_dir=tmp_path / "nowhere")


def test_the_papers_spellings_load_the_archives_folders(tmp_path):
    folder = tmp_path / "uci"
    for paper, archive in uci.ARCHIVE_SPELLINGS.items():
        for path in (FIXTURES / "balloons").iterdir():
            target = folder / archive / path.name.replace("balloons", archive)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        by_paper = uci.load_uci(paper, uci_dir=folder)
        by_archive = uci.load_uci(archive, uci_dir=folder)
        assert by_paper.name == by_archive.name == f"uci-{archive}"
        assert torch.equal(by_paper.x_train, by_archive.x_train)
    assert uci.ARCHIVE_SPELLINGS == {"mini-boone": "miniboone", "molec-biol-splce": "molec-biol-splice"}
    assert standin.ARCHIVE_SPELLINGS is uci.ARCHIVE_SPELLINGS
