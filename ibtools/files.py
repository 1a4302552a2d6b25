"""Files that are whole or absent: what the results cache, the CLI and the downloads write."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: Path, mode: str = "w"):
    """Open a new file that replaces ``path`` only when the block completes (``mode`` "w" for
    UTF-8 text, "wb" for bytes); a reader sees the old file or the whole new one, never part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its files are private (0600) and os.replace would keep that mode;
    # a unique name opened with "x" gets the permissions of any new file (the umask's).
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, mode.replace("w", "x"), encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(text)
