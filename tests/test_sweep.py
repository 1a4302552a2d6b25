"""Grids, the results cache and tidy tables: nothing is lost, nothing damaged is used."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY_LRS, TinyConfig, make_regression
from hypothesis import given, settings
from hypothesis import strategies as st

import ibtools.sweep
from ibtools.files import write_atomic
from ibtools.sweep import ResultsCache, default_cache_dir, grid, sweep
from ibtools.train import train


@dataclass(frozen=True)
class Cfg:
    lr: float
    seed: int = 0
    width: int = 2
    method: str = "sgd"


@dataclass(frozen=True)
class OtherCfg:  # the same fields under another name
    lr: float
    seed: int = 0
    width: int = 2
    method: str = "sgd"


class CountingRun:
    """A run whose rows are a known function of the config; remembers every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, config):
        self.calls.append(config)
        return [dict(kind="epoch", step=0, epoch=0.0, loss=1.0, train_acc=math.nan, diverged=False),
                dict(kind="step", step=0, epoch=0.0, loss=config.lr * (config.seed + 1)),
                dict(kind="epoch", step=1, epoch=1.0, loss=config.lr * config.width, train_acc=math.nan,
                     diverged=False)]


def quiet_sweep(run, configs, **kwargs):
    kwargs.setdefault("experiment", "toy")
    return sweep(run, configs, progress=False, **kwargs)


# --- grid -------------------------------------------------------------------------------------------

def test_grid_is_the_cartesian_product_of_the_list_axes():
    configs = grid(Cfg, lr=[0.1, 1.0], seed=[0, 1, 2], width=4, method=("sgd", "isgd"))
    assert len(configs) == 2 * 3 * 2
    assert all(isinstance(c, Cfg) and c.width == 4 for c in configs)
    assert {(c.lr, c.seed, c.method) for c in configs} == set(itertools.product([0.1, 1.0], [0, 1, 2],
                                                                                 ["sgd", "isgd"]))
    assert configs[:3] == [Cfg(0.1, 0, 4, "sgd"), Cfg(0.1, 0, 4, "isgd"), Cfg(0.1, 1, 4, "sgd")]


@settings(max_examples=30, deadline=None)
@given(lrs=st.lists(st.floats(1e-4, 1e3), min_size=1, max_size=4, unique=True),
       seeds=st.lists(st.integers(0, 100), min_size=1, max_size=4, unique=True))
def test_grid_has_one_config_per_combination(lrs, seeds):
    configs = grid(Cfg, lr=lrs, seed=seeds)
    assert len(configs) == len(lrs) * len(seeds) == len(set(configs))
    assert {(c.lr, c.seed) for c in configs} == set(itertools.product(lrs, seeds))


def test_grid_without_axes_is_one_config():
    assert grid(Cfg, lr=0.5) == [Cfg(lr=0.5)]


# --- the tidy table -----------------------------------------------------------------------------------

def test_table_is_tidy_config_fields_first_then_one_row_per_record():
    configs = grid(Cfg, lr=[0.1, 1.0], seed=[0, 1], width=[2, 3])
    table = quiet_sweep(CountingRun(), configs, cache=False)
    fields = [f.name for f in dataclasses.fields(Cfg)]
    assert list(table.columns[:len(fields)]) == fields
    assert {"kind", "step", "epoch", "loss", "train_acc", "diverged"} <= set(table.columns)
    assert len(table) == 3 * len(configs)
    assert table.groupby(fields).ngroups == len(configs)
    for config in configs:
        rows = table[(table.lr == config.lr) & (table.seed == config.seed) & (table.width == config.width)]
        assert list(rows["kind"]) == ["epoch", "step", "epoch"]
        assert rows[rows.kind == "step"]["loss"].item() == config.lr * (config.seed + 1)
        assert rows[rows.step == 1]["loss"].item() == config.lr * config.width
        assert set(rows["method"]) == {"sgd"}


def test_empty_sweep_is_an_empty_table():
    assert quiet_sweep(CountingRun(), [], cache=False).empty


def test_a_config_must_be_a_dataclass(tmp_path):
    with pytest.raises(TypeError, match="must be a dataclass"):
        quiet_sweep(lambda c: [], [{"lr": 0.1}], cache=ResultsCache(tmp_path))


# --- the cache -----------------------------------------------------------------------------------------

def test_a_cache_hit_does_not_run_again_and_reads_back_the_same_table(tmp_path):
    configs = grid(Cfg, lr=[0.1, 1.0], seed=[0, 1])
    run = CountingRun()
    first = quiet_sweep(run, configs, cache=ResultsCache(tmp_path))
    assert len(run.calls) == 4
    assert len(list((tmp_path / "toy").glob("*.json"))) == 4
    second = quiet_sweep(run, configs, cache=ResultsCache(tmp_path))
    assert len(run.calls) == 4
    pd.testing.assert_frame_equal(first, second)  # NaN, bools, ints and floats survive the round trip


def test_the_default_cache_is_ibtools_cache(results_cache_dir):
    assert default_cache_dir() == results_cache_dir
    run = CountingRun()
    quiet_sweep(run, [Cfg(lr=0.1)])  # cache=None: the default directory
    quiet_sweep(run, [Cfg(lr=0.1)])
    assert len(run.calls) == 1
    assert len(list((results_cache_dir / "toy").glob("*.json"))) == 1


def test_the_default_cache_is_not_in_the_repository_or_cwd(monkeypatch):
    monkeypatch.delenv("IBTOOLS_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "ibtools" / "results"


def test_cache_false_always_runs(tmp_path):
    run = CountingRun()
    quiet_sweep(run, [Cfg(lr=0.1)], cache=False)
    quiet_sweep(run, [Cfg(lr=0.1)], cache=False)
    assert len(run.calls) == 2


@pytest.mark.parametrize("field, value", [("lr", 0.2), ("seed", 1), ("width", 3), ("method", "isgd")])
def test_changing_any_config_field_misses(tmp_path, field, value):
    base = Cfg(lr=0.1)
    run = CountingRun()
    quiet_sweep(run, [base], cache=ResultsCache(tmp_path))
    changed = dataclasses.replace(base, **{field: value})
    table = quiet_sweep(run, [changed], cache=ResultsCache(tmp_path))
    assert run.calls == [base, changed]
    assert set(table[field]) == {value}


def test_same_fields_under_another_config_type_miss(tmp_path):
    run = CountingRun()
    quiet_sweep(run, [Cfg(lr=0.1)], cache=ResultsCache(tmp_path))
    quiet_sweep(run, [OtherCfg(lr=0.1)], cache=ResultsCache(tmp_path))
    assert len(run.calls) == 2


def test_changing_the_version_tag_or_the_experiment_misses(tmp_path):
    run = CountingRun()
    cache = ResultsCache(tmp_path)
    quiet_sweep(run, [Cfg(lr=0.1)], cache=cache, version=1)
    quiet_sweep(run, [Cfg(lr=0.1)], cache=cache, version=1)
    assert len(run.calls) == 1
    quiet_sweep(run, [Cfg(lr=0.1)], cache=cache, version=2)
    assert len(run.calls) == 2
    quiet_sweep(run, [Cfg(lr=0.1)], cache=cache, version=2, experiment="another")
    assert len(run.calls) == 3


def test_a_new_ibtools_version_misses(tmp_path, monkeypatch):
    run = CountingRun()
    quiet_sweep(run, [Cfg(lr=0.1)], cache=ResultsCache(tmp_path))
    monkeypatch.setattr(ibtools.sweep, "__version__", "999.0")
    quiet_sweep(run, [Cfg(lr=0.1)], cache=ResultsCache(tmp_path))
    assert len(run.calls) == 2


# --- damaged cache files ------------------------------------------------------------------------------

def cached_file(tmp_path, config, experiment="toy", version=1) -> Path:
    cache = ResultsCache(tmp_path)
    return cache.path(experiment, cache.key(experiment, version, config))


def truncate(path: Path):
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def tamper_with_a_row(path: Path):
    record = json.loads(path.read_text())
    record["rows"][1]["loss"] = 12345.0  # the checksum still describes the original rows
    path.write_text(json.dumps(record))


def empty(path: Path):
    path.write_text("")


def not_a_record(path: Path):
    path.write_text("[1, 2, 3]")


def drop_the_checksum(path: Path):
    record = json.loads(path.read_text())
    del record["checksum"]
    path.write_text(json.dumps(record))


def not_utf8(path: Path):
    path.write_bytes(b"\xff\xfe\x00garbage")


@pytest.mark.parametrize("damage", [truncate, tamper_with_a_row, empty, not_a_record, drop_the_checksum, not_utf8])
def test_a_damaged_cache_file_is_detected_removed_and_recomputed(tmp_path, damage):
    config = Cfg(lr=0.5, seed=2)
    run = CountingRun()
    original = quiet_sweep(run, [config], cache=ResultsCache(tmp_path))
    path = cached_file(tmp_path, config)
    damage(path)
    with pytest.warns(UserWarning, match="is damaged.*recomputing"):
        table = quiet_sweep(run, [config], cache=ResultsCache(tmp_path))
    assert len(run.calls) == 2
    assert 12345.0 not in set(table["loss"])
    pd.testing.assert_frame_equal(table, original)
    # the recomputed result replaced the damaged file and is used from now on, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ResultsCache(tmp_path).load("toy", 1, config) is not None
        quiet_sweep(run, [config], cache=ResultsCache(tmp_path))
    assert len(run.calls) == 2


def test_a_result_filed_under_another_config_is_not_used(tmp_path):
    """A valid file with an intact checksum, but for a different run: the key check refuses it."""
    a, b = Cfg(lr=0.1), Cfg(lr=0.2)
    run = CountingRun()
    quiet_sweep(run, [a, b], cache=ResultsCache(tmp_path))
    cached_file(tmp_path, b).write_text(cached_file(tmp_path, a).read_text())
    with pytest.warns(UserWarning, match="key or checksum mismatch"):
        table = quiet_sweep(run, [b], cache=ResultsCache(tmp_path))
    assert run.calls == [a, b, b]
    assert set(table["lr"]) == {0.2} and table[table.kind == "step"]["loss"].item() == 0.2


def test_load_removes_the_damaged_file(tmp_path):
    config = Cfg(lr=0.1)
    cache = ResultsCache(tmp_path)
    cache.save("toy", 1, config, CountingRun()(config))
    path = cached_file(tmp_path, config)
    truncate(path)
    with pytest.warns(UserWarning, match=str(path.name)):
        assert cache.load("toy", 1, config) is None
    assert not path.exists()
    assert cache.load("toy", 1, config) is None  # absent now: no second warning needed


# --- atomic writes ---------------------------------------------------------------------------------------

def test_write_atomic_writes_replaces_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "sub" / "result.json"
    write_atomic(path, "first")
    write_atomic(path, "second, longer than the first")
    assert path.read_text() == "second, longer than the first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]


def test_write_atomic_gives_ordinary_file_permissions(tmp_path):
    write_atomic(tmp_path / "atomic.csv", "x")
    (tmp_path / "plain.csv").write_text("x")
    assert stat.S_IMODE((tmp_path / "atomic.csv").stat().st_mode) == stat.S_IMODE((tmp_path / "plain.csv").stat().st_mode)


def test_write_atomic_writes_utf8(tmp_path):
    write_atomic(tmp_path / "t.txt", "learning rate η — ok")
    assert (tmp_path / "t.txt").read_bytes().decode("utf-8") == "learning rate η — ok"


@pytest.mark.parametrize("failing", ["fsync", "replace"])
@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch, failing, error):
    path = tmp_path / "result.json"
    write_atomic(path, "old")

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(type(error)):
        write_atomic(path, "new " * 1000)
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_atomic(tmp_path / "result.json", "new")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_a_concurrent_reader_never_sees_a_partial_file(tmp_path):
    path = tmp_path / "result.json"
    versions = ["a" * 300_000, "b" * 200_000]
    write_atomic(path, versions[0])
    seen, done = [], threading.Event()

    def read():
        while not done.is_set():
            seen.append(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(60):
            write_atomic(path, versions[i % 2])
    finally:
        done.set()
        reader.join()
    assert seen and all(text in versions for text in seen)


# --- divergence in a sweep -----------------------------------------------------------------------------

@dataclass(frozen=True)
class RegressionConfig:
    lr: float
    seed: int = 0


def run_regression(config: RegressionConfig) -> list[dict]:
    torch.manual_seed(config.seed)
    result = train(torch.nn.Linear(3, 1), make_regression(), lambda m: torch.optim.SGD(m.parameters(), lr=config.lr),
                   loss="least_squares", epochs=3, batch_size=8, seed=config.seed, device="cpu")
    return result.rows


def test_a_sweep_where_one_learning_rate_diverges_returns_every_run(tmp_path):
    lrs = [0.01, 0.1, 50.0]
    configs = grid(RegressionConfig, lr=lrs, seed=[0, 1])
    table = quiet_sweep(run_regression, configs, cache=ResultsCache(tmp_path))
    runs = table.groupby(["lr", "seed"])
    assert runs.ngroups == 6
    diverged = runs["diverged"].agg(["min", "max"])
    assert (diverged["min"] == diverged["max"]).all()  # one verdict per run
    assert diverged.xs(50.0)["max"].all() and not diverged.drop(index=50.0, level="lr")["max"].any()
    assert table["last_finite_loss"].map(math.isfinite).all()
    assert (table[table.lr == 50.0]["step"].max()) < (table[table.lr == 0.1]["step"].max())  # it stopped early
    # the diverged runs are cached like the others and read back identically
    again = quiet_sweep(lambda c: pytest.fail("should have been cached"), configs, cache=ResultsCache(tmp_path))
    pd.testing.assert_frame_equal(table, again)


def test_a_failing_run_keeps_every_finished_run(tmp_path):
    """An exception (or Ctrl-C) in the middle of a sweep loses only the run it interrupted."""
    configs = grid(Cfg, lr=[0.1, 0.2, 0.3, 0.4])
    run = CountingRun()

    def flaky(config):
        if config.lr == 0.3:
            raise KeyboardInterrupt
        return run(config)

    with pytest.raises(KeyboardInterrupt):
        quiet_sweep(flaky, configs, cache=ResultsCache(tmp_path))
    assert len(run.calls) == 2
    table = quiet_sweep(run, configs, cache=ResultsCache(tmp_path))
    assert [c.lr for c in run.calls] == [0.1, 0.2, 0.3, 0.4]
    assert sorted(table["lr"].unique()) == [0.1, 0.2, 0.3, 0.4]


# --- interruption and resume, for real ------------------------------------------------------------------

SLOW_SWEEP = '''
"""A sweep of 12 slow runs; each invocation leaves a marker file named INDEX-PID."""
import os
import time
from dataclasses import dataclass

from ibtools.sweep import ResultsCache, grid, sweep


@dataclass(frozen=True)
class SlowConfig:
    index: int
    lr: float = 0.1


CONFIGS = grid(SlowConfig, index=list(range(12)))


def run(config):
    markers = os.environ["SLOW_SWEEP_MARKERS"]
    open(os.path.join(markers, f"{config.index}-{os.getpid()}"), "w").close()
    time.sleep(float(os.environ.get("SLOW_SWEEP_SLEEP", "0.3")))
    return [dict(kind="step", step=s, epoch=float(s), loss=config.index + s / 10) for s in range(5)]


def main(cache_dir, jobs=1):
    return sweep(run, CONFIGS, experiment="slow", cache=ResultsCache(cache_dir), progress=False, jobs=jobs)


if __name__ == "__main__":
    import sys
    main(sys.argv[1], int(sys.argv[2]))
'''


def slow_rows(index: int) -> list[dict]:
    """What SLOW_SWEEP's run returns for config ``index``."""
    return [dict(kind="step", step=s, epoch=float(s), loss=index + s / 10) for s in range(5)]


def import_file(path: Path, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_slow_sweep(folder: Path) -> Path:
    script = folder / "slow_sweep.py"
    script.write_text(textwrap.dedent(SLOW_SWEEP))
    return script


def wait_for_exit(pids: set[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, f"process {pid} outlived the sweep that started it"
            time.sleep(0.05)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_killed_sweep_resumes_keeping_every_finished_run(tmp_path, monkeypatch, subprocess_env, jobs):
    """kill -9 of the sweep's process, computing runs itself (jobs=1) or through two workers, which
    finish the run they hold, write it whole, and exit."""
    script = write_slow_sweep(tmp_path)
    cache_dir, markers = tmp_path / "cache", tmp_path / "markers"
    markers.mkdir()
    env = dict(subprocess_env, SLOW_SWEEP_MARKERS=str(markers), SLOW_SWEEP_SLEEP="0.3")
    with open(tmp_path / "child.log", "w") as log:
        child = subprocess.Popen([sys.executable, str(script), str(cache_dir), str(jobs)], cwd=tmp_path, env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while len(list((cache_dir / "slow").glob("*.json"))) < 3:
                assert child.poll() is None, f"the sweep ended early: {(tmp_path / 'child.log').read_text()}"
                assert time.monotonic() < deadline, "the sweep wrote no results"
                time.sleep(0.02)
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    wait_for_exit({int(p.name.split("-")[1]) for p in markers.iterdir()} - {child.pid})

    module = import_file(script, f"slow_sweep_in_test_{jobs}")
    cache = ResultsCache(cache_dir)
    finished = {c.index for c in module.CONFIGS if cache.path("slow", cache.key("slow", 1, c)).exists()}
    started_in_child = {int(p.name.split("-")[0]) for p in markers.iterdir()}
    assert 3 <= len(finished) < 12, "the kill should land in the middle of the sweep"
    assert finished <= started_in_child
    assert len(list((cache_dir / "slow").glob("*.json"))) == len(finished)  # nothing else looks like a result

    # every finished result is an intact file: valid JSON, right key, checksum matching
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for config in module.CONFIGS:
            if config.index in finished:
                assert cache.load("slow", 1, config) == slow_rows(config.index)

    # rerun the whole sweep here: only the unfinished runs are computed, and no warning about damage
    monkeypatch.setenv("SLOW_SWEEP_MARKERS", str(markers))
    monkeypatch.setenv("SLOW_SWEEP_SLEEP", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = module.main(cache_dir)
    recomputed = {int(p.name.split("-")[0]) for p in markers.iterdir() if p.name.endswith(f"-{os.getpid()}")}
    assert recomputed == set(range(12)) - finished
    assert table.groupby("index").ngroups == 12 and len(table) == 12 * 5
    expected = pd.DataFrame([dict(index=i, lr=0.1, **row) for i in range(12) for row in slow_rows(i)])
    pd.testing.assert_frame_equal(table, expected)
    assert len(list((cache_dir / "slow").glob("*.json"))) == 12


# --- the experiment registry drives the sweep -----------------------------------------------------------

def test_experiment_sweep_uses_the_cache_and_its_grid(tiny_experiment, results_cache_dir):
    table = tiny_experiment.sweep(progress=False, lrs=[0.1], seeds=1)
    assert tiny_experiment.run.calls == [TinyConfig("sgd", 0.1), TinyConfig("momentum", 0.1)]
    assert list(table.columns[:4]) == ["method", "lr", "seed", "epochs"]
    again = tiny_experiment.sweep(progress=False, lrs=[0.1], seeds=1)
    assert len(tiny_experiment.run.calls) == 2
    pd.testing.assert_frame_equal(table, again)
    assert len(list((results_cache_dir / "tiny-test").glob("*.json"))) == 2
    full = tiny_experiment.grid("full")
    assert len(full) == 2 * len(TINY_LRS) * 2 and {c.epochs for c in full} == {3}


def test_experiment_grid_rejects_an_unknown_scale(tiny_experiment):
    with pytest.raises(ValueError, match="unknown scale 'huge'.*'reduced'.*'full'"):
        tiny_experiment.grid("huge")


def test_experiment_sweep_passes_the_device(tiny_experiment, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device"):
        tiny_experiment.sweep(device="cuda", cache=False, progress=False, lrs=[0.1], seeds=1)


# --- many runs at once ------------------------------------------------------------------------------------

@pytest.fixture
def gpus(monkeypatch):
    """This process sees ``n`` GPUs (``gpus(n)``; 0: none), whatever the machine has; nothing
    runs on them, only the choice of devices is tested."""
    def see(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    return see


@pytest.mark.parametrize("n", [1, 3])
def test_cuda_pools_every_visible_gpu(gpus, n):
    gpus(n)
    assert ibtools.sweep.pool_devices("cuda") == [f"cuda:{i}" for i in range(n)]


@pytest.mark.parametrize("device", ["cpu", "cuda:1"])
def test_a_named_device_is_the_only_one(gpus, device):
    gpus(3)
    assert ibtools.sweep.pool_devices(device) == [device]


@pytest.mark.parametrize("variable, n, expected", [
    ("cpu", 2, ["cpu"]),                        # the variable wins over the GPUs present
    ("cuda:1", 2, ["cuda:1"]),
    ("cuda", 2, ["cuda:0", "cuda:1"]),
    ("auto", 2, ["cuda:0", "cuda:1"]),
    ("auto", 0, ["cpu"]),
    (None, 2, ["cuda:0", "cuda:1"]),            # unset: every GPU when there are some ...
    (None, 0, ["cpu"]),                         # ... else the CPU
])
def test_no_device_is_ibtools_device_else_every_gpu_else_the_cpu(gpus, monkeypatch, variable, n, expected):
    gpus(n)
    if variable is None:
        monkeypatch.delenv("IBTOOLS_DEVICE")
    else:
        monkeypatch.setenv("IBTOOLS_DEVICE", variable)
    assert ibtools.sweep.pool_devices(None) == expected


@dataclass(frozen=True)
class Meeting:
    index: int
    folder: str
    workers: int = 2


def meet(config: Meeting) -> list[dict]:
    """Wait (up to a minute) until ``config.workers`` distinct processes hold a run of this sweep,
    so that every worker computes one; report this process and its ``$IBTOOLS_DEVICE``."""
    folder = Path(config.folder)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(folder.iterdir())) < config.workers and time.monotonic() < deadline:
        time.sleep(0.05)
    return [dict(pid=os.getpid(), device=os.environ["IBTOOLS_DEVICE"])]


def test_worker_processes_take_turns_over_the_gpus(gpus, tmp_path):
    """Two workers on a machine seen as having two GPUs: each is given its own, through
    ``$IBTOOLS_DEVICE``, which a run with ``device=None`` resolves to."""
    gpus(2)
    configs = [Meeting(i, str(tmp_path)) for i in range(2)]
    with ibtools.sweep.process_pool(2, "cuda") as pool:
        table = quiet_sweep(meet, configs, cache=False, executor=pool)
    assert table["pid"].nunique() == 2
    assert sorted(table["device"]) == ["cuda:0", "cuda:1"]


def uci_runs(**kwargs) -> pd.DataFrame:
    """Four real training runs of chapter 3 (IB and EB on the wine table, a small and a large rate)."""
    from ibtools.experiments import get

    return get("ib-uci").sweep("reduced", device="cpu", cache=False, progress=False, lrs=[0.1, 30.0], seeds=1,
                               datasets=("wine",), minibatches=("per-example",), **kwargs)


def test_two_worker_processes_give_the_table_of_one_bit_for_bit():
    """The parallel path changes where runs are computed, never what: the same rows, in the same
    order, to the last bit. The MNIST classifier's matrix products are large enough for torch's
    CPU thread count to change their last bits; every run of a sweep has one thread."""
    from ibtools.experiments import get

    serial, parallel = uci_runs(), uci_runs(jobs=2)
    assert len(serial) and serial.groupby(["method", "lr"]).ngroups == 4
    pd.testing.assert_frame_equal(serial, parallel, check_exact=True)
    assert parallel.attrs["config_fields"] == serial.attrs["config_fields"]
    torch.set_num_threads(2)  # this process's own setting is restored after a sweep
    mnist = dict(device="cpu", cache=False, progress=False, lrs=[0.1, 1.0], seeds=1, methods=["eb"])
    one = get("ib-mnist").sweep("reduced", **mnist)
    assert torch.get_num_threads() == 2
    pd.testing.assert_frame_equal(one, get("ib-mnist").sweep("reduced", jobs=2, **mnist), check_exact=True)


def test_any_concurrent_futures_executor_gives_the_same_table():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as executor:
        elsewhere = uci_runs(executor=executor)
    pd.testing.assert_frame_equal(uci_runs(), elsewhere, check_exact=True)


def test_threads_are_refused_because_runs_seed_the_process_wide_generator():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as executor, pytest.raises(ValueError, match="global random generator.*processes"):
        uci_runs(executor=executor)


def test_a_job_array_through_submitit_gives_the_same_table_and_resumes(tmp_path):
    """The SLURM path, run by submitit's local executor: the same job array of tasks, as local
    subprocesses. Every task writes its runs to the shared cache; resubmitting computes nothing."""
    from ibtools.experiments import get
    from ibtools.sweep import slurm_executor

    experiment, cache = get("ib-uci"), ResultsCache(tmp_path / "cache")
    axes = dict(lrs=[0.1, 30.0], seeds=1, datasets=("wine",), minibatches=("per-example",))
    executor = slurm_executor(tmp_path / "jobs", cluster="local", runs_per_task=3, time_min=5)
    table = experiment.sweep("reduced", device="cpu", cache=cache, progress=False, executor=executor, **axes)
    pd.testing.assert_frame_equal(uci_runs(), table, check_exact=True)
    assert len(list((tmp_path / "jobs").glob("*_submitted.pkl"))) == 2  # 4 runs in tasks of 3
    assert len(list((tmp_path / "cache" / "ib-uci").glob("*.json"))) == 4
    again = experiment.sweep("reduced", device="cpu", cache=cache, progress=False, executor=executor, **axes)
    assert len(list((tmp_path / "jobs").glob("*_submitted.pkl"))) == 2  # nothing submitted
    pd.testing.assert_frame_equal(table, again)


def raise_at_0_3(config):
    if config.lr == 0.3:
        raise FloatingPointError("boom at lr 0.3")
    return CountingRun()(config)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_run_that_raises_is_reported_with_its_config_and_traceback_and_the_others_go_on(tmp_path, jobs):
    configs = grid(Cfg, lr=[0.1, 0.2, 0.3, 0.4, 0.5])
    with pytest.raises(ibtools.sweep.SweepError) as caught:
        quiet_sweep(raise_at_0_3, configs, cache=ResultsCache(tmp_path), jobs=jobs)
    error = caught.value
    assert [config for config, _ in error.failures] == [Cfg(lr=0.3)] and error.finished == 4
    message = str(error)
    assert "Cfg(lr=0.3" in message and "FloatingPointError: boom at lr 0.3" in message
    assert "in raise_at_0_3" in message  # the traceback, not just the message
    assert len(list((tmp_path / "toy").glob("*.json"))) == 4  # every other run is cached
    run = CountingRun()
    table = quiet_sweep(run, configs, cache=ResultsCache(tmp_path), jobs=jobs)
    if jobs == 1:
        assert run.calls == [Cfg(lr=0.3)]  # only the failed run is computed again
    assert list(table[table.kind == "step"]["lr"]) == [0.1, 0.2, 0.3, 0.4, 0.5]


@dataclass(frozen=True)
class Indexed:
    index: int


def die_once_at_index_5(config: Indexed) -> list[dict]:
    """SIGKILLs its own worker process the first time it meets index 5 (a marker file remembers)."""
    marker = Path(os.environ["SWEEP_MARKERS"]) / "killed"
    if config.index == 5 and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return slow_rows(config.index)


def test_a_killed_worker_loses_no_finished_run_and_a_rerun_completes(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_MARKERS", str(tmp_path))
    configs, cache = [Indexed(i) for i in range(12)], ResultsCache(tmp_path / "cache")
    with pytest.raises(RuntimeError, match="a worker process died.*running the same sweep again resumes"):
        quiet_sweep(die_once_at_index_5, configs, experiment="slow", cache=cache, jobs=2)
    finished = [c for c in configs if cache.path("slow", cache.key("slow", 1, c)).exists()]
    assert Indexed(5) not in finished
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every file there is intact
        for config in finished:
            assert cache.load("slow", 1, config) == slow_rows(config.index)
    table = quiet_sweep(die_once_at_index_5, configs, experiment="slow", cache=cache, jobs=2)
    expected = pd.DataFrame([dict(index=i, **row) for i in range(12) for row in slow_rows(i)])
    pd.testing.assert_frame_equal(table, expected)


def test_jobs_must_be_a_whole_number_of_at_least_one():
    with pytest.raises(ValueError, match="jobs must be a whole number >= 1"):
        quiet_sweep(CountingRun(), [Cfg(lr=0.1)], cache=False, jobs=0)
