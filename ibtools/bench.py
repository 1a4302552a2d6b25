"""Timing side by side, for the speed benchmarks in ``benchmarks/`` (``python -m ibtools bench``).

Machines are noisy, so a benchmark never times one method and then another: the functions
take turns in blocks, their order alternating, and a ratio is the median of the ratios of
neighbouring blocks.
"""

from __future__ import annotations

import time

import torch


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
