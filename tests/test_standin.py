"""ibtools.standin: stand-ins have the full-scale shapes, data.load gives them (and downloads
nothing) only inside use_stand_ins(), and the stored shapes are what the loaders read."""

import ast
import dataclasses
import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ibtools import data, standin
from ibtools.data import music, store, uci
from ibtools.experiments import ch03_ib_vs_eb

IMAGES = ("mnist", "fashion-mnist", "cifar10", "cifar100")
MUSIC = ("jsb-chorales", "musedata", "nottingham", "piano-midi")
UCI = tuple(f"uci:{name}" for name in ch03_ib_vs_eb.UCI_DATASETS)


class NetworkUsed(Exception):
    """Raised by the stand-in for ibtools.data.store.download_file: a download was attempted."""


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    def download_file(*args, **kwargs):
        raise NetworkUsed(args)

    monkeypatch.setattr(store, "download_file", download_file)
    monkeypatch.setenv("IBTOOLS_DATA", str(tmp_path / "empty"))  # no reader's real files
    monkeypatch.delenv(uci.UCI_ENV, raising=False)


# --- the stored shapes ------------------------------------------------------------------------


def test_every_full_scale_dataset_has_shapes():
    assert set(standin.FULL_SHAPES) == {*IMAGES, *MUSIC, *UCI}
    assert len(UCI) == len(set(UCI)) == 121
    assert standin.MUSIC_NAMES == MUSIC


def test_image_shapes_are_the_official_splits():
    mnist_like = standin.ClassificationShape(60_000, 10_000, (1, 28, 28), 10)
    assert standin.FULL_SHAPES["mnist"] == standin.FULL_SHAPES["fashion-mnist"] == mnist_like
    assert standin.FULL_SHAPES["cifar10"] == standin.ClassificationShape(50_000, 10_000, (3, 32, 32), 10)
    assert standin.FULL_SHAPES["cifar100"] == standin.ClassificationShape(50_000, 10_000, (3, 32, 32), 100)


@pytest.mark.parametrize("name", MUSIC)
def test_music_lengths_agree_with_the_published_piece_counts(name):
    description = music.MUSIC_DATASETS[name]
    n_train, n_test = map(int, re.search(r"(\d+) train / (\d+) test", description).groups())
    typical = int(re.search(r"~(\d+)", description).group(1))
    shape = standin.FULL_SHAPES[name]
    assert (len(shape.train_lengths), len(shape.test_lengths)) == (n_train, n_test)
    lengths = shape.train_lengths + shape.test_lengths
    assert min(lengths) > 0 and shape.n_notes == 88
    assert np.mean(lengths) == pytest.approx(typical, rel=0.1)


def test_uci_shapes_are_plausible_and_the_json_cites_its_source():
    for name in UCI:
        shape = standin.FULL_SHAPES[name]
        assert shape.n_train > 0 and shape.n_test > 0 and shape.input_shape[0] > 0
        assert shape.n_classes >= 2
    # a few that are well known: iris 150 x 4 in 3 classes, letter 20,000 x 16 in 26
    iris, letter = standin.FULL_SHAPES["uci:iris"], standin.FULL_SHAPES["uci:letter"]
    assert (iris.n_train + iris.n_test, iris.input_shape, iris.n_classes) == (150, (4,), 3)
    assert (letter.n_train + letter.n_test, letter.input_shape, letter.n_classes) == (20_000, (16,), 26)
    source = json.loads(standin.SHAPES_FILE.read_text())["source"]
    assert "francoisfagan/NN_ISGD" in source and "dff30fe46fb25a865e040fd940d975ab4d2c2100" in source


# --- stand-ins --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGES)
def test_image_stand_ins_have_the_shapes_dtypes_and_classes(name, monkeypatch):
    # fewer examples, so CIFAR's 740 MB are not built: sizes are tested on MNIST below
    shape = dataclasses.replace(standin.FULL_SHAPES[name], n_train=40, n_test=8)
    monkeypatch.setitem(standin.FULL_SHAPES, name, shape)
    stand_in = standin.stand_in(name)
    assert isinstance(stand_in, data.Dataset) and stand_in.name == name
    assert stand_in.x_train.shape == (40, *shape.input_shape)
    assert stand_in.x_test.shape == (8, *shape.input_shape)
    for x, y in ((stand_in.x_train, stand_in.y_train), (stand_in.x_test, stand_in.y_test)):
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        assert y.dtype == torch.int64 and 0 <= y.min() and y.max() < shape.n_classes
    assert (stand_in.task, stand_in.n_classes) == ("classification", shape.n_classes)
    assert stand_in.input_shape == shape.input_shape


def test_every_uci_stand_in_has_the_shapes_dtypes_and_classes():
    for name in UCI:
        shape, stand_in = standin.FULL_SHAPES[name], standin.stand_in(name)
        assert stand_in.name == name.replace("uci:", "uci-")
        assert stand_in.x_train.shape == (shape.n_train, *shape.input_shape)
        assert stand_in.x_test.shape == (shape.n_test, *shape.input_shape)
        assert stand_in.x_train.dtype == torch.float32 and stand_in.y_test.dtype == torch.int64
        labels = torch.cat([stand_in.y_train, stand_in.y_test])
        assert 0 <= labels.min() and labels.max() < shape.n_classes == stand_in.n_classes
    features = standin.stand_in("uci:letter").x_train  # standard normal, like standardised data
    assert abs(features.mean()) < 0.05 and abs(features.std() - 1) < 0.05


@pytest.mark.parametrize("name", MUSIC)
def test_music_stand_ins_are_piano_rolls_of_the_recorded_lengths(name):
    shape, stand_in = standin.FULL_SHAPES[name], standin.stand_in(name)
    assert isinstance(stand_in, data.SequenceDataset) and stand_in.n_features == 88
    assert tuple(len(piece) for piece in stand_in.train) == shape.train_lengths
    assert tuple(len(piece) for piece in stand_in.test) == shape.test_lengths
    rolls = torch.cat(stand_in.train[:50])  # a sample: checking each piece takes seconds
    assert rolls.dtype == torch.float32 and ((rolls == 0) | (rolls == 1)).all()
    assert rolls.sum(1).mean() == pytest.approx(4, abs=0.2)  # notes sounding per step


def test_stand_ins_are_deterministic_for_a_seed_and_say_what_they_are():
    first, again, other = (standin.stand_in("uci:iris", seed) for seed in (1, 1, 2))
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_test, again.y_test)
    assert not torch.equal(first.x_train, other.x_train)
    rolls, rolls_again = standin.stand_in("jsb-chorales", 3), standin.stand_in("jsb-chorales", 3)
    assert all(torch.equal(a, b) for a, b in zip(rolls.train, rolls_again.train))
    assert "stand-in" in first.source and "never train on it" in rolls.source


def test_uci_stand_ins_take_the_archive_spellings_too():
    paper, archive = standin.stand_in("uci:mini-boone"), standin.stand_in("uci:miniboone")
    assert torch.equal(paper.x_test, archive.x_test)
    assert standin.stand_in("uci:molec_biol_splice").n_features == standin.FULL_SHAPES[
        "uci:molec-biol-splce"].input_shape[0]


@pytest.mark.parametrize("name, says", [("mnist-5k", "embedded"), ("bach-chorales", "embedded"),
                                        ("uci:abalon", "uci:abalone"), ("mnsit", "mnist")])
def test_other_names_have_no_stand_in_and_the_error_names_the_known_ones(name, says):
    with pytest.raises(ValueError, match="uci:NAME") as error:
        standin.stand_in(name)
    assert says in str(error.value)


# --- use_stand_ins ----------------------------------------------------------------------------


def test_load_gives_stand_ins_inside_the_context_and_downloads_nothing(no_network):
    with standin.use_stand_ins() as names:
        mnist = data.load("mnist")
        iris = data.load("iris")  # embedded: the real data
        data.load("uci:abalone", seed=5, standardize=False, download=True)
    assert "stand-in" in mnist.source and mnist.x_train.shape == (60_000, 1, 28, 28)
    assert mnist.x_test.shape == (10_000, 1, 28, 28)
    assert "stand-in" not in iris.source and len(iris.x_train) == 120
    assert names == {"mnist", "uci:abalone"}


def test_outside_the_context_load_reads_the_real_files(no_network, tmp_path):
    assert standin.loaded_stand_in("mnist") is None
    with pytest.raises(NetworkUsed):
        data.load("mnist", data_dir=tmp_path)


def test_an_unknown_uci_name_inside_the_context_fails_without_a_download(no_network):
    with standin.use_stand_ins(), pytest.raises(ValueError, match="no stand-in"):
        data.load("uci:no-such-table")


def test_the_switch_is_restored_after_an_exception(no_network):
    with pytest.raises(KeyError), standin.use_stand_ins():
        raise KeyError("inside")
    with pytest.raises(NetworkUsed):
        data.load("cifar10")


def test_contexts_nest_and_a_load_counts_in_every_open_one(no_network):
    with standin.use_stand_ins() as outer:
        with standin.use_stand_ins() as inner:
            data.load("uci:iris")
        data.load("jsb-chorales")
    assert inner == {"uci:iris"} and outer == {"uci:iris", "jsb-chorales"}
    assert standin.loaded_stand_in("jsb-chorales") is None


def test_cached_datasets_never_cross_the_context(no_network):
    task_data = ch03_ib_vs_eb.task_data
    task_data.cache_clear()
    assert "stand-in" not in task_data("uci", "iris").source  # a real dataset, cached
    with standin.use_stand_ins():
        assert task_data.cache_info().currsize == 0
        assert "stand-in" in task_data("uci", "uci:abalone").source
    assert task_data.cache_info().currsize == 0
    with pytest.raises(NetworkUsed):  # not the cached stand-in
        task_data("uci", "uci:abalone")


def _loads_data(function: ast.FunctionDef) -> bool:
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
               and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
               and node.func.value.id == "data" for node in ast.walk(function))


def _is_cached(function: ast.FunctionDef) -> bool:
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, (ast.Attribute, ast.Name)) and \
                getattr(target, "attr", getattr(target, "id", None)) in ("cache", "lru_cache"):
            return True
    return False


def test_every_cache_of_loaded_datasets_is_cleared():
    package = Path(standin.__file__).parent
    cached = set()
    for path in [*sorted((package / "data").glob("*.py")),
                 *sorted((package / "experiments").glob("*.py"))]:
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and _is_cached(node) and _loads_data(node):
                cached.add(f"{module}:{node.name}")
    assert cached == set(standin.DATASET_CACHES)


# --- download sizes ---------------------------------------------------------------------------


def test_download_bytes_counts_the_uci_archive_once():
    sizes = standin.DOWNLOAD_BYTES
    assert set(sizes) == {*IMAGES, *MUSIC, "uci"}
    assert sizes["mnist"] == 9_912_422 + 28_881 + 1_648_877 + 4_542
    assert standin.download_bytes(["uci:iris", "uci:wine", "uci:abalone"]) == sizes["uci"]
    assert standin.download_bytes(["mnist", "iris", "mnist-5k", "mnist"]) == sizes["mnist"]
    assert standin.download_bytes([]) == 0
    for unknown in ("mnsit", "uci:no-such-table"):
        with pytest.raises(ValueError, match="no stand-in"):
            standin.download_bytes([unknown])


@settings(max_examples=50, deadline=None)
@given(st.sets(st.sampled_from([*IMAGES, *MUSIC, *UCI[:5], "iris", "mnist1d", "bach-chorales"])))
def test_download_bytes_is_the_sum_over_distinct_downloads(names):
    downloads = {"uci" if name.startswith("uci:") else name for name in names}
    expected = sum(standin.DOWNLOAD_BYTES.get(download, 0) for download in downloads)
    assert standin.download_bytes(names) == expected


# --- deriving the shapes from the real files --------------------------------------------------


def _write_music(data_dir: Path, name: str, lengths: dict[str, list[int]]) -> None:
    """A pickle in Boulanger-Lewandowski's layout with pieces of ``lengths`` steps."""
    (filename,) = data.CHECKSUMS[name]
    pieces = {split: [[(60, 64)] * (length - 1) + [()] for length in split_lengths]
              for split, split_lengths in lengths.items()}
    (data_dir / name).mkdir(parents=True)
    (data_dir / name / filename).write_bytes(pickle.dumps(pieces, protocol=2))


def _table(rows) -> bytes:
    out = io.BytesIO()
    np.savetxt(out, np.asarray(rows, dtype=np.float64), fmt="%g", delimiter=",")
    return out.getvalue()


def _write_uci_archive(path: Path, sizes: dict[str, tuple[int, int, int, int]]) -> None:
    """A data_py.zip whose folder NAME holds n_train + n_test rows of n_features, labels
    0..n_classes-1, the test rows last, for ``sizes[NAME] = (n_train, n_test, n_features,
    n_classes)``."""
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder, (n_train, n_test, n_features, n_classes) in sizes.items():
            n = n_train + n_test
            is_test = np.arange(n) >= n_train
            archive.writestr(f"data/{folder}/{folder}_py.dat", _table(np.ones((n, n_features))))
            archive.writestr(f"data/{folder}/labels_py.dat", _table(np.arange(n)[:, None] % n_classes))
            archive.writestr(f"data/{folder}/folds_py.dat", _table(np.column_stack([is_test] * 4)))
            archive.writestr(f"data/{folder}/validation_folds_py.dat",
                             _table(np.zeros((n, 4))))


def test_derive_shapes_reads_them_with_ibtools_loaders(tmp_path, capsys):
    music_lengths = {name: {"train": [3 + i, 5], "valid": [2], "test": [4 + i]}
                     for i, name in enumerate(MUSIC)}
    for name, lengths in music_lengths.items():
        _write_music(tmp_path, name, lengths)
    sizes = {name: (5 + i % 3, 2, 1 + i % 4, 2 + i % 2)
             for i, name in enumerate(ch03_ib_vs_eb.UCI_DATASETS)}
    archive_sizes = {standin.ARCHIVE_SPELLINGS.get(name, name): size for name, size in sizes.items()}
    _write_uci_archive(tmp_path / "uci" / "data_py.zip", archive_sizes)

    shapes = standin.derive_shapes(tmp_path)
    assert shapes["music"] == {name: {"train": lengths["train"], "test": lengths["test"]}
                               for name, lengths in music_lengths.items()}
    assert shapes["uci"] == {name: dict(zip(("n_train", "n_test", "n_features", "n_classes"), size))
                             for name, size in sizes.items()}

    out = tmp_path / "full_shapes.json"
    assert standin.main([str(tmp_path), "--out", str(out), "--source", "tiny files"]) == 0
    assert json.loads(out.read_text())["source"] == "tiny files"
    stored = standin.read_shapes(out)
    assert stored["nottingham"].test_lengths == (6,)
    assert stored["uci:mini-boone"] == standin.ClassificationShape(*sizes["mini-boone"][:2],
                                                                   (sizes["mini-boone"][2],),
                                                                   sizes["mini-boone"][3])
    assert str(out) in capsys.readouterr().out
