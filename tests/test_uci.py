"""ibtools.uci: the UCI archive's loader, run end to end on a tiny archive written here in the
layout of Klambauer et al.'s data_py.zip and "downloaded" through a file:// URL."""

import io
import zipfile

import numpy as np
import pytest
import torch

from ibtools import data, uci

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


@pytest.fixture
def tiny_archive(tmp_path, monkeypatch):
    """A mirror folder serving the tiny archive as data_py.zip; the loader is told to expect
    its 3 datasets rather than the published 121."""
    monkeypatch.setattr(uci, "N_DATASETS", 3)
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
    assert uci.read_archive(stored / "data_py.zip") == NAMES
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
    with pytest.raises(ValueError, match=r"unknown UCI dataset 'tiny-b'\. Did you mean 'tiny-a'"):
        uci.load_uci("tiny-b", data_dir=tmp_path / "data")


def test_the_archive_is_checked_once_per_process_and_again_when_replaced(
        tiny_archive, tmp_path, monkeypatch):
    checked = []
    check_dataset = uci._check_dataset
    monkeypatch.setattr(uci, "_check_dataset",
                        lambda archive, folder, files: checked.append(folder) or
                        check_dataset(archive, folder, files))
    for name in NAMES * 2:
        uci.load_uci(name, data_dir=tmp_path / "data")
    uci.uci_names(data_dir=tmp_path / "data")
    assert sorted(checked) == sorted(f"data/{folder}" for folder in DATASETS)
    stored = tmp_path / "data" / "uci" / "data_py.zip"
    write_zip(stored, archive_members(), compression=zipfile.ZIP_STORED)
    uci.load_uci("b-c", data_dir=tmp_path / "data")
    assert len(checked) == 2 * len(DATASETS)


def test_missing_feature_values_are_reported_not_trained_on(tmp_path, monkeypatch):
    monkeypatch.setattr(uci, "N_DATASETS", 3)
    members = archive_members()
    members["data/b-c/b_c_py.dat"] = b"1.5\nnan\n0.5\n2.5\n-1\n"
    write_zip(tmp_path / "data_py.zip", members)
    assert uci.read_archive(tmp_path / "data_py.zip") == NAMES  # well-formed, so kept
    monkeypatch.setitem(data.MIRRORS, "uci", (tmp_path.as_uri() + "/",))
    with pytest.raises(ValueError, match="'b-c' has 1 missing or infinite feature values"):
        uci.load_uci("b-c", data_dir=tmp_path / "data")
    uci.load_uci("tiny-a", data_dir=tmp_path / "data")  # the other datasets are fine


# --- damaged archives -------------------------------------------------------------------------


def drop_a_label_row(members):
    members["data/tiny-a/labels_py.dat"] = b"\n".join(
        members["data/tiny-a/labels_py.dat"].splitlines()[:-1])


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


def two_features_files(members):
    members["data/b-c/b-c_py.dat"] = members["data/b-c/b_c_py.dat"]


def a_fourth_dataset(members):
    for filename in ("labels_py.dat", "folds_py.dat", "validation_folds_py.dat"):
        members[f"data/extra/{filename}"] = members[f"data/b-c/{filename}"]
    members["data/extra/extra_py.dat"] = members["data/b-c/b_c_py.dat"]


DAMAGE = {
    drop_a_label_row: r"labels_py\.dat has 7 rows but data/tiny-a/tiny-a_py\.dat has 8",
    fractional_label: "not integers",
    negative_label: "not integers",
    one_class: "a single class",
    remove_validation_folds: "'data/b-c' lacks validation_folds_py.dat",
    remove_features: "'data/oocytes_tiny_4d' lacks oocytes_tiny_4d_py.dat",
    fold_value_2: "values other than 0 and 1",
    no_test_rows: "marks no row as a test row",
    ragged_features: "not a table of comma-separated numbers",
    text_in_features: "not a table of comma-separated numbers",
    two_features_files: "two features files",
    a_fourth_dataset: "holds 4 dataset folders, not the 3",
}


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda damage: damage.__name__)
def test_read_archive_rejects_damaged_contents(tmp_path, monkeypatch, damage):
    monkeypatch.setattr(uci, "N_DATASETS", 3)
    members = archive_members()
    damage(members)
    write_zip(tmp_path / "data_py.zip", members)
    with pytest.raises(uci.ArchiveError, match=DAMAGE[damage]) as error:
        uci.read_archive(tmp_path / "data_py.zip")
    assert isinstance(error.value, ValueError)
    assert "Delete it so it can be downloaded again" in str(error.value)


def test_read_archive_rejects_files_that_are_not_whole_zips(tmp_path, monkeypatch):
    monkeypatch.setattr(uci, "N_DATASETS", 3)
    path = tmp_path / "data_py.zip"
    write_zip(path, archive_members(), compression=zipfile.ZIP_STORED)
    whole = path.read_bytes()
    cases = {
        "an error page": (b"<html>404 Not Found</html>", "not a zip file"),
        "a truncated download": (whole[:len(whole) // 2], "not a zip file"),
        # one byte of a stored member changed: the zip is intact but the member's CRC fails
        "bit rot": (whole.replace(b"0.000000000000000000e+00", b"1.000000000000000000e+00", 1),
                    "Bad CRC-32"),
    }
    for raw, message in cases.values():
        path.write_bytes(raw)
        with pytest.raises(ValueError, match=f"(?s)not a valid UCI archive.*{message}"):
            uci.read_archive(path)


def test_the_published_count_is_checked(tiny_archive, monkeypatch):
    monkeypatch.setattr(uci, "N_DATASETS", 121)
    with pytest.raises(ValueError, match="holds 3 dataset folders, not the 121 of data_py.zip"):
        uci.read_archive(tiny_archive)


def test_a_damaged_archive_on_disk_is_removed_and_downloaded_again(tiny_archive, tmp_path):
    stored = tmp_path / "data" / "uci" / "data_py.zip"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(tiny_archive.read_bytes()[:1000])
    dataset = uci.load_uci("b-c", data_dir=tmp_path / "data")
    assert dataset.n_classes == 2
    assert stored.read_bytes() == tiny_archive.read_bytes()


def test_a_damaged_archive_without_download_is_removed_and_reported(tiny_archive, tmp_path):
    stored = tmp_path / "data" / "uci" / "data_py.zip"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"not a zip")
    with pytest.raises(data.DataUnavailableError,
                       match='(?s)not a valid UCI archive.*removed.*download=True.*"iris"'):
        uci.load_uci("b-c", data_dir=tmp_path / "data", download=False)
    assert not stored.exists()


def test_a_mirror_serving_a_bad_archive_is_reported_and_nothing_is_kept(tiny_archive, tmp_path,
                                                                        monkeypatch):
    members = archive_members()
    fractional_label(members)
    write_zip(tiny_archive, members)
    with pytest.raises(data.DataUnavailableError,
                       match='(?s)downloaded data_py.zip failed its check.*not integers.*"wine"'):
        uci.uci_names(data_dir=tmp_path / "data")
    assert list((tmp_path / "data" / "uci").iterdir()) == []


def test_nothing_on_disk_and_no_download_names_the_fix(tmp_path):
    directory = tmp_path / "data" / "uci"
    with pytest.raises(data.DataUnavailableError) as error:
        uci.load_uci("abalone", data_dir=tmp_path / "data", download=False)
    message = str(error.value)
    assert "missing and download=False" in message
    assert f"place these files by hand in {directory}: data_py.zip" in message
    assert all(f'"{name}"' in message for name in ("iris", "wine", "breast-cancer"))


def test_unreachable_mirror_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(data.MIRRORS, "uci", ("file:///nonexistent/",))
    with pytest.raises(data.DataUnavailableError,
                       match='(?s)download of data_py.zip failed.*by hand.*"breast-cancer"'):
        uci.uci_names(data_dir=tmp_path)
