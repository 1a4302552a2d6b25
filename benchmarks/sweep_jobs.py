"""How much faster a sweep runs on N worker processes than in one, measured side by side.

A whole sweep is timed with ``jobs=1`` (runs one after another in the sweep's process) and
with ``jobs=N`` (``ibtools.sweep.process_pool``: N spawned workers), each in a fresh Python
process from an empty cache, as a reader runs it: every run is computed, and each side pays
its own one-off costs (imports, loading the data; for N workers, their start-up). Every run
has one CPU thread either way. The two alternate which goes first; the ratio printed is the
median over repeats of serial time / parallel time, and the two tables must be equal, row for
row and bit for bit.

- CPU: chapter 3's reduced ``ib-mnist`` EB and IB runs (54 runs: 9 rates, 3 seeds, one epoch
  of the paper's MNIST classifier on 4,000 digits each), ``jobs`` = the number of cores.
- CUDA: the same runs at full scale (60,000 digits), two rates, one seed, with ``jobs`` =
  :func:`ibtools.plan.default_jobs` (what fills the card).

    python -m ibtools bench sweep_jobs
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

import pandas as pd
import torch

from ibtools.experiments import get

REPEATS = 2


def workload(device: torch.device) -> tuple[str, str, dict, int]:
    """(experiment, scale, grid axes, parallel jobs) for this device."""
    if device.type == "cuda":
        from ibtools.plan import default_jobs

        return "ib-mnist", "full", dict(methods=["eb", "ib"], lrs=[0.1, 1.0], seeds=1), \
            default_jobs("ib-mnist", "full", device)
    return "ib-mnist", "reduced", dict(methods=["eb", "ib"]), os.cpu_count() or 1


SWEEP = """
import sys, time
from ibtools.experiments import get
name, scale, axes, device, jobs, cache, out = eval(sys.argv[1])
start = time.perf_counter()
get(name).sweep(scale, device=device, cache=ResultsCache(cache), progress=False, jobs=jobs, **axes).to_pickle(out)
print(time.perf_counter() - start)
"""


def timed_sweep(name: str, scale: str, axes: dict, device: torch.device, jobs: int) -> tuple[float, pd.DataFrame]:
    """Seconds of a whole sweep in a fresh process, from its start to the table (imports included),
    and the table."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "table.pkl")
        settings = repr((name, scale, axes, str(device), jobs, os.path.join(folder, "cache"), out))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", SWEEP, settings], check=True, capture_output=True)
        return time.perf_counter() - start, pd.read_pickle(out)


def main(device: torch.device) -> None:
    name, scale, axes, jobs = workload(device)
    runs = len(get(name).grid(scale, **axes))
    print(f"{name} ({scale}, {runs} runs) on {device}, torch {torch.__version__}, {os.cpu_count()} cores: "
          f"jobs=1 against jobs={jobs}, {REPEATS} repeats, order alternating\n")
    ratios = []
    for repeat in range(REPEATS):
        order = [1, jobs] if repeat % 2 == 0 else [jobs, 1]
        seconds, tables = {}, {}
        for j in order:
            seconds[j], tables[j] = timed_sweep(name, scale, axes, device, j)
        pd.testing.assert_frame_equal(tables[1], tables[jobs], check_exact=device.type == "cpu")
        ratios.append(seconds[1] / seconds[jobs])
        print(f"  repeat {repeat + 1}: jobs=1 {seconds[1]:.1f} s, jobs={jobs} {seconds[jobs]:.1f} s, "
              f"ratio {ratios[-1]:.2f}; tables equal")
    print(f"\nspeed-up of jobs={jobs} over jobs=1 (median): {statistics.median(ratios):.2f}x")
