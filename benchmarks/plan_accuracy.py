"""How close the planner's projections come to the time runs take.

For three full presets whose runs are plain training: the projection that
``python -m ibtools plan`` makes for one run trained for ONE FULL EPOCH (its setup, the
evaluation before training, the epoch's steps and the evaluation after them), from a few
steps probed in a fresh worker, against the wall time of running that same config for one
epoch, whole, on the same stand-in data at the same thread count (one, as every run of a
sweep has: ibtools.sweep.one_cpu_thread). The two alternate, ``REPEATS`` rounds, so that a
machine's drifting speed hits both; the ratio is projected / measured.

- ib-mnist, EB: the paper's MNIST classifier, 600 steps of 100 images (a run is one epoch);
- ib-autoencoder, EB: the 784:500:300:100:30:100:300:500:784 relu autoencoder, likewise;
- sibp-mnist, SGD: the 784-500-10 network of Table 2, the first of its 50 epochs.

    python -m ibtools bench plan_accuracy
"""

# No `from __future__ import annotations`: the CLI runs this file without registering it as a
# module (see ib_overhead.py).
import dataclasses
import os
import statistics
import time

import torch

from ibtools import plan, standin
from ibtools.experiments import get
from ibtools.sweep import one_cpu_thread

CASES = [("ib-mnist", "eb"), ("ib-autoencoder", "eb"), ("sibp-mnist", "sgd")]
REPEATS = 3


def one_epoch(name: str, method: str):
    """The config of ``method`` with the smallest learning rate in experiment ``name``'s full
    grid (a run that diverges stops, where its projection does not), trained for one epoch."""
    config = min((c for c in get(name).grid("full") if c.method == method), key=lambda c: c.lr)
    return dataclasses.replace(config, epochs=1) if getattr(config, "epochs", None) else config


def measured_seconds(name: str, config, device: torch.device) -> float:
    """Wall time of the whole run, here, on stand-ins."""
    with standin.use_stand_ins(), one_cpu_thread():
        start = time.perf_counter()
        get(name).run(config, device=device)
        return time.perf_counter() - start


def main(device: torch.device) -> None:
    plan.warm_up(device)  # as the planner's worker does: one-off costs are no run's
    print(f"device: {device}, torch {torch.__version__}, runs at 1 thread, "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores before")
    print("one run of one full epoch on stand-ins: the plan's projection (from a few probed steps) "
          f"against the run timed whole; {REPEATS} rounds, alternating\n")
    header = f"{'preset':<20} {'projected':>10} {'measured':>10} {'ratio':>6}   s/step probed, steps"
    print(header)
    for name, method in CASES:
        config = one_epoch(name, method)
        ratios = []
        for _ in range(REPEATS):
            row = plan.probe_in_worker(get(name).run, config, device)
            measured = measured_seconds(name, config, device)
            ratios.append(row["s_per_run"] / measured)
            print(f"{name + ' ' + method:<20} {row['s_per_run']:>9.1f}s {measured:>9.1f}s {ratios[-1]:>6.2f}   "
                  f"{row['s_per_step'] * 1e3:.1f} ms x {row['steps_per_epoch']}", flush=True)
        print(f"{'':<20} {'median ratio':>21} {statistics.median(ratios):>6.2f}")
    print(f"\nload average {os.getloadavg()[0]:.2f} after")
