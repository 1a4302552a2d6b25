"""Grids of runs, a results cache on disk, tidy tables, and the executors that run a grid.

A run is described completely by a frozen dataclass (its *config*). The cache stores each
finished run under a key made from the experiment's name, the package version, the
experiment's own version tag and every field of the config; the file is written atomically
and carries a checksum of its rows, so an interrupted sweep resumes with every finished run
kept, and a corrupt or partial file is detected and recomputed, never used.

Runs are independent, so a sweep hands the missing ones to an executor and the cache is the
only state they share: in this process (``jobs=1``), in worker processes of this machine
(``jobs=N``: :func:`process_pool`), or on any ``concurrent.futures.Executor`` or submitit
executor (a SLURM cluster; :func:`slurm_executor`). Whoever computes a run writes it to the
cache the moment it ends, so killing the sweep, a worker or a cluster job loses only the runs
in flight, and the same call later computes only what is missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import threading
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
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


class SweepError(RuntimeError):
    """Some runs of a sweep raised; every other run finished and is in the cache.

    ``failures`` holds ``(config, traceback text)`` for each run that raised."""

    def __init__(self, experiment: str, failures: list[tuple[Any, str]], finished: int):
        self.experiment, self.failures, self.finished = experiment, failures, finished
        lines = [f"{len(failures)} run(s) of {experiment} raised; the other {finished} finished and are "
                 "cached, so running the same sweep again computes only the failed ones."]
        for config, trace in failures:
            lines += ["", f"--- {config!r}", trace.rstrip()]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Outcome:
    """What computing one run gave: its rows, or the traceback of what it raised."""

    rows: list[dict] | None = None
    error: str | None = None


def compute(run: Callable[[Any], list[dict]], config, experiment: str, version: int,
            cache_root: str | None) -> Outcome:
    """Run ``run(config)`` and, with a cache, write the rows there before returning: the unit
    of work every executor is given (it is picklable, and runs in whatever process or cluster
    job the executor chooses), with one CPU thread (:func:`one_cpu_thread`) wherever that is.
    An ``Exception`` becomes an :class:`Outcome` with its traceback, so one failing run never
    stops the others; ``KeyboardInterrupt`` still propagates."""
    with _worker_busy or contextlib.nullcontext(), one_cpu_thread():
        try:
            rows = run(config)
        except Exception:  # noqa: BLE001  (reported with the config by sweep())
            return Outcome(error=traceback.format_exc())
        if cache_root is not None:
            ResultsCache(cache_root).save(experiment, version, config, rows)
        return Outcome(rows=rows)


def compute_many(run: Callable[[Any], list[dict]], configs: list, experiment: str, version: int,
                 cache_root: str | None) -> list[Outcome]:
    """:func:`compute` for several runs one after the other: one task of a cluster job array.
    A run that is already in the cache (finished by an earlier, interrupted task) is skipped."""
    store = ResultsCache(cache_root) if cache_root is not None else None
    outcomes = []
    for config in configs:
        rows = store.load(experiment, version, config) if store else None
        outcomes.append(Outcome(rows=rows) if rows is not None
                        else compute(run, config, experiment, version, cache_root))
    return outcomes


# --- worker processes on this machine ---------------------------------------------------------

# The CPU threads torch computes a run of a sweep with, here or in a worker (see one_cpu_thread).
RUN_THREADS = 1


@contextlib.contextmanager
def one_cpu_thread():
    """torch computes with one CPU thread inside the block, as in a worker of :func:`process_pool`.

    On the CPU the thread count changes how a matrix product splits its sums, and so the last
    bits of a run's numbers; with one thread everywhere a table is the same, bit for bit,
    however many jobs computed it and on however many cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(RUN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pool_devices(device: str | None = None) -> list[str]:
    """The devices worker processes take turns on: every visible GPU for ``"cuda"``, else the
    one device named (``"cuda:1"``, ``"cpu"``). ``None`` is ``$IBTOOLS_DEVICE`` if set, else
    ``"cuda"`` when CUDA is available, else ``"cpu"``: the device a run given ``device=None``
    resolves to (:func:`ibtools.train.resolve_device`), spread over every GPU."""
    import torch

    if device is None:
        device = os.environ.get("IBTOOLS_DEVICE", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if device == "cuda":
        return [f"cuda:{i}" for i in range(max(1, torch.cuda.device_count()))]
    return [device]


# In a worker process of process_pool: held while a run is computed (see _exit_with_parent).
_worker_busy: threading.Lock | None = None


def _exit_with_parent(parent: int) -> None:
    """Ends this worker once the sweep's process is gone (killed, say), after the run it is
    computing is finished and cached. Without this, workers orphaned by a ``kill -9`` would go
    on with the runs queued for them and then wait forever, holding memory (and GPU memory)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    _worker_busy.acquire()
    os._exit(0)


def _init_worker(devices: list[str], counter) -> None:
    global _worker_busy
    _worker_busy = threading.Lock()
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    # Worker k (in order of start) runs on devices[k % len(devices)]: round robin over the
    # GPUs. Experiments resolve device=None through $IBTOOLS_DEVICE (ibtools.train).
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    os.environ["IBTOOLS_DEVICE"] = devices[index % len(devices)]
    import torch

    device = torch.device(devices[index % len(devices)])
    if device.type == "cuda" and device.index is not None and torch.cuda.is_available():
        # Its GPU current too, for whatever in torch looks at the current device rather than at
        # the tensors (CUDA graphs' shared capture stream is made on it).
        torch.cuda.set_device(device)
    torch.set_num_threads(RUN_THREADS)  # for what a worker does besides runs (a planner's probes)


def process_pool(jobs: int, device: str | None = None) -> ProcessPoolExecutor:
    """``jobs`` worker processes for :func:`sweep`, started fresh (``spawn``: no state copied
    from this process, and safe with CUDA). Each worker computes with one CPU thread
    (:data:`RUN_THREADS`): several torch processes each spinning on every core slow each other
    down many times over, and one thread everywhere keeps a table the same bit for bit. On GPUs
    the workers take turns over :func:`pool_devices`.

    Raises ValueError for ``jobs < 1``."""
    if jobs < 1:
        raise ValueError(f"jobs must be a whole number >= 1, got {jobs}")
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                               initargs=(pool_devices(device), context.Value("i", 0)))


# --- a cluster, through submitit ----------------------------------------------------------------

def slurm_executor(folder: str | Path, *, partition: str | None = None, gpus_per_task: int = 1,
                   time_min: int = 240, runs_per_task: int = 1, cluster: str | None = None,
                   **parameters: Any):
    """A submitit executor for :func:`sweep`: each task of a SLURM job array computes
    ``runs_per_task`` runs one after another on ``gpus_per_task`` GPUs within ``time_min``
    minutes. ``folder`` keeps submitit's job files and logs. ``cluster=None`` submits to SLURM
    when one is found (``sbatch``) and fails otherwise; ``"local"`` runs the same job array as
    local subprocesses (what the tests use); ``"debug"`` in this process. Other keywords go to
    submitit's ``update_parameters`` (e.g. ``slurm_array_parallelism=32``, ``cpus_per_task=4``).
    The results cache must be on a file system the cluster's nodes share."""
    import submitit

    if runs_per_task < 1:
        raise ValueError(f"runs_per_task must be >= 1, got {runs_per_task}")
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster or "slurm")
    settings = dict(timeout_min=time_min, gpus_per_node=gpus_per_task, tasks_per_node=1, nodes=1)
    if partition:
        settings["slurm_partition"] = partition
    executor.update_parameters(**settings, **parameters)
    executor.runs_per_task = runs_per_task  # read by sweep() to group runs into array tasks
    return executor


def _is_submitit(executor) -> bool:
    return hasattr(executor, "map_array") and hasattr(executor, "update_parameters")


# --- the sweep ----------------------------------------------------------------------------------

def sweep(
    run: Callable[[Any], list[dict]],
    configs: Iterable,
    *,
    experiment: str,
    version: int = 1,
    cache: ResultsCache | None | bool = None,
    progress: bool | None = None,
    description: str | None = None,
    jobs: int = 1,
    executor=None,
) -> pd.DataFrame:
    """Run ``run(config)`` for every config (cached runs are read back) and return one tidy
    table: the rows each run returned, with every config field added as a column, runs in the
    order of ``configs`` however they were computed.

    ``cache=None`` uses the default cache directory, ``cache=False`` disables caching.
    ``progress=None`` shows a progress bar of runs except while the book is being built
    (``IBTOOLS_BOOK=1``), where nobody watches it and it would only clutter the page.

    Where the missing runs are computed (each with one CPU thread, :func:`one_cpu_thread`):
    ``jobs=1`` here, one after another; ``jobs=N`` in N worker processes (:func:`process_pool`,
    on the CPU); ``executor``, any
    ``concurrent.futures.Executor`` of processes (a Dask cluster's included, its workers one
    thread each: runs seed torch's process-wide generator, so threads are refused) or a submitit
    executor (:func:`slurm_executor`), whose workers must be able to import ``run`` and, with a
    cache, write to it. Every finished run is cached as it ends. A run that raises does not stop the
    others: once they have finished, :class:`SweepError` reports each failed config with its
    traceback."""
    if progress is None:
        progress = os.environ.get("IBTOOLS_BOOK") != "1"
    if isinstance(executor, ThreadPoolExecutor):
        raise ValueError("runs seed torch's global random generator, so runs in threads of one process "
                         "would change each other's random numbers: use an executor of processes "
                         "(jobs=N, a ProcessPoolExecutor, Dask workers with one thread each)")
    configs = list(configs)
    for config in configs:
        config_dict(config)  # a config that is no dataclass fails here, before any run
    distinct = list(dict.fromkeys(configs))
    store = None if cache is False else (cache if isinstance(cache, ResultsCache) else ResultsCache(cache))
    results: dict = {}
    if store:
        for config in distinct:
            rows = store.load(experiment, version, config)
            if rows is not None:
                results[config] = rows
    todo = [c for c in distinct if c not in results]
    failures: list[tuple[Any, str]] = []
    bar = tqdm(total=len(distinct), initial=len(results), desc=description or experiment,
               unit="run", disable=not progress, leave=False)
    root = str(store.root) if store else None

    counted: set = set()

    def finished(config, outcome: Outcome | None) -> None:
        """Record a run's outcome (None: it is known to be done, its outcome comes later)."""
        if outcome is not None and outcome.error is not None:
            failures.append((config, outcome.error))
        elif outcome is not None:
            results[config] = outcome.rows
        if config not in counted:
            counted.add(config)
            bar.update(1)

    try:
        if todo and executor is None and jobs == 1:
            for config in todo:
                finished(config, compute(run, config, experiment, version, root))
        elif todo and executor is None:
            with process_pool(jobs) as pool:
                _on_futures(pool, run, todo, experiment, version, root, finished)
        elif todo and _is_submitit(executor):
            _on_job_array(executor, run, todo, experiment, version, root, finished, store)
        elif todo:
            _on_futures(executor, run, todo, experiment, version, root, finished)
    finally:
        bar.close()
    if failures:
        raise SweepError(experiment, failures, len(results))
    return _table(configs, results)


def _on_futures(executor, run, todo, experiment, version, root, finished) -> None:
    futures = {executor.submit(compute, run, config, experiment, version, root): config for config in todo}
    try:
        for future in as_completed(futures):
            finished(futures[future], future.result())
    except BrokenProcessPool as err:
        lost = [c for f, c in futures.items() if not f.done() or f.exception() is not None]
        raise RuntimeError(
            f"a worker process died (killed, or out of memory?) while {len(lost)} run(s) of {experiment} "
            "were unfinished; every finished run is in the cache, so running the same sweep again "
            "resumes (with fewer jobs if memory ran out)") from err
    finally:
        for future in futures:
            future.cancel()


def _on_job_array(executor, run, todo, experiment, version, root, finished, store, poll_s: float = 2.0) -> None:
    """Submit the runs as one job array of tasks of ``executor.runs_per_task`` runs, and wait,
    counting each run as its file appears in the cache (or its task ends)."""
    size = getattr(executor, "runs_per_task", 1)
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    jobs = executor.map_array(compute_many, [run] * len(chunks), chunks, [experiment] * len(chunks),
                              [version] * len(chunks), [root] * len(chunks))
    ids = sorted({str(job.job_id).split("_")[0] for job in jobs})
    print(f"submitted {len(todo)} run(s) of {experiment} as {len(jobs)} task(s) of job(s) "
          f"{', '.join(ids)}; logs in {executor.folder}", file=sys.stderr)
    pending = dict(zip(jobs, chunks))
    try:
        _wait_for_tasks(pending, experiment, version, finished, store, poll_s)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; the submitted tasks go on ({executor.folder} has their logs). "
              "'python -m ibtools status' counts the finished runs; running the same sweep again "
              "collects them (and submits whatever is not finished, again).", file=sys.stderr)
        raise


def _wait_for_tasks(pending: dict, experiment, version, finished, store, poll_s: float) -> None:
    while pending:
        for job in [j for j in pending if j.done()]:
            chunk = pending.pop(job)
            try:
                outcomes = job.result()
            except Exception as err:  # noqa: BLE001  (the task itself failed: killed, timed out)
                # runs it finished before it failed are in the cache
                outcomes = [Outcome(rows=rows) if (rows := store and store.load(experiment, version, c))
                            else Outcome(error=f"cluster task {job.job_id} failed: {err}") for c in chunk]
            for config, outcome in zip(chunk, outcomes):
                finished(config, outcome)
        if pending and store:  # runs finished inside tasks still going
            for chunk in pending.values():
                for config in chunk:
                    if store.path(experiment, store.key(experiment, version, config)).exists():
                        finished(config, None)
        if pending:
            time.sleep(poll_s)


def _table(configs: list, results: dict) -> pd.DataFrame:
    frames = []
    for config in configs:
        table = pd.DataFrame(results[config])
        for name, value in config_dict(config).items():
            table[name] = [value] * len(table)
        frames.append(table)
    if not frames:
        return pd.DataFrame()
    result = pd.concat(frames, ignore_index=True)
    fields = list(config_dict(configs[0]))
    result = result[fields + [c for c in result.columns if c not in fields]]
    result.attrs["config_fields"] = fields
    return result


def missing(configs: Iterable, *, experiment: str, version: int = 1,
            cache: ResultsCache | None = None) -> list:
    """The configs whose run is not (intact) in the cache: what a sweep would compute."""
    store = cache if isinstance(cache, ResultsCache) else ResultsCache(cache)
    return [c for c in dict.fromkeys(configs) if store.load(experiment, version, c) is None]


def run_columns(table: pd.DataFrame) -> list[str]:
    """The columns that identify a run: the config's fields, which :func:`sweep` records in
    ``table.attrs``; for a table made by hand, whichever of problem, method, lr, seed it has."""
    fields = table.attrs.get("config_fields") or ["problem", "method", "lr", "seed"]
    return [f for f in fields if f in table]
