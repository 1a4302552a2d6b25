"""What a SIBP or ProxBP training step costs against an SGD step, side by side.

Liu & Zhang, *Semi-Implicit Back Propagation*, section 5.2: the shallow 784:500:10 and the
deep 784:600^10:10 relu networks on MNIST-shaped random data (inputs uniform in [0, 1], ten
random classes), softmax cross-entropy, mini-batches of 100 (the paper does not state its
batch size; 100 is the common MNIST choice), 5 conjugate-gradient iterations per subproblem
as in the paper. One step is what ibtools.train.train does per mini-batch: the step
:func:`ibtools.train.make_step` makes of the optimizer, called with a BatchClosure (SGD:
forward, backward, update; SIBP and ProxBP read the batch from the closure and do their own
passes): eager on the CPU, and on CUDA replayed from a CUDA graph for every optimizer that
:func:`ibtools.steps.graph_safe` admits (the "captured" column names them). The three
methods run in one process on the same data, in alternating blocks of steps; times are
medians over blocks, each ratio the median of the ratios of neighbouring blocks (robust to
the machine's speed drifting). Seconds per epoch are the step time times the 600 steps of a
60 000-example MNIST epoch; ``python -m ibtools bench epoch`` times whole epochs of the
training loop.

    python -m ibtools bench sibp
"""

# No `from __future__ import annotations`: the CLI runs this file without registering it as a
# module (as benchmarks/ib_overhead.py notes).
import statistics

import pandas as pd
import torch
import torch.nn.functional as F

from ibtools.bench import full_scale_precision, graph_captured, median_ratio, timed_blocks, warmup_calls
from ibtools.models import MLP
from ibtools.sibp import SIBP, ProxBP
from ibtools.train import BatchClosure, make_step, resolve_device

BATCH = 100
STEPS_PER_EPOCH = 60_000 // BATCH
NETWORKS = {"784-500-10": [784, 500, 10], "784-600^10-10": [784] + [600] * 10 + [10]}
METHODS = {  # the settings of Table 2: SGD lr 0.1, SIBP eta = lambda = 1, ProxBP eta = 0.1
    "SGD": lambda model: torch.optim.SGD(model.parameters(), lr=0.1),
    "SIBP": lambda model: SIBP(model, lr=1.0, lam=1.0, cg_iters=5),
    "ProxBP": lambda model: ProxBP(model, lr=0.1, lam=1.0, cg_iters=5),
}


def training_step(sizes: list, make_optimizer, inputs, targets, device, capture: bool | None = None):
    """(step, call): ``step`` made by :func:`ibtools.train.make_step` (``capture`` passed on:
    None captures on CUDA where the optimizer is graph-safe), ``call()`` one training step of
    the relu network ``sizes`` on the fixed batch."""
    torch.manual_seed(0)  # the same initial weights for every method
    model = MLP(sizes, ["relu"] * (len(sizes) - 2) + ["identity"]).to(device)
    optimizer = make_optimizer(model)
    step = make_step(optimizer, device, capture, model)
    closure = BatchClosure(model, F.cross_entropy, optimizer, inputs, targets)
    return step, lambda: step(closure)


def measure(device: torch.device | None = None, quick: bool = False, capture: bool | None = None) -> pd.DataFrame:
    """One row per network: SGD, SIBP and ProxBP milliseconds per step and seconds per epoch,
    SIBP/SGD and ProxBP/SGD (medians of block-by-block ratios), and the methods whose steps
    replayed CUDA graphs ("captured", "none" on the CPU). ``quick`` takes fewer blocks
    (noisier). ``capture`` is :func:`ibtools.train.make_step`'s: None as the sweeps run, False
    eager. ``table.attrs["tf32"]``: whether TF32 was allowed (as full-scale sweeps allow it on
    CUDA, :func:`ibtools.bench.full_scale_precision`)."""
    device = device or resolve_device()
    gen = torch.Generator().manual_seed(0)
    inputs = torch.rand(BATCH, 784, generator=gen).to(device)
    targets = torch.randint(0, 10, (BATCH,), generator=gen).to(device)
    rows = []
    with full_scale_precision(device) as precision:
        for name, sizes in NETWORKS.items():
            deep = len(sizes) > 3
            blocks = (3 if deep else 5) if quick else (25 if deep else 60)
            steps, calls = {}, {}
            for method, make in METHODS.items():
                steps[method], calls[method] = training_step(sizes, make, inputs, targets, device, capture)
            samples = timed_blocks(calls, device, blocks=blocks, number=2 if deep else 5,
                                   warmup=warmup_calls(steps.values(), 1))
            row = {"network": name, "batch": BATCH}
            for method in METHODS:
                seconds = statistics.median(samples[method])
                row[f"{method} ms/step"] = seconds * 1e3
                row[f"{method} s/epoch"] = seconds * STEPS_PER_EPOCH
            for method in ("SIBP", "ProxBP"):
                row[f"{method}/SGD"] = median_ratio(samples[method], samples["SGD"])
            row["captured"] = graph_captured(steps)
            rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["tf32"] = precision["tf32"]
    return table


def main(device: torch.device) -> None:
    table = measure(device)
    print(f"device: {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"TF32 {'allowed (as full-scale sweeps)' if table.attrs['tf32'] else 'off'}")
    print(f"one step = a step of a batch of {BATCH} as ibtools.train.train takes it (make_step); epoch = "
          f"{STEPS_PER_EPOCH} steps; medians over alternating blocks\n")
    formats = {column: ("{:.3f}" if "/SGD" in column else "{:.1f}") for column in table.columns
               if column not in ("network", "batch", "captured")}
    print(table.to_string(index=False, formatters={k: f.format for k, f in formats.items()}))
    print("\ncaptured: the methods whose steps were replayed from CUDA graphs (none: eager)")
    print("target on one H200-class GPU (an epoch of 784-500-10 through the training loop: "
          "python -m ibtools bench epoch): SIBP <= 5x SGD")
    print("SIBP: 5 nonlinear CG iterations for each of W_i and b_i per layer (4.1); "
          "ProxBP: 5 linear CG iterations per layer (section 3.2)")
