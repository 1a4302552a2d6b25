"""What implicit backpropagation (IB) costs over explicit backpropagation (EB) per training step.

Fagan & Iyengar, section 4.5 and appendix E.1 (Table 4). One step is forward + backward +
``torch.optim.SGD`` step on one mini-batch, on the paper's three architectures (appendix
D.3): the MNIST classifier, the 784:500:300:100:30:100:300:500:784 relu autoencoder and the
300-unit arctan RNN on 88-note sequences. EB is the same model in explicit mode. Each step is
taken as :func:`ibtools.train.train` takes it: :func:`ibtools.train.make_step` of the optimizer
with a :class:`ibtools.train.BatchClosure` on the fixed batch, so eager on the CPU and, on CUDA,
replayed from a CUDA graph (the "captured" column names the methods whose steps were). The
music sweeps' pieces differ in length, so a graph of one length would serve few of their
steps: the RNN row times eager steps, as those sweeps take them. TF32 matrix products
are allowed on CUDA, as the full-scale sweeps allow them. EB and IB run in one
process on the same data, in alternating blocks of steps; the times are medians over blocks,
the ratio the median of the ratios of neighbouring blocks (robust to the machine's speed
drifting). "alpha alone" is what :func:`ibtools.ib_layers.solve` (eq. (8) as the layers
solve it: fused by torch.compile on CUDA) takes on the step's shapes timed by itself (warm
caches, so within a step it takes somewhat more): the part of IB's extra time that is eq. (8)
rather than the layers around it.

Beside the measured ratio: the paper's flop bound (2n + c_sigma m) / (3nm) per IB layer
(n inputs, m outputs, c_relu = 10 and c_arctan = 100 flops per alpha, section 4.5),
aggregated as total extra flops over total EB flops: sum_IB (2n + c m) / sum_IB 3nm over the
IB layers' uses in a step ("IB layers", what the paper's formula bounds), and the same extra
flops over the EB flops of the whole step, convolutions and read-out included ("whole
step": 3 multiply-adds per weight use, a convolution's output size x kernel volume). Then
the paper's own Table 4 bound and its measured PyTorch overhead.

    python -m ibtools bench ib_overhead            # the target on CUDA: IB/EB <= 1.10
"""

# No `from __future__ import annotations`: the CLI runs this file without registering it as a
# module, and dataclasses then cannot resolve string annotations.
import math
import statistics
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ibtools.bench import full_scale_precision, graph_captured, median_ratio, timed_blocks, warmup_calls
from ibtools.experiments.ch02_ib import FLOPS_PER_ALPHA  # c_sigma of section 4.5
from ibtools.ib_layers import bind, solve
from ibtools.models import AUTOENCODER_SIZES, IBAutoencoder, IBMNISTClassifier, MusicRNN
from ibtools.train import BatchClosure, make_step, next_frame_nll, resolve_device

LR = 0.01


@dataclass
class Architecture:
    name: str
    make_model: Callable[[str], nn.Module]  # mode -> model
    inputs: torch.Tensor
    targets: torch.Tensor
    loss: Callable
    ib_layers: list  # (n, m, activation, alpha shape): one per IB layer
    eb_macs: int  # multiply-adds of every weight use in one forward pass, IB layers included
    paper_bound: str  # Table 4
    paper_measured: str
    # Whether the sweeps replay this architecture's steps from a CUDA graph: the music sweeps'
    # pieces differ in length, so their steps run eagerly (a graph holds one shape).
    captured_in_sweeps: bool = True

    def flop_bounds(self) -> tuple[float, float]:
        """Extra flops over EB flops: of the IB layers, and of the whole step."""
        extra = ib_eb = 0
        for n, m, activation, shape in self.ib_layers:
            uses = math.prod(shape[:-1])  # examples x time steps
            extra += (2 * n + FLOPS_PER_ALPHA[activation] * m) * uses
            ib_eb += 3 * n * m * uses
        return extra / ib_eb, extra / (3 * self.eb_macs)


class UnrolledMusicRNN(MusicRNN):
    """The same RNN written as a loop for autograd, the way one writes it without a fused
    back-propagation through time: a reference for our EB."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rnn = self.rnn
        h, hidden = x.new_zeros(x.shape[1], rnn.hidden_size), []
        for x_t in x:
            h = torch.atan(F.linear(x_t, rnn.weight_ih, rnn.bias) + F.linear(h, rnn.weight_hh))
            hidden.append(h)
        return self.readout(torch.stack(hidden))


def architectures(device: torch.device) -> list[Architecture]:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(100, 1, 28, 28, generator=gen).to(device)
    labels = torch.randint(0, 10, (100,), generator=gen).to(device)
    digits = torch.rand(100, 784, generator=gen).to(device)
    chords = (torch.rand(60, 1, 88, generator=gen) < 0.05).float().to(device)
    conv_macs = 24 * 24 * 10 * 25 * 1 + 8 * 8 * 20 * 25 * 10
    sizes = AUTOENCODER_SIZES
    ae_layers = [(n, m, "relu", (100, m)) for n, m in zip(sizes[:-1], sizes[1:])]
    return [
        Architecture("MNIST classifier, batch 100", IBMNISTClassifier, images, labels, F.cross_entropy,
                     [(320, 50, "arctan", (100, 50)), (50, 10, "relu", (100, 10))],
                     100 * (conv_macs + 320 * 50 + 50 * 10), "6.27%", "+16.82%"),
        Architecture("MNIST autoencoder, batch 100", IBAutoencoder, digits, digits, F.mse_loss, ae_layers,
                     100 * sum(n * m for n, m in zip(sizes[:-1], sizes[1:])), "0.60%", "+99.68%"),
        Architecture("RNN 300 arctan, T = 60, batch 1", MusicRNN, chords, chords, next_frame_nll,
                     [(300 + 88, 300, "arctan", (60, 1, 300))],
                     60 * (300 + 88) * 300 + 60 * 300 * 88, "11.33%", "+152% to +216%",
                     captured_in_sweeps=False),
    ]


def training_step(model: nn.Module, arch: Architecture, device: torch.device, capture: bool | None = None):
    """(step, call): ``step`` made by :func:`ibtools.train.make_step` (``capture`` passed on:
    None captures on CUDA), ``call()`` one training step of ``model`` on the fixed batch."""
    optimizer = bind(model, torch.optim.SGD(model.parameters(), lr=LR))
    step = make_step(optimizer, device, capture, model)
    closure = BatchClosure(model, arch.loss, optimizer, arch.inputs, arch.targets)
    return step, lambda: step(closure)


def alpha_time(arch: Architecture, device: torch.device) -> float:
    """Seconds that the layers' solve of eq. (8) (ibtools.ib_layers.solve) takes for all the IB
    layers of one step (the values do not change the cost: every branch of (8) is computed for
    every element)."""
    gen = torch.Generator().manual_seed(1)
    calls = []
    for n, _, activation, shape in arch.ib_layers:
        b, c = (torch.randn(shape, generator=gen).to(device) for _ in range(2))
        z_sq = (n * torch.rand(*shape[:-1], 1, generator=gen)).to(device)
        calls.append((activation, b, c, z_sq))

    def solve_all():
        for activation, b, c, z_sq in calls:
            solve(activation, b, c, z_sq, LR)
    return statistics.median(timed_blocks({"alpha": solve_all}, device, blocks=15, number=5)["alpha"])


def measure(device: torch.device | None = None, quick: bool = False, capture: bool | None = None) -> pd.DataFrame:
    """One row per architecture: EB and IB milliseconds per training step, their ratio (the
    median of block-by-block ratios), which of them replayed CUDA graphs ("captured": "EB, IB",
    or "none", always so on the CPU), the layers' solve of eq. (8) timed alone, the section
    4.5 flop bounds and the paper's figures. ``quick`` takes fewer blocks (for a chapter;
    noisier). ``capture`` is :func:`ibtools.train.make_step`'s: None as the sweeps run
    (graphs on CUDA, but for the RNN, whose sweeps run eagerly), False eager.
    ``table.attrs["tf32"]``: whether TF32 was allowed (:func:`ibtools.bench.full_scale_precision`)."""
    device = device or resolve_device()
    blocks = 12 if quick else 60
    with full_scale_precision(device) as precision:
        table = pd.DataFrame([_measure_architecture(arch, device, blocks, quick, capture)
                              for arch in architectures(device)])
    table.attrs["tf32"] = precision["tf32"]
    return table


def _measure_architecture(arch: Architecture, device: torch.device, blocks: int, quick: bool,
                          capture: bool | None) -> dict:
    models = {"EB": lambda: arch.make_model("explicit"), "IB": lambda: arch.make_model("implicit")}
    if arch.make_model is MusicRNN and not quick:
        models["unrolled"] = lambda: UnrolledMusicRNN("explicit")
    steps, calls = {}, {}
    for name, make_model in models.items():
        torch.manual_seed(0)  # the same initial weights for EB and IB
        steps[name], calls[name] = training_step(make_model().to(device), arch, device,
                                                 capture if arch.captured_in_sweeps else False)
    samples = timed_blocks(calls, device, blocks=blocks, number=4, warmup=warmup_calls(steps.values(), 3))
    eb, ib = (statistics.median(samples[name]) for name in ("EB", "IB"))
    layers_bound, step_bound = arch.flop_bounds()
    return {
        "architecture": arch.name, "EB ms": eb * 1e3, "IB ms": ib * 1e3,
        "IB/EB": median_ratio(samples["IB"], samples["EB"]),
        "captured": graph_captured({name: steps[name] for name in ("EB", "IB")}),
        "alpha alone ms": alpha_time(arch, device) * 1e3,
        "bound, IB layers": layers_bound, "bound, whole step": step_bound,
        "paper bound": arch.paper_bound, "paper measured": arch.paper_measured,
        "unrolled EB ms": statistics.median(samples["unrolled"]) * 1e3 if "unrolled" in samples else float("nan"),
    }


def main(device: torch.device) -> None:
    table = measure(device)
    print(f"device: {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"TF32 {'allowed (as full-scale sweeps)' if table.attrs['tf32'] else 'off'}")
    print("one training step = forward + backward + SGD step, taken as ibtools.train.train takes it "
          "(make_step); medians over alternating blocks of steps")
    print("captured: the methods whose steps were replayed from CUDA graphs (none: eager)\n")
    formats = {"EB ms": "{:.2f}", "IB ms": "{:.2f}", "IB/EB": "{:.3f}", "alpha alone ms": "{:.2f}",
               "bound, IB layers": "{:.2%}", "bound, whole step": "{:.2%}", "unrolled EB ms": "{:.2f}"}
    print(table.to_string(index=False, formatters={k: f.format for k, f in formats.items()}))
    print("\ntarget on one H200-class GPU: IB/EB <= 1.10 on every architecture")
    print("unrolled EB: the RNN trained by autograd through an unrolled loop (no fused BPTT)")
    print("bounds: (2n + c m) / (3 n m) with c_relu = 10, c_arctan = 100 flops (section 4.5), as total "
          "extra flops over total EB flops, of the IB layers' uses and of the whole step")
