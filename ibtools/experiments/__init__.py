"""The book's experiments, one module per chapter, and the registry the CLI and widgets use.

An :class:`Experiment` couples a run function (config -> tidy rows) with the grids of configs
of its two scales: ``reduced`` (CPU, offline, seconds; what the book executes) and ``full``
(the paper's data, architecture, epochs and seeds; for a GPU).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import gzip
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .. import data
from ..files import atomic_file, write_atomic
from ..sweep import ResultsCache, process_pool, sweep
from ..train import resolve_device

SCALES = ("reduced", "full")
RESULTS_DIR = Path(__file__).resolve().parents[2] / "book" / "results"


@dataclass(frozen=True)
class Experiment:
    """A named experiment: ``run(config, device)`` -> rows, and ``configs(scale, **axes)`` -> grid.

    ``configs`` accepts ``seeds`` (a count), ``lrs`` and ``methods`` to narrow or widen the
    preset grid; the learning-rate slider of a chapter calls it with a single lr."""

    name: str
    chapter: int
    title: str
    run: Callable[..., list[dict]]
    configs: Callable[..., list]
    metric: str = "train_loss"
    version: int = 1

    def grid(self, scale: str = "reduced", **axes: Any) -> list:
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; use 'reduced' (CPU, minutes) or 'full' (the paper's, for a GPU)")
        return self.configs(scale, **{k: v for k, v in axes.items() if v is not None})

    def sweep(self, scale: str = "reduced", *, device=None, cache: ResultsCache | None | bool = None,
              progress: bool | None = None, jobs: int = 1, executor=None, **axes: Any) -> pd.DataFrame:
        """Run (or read back from the cache) the preset grid of ``scale``; one tidy table.

        ``jobs=N`` computes the missing runs in N worker processes (on the CPU one thread each;
        with ``device="cuda"``, or ``None`` on a machine with GPUs, taking turns over every
        visible GPU); ``executor`` hands them to any ``concurrent.futures.Executor`` or submitit
        executor instead (see :func:`ibtools.sweep.sweep`). The table is the same either way.
        Raises ValueError for an unknown scale or an unusable device, and
        :class:`ibtools.sweep.SweepError` if runs raised (after the others finished). Full-scale
        datasets the runs need are fetched first (:func:`available`); runs on one that cannot be
        had are left out with a warning, and ``table.attrs["skipped_datasets"]`` says which and why."""
        configs = self.grid(scale, **axes)
        if device is not None:
            resolve_device(device)  # an unusable device fails here, before any run
        configs, skipped = available(configs)
        if executor is None and jobs == 1:
            table = sweep(functools.partial(self.run, device=device), configs, experiment=self.name,
                          version=self.version, cache=cache, progress=progress,
                          description=f"{self.name} ({scale})")
        else:
            own_pool = executor is None
            # Worker processes of our own pick their device themselves (pool_devices); any other
            # executor's workers are given the device asked for, as a string.
            device = None if device is None else str(device)
            run = functools.partial(self.run, device=None if own_pool else device)
            with process_pool(jobs, device) if own_pool else contextlib.nullcontext(executor) as pool:
                table = sweep(run, configs, experiment=self.name, version=self.version, cache=cache,
                              progress=progress, description=f"{self.name} ({scale})", executor=pool)
        table.attrs["skipped_datasets"] = skipped
        return table


def available(configs) -> tuple[list, dict[str, str]]:
    """``configs`` without those whose dataset cannot be had, and {dataset: why} for those.

    Every full-scale dataset the configs name (their ``dataset`` field) is downloaded and
    verified here, once, so that parallel workers find it on disk instead of each fetching
    its own copy. A dataset that is unavailable or damaged costs only its own runs, which are
    dropped with a warning naming it and why; if no dataset can be had at all, one
    :class:`ibtools.data.DataUnavailableError` gives every dataset's message."""
    names = sorted({getattr(c, "dataset", None) for c in configs} - {None})
    skipped, errors = {}, []
    for name in (n for n in names if data.is_full_scale(n)):
        try:
            data.load(name)
        except data.DataUnavailableError as err:
            skipped[name] = str(err).splitlines()[0]
            errors.append(str(err))
    if skipped and len(skipped) == len(names):
        raise data.DataUnavailableError("\n".join(errors))
    if skipped:
        warnings.warn(f"{len(skipped)} of {len(names)} datasets are unavailable and their runs are left out: "
                      + "; ".join(f"{n}: {why}" for n, why in skipped.items()), stacklevel=3)
    return [c for c in configs if getattr(c, "dataset", None) not in skipped], skipped


EXPERIMENTS: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    EXPERIMENTS[experiment.name] = experiment
    return experiment


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        close = difflib.get_close_matches(name, EXPERIMENTS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown experiment {name!r}.{hint} Known: {', '.join(sorted(EXPERIMENTS))} "
                         "(python -m ibtools list describes them)")
    return EXPERIMENTS[name]


COMPRESS_ABOVE = 2_000_000  # bytes of CSV above which a table is committed gzipped


def save_results(table: pd.DataFrame, out_dir: Path, provenance: dict) -> Path:
    """Write a sweep's table and its provenance where :func:`load_results` finds them: the table
    as ``results.csv``, or as ``results.csv.gz`` when its CSV exceeds :data:`COMPRESS_ABOVE`
    bytes (written with no timestamp, so the same table gives the same bytes); the other form
    is removed so that one table is found."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = table.to_csv(index=False, float_format="%.7g")  # 7 digits: float32's
    plain, packed = out_dir / "results.csv", out_dir / "results.csv.gz"
    if len(text) > COMPRESS_ABOVE:
        with atomic_file(packed, "wb") as file:
            file.write(gzip.compress(text.encode(), mtime=0))
        plain.unlink(missing_ok=True)
    else:
        write_atomic(plain, text)
        packed.unlink(missing_ok=True)
    write_atomic(out_dir / "provenance.json", json.dumps(provenance, indent=2, sort_keys=True))
    return out_dir


def results_file(folder: Path) -> Path | None:
    """The results table in ``folder`` (``results.csv`` or ``results.csv.gz``), None if neither."""
    for name in ("results.csv", "results.csv.gz"):
        if (folder / name).exists():
            return folder / name
    return None


def load_results(name: str, scale: str = "full", results_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict] | None:
    """A committed (or CLI-written) result table and its provenance, or None if there is none.

    Looks in ``results_dir/NAME/SCALE/`` (default: the book's ``book/results``) for
    ``results.csv`` or ``results.csv.gz``."""
    folder = (RESULTS_DIR if results_dir is None else Path(results_dir)) / name / scale
    path = results_file(folder)
    if path is None:
        return None
    provenance = json.loads((folder / "provenance.json").read_text())
    table = pd.read_csv(path)
    table.attrs["config_fields"] = provenance.get("config_fields", [])
    return table, provenance


from . import ch01_isgd, ch03_ib_vs_eb, ch04_sibp, ch05_taylor, ch06_configurations, ch07_large_lr, ch08_alt_losses  # noqa: E402,F401  (register the chapters' experiments)
