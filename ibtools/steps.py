"""How one training step runs on its device: eagerly, or replayed from a CUDA graph.

On a GPU the arithmetic of the book's networks takes microseconds; what a step costs there is
the hundreds of kernel launches Python issues one by one, and every point where the host waits
for the device (a ``float(loss)``, a ``bool(mask.all())``). :func:`ibtools.train.train` keeps
its step loop free of such waits (it reads the losses at evaluation points), and on CUDA
captures ``optimizer.step(closure)`` in a CUDA graph (:class:`GraphStep`) once the shapes are
fixed: one launch a step then replays every kernel of the forward pass, the backward pass and
the update, with the batch copied into fixed input buffers.

:func:`host_syncs` finds, on any device the CPU included, the calls that would make the host
wait for a GPU: the check that a step can be captured at all.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable

import torch

__all__ = ["HostSync", "host_syncs", "no_host_syncs", "host_waits", "capturing", "graph_safe", "torch_optimizer",
           "cuda_graph", "GraphStep", "EagerStep", "precision"]

# Tensor methods and functions whose result the host must have before it can go on: on CUDA
# each waits for every kernel queued before it, and none can be captured in a CUDA graph.
_SYNCING = frozenset({
    "item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "__complex__",
    "nonzero", "masked_select", "allclose", "equal", "unique", "unique_consecutive", "argwhere",
    "_local_scalar_dense",
})


_ACTIVE = 0  # how many host_syncs / no_host_syncs blocks are open


class HostSync(RuntimeError):
    """A call that makes the host wait for the device, inside code that must not."""


class _SyncRecorder:
    """Wraps, for the duration of a block, the tensor methods and torch functions of
    ``_SYNCING`` (and indexing) so that each call is noted; patched on the classes rather than
    through a torch function mode, because autograd runs custom functions' backward outside
    of such modes."""

    def __init__(self, raise_at_once: bool):
        self.calls: list[str] = []
        self.raise_at_once = raise_at_once
        self._saved: list[tuple[object, str, object]] = []

    def note(self, name: str) -> None:
        self.calls.append(name)
        if self.raise_at_once:
            raise HostSync(f"{name} on a tensor makes the host wait for the device "
                           "(and cannot be captured in a CUDA graph)")

    def _wrap(self, owner, name: str) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return
        recorder = self

        if name == "__getitem__":
            def wrapped(tensor, index):
                if _boolean_index(index):
                    recorder.note("boolean-mask indexing")
                return original(tensor, index)
        else:
            def wrapped(*args, **kwargs):
                recorder.note(name)
                return original(*args, **kwargs)
        self._saved.append((owner, name, original))
        setattr(owner, name, wrapped)

    def __enter__(self):
        global _ACTIVE
        _ACTIVE += 1
        for name in sorted(_SYNCING):
            self._wrap(torch.Tensor, name)
            if not name.startswith("_") and name not in ("item", "tolist", "numpy", "cpu"):
                self._wrap(torch, name)
        self._wrap(torch.Tensor, "__getitem__")
        return self

    def __exit__(self, *exc) -> None:
        global _ACTIVE
        _ACTIVE -= 1
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()


def host_waits(tensor: torch.Tensor) -> bool:
    """Whether reading a value of ``tensor`` on the host costs a wait for its device: on CUDA,
    and on any device inside :func:`host_syncs` / :func:`no_host_syncs`, so that those checks
    see on a CPU the code path a GPU takes (and while ``torch.compile`` traces, which cannot
    follow a branch on a value). Code that can skip work by asking a cheap question
    of the data (``if mask.any():``) asks only when this is False."""
    return tensor.is_cuda or _ACTIVE > 0 or torch.compiler.is_compiling()


def capturing(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s stream is being captured in a CUDA graph (inside
    :func:`host_syncs` / :func:`no_host_syncs` too, as for :func:`host_waits`): where code that
    would ask the host a question must do without, even at a higher price in arithmetic."""
    return _ACTIVE > 0 or (tensor.is_cuda and torch.cuda.is_current_stream_capturing())


def _boolean_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


@contextlib.contextmanager
def host_syncs():
    """Record every call that would make the host wait for a GPU, whatever the device.

    Yields a list that fills with the names of those calls (``"item"``, ``"__bool__"``,
    ``"__float__"``, ``"nonzero"``, ``"boolean-mask indexing"``, ...) made on tensors inside the
    block, in autograd's backward functions too. On the CPU nothing waits, so this is how a
    CPU machine checks that a training step is free of host round trips::

        with host_syncs() as calls:
            optimizer.step(closure)
        assert calls == []

    What it cannot see: a C++ operator that waits inside torch (none of the book's steps calls
    one), and a conversion made by code that holds the original method from before the block.
    """
    with _SyncRecorder(raise_at_once=False) as recorder:
        yield recorder.calls


@contextlib.contextmanager
def no_host_syncs():
    """Raise :class:`HostSync` at the first call inside the block that would make the host wait
    for a GPU (see :func:`host_syncs`)."""
    with _SyncRecorder(raise_at_once=True):
        yield


def graph_safe(optimizer) -> bool:
    """Whether ``optimizer.step(closure)`` may be captured in a CUDA graph: torch's SGD, one of
    torch's optimizers made with ``capturable=True`` (:func:`torch_optimizer`), or an
    optimizer that says so with a true ``graph_safe`` attribute (no host synchronisation, no
    shapes or Python branches that depend on values; :class:`ibtools.sibp.SIBP` and
    :class:`ibtools.sibp.ProxBP`). A :class:`ibtools.train.WatchedOptimizer` is safe when the
    optimizer it watches is and it does not override ``update``: its hooks run on the host
    around the replayed update."""
    from ibtools.train import WatchedOptimizer

    if isinstance(optimizer, WatchedOptimizer):
        return type(optimizer).update is WatchedOptimizer.update and graph_safe(optimizer.optimizer)
    if type(optimizer) is torch.optim.SGD or (type(optimizer).__module__.startswith("torch.optim.")
                                               and optimizer.defaults.get("capturable") is True):
        return not optimizer.defaults.get("differentiable", False)
    return bool(getattr(optimizer, "graph_safe", False))


def torch_optimizer(cls: type, params, **settings) -> torch.optim.Optimizer:
    """``cls(params, **settings)`` for one of torch's optimizers that count their steps (Adam,
    AdaDelta, RMSprop, ...), made with ``capturable=True`` where the parameters are on CUDA: it
    then keeps its step count on the device, the same arithmetic without a host round trip, so
    that a CUDA graph can replay its step (:func:`graph_safe`). ``params`` as torch takes it:
    tensors, or param-group dicts."""
    params = list(params)
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    optimizer = cls(params, capturable=any(t.is_cuda for t in tensors), **settings)
    # torch warns once when such an optimizer steps outside a capture, as GraphStep's warm-up
    # steps do by design (and a step that stays eager pays for the device-side count).
    optimizer._warned_capturable_if_run_uncaptured = True
    return optimizer


def _hyperparameters(optimizer) -> tuple:
    """What a captured step has baked in as constants: every param group's settings (its ``lr``
    among them), which a scheduler may change between steps."""
    return tuple(tuple(sorted((k, v) for k, v in group.items() if k != "params" and not isinstance(v, torch.Tensor)))
                 for group in optimizer.param_groups)


class EagerStep:
    """``optimizer.step(closure)`` as it is: the step on the CPU, and on CUDA where a step
    cannot be captured. Calling it returns the batch loss as a 0-d tensor on the device,
    without waiting for it."""

    captured = False
    replays = 0

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def __call__(self, closure) -> torch.Tensor:
        return _as_tensor(self.optimizer.step(closure), closure)


def _as_tensor(loss, closure) -> torch.Tensor:
    """The step's loss as a 0-d tensor on the batch's device (filled there: a number copied from
    the host would wait for the device)."""
    if isinstance(loss, torch.Tensor):
        return loss.detach()
    device = closure.inputs.device if isinstance(closure.inputs, torch.Tensor) else None
    return torch.full((), float("nan") if loss is None else float(loss), device=device)


def cuda_graph(step: Callable[[], torch.Tensor], stream=None) -> tuple[Callable[[], None], torch.Tensor]:
    """Capture ``step()`` in a CUDA graph (``torch.cuda.graph``) on ``stream`` (a stream of the
    device the step runs on; None: torch's shared capture stream, made on the device current
    at its first use): returns ``(replay, output)``, ``replay()`` running every captured kernel
    again and leaving the result in ``output``. Capturing records the kernels without running
    them."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        output = step()
    return graph.replay, output


# Eager calls of a GraphStep before it captures (CUDA graphs want autograd, cuBLAS and the
# optimizer's state set up first), and the calls until its first replay (the capture's own).
WARMUP = 3
CALLS_BEFORE_REPLAY = WARMUP + 1


class GraphStep:
    """``optimizer.step(closure)`` captured in a CUDA graph and replayed.

    The first ``warmup`` calls run eagerly on a side stream (as CUDA graphs require: autograd,
    cuBLAS and the optimizer's state are set up there; they are real training steps). The next
    call of the same batch shape captures the step with fixed input buffers, and every later one
    copies its batch into them and replays: the same kernels, the same arithmetic, one launch.
    A batch of another shape (an epoch's last, smaller one) runs eagerly. When a param group's
    settings change (a learning-rate schedule), the step runs eagerly once at the new settings
    and is then captured again, since a captured step holds them as constants. Returns the
    batch loss as a 0-d device tensor, without waiting.

    ``optimizer`` must be :func:`graph_safe`: a step that makes the host wait cannot be
    captured. If capture fails all the same, the call raises RuntimeError naming the fix
    (``train(capture=False)``, or ``IBTOOLS_CAPTURE=0`` for a sweep): going on eagerly after a
    failed capture is not safe in every torch release.

    What a captured step holds fixed besides its settings: the model's modes (IB or EB, the
    mini-batch convention, :func:`ibtools.ib_layers.set_fuse`) and hooks; change them between
    runs, not within one. Randomness comes from torch's default CUDA generator, which graphs
    advance at every replay (dropout draws fresh masks); another generator would need
    registering with the graph.

    ``capture(step) -> (replay, output)`` captures (:func:`cuda_graph` on the warm-up stream,
    on the inputs' device, by default); the tests pass one that replays by calling ``step`` to
    check the bookkeeping on a machine without CUDA.
    """

    captured = True

    def __init__(self, optimizer, warmup: int = WARMUP, *, capture: Callable | None = None):
        self.optimizer, self.warmup = optimizer, warmup
        self._capture = capture
        self._stream = None
        self._key = None  # (input shape and dtype, target shape, hyperparameters) of the captured step
        self._captured = None  # (static closure, replay, loss) of the captured step
        self._eager_key = None  # the key of the last step run eagerly to prepare a capture
        self.calls = self.captures = self.replays = 0

    def _eager(self, closure) -> torch.Tensor:
        return _as_tensor(self.optimizer.step(closure), closure)

    def __call__(self, closure) -> torch.Tensor:
        self.calls += 1
        if not isinstance(closure.inputs, torch.Tensor):
            return self._eager(closure)
        key = (closure.inputs.shape, closure.inputs.dtype, _shape(closure.targets), _hyperparameters(self.optimizer))
        if self._captured is not None and key[:3] != self._key[:3]:
            return self._eager(closure)  # another shape: the captured step stays for the usual one
        if self._captured is None or key != self._key:
            # Capture only a step that has just run eagerly as it is: after the warm-up, and
            # once more after each change of settings (which may make torch.compile compile
            # anew, something no capture can hold).
            if self.calls <= self.warmup or key != self._eager_key:
                self._eager_key = key
                return self._side_stream(closure)
            self._capture_step(closure, key)
        static, replay, loss = self._captured
        static.inputs.copy_(closure.inputs)
        if isinstance(static.targets, torch.Tensor):
            static.targets.copy_(closure.targets)
        replay()
        self.replays += 1
        return loss.clone()

    def _side_stream(self, closure) -> torch.Tensor:
        device = closure.inputs.device
        if device.type != "cuda":
            return self._eager(closure)
        if self._stream is None:
            self._stream = torch.cuda.Stream(device)
        self._stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(self._stream):
            loss = self._eager(closure)
        torch.cuda.current_stream(device).wait_stream(self._stream)
        return loss

    def _capture_step(self, closure, key) -> None:
        static = copy.copy(closure)
        static.inputs = closure.inputs.clone()
        if isinstance(closure.targets, torch.Tensor):
            static.targets = closure.targets.clone()
        capture = self._capture or (lambda step: cuda_graph(step, stream=self._stream))
        try:
            replay, loss = capture(lambda: _as_tensor(self.optimizer.step(static), static))
        except Exception as err:
            raise RuntimeError(
                f"could not capture {type(self.optimizer).__name__}'s step in a CUDA graph "
                f"({type(err).__name__}: {err}); "
                "run it eagerly with train(capture=False), or IBTOOLS_CAPTURE=0 for a sweep") from err
        self._key, self._captured = key, (static, replay, loss)
        self.captures += 1


def _shape(targets):
    return targets.shape if isinstance(targets, torch.Tensor) else None


@contextlib.contextmanager
def precision(device: torch.device, tf32: bool):
    """TF32 on ``device`` (CUDA) inside the block when ``tf32``, float32 throughout when not,
    torch's settings restored after; yields what the block ran with, for provenance:
    ``{"tf32": bool}`` (always False on the CPU, which has no TF32). TF32 keeps float32's
    range with 10 bits of mantissa in the inputs of matrix products and convolutions; torch's
    own default allows it in convolutions and not in matrix products, so ``tf32=False`` turns
    it off in both."""
    if device.type != "cuda":
        yield {"tf32": False}
        return
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        settings = [(matmul, "fp32_precision"), (conv, "fp32_precision")]  # torch >= 2.9
        value = "tf32" if tf32 else "ieee"
    else:
        settings = [(matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")]
        value = bool(tf32)
    before = [getattr(owner, name) for owner, name in settings]
    for owner, name in settings:
        setattr(owner, name, value)
    try:
        yield {"tf32": bool(tf32)}
    finally:
        for (owner, name), old in zip(settings, before):
            setattr(owner, name, old)
