"""MNIST and Fashion-MNIST at full scale: the four gzipped IDX files of each, downloaded into
:func:`ibtools.data.store.data_dir` and verified against their published checksums
(:data:`ibtools.data.store.CHECKSUMS`) every time they are read."""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np

from .records import Dataset, image_dataset
from .store import CHECKSUMS, fetch

ORIGINS = {"mnist": "MNIST (LeCun et al. 1998)", "fashion-mnist": "Fashion-MNIST (Xiao et al. 2017)"}


def load_idx_dataset(name: str, directory: Path, download: bool) -> Dataset:
    """``name`` ("mnist" or "fashion-mnist") from its verified IDX files in ``directory``,
    as float32 images ``(N, 1, 28, 28)`` in [0, 1] and int64 labels, the official split
    (60,000 / 10,000). Raises :class:`ibtools.data.DataUnavailableError` as
    :func:`ibtools.data.store.fetch` does."""
    paths = {filename: fetch(name, filename, directory, download) for filename in CHECKSUMS[name]}
    arrays = {filename: read_idx(path) for filename, path in paths.items()}
    return image_dataset(name, arrays["train-images-idx3-ubyte.gz"],
                         arrays["t10k-images-idx3-ubyte.gz"],
                         arrays["train-labels-idx1-ubyte.gz"],
                         arrays["t10k-labels-idx1-ubyte.gz"], shape=(1, 28, 28),
                         source=f"{ORIGINS[name]} IDX files, checksum-verified, read from {directory}")


LOADERS = {name: functools.partial(load_idx_dataset, name) for name in ORIGINS}

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path | str) -> np.ndarray:
    """Read an IDX file (plain or gzipped) as a native-endian array of its declared shape.

    Format (yann.lecun.com/exdb/mnist): two zero bytes, a type code, the number of
    dimensions, each dimension as a big-endian uint32, then the values, big-endian.
    """
    path = Path(path)
    raw = _read_maybe_gzipped(path)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path} is truncated inside its IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected_size = header_size + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected_size:
        raise ValueError(f"{path} holds {len(raw)} bytes but its IDX header declares shape "
                         f"{shape} ({expected_size} bytes): the file is truncated or corrupt")
    values = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def _read_maybe_gzipped(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":  # the gzip magic number
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"{path} is a truncated or corrupt gzip file ({err})") from err
