"""Activation configurations of rectifier networks and how far training explores them.

Balduzzi, Butler-Yeoman & McWilliams, *Neural Taylor Approximations: Convergence and
Exploration in Rectifier Networks* (ICLR 2017), section 3 and appendix A.6; *BBM* below.

Enumerate the data as [D] and the rectifier units of a network as [M]. The **activation
configuration** A(W) is the (D x M) binary matrix whose entry (d, m) says whether unit m is
active (its pre-activation is > 0) on input x^d (Definition 2). The loss is smooth exactly
where an infinitesimal change of W leaves A(W) unchanged (Observation 1), and the neural
Taylor approximation clamps A(W^n) (Observation 2): the smooth regions of the landscape are
the configurations, and finding a good one is the hard part of training.

Over N rounds (epochs) of training the configurations met form an (N, D, M) binary tensor A
with A_n = A(W^n). Figure 5 measures how much of configuration space training explores:

    (a) novelty    min_{k < n} ||A_n - A_k||_F^2                 :func:`min_hamming_to_previous`
    (b) switches   sum_n ||A_n[d, :] - A_{n-1}[d, :]||^2, per d  :func:`switches_per_point`
    (c) volume     sum_{i <= 50} log sigma_i(A[:, :, m] centred) :func:`log_singular_volume`

:func:`activation_configuration` computes A(W) for an ``nn.Sequential`` of Linear, Conv2d,
ReLU, MaxPool2d, Flatten and Identity modules (a unit of a convolution is one channel at one
position) by forward hooks on its ``nn.ReLU`` modules; :class:`ConfigurationRecorder` fixes
the data and the units once (at most 10000 units of each convolutional layer in BBM A.6) and
keeps every recorded A_n packed 8 bits to a byte, so the autoencoder's epochs x 60000 x 260
bits fit in memory. Observation 3, the signed gradient as the maximiser of ||x||_1 over the
l_inf ball, is :func:`signed_gradient_maximiser`. :func:`piecewise_linear_network`,
:func:`function_and_gradient` and :func:`count_linear_pieces` draw Figure 1: a rectifier net
of one input is piecewise linear, one piece per configuration along the line.

Everything is vectorised (loops run over chunks of data points, rounds or neurons only, to
bound memory), runs on the device of its input (CPU or CUDA) and takes float32 or float64
models and inputs. The measures return float64 torch tensors on the device of A.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = [
    "activation_configuration",
    "ConfigurationRecorder",
    "pack_bits",
    "unpack_bits",
    "min_hamming_to_previous",
    "switches_per_point",
    "log_singular_volume",
    "signed_gradient_maximiser",
    "piecewise_linear_network",
    "function_and_gradient",
    "count_linear_pieces",
]

# Data points evaluated per forward pass when recording a configuration.
DEFAULT_CHUNK_SIZE = 4096
# Elements of the float blocks the measures build at once (2**25 float64 = 256 MiB).
_BLOCK_ELEMENTS = 2**25
# Columns per float32 block of the Hamming Gram matrix: its entries are integer counts of at
# most this many ones, exact in float32 (24-bit significand).
_MAX_EXACT_FLOAT32_COUNT = 2**22


# --- 1. activation configurations (Definition 2) ------------------------------------------------

def _relu_modules(model: nn.Module, layers: Sequence[int] | None) -> list[tuple[int, nn.ReLU]]:
    """The (index, module) pairs of the model's ``nn.ReLU`` modules to record, in forward order;
    index 0 is the model's first ReLU."""
    relus = [module for module in model.modules() if isinstance(module, nn.ReLU)]
    if not relus:
        raise ValueError(
            "the model has no nn.ReLU modules; build it with nn.ReLU() layers (a functional relu "
            "cannot be hooked, so its units cannot be recorded)")
    if layers is None:
        return list(enumerate(relus))
    chosen = list(layers)
    if not chosen:
        raise ValueError("layers is empty; pass layers=None to record every ReLU layer")
    for index in chosen:
        if not isinstance(index, int) or not 0 <= index < len(relus):
            raise ValueError(
                f"layers holds {index!r}, but the model has {len(relus)} ReLU modules; pass indices "
                f"0 ... {len(relus) - 1} counting the ReLU modules in order (not Sequential positions)")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"layers {chosen} repeats an index; pass each ReLU layer once")
    return [(index, relus[index]) for index in sorted(chosen)]


def _device_and_dtype(model: nn.Module, x: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Where and in which float type the model computes: its first parameter's, else x's."""
    for tensor in model.parameters():
        return tensor.device, tensor.dtype
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    return x.device, dtype


def _check_inputs(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(
            f"x must hold data points along its first dimension, shape (D, ...) with D >= 1, got shape "
            f"{tuple(x.shape)}; pass x[None] for a single point")
    return x


def _check_chunk_size(chunk_size: int) -> int:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}; the default is "
                         f"{DEFAULT_CHUNK_SIZE}")
    return chunk_size


def _forward_configuration(model: nn.Module, x: torch.Tensor, relus: list[tuple[int, nn.ReLU]],
                           units: list[torch.Tensor | None], chunk_size: int) -> torch.Tensor:
    """The (D, M) boolean configuration of the chosen units, evaluated chunk by chunk of data
    points under ``torch.no_grad`` in eval mode (the training flags are restored afterwards).

    ``units[j]`` indexes the flattened output of ReLU ``j`` (None: all of it). A unit is active
    where its ReLU's output is > 0, which is where its input is > 0, also for inplace ReLUs."""
    device, dtype = _device_and_dtype(model, x)
    units = [None if idx is None else idx.to(device) for idx in units]
    captured: list[torch.Tensor | None] = [None] * len(relus)
    calls = [0] * len(relus)

    def hook_for(j: int):
        def hook(module, inputs, output):
            calls[j] += 1
            active = output.reshape(output.shape[0], -1)
            if units[j] is not None:
                active = active[:, units[j]]
            captured[j] = active > 0
        return hook

    modes = [(module, module.training) for module in model.modules()]
    handles = [module.register_forward_hook(hook_for(j)) for j, (_, module) in enumerate(relus)]
    pieces = []
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, x.shape[0], chunk_size):
                batch = x[start:start + chunk_size].to(device=device, dtype=dtype)
                calls[:] = [0] * len(relus)
                model(batch)
                if any(count != 1 for count in calls):
                    raise ValueError(
                        "a recorded nn.ReLU module ran more than once (or never) in one forward pass; "
                        "give every layer its own nn.ReLU() instance so each unit is recorded once")
                pieces.append(torch.cat(captured, dim=1))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
    return torch.cat(pieces, dim=0)


def _unit_counts(model: nn.Module, x: torch.Tensor, relus: list[tuple[int, nn.ReLU]]) -> list[int]:
    """Units in each recorded ReLU layer, from one forward pass on the first data point."""
    sizes = [0] * len(relus)

    def hook_for(j: int):
        def hook(module, inputs, output):
            sizes[j] = output[0].numel()
        return hook

    handles = [module.register_forward_hook(hook_for(j)) for j, (_, module) in enumerate(relus)]
    device, dtype = _device_and_dtype(model, x)
    try:
        with torch.no_grad():
            model(x[:1].to(device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def _select_units(counts: list[int], max_units: int | None,
                  generator: torch.Generator) -> list[torch.Tensor | None]:
    """For each layer, None (all units) or the sorted indices of a uniformly random subset of
    ``max_units`` of its units drawn with ``generator`` (BBM A.6: at most 10000 per layer)."""
    if max_units is None:
        return [None] * len(counts)
    if not isinstance(max_units, int) or max_units < 1:
        raise ValueError(f"max_units must be an integer >= 1 or None (all units), got {max_units!r}; "
                         "the paper records at most 10000 units per layer")
    return [None if count <= max_units
            else torch.randperm(count, generator=generator)[:max_units].sort().values
            for count in counts]


def activation_configuration(model: nn.Module, x, *, layers: Sequence[int] | None = None,
                             max_units: int | None = None, generator: torch.Generator | None = None,
                             chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """The activation configuration A(W) of BBM Definition 2: a (D, M) boolean tensor with

        A[d, m] = 1  iff  the pre-activation of rectifier unit m on input x[d] is > 0,

    the units of the recorded ``nn.ReLU`` modules concatenated in forward order, each layer's
    output flattened (a unit of a convolution is one (channel, row, column), channel-major).

    ``layers`` lists which ReLU modules to record, counting the model's ReLU modules in
    order from 0 (default: all). ``max_units`` keeps at most that many units of each layer,
    a uniformly random subset drawn from ``generator`` (a CPU ``torch.Generator``; default one
    seeded 0, so repeated calls record the same units; a passed generator advances, so
    repeated calls with it do not -- use :class:`ConfigurationRecorder` to fix the units).

    The data are evaluated ``chunk_size`` points at a time under ``torch.no_grad`` with the
    model in eval mode (its training flags are restored). ``x`` is cast to the model's
    device and dtype; the result lives on the model's device.
    """
    x = _check_inputs(x)
    chunk_size = _check_chunk_size(chunk_size)
    relus = _relu_modules(model, layers)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    units = _select_units(_unit_counts(model, x, relus), max_units, generator)
    return _forward_configuration(model, x, relus, units, chunk_size)


# --- packed storage -----------------------------------------------------------------------------

def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """The boolean tensor ``bits``, flattened and packed 8 to a byte (first bit in the most
    significant place, zero-padded at the end): a uint8 tensor of ceil(bits.numel() / 8)
    bytes on the same device, equal to ``numpy.packbits(bits.ravel())``."""
    if bits.dtype != torch.bool:
        raise ValueError(f"pack_bits takes a boolean tensor, got {bits.dtype}; pass bits > 0 or bits.bool()")
    flat = bits.reshape(-1)
    padding = (-flat.numel()) % 8
    if padding:
        flat = torch.cat([flat, flat.new_zeros(padding)])
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.int32, device=bits.device)
    return (flat.reshape(-1, 8).to(torch.int32) * weights).sum(dim=1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The inverse of :func:`pack_bits`: a boolean tensor of ``shape`` from its packed bytes.
    A leading dimension of ``packed`` beyond its last unpacks to a leading dimension too:
    ``packed`` (N, B) gives (N, *shape)."""
    if packed.dtype != torch.uint8:
        raise ValueError(f"unpack_bits takes the uint8 tensor pack_bits returns, got {packed.dtype}")
    count = math.prod(shape)
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    bits = ((packed[..., None] >> shifts) & 1).bool().reshape(*packed.shape[:-1], -1)
    if bits.shape[-1] < count:
        raise ValueError(f"{packed.shape[-1]} bytes hold {bits.shape[-1]} bits, fewer than the "
                         f"{count} of shape {tuple(shape)}; pass the shape the bits were packed from")
    return bits[..., :count].reshape(*packed.shape[:-1], *shape)


class ConfigurationRecorder:
    """Records A(W^n) of BBM section 3.3 on fixed data and fixed units, round after round.

    The data points ``x`` (D of them) and the units -- the ReLU modules in ``layers`` (counted
    from 0, default all) and, with ``max_units``, a random subset of at most that many units
    per layer drawn once from a generator seeded ``seed`` (BBM A.6) -- are fixed when the
    recorder is made, so every round records the same M columns. :meth:`record` computes the
    (D, M) configuration for the model's current weights (see
    :func:`activation_configuration`) and keeps it packed 8 bits to a byte on the CPU;
    :meth:`tensor` unpacks the (N, D, M) boolean tensor of the N rounds recorded.

    Attributes: ``units`` (one entry per recorded layer: None for all its units, or the sorted
    indices, into the layer's flattened output, of the recorded ones), ``layer_slices`` (the
    columns of each recorded layer in a configuration), ``num_points`` (D), ``num_units``
    (M), ``nbytes`` (memory of the packed records).
    """

    def __init__(self, model: nn.Module, x, *, layers: Sequence[int] | None = None,
                 max_units: int | None = None, seed: int = 0, chunk_size: int = DEFAULT_CHUNK_SIZE):
        self.model = model
        self.x = _check_inputs(x)
        self.chunk_size = _check_chunk_size(chunk_size)
        self._relus = _relu_modules(model, layers)
        self.layers = [index for index, _ in self._relus]
        counts = _unit_counts(model, self.x, self._relus)
        self.units = _select_units(counts, max_units, torch.Generator().manual_seed(seed))
        sizes = [count if idx is None else idx.numel() for count, idx in zip(counts, self.units)]
        starts = [sum(sizes[:j]) for j in range(len(sizes))]
        self.layer_slices = [slice(start, start + size) for start, size in zip(starts, sizes)]
        self.num_points = self.x.shape[0]
        self.num_units = sum(sizes)
        self._packed: list[torch.Tensor] = []

    @property
    def shape(self) -> tuple[int, int]:
        """(D, M): the shape of one recorded configuration."""
        return self.num_points, self.num_units

    def __len__(self) -> int:
        """N, the number of rounds recorded."""
        return len(self._packed)

    @property
    def nbytes(self) -> int:
        """Bytes held by the packed records: N ceil(D M / 8)."""
        return sum(packed.numel() for packed in self._packed)

    def record(self) -> torch.Tensor:
        """A(W) for the model's current weights, (D, M) boolean on the model's device; also
        appended, packed, to the records."""
        configuration = _forward_configuration(self.model, self.x, self._relus, self.units, self.chunk_size)
        self._packed.append(pack_bits(configuration).cpu())
        return configuration

    def tensor(self, rounds: slice | Sequence[int] | None = None, device=None) -> torch.Tensor:
        """The (N, D, M) boolean tensor of the recorded configurations (``rounds``: a slice or
        list of round indices to keep, e.g. ``slice(0, 50)`` for BBM's first 50 epochs), on the
        CPU or ``device``."""
        packed = self._packed if rounds is None else (
            self._packed[rounds] if isinstance(rounds, slice) else [self._packed[n] for n in rounds])
        if not packed:
            return torch.zeros(0, *self.shape, dtype=torch.bool, device=device)
        return unpack_bits(torch.stack(packed).to(device), self.shape)


# --- 2. the exploration measures of Figure 5 ----------------------------------------------------

def _as_configurations(A) -> torch.Tensor:
    A = torch.as_tensor(A)
    if A.dtype != torch.bool:
        raise ValueError(f"A must be a boolean tensor, got {A.dtype}; pass A.bool() or A > 0, or the "
                         "tensor ConfigurationRecorder.tensor() returns")
    if A.ndim != 3:
        raise ValueError(f"A must have shape (N rounds, D data points, M units), got shape {tuple(A.shape)}; "
                         "stack the (D, M) configurations with torch.stack")
    return A


def min_hamming_to_previous(A, *, normalize: bool = False) -> torch.Tensor:
    """Figure 5(a), the novelty of each configuration: for n = 1 ... N - 1,

        h_n = min_{k < n} ||A_n - A_k||_F^2,

    the Hamming distance (number of differing bits) from A_n to the nearest earlier
    configuration. A length N - 1 float64 tensor on A's device (empty when N = 1); with
    ``normalize`` divided by D M, the fraction of bits that differ.

    All pairwise distances come from the Gram matrix of the flattened configurations as 0/1
    vectors, d(a, b) = |a| + |b| - 2 a.b, accumulated over blocks of columns (the float32
    products are exact integer counts); a mask of k >= n then leaves the minimum over k < n.
    """
    A = _as_configurations(A)
    N, D, M = A.shape
    flat = A.reshape(N, D * M)
    ones = flat.sum(dim=1).to(torch.float64)
    gram = torch.zeros(N, N, dtype=torch.float64, device=A.device)
    step = max(1, min(_MAX_EXACT_FLOAT32_COUNT, _BLOCK_ELEMENTS // max(N, 1)))
    for start in range(0, D * M, step):
        block = flat[:, start:start + step].to(torch.float32)
        gram += (block @ block.T).to(torch.float64)
    distance = ones[:, None] + ones[None, :] - 2 * gram
    if N < 2:
        minima = torch.zeros(0, dtype=torch.float64, device=A.device)
    else:
        not_earlier = torch.ones(N, N, dtype=torch.bool, device=A.device).triu()
        minima = distance.masked_fill(not_earlier, math.inf).amin(dim=1)[1:]
    if normalize:
        if D * M == 0:
            raise ValueError("normalize=True divides by D M = 0; record at least one data point and unit")
        minima = minima / (D * M)
    return minima


def switches_per_point(A, epochs: float | None = None, *, sort: bool = True) -> torch.Tensor:
    """Figure 5(b), the activation-state switches of each data point d,

        s_d = sum_{n=1}^{N-1} ||A_n[d, :] - A_{n-1}[d, :]||^2 / (epochs M),

    how often d's units switched on or off over training. A length D float64 tensor on A's
    device, **sorted in decreasing order** as the paper plots it (``sort=False`` keeps the
    data order). BBM divides by "epoch"; here the default ``epochs = N - 1`` (one record
    per epoch, counting transitions) makes s_d the proportion of possible switches, in
    [0, 1]. Pass ``epochs`` when the records are not one per epoch, for switches per unit per
    epoch.
    """
    A = _as_configurations(A)
    N, D, M = A.shape
    if N < 2:
        raise ValueError(f"switches need at least two recorded rounds, got N = {N}; record more rounds")
    if M == 0:
        raise ValueError("A has no units (M = 0); record at least one unit")
    if epochs is None:
        epochs = N - 1
    if not isinstance(epochs, (int, float)) or not 0 < epochs < math.inf:
        raise ValueError(f"epochs must be a finite number > 0 or None (N - 1), got {epochs!r}")
    counts = torch.zeros(D, dtype=torch.float64, device=A.device)
    step = max(1, _BLOCK_ELEMENTS // max(D * M, 1))
    for start in range(1, N, step):
        stop = min(N, start + step)
        counts += (A[start:stop] != A[start - 1:stop - 1]).sum(dim=(0, 2)).to(torch.float64)
    switches = counts / (epochs * M)
    return switches.sort(descending=True).values if sort else switches


def log_singular_volume(A, k: int = 50, *, floor: float = 1e-12, sort: bool = True) -> torch.Tensor:
    """Figure 5(c), the log-volume of configuration space each unit m covers,

        v_m = sum_{i=1}^{k'} log max(sigma_i(X_m), floor sqrt(N D)),
        X_m = A[:, :, m] - (1/N) 1 1^T A[:, :, m],

    the (N, D) record of unit m with each column's mean over rounds subtracted (BBM footnote
    3: a data point whose response never changes contributes a zero column), sigma_1 >= ...
    its singular values. Centring leaves rank at most min(N - 1, D), so k' = min(k, N - 1, D)
    (BBM take k = 50 over the first 50 epochs, where sigma_50 is always 0). A singular value
    below floor sqrt(N D) -- floor times a bound on sigma_1 -- counts as that, so a unit that
    never changes gets the least value, k' log(floor sqrt(N D)), rather than -inf.

    A length M float64 tensor on A's device, **sorted in decreasing order** (``sort=False``
    keeps unit order). Computed in float64 by ``torch.linalg.svdvals`` on blocks of units.
    """
    A = _as_configurations(A)
    counts, logs = singular_spectrum(A, k, floor=floor)
    N, D, _ = A.shape
    volume = logs + (min(k, N - 1, D) - counts).to(logs.dtype) * math.log(floor * math.sqrt(N * D))
    return volume.sort(descending=True).values if sort else volume


# --- 3. Observation 3 ---------------------------------------------------------------------------

def signed_gradient_maximiser(g) -> torch.Tensor:
    """sign(g), the update of BBM Observation 3: for g with no zero coordinate,

        sign(g) in argmax { ||x||_1 : x in B_inf^p, <x, g> >= 0 },  B_inf^p = {x : max_i |x_i| <= 1}.

    On B_inf^p, ||x||_1 <= p with equality exactly at the vertices x in {-1, 1}^p, and
    <sign(g), g> = ||g||_1 > 0, so sign(g) attains the maximum p. The argmax is every vertex
    with <x, g> >= 0; sign(g) is the one that also maximises <x, g>, i.e. decreases the loss
    fastest. Returns a tensor of g's shape, dtype and device.
    """
    g = torch.as_tensor(g)
    if not g.is_floating_point():
        g = g.to(torch.get_default_dtype())
    if torch.isnan(g).any():
        raise ValueError("g has NaN coordinates; the signed gradient needs a finite gradient")
    zeros = int((g == 0).sum())
    if zeros:
        raise ValueError(
            f"g has {zeros} zero coordinates, where sign(g) = 0 is no maximiser (any +1 or -1 there "
            "is); drop those coordinates, or set them to +1 or -1 yourself after torch.sign(g)")
    return torch.sign(g)


# --- 4. Figure 1: a rectifier network of one input is piecewise linear --------------------------

def piecewise_linear_network(widths: Sequence[int], seed: int = 0, input_dim: int = 1,
                             dtype: torch.dtype | None = None) -> nn.Sequential:
    """Linear(input_dim, w_1), ReLU, ..., Linear(w_{L-1}, w_L), ReLU, Linear(w_L, 1): a rectifier
    net with hidden ``widths`` and a scalar output, in PyTorch's default initialisation drawn
    with ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` (the global generator is
    left as it was), then cast to ``dtype`` (default: the default dtype)."""
    widths = list(widths)
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be a non-empty list of integers >= 1 (hidden layer sizes), got {widths!r}")
    if not isinstance(input_dim, int) or input_dim < 1:
        raise ValueError(f"input_dim must be an integer >= 1, got {input_dim!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip([input_dim] + widths[:-1], widths):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        model = nn.Sequential(*layers, nn.Linear(widths[-1], 1))
    return model.to(dtype or torch.get_default_dtype())


def _grid(model: nn.Module, xs) -> torch.Tensor:
    xs = torch.as_tensor(xs)
    if xs.ndim != 1 or xs.numel() == 0:
        raise ValueError(f"xs must be a non-empty 1-D grid of inputs, got shape {tuple(xs.shape)}; "
                         "pass xs.reshape(-1)")
    device, dtype = _device_and_dtype(model, xs)
    return xs.to(device=device, dtype=dtype)


def function_and_gradient(model: nn.Module, xs) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(xs), f'(xs)) for a network of one input and one output on the 1-D grid ``xs``, both
    of shape (G,) in the model's dtype, detached. The points are one batch; since each output
    depends only on its own input, one backward pass of sum_g f(x_g) gives every f'(x_g). At
    a kink autograd returns the slope of the side where the unit is inactive (relu'(0) = 0).
    The model's parameter gradients are left untouched."""
    inputs = _grid(model, xs)[:, None].requires_grad_(True)
    with torch.enable_grad():
        values = model(inputs)
        if values.numel() != inputs.shape[0]:
            raise ValueError(f"the model must map one input to one output, got output shape "
                             f"{tuple(values.shape)}; use piecewise_linear_network(widths)")
        (gradient,) = torch.autograd.grad(values.sum(), inputs)
    return values.detach().reshape(-1), gradient.reshape(-1)


def count_linear_pieces(model: nn.Module, xs) -> int:
    """The number of activation configurations met along the sorted 1-D grid ``xs``.

    Each configuration holds on an interval of the line (its pre-activations are affine in x
    there, so it is cut out by linear inequalities), so the count is 1 plus the number of
    neighbouring grid points whose configurations differ: the linear pieces of f the grid
    resolves (pieces narrower than the grid spacing are missed). It bounds the pieces of f
    from above, with equality unless two neighbouring configurations give f the same slope
    (e.g. a unit whose outgoing weights are zero). One hidden layer of w units gives at most
    w + 1; depth gives more (up to exponentially many)."""
    grid = _grid(model, xs).sort().values
    configuration = activation_configuration(model, grid[:, None])
    return int((configuration[1:] != configuration[:-1]).any(dim=1).sum()) + 1


def singular_spectrum(A, k: int = 50, *, floor: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """The part of :func:`log_singular_volume` that does not depend on its floor: for each unit
    m, of the first k' = min(k, N - 1, D) singular values sigma_i of the centred record X_m,

        r_m = #{i <= k' : sigma_i > floor sqrt(N D)},   s_m = sum_{i <= k', sigma_i > floor sqrt(N D)} log sigma_i,

    so that log_singular_volume(A, k, floor=floor) = s + (k' - r) log(floor sqrt(N D)). A unit
    whose response never changes has r = 0 and s = 0; r counts the directions of configuration
    space the unit's record spans, s their log-volume.

    Two length M tensors on A's device, in unit order: r (int64) and s (float64). Raises
    ValueError as :func:`log_singular_volume` does.
    """
    A = _as_configurations(A)
    N, D, M = A.shape
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}; the paper uses k = 50")
    if not isinstance(floor, (int, float)) or not 0 < floor < 1:
        raise ValueError(f"floor must be a number in (0, 1), got {floor!r}; the default is 1e-12")
    if N < 2 or D < 1:
        raise ValueError(f"the volume needs N >= 2 rounds and D >= 1 data points, got N = {N}, D = {D}")
    rank = min(k, N - 1, D)
    least = floor * math.sqrt(N * D)
    counts = torch.empty(M, dtype=torch.int64, device=A.device)
    logs = torch.empty(M, dtype=torch.float64, device=A.device)
    step = max(1, _BLOCK_ELEMENTS // (N * D))
    for start in range(0, M, step):
        X = A[:, :, start:start + step].permute(2, 0, 1).to(torch.float64)
        X = X - X.mean(dim=1, keepdim=True)
        sigma = torch.linalg.svdvals(X)[:, :rank]
        above = sigma > least
        counts[start:start + step] = above.sum(dim=1)
        logs[start:start + step] = torch.where(above, sigma.clamp_min(least).log(), torch.zeros_like(sigma)).sum(dim=1)
    return counts, logs
