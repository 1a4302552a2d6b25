"""The book's experiments, one module per chapter, and the registry the CLI and widgets use.

An :class:`Experiment` couples a run function (config -> tidy rows) with the grids of configs
of its two scales: ``reduced`` (CPU, offline, seconds; what the book executes) and ``full``
(the paper's data, architecture, epochs and seeds; for a GPU).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .. import data
from ..files import write_atomic
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
        Full-scale datasets the runs need are downloaded and verified here first, once, not
        by every worker. Raises ValueError for an unknown scale or an unusable device, and
        :class:`ibtools.sweep.SweepError` if runs raised (after the others finished)."""
        configs = self.grid(scale, **axes)
        if device is not None:
            resolve_device(device)  # an unusable device fails here, before any run
        if executor is None and jobs == 1:
            return sweep(functools.partial(self.run, device=device), configs, experiment=self.name,
                         version=self.version, cache=cache, progress=progress,
                         description=f"{self.name} ({scale})")
        prefetch(configs)
        own_pool = executor is None
        # Worker processes of our own pick their device themselves (pool_devices); any other
        # executor's workers are given the device asked for, as a string.
        device = None if device is None else str(device)
        run = functools.partial(self.run, device=None if own_pool else device)
        with process_pool(jobs, device) if own_pool else contextlib.nullcontext(executor) as pool:
            return sweep(run, configs, experiment=self.name, version=self.version, cache=cache,
                         progress=progress, description=f"{self.name} ({scale})", executor=pool)


def prefetch(configs) -> None:
    """Download and verify every full-scale dataset named by the configs' ``dataset`` field,
    so that parallel workers find them on disk instead of each fetching its own copy."""
    names = {getattr(c, "dataset", None) for c in configs} - {None}
    for name in sorted(n for n in names if data.is_full_scale(n)):
        data.load(name)


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


def save_results(table: pd.DataFrame, out_dir: Path, provenance: dict) -> Path:
    """Write a sweep's table and its provenance where :func:`load_results` finds them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "results.csv", table.to_csv(index=False, float_format="%.7g"))  # 7 digits: float32's
    write_atomic(out_dir / "provenance.json", json.dumps(provenance, indent=2, sort_keys=True))
    return out_dir


def load_results(name: str, scale: str = "full", results_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict] | None:
    """A committed (or CLI-written) result table and its provenance, or None if there is none.

    Looks in ``results_dir/NAME/SCALE/`` (default: the book's ``book/results``)."""
    folder = (RESULTS_DIR if results_dir is None else Path(results_dir)) / name / scale
    if not (folder / "results.csv").exists():
        return None
    provenance = json.loads((folder / "provenance.json").read_text())
    table = pd.read_csv(folder / "results.csv")
    table.attrs["config_fields"] = provenance.get("config_fields", [])
    return table, provenance


from . import ch01_isgd, ch03_ib_vs_eb, ch04_sibp, ch05_taylor, ch06_configurations, ch07_large_lr, ch08_alt_losses  # noqa: E402,F401  (register the chapters' experiments)
