"""Timing side by side, for the speed benchmarks in ``benchmarks/`` (``python -m ibtools bench``).

Machines are noisy, so a benchmark never times one method and then another: the functions
take turns in blocks, their order alternating, and a ratio is the median of the ratios of
neighbouring blocks. Training steps are timed as :func:`ibtools.train.train` takes them, made
by :func:`ibtools.train.make_step`: eager on the CPU, replayed from a CUDA graph on CUDA where
the optimizer is graph-safe.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

from .steps import CALLS_BEFORE_REPLAY, precision



def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_blocks(functions: dict, device: torch.device, blocks: int, number: int, warmup: int = 3) -> dict:
    """Seconds per call of each function, in blocks of ``number`` calls, the functions taking
    turns block by block (their order alternating), after ``warmup`` calls of each:
    {name: [seconds per call, one per block]}."""
    for f in functions.values():
        for _ in range(warmup):
            f()
    samples = {name: [] for name in functions}
    order = list(functions)
    for k in range(blocks):
        for name in (order if k % 2 == 0 else order[::-1]):
            sync(device)
            start = time.perf_counter()
            for _ in range(number):
                functions[name]()
            sync(device)
            samples[name].append((time.perf_counter() - start) / number)
    return samples


@contextlib.contextmanager
def full_scale_precision(device: torch.device):
    """The block runs with the matrix-product precision of a full-scale sweep on ``device``: TF32
    allowed on CUDA, as ``python -m ibtools run --scale full`` allows it
    (:func:`ibtools.__main__.tf32_allowed`), float32 on the CPU. Yields ``{"tf32": bool}``."""
    from .__main__ import tf32_allowed  # not at the top: ibtools.__main__ imports this module (via plan)

    with precision(device, tf32_allowed("full", device, refused=False)) as used:
        yield used


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median over blocks k of ``numerator[k] / denominator[k]``: each ratio compares two
    neighbouring blocks, timed under the same conditions, so a drift in the machine's speed
    between blocks cancels. Raises ValueError for lists of different lengths or none."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(f"need one time per block of each, got {len(numerator)} and {len(denominator)}")
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def warmup_calls(steps, eager: int) -> int:
    """Untimed calls to make of each step of ``steps`` (made by :func:`ibtools.train.make_step`)
    before timing: ``eager`` when none captures, else enough for every
    :class:`ibtools.steps.GraphStep` to have warmed up and captured its graph, so that every
    timed call replays it."""
    return max(eager, CALLS_BEFORE_REPLAY) if any(step.captured for step in steps) else eager


def replays_graph(step) -> bool:
    """Whether ``step`` (made by :func:`ibtools.train.make_step`) has replayed a CUDA graph:
    a :class:`ibtools.steps.GraphStep`, or a watched optimizer's step around one, that has
    replayed at least once (ask after timing it)."""
    return step.replays > 0


def graph_captured(steps: dict) -> str:
    """The names of the ``steps`` ({name: step}) that replay a CUDA graph (:func:`replays_graph`),
    comma-separated; ``"none"`` when every one runs eagerly (always on the CPU)."""
    return ", ".join(name for name, step in steps.items() if replays_graph(step)) or "none"
