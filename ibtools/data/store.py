"""The shared layer under every full-scale source: where the files live, where they come
from, what they must hash to, and what happens to one that fails.

- :func:`data_dir`: the folder of full-scale datasets (``$IBTOOLS_DATA``).
- :data:`MIRRORS` and :data:`CHECKSUMS`: each dataset's download sites and files; a file
  with a published checksum is verified against it on every read, one without (music, UCI)
  by its source module's parser.
- :func:`fetch`: the verified file, downloaded if needed. A file that fails verification is
  never deleted and never used: :func:`quarantine` moves it aside to ``NAME.corrupt``
  (``NAME.corrupt.1``, ... when that is taken), and the error says what was expected, what
  was found and where the file now is, then how to fix it (:func:`unavailable_message`).

This module imports no source module: the sources (``mnist``, ``cifar``, ``music``,
``uci``) build on it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from ..files import atomic_file


class DataUnavailableError(RuntimeError):
    """A full-scale dataset is not on disk and cannot be downloaded, or what is on disk
    failed verification; the message says what was found and how to fix it."""


def data_dir() -> Path:
    """Where full-scale datasets live: ``$IBTOOLS_DATA``, else ``~/.cache/ibtools/data``."""
    configured = os.environ.get("IBTOOLS_DATA")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "ibtools" / "data"


def root(explicit: Path | str | None) -> Path:
    """``explicit`` as a path, or :func:`data_dir` when it is None."""
    return Path(explicit).expanduser() if explicit is not None else data_dir()


# --- full-scale datasets: where they come from and what they must hash to ---------------------

# Mirrors are tried in order. Checksums are "algorithm:hexdigest" for any hashlib algorithm;
# these are the MD5s published with torchvision's MNIST, FashionMNIST, CIFAR10 and CIFAR100
# datasets.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    # The Toronto site is reported to have moved to cave.cs.toronto.edu; that mirror is listed
    # untested (it could not be reached from where this was written).
    "cifar10": ("https://www.cs.toronto.edu/~kriz/", "https://cave.cs.toronto.edu/kriz/"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/", "https://cave.cs.toronto.edu/kriz/"),
    # Boulanger-Lewandowski et al. (2012)'s piano rolls, and the 121 UCI classification
    # datasets of Fernandez-Delgado et al. (2014) as prepared by Klambauer et al. (2017).
    # The Internet Archive keeps copies of some of the pickles; it redirects to the capture
    # nearest the date given.
    **{name: ("http://www-etud.iro.umontreal.ca/~boulanni/",
              "https://web.archive.org/web/2014id_/http://www-etud.iro.umontreal.ca/~boulanni/")
       for name in ("jsb-chorales", "musedata", "nottingham", "piano-midi")},
    "uci": ("http://www.bioinf.jku.at/people/klambauer/",),
}
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {
        "cifar-10-python.tar.gz": "md5:c58f30108f718f92721af3b95e74349a",
    },
    "cifar100": {
        "cifar-100-python.tar.gz": "md5:eb9058c3a382ffc7106e4002c42a8d85",
    },
    # No checksums are published for these: their loaders verify them by parsing
    # (ibtools.data.music.read_piano_rolls, ibtools.data.uci.read_collection) and quarantine
    # a file that fails.
    "jsb-chorales": {"JSB Chorales.pickle": None},
    "musedata": {"MuseData.pickle": None},
    "nottingham": {"Nottingham.pickle": None},
    "piano-midi": {"Piano-midi.de.pickle": None},
    "uci": {"data_py.zip": None},
}
EMBEDDED_ALTERNATIVE = {
    "mnist": 'Or use the embedded "mnist-5k" (5,000 real MNIST digits, no download).',
    "fashion-mnist": 'There is no embedded Fashion-MNIST; reduced-scale experiments use the '
                     'embedded "mnist-5k" (5,000 real MNIST digits, no download).',
    "cifar10": 'There is no embedded CIFAR-10; reduced-scale experiments use the embedded '
               '"mnist-5k" (5,000 real MNIST digits, no download).',
    "cifar100": 'There is no embedded CIFAR-100; reduced-scale experiments use the embedded '
                '"mnist-5k" (5,000 real MNIST digits, no download).',
    **{name: 'Reduced-scale experiments use the embedded "bach-chorales" (piano rolls of the Bach '
             "chorales in music21's corpus, no download)."
       for name in ("jsb-chorales", "musedata", "nottingham", "piano-midi")},
    "uci": 'Reduced-scale experiments use the UCI tables scikit-learn ships: "iris", "wine" and '
           '"breast-cancer" (no download).',
}
DOWNLOAD_TIMEOUT_S = 60


def _digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def checksum_problem(path: Path, checksum: str) -> str | None:
    """None when the file ``path`` hashes to ``checksum`` ("algorithm:hexdigest"), else what
    was found: "its md5 is X (N bytes), not the published Y"."""
    algorithm, _, expected = checksum.partition(":")
    found = _digest(path, algorithm)
    if found == expected:
        return None
    return (f"its {algorithm} is {found} ({path.stat().st_size:,} bytes), not the published "
            f"{expected}")


def quarantine(path: Path) -> Path:
    """Move the file ``path`` aside to ``NAME.corrupt`` (``NAME.corrupt.1``, ``.2``, ... when
    that exists) in the same folder, and return where it now is. Nothing is deleted: a file
    that failed verification may still be the only copy someone has."""
    target = path.with_name(path.name + ".corrupt")
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt.{n}")
    path.rename(target)
    return target


def set_aside(path: Path, problem: str) -> str:
    """Quarantine ``path`` and say so: "PATH was on disk but PROBLEM; moved to PATH.corrupt"."""
    return f"{path} was on disk but {problem}; moved to {quarantine(path)}"


def download_file(url: str, destination: Path, checksum: str | None) -> None:
    """Fetch ``url`` into ``destination``, atomically, only if it hashes to ``checksum``
    (any content when ``checksum`` is None: the loader then verifies it by parsing).

    Network failures raise OSError (or http.client.HTTPException); a wrong checksum,
    ValueError. Either way ``destination`` is left untouched.
    """
    algorithm, _, expected = (checksum or "sha256:").partition(":")
    hasher = hashlib.new(algorithm, usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
            atomic_file(destination, "wb") as file:
        size = response.headers.get("Content-Length")
        with tqdm(total=int(size) if size else None, unit="B", unit_scale=True,
                  desc=destination.name) as progress:
            while chunk := response.read(1 << 20):
                file.write(chunk)
                hasher.update(chunk)
                progress.update(len(chunk))
        if checksum is not None and hasher.hexdigest() != expected:
            raise ValueError(f"{algorithm} {hasher.hexdigest()} does not match the published "
                             f"{expected}")


def fetch(dataset: str, filename: str, directory: Path, download: bool, *,
          found: str | None = None) -> Path:
    """The file ``directory/filename`` of ``dataset`` (a key of :data:`CHECKSUMS`), verified
    against its published checksum, downloaded from :data:`MIRRORS` if it is missing or fails.

    A file on disk that fails its checksum is quarantined (:func:`quarantine`), never used.
    A file without a published checksum is returned as it is: its loader verifies it by
    parsing and, when that fails, quarantines it and calls again with ``found`` saying what
    it found, so that a download is attempted and any error says both things.

    Raises :class:`DataUnavailableError` when the file is missing or failed and
    ``download`` is False, or every mirror failed: the message says what was on disk, what
    each mirror did, and the fix (:func:`unavailable_message`).
    """
    path, checksum = directory / filename, CHECKSUMS[dataset][filename]
    if found is None and path.is_file():
        problem = None if checksum is None else checksum_problem(path, checksum)
        if problem is None:
            return path
        found = set_aside(path, problem)
    if not download:
        state = found or f"{path} is missing"
        raise DataUnavailableError(unavailable_message(
            dataset, directory, f"{state}; download=False, so nothing was downloaded (pass "
                                f"download=True to fetch it)"))
    directory.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in MIRRORS[dataset]:
        url = mirror + urllib.parse.quote(filename)
        try:
            download_file(url, path, checksum)
            return path
        except (OSError, http.client.HTTPException, ValueError) as err:
            failures.append(f"  {url}: {err}")
    failed = f"the download of {filename} failed:\n" + "\n".join(failures)
    raise DataUnavailableError(unavailable_message(
        dataset, directory, f"{found};\nthen {failed}" if found else failed))


def unavailable_message(dataset: str, directory: Path, reason: str) -> str:
    """The error for ``dataset`` (a key of :data:`CHECKSUMS`): "'NAME' is unavailable:
    REASON", then "To fix:" with the files to place by hand in ``directory`` and the
    embedded alternative."""
    files = ", ".join(CHECKSUMS[dataset])
    return (f"{dataset!r} is unavailable: {reason}\n"
            f"To fix: place these files by hand in {directory}: {files} "
            f"(checksums in ibtools.data.CHECKSUMS). {EMBEDDED_ALTERNATIVE[dataset]}")
