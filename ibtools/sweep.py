"""Grids of runs, a results cache on disk, and tidy tables.

A run is described completely by a frozen dataclass (its *config*). The cache stores each
finished run under a key made from the experiment's name, the package version, the
experiment's own version tag and every field of the config; the file is written atomically
and carries a checksum of its rows, so an interrupted sweep resumes with every finished run
kept, and a corrupt or partial file is detected and recomputed, never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
from tqdm.auto import tqdm

from . import __version__
from .files import write_atomic


def grid(config_type: type, **axes: Any) -> list:
    """Every combination of the given fields: ``grid(Cfg, lr=[0.1, 1], seed=[0, 1], epochs=2)``.

    A list (or tuple) value is an axis of the grid; any other value is held fixed."""
    names = list(axes)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in axes.values()]
    return [config_type(**dict(zip(names, combo))) for combo in itertools.product(*values)]


def config_dict(config) -> dict:
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"a run's config must be a dataclass, got {type(config).__name__}")
    return dataclasses.asdict(config)


def default_cache_dir() -> Path:
    """``$IBTOOLS_CACHE``, else ``~/.cache/ibtools/results``."""
    return Path(os.environ.get("IBTOOLS_CACHE", Path.home() / ".cache" / "ibtools" / "results"))


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)


def _checksum(rows: list[dict]) -> str:
    return hashlib.sha256(_canonical(rows).encode()).hexdigest()


class ResultsCache:
    """One JSON file per finished run under ``root/EXPERIMENT/``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def key(self, experiment: str, version: int, config) -> str:
        ident = {"experiment": experiment, "ibtools": __version__, "version": version,
                 "config_type": type(config).__name__, "config": config_dict(config)}
        return hashlib.sha256(_canonical(ident).encode()).hexdigest()

    def path(self, experiment: str, key: str) -> Path:
        return self.root / experiment / f"{key[:24]}.json"

    def load(self, experiment: str, version: int, config) -> list[dict] | None:
        """The cached rows of this run, or None if absent; a damaged file is removed."""
        key = self.key(experiment, version, config)
        path = self.path(experiment, key)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            if record["key"] != key or record["checksum"] != _checksum(record["rows"]):
                raise ValueError("key or checksum mismatch")
            return record["rows"]
        except (ValueError, KeyError, TypeError, OSError) as err:
            warnings.warn(f"cached result {path} is damaged ({err}); recomputing it", stacklevel=2)
            path.unlink(missing_ok=True)
            return None

    def save(self, experiment: str, version: int, config, rows: list[dict]) -> Path:
        key = self.key(experiment, version, config)
        record = {"key": key, "experiment": experiment, "config": config_dict(config),
                  "rows": rows, "checksum": _checksum(rows)}
        path = self.path(experiment, key)
        # Rows keep their own key order (the checksum is order-free), so a table read back
        # from the cache has the columns of a freshly computed one.
        write_atomic(path, json.dumps(record, separators=(",", ":"), allow_nan=True))
        return path


def sweep(
    run: Callable[[Any], list[dict]],
    configs: Iterable,
    *,
    experiment: str,
    version: int = 1,
    cache: ResultsCache | None | bool = None,
    progress: bool | None = None,
    description: str | None = None,
) -> pd.DataFrame:
    """Run ``run(config)`` for every config (cached runs are read back) and return one tidy
    table: the rows each run returned, with every config field added as a column.

    ``cache=None`` uses the default cache directory, ``cache=False`` disables caching.
    ``progress=None`` shows a progress bar except while the book is being built
    (``IBTOOLS_BOOK=1``), where nobody watches it and it would only clutter the page."""
    if progress is None:
        progress = os.environ.get("IBTOOLS_BOOK") != "1"
    configs = list(configs)
    store = None if cache is False else (cache if isinstance(cache, ResultsCache) else ResultsCache(cache))
    frames = []
    bar = tqdm(configs, desc=description or experiment, disable=not progress, leave=False)
    for config in bar:
        rows = store.load(experiment, version, config) if store else None
        if rows is None:
            rows = run(config)
            if store:
                store.save(experiment, version, config, rows)
        table = pd.DataFrame(rows)
        for name, value in config_dict(config).items():
            table[name] = [value] * len(table)
        frames.append(table)
    bar.close()
    if not frames:
        return pd.DataFrame()
    result = pd.concat(frames, ignore_index=True)
    fields = list(config_dict(configs[0]))
    result = result[fields + [c for c in result.columns if c not in fields]]
    result.attrs["config_fields"] = fields
    return result


def run_columns(table: pd.DataFrame) -> list[str]:
    """The columns that identify a run: the config's fields, which :func:`sweep` records in
    ``table.attrs``; for a table made by hand, whichever of problem, method, lr, seed it has."""
    fields = table.attrs.get("config_fields") or ["problem", "method", "lr", "seed"]
    return [f for f in fields if f in table]
