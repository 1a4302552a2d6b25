"""Alternative losses tracked while a network trains on the cross-entropy.

*On the Implicit Minimization of Alternative Loss Functions When Training Deep Networks* (ICLR
submission; *IM (n)* below). Each takes the top layer's ``scores`` and the ``targets`` and
returns the mean over the examples (``reduction="none"``: one value per example):

- :func:`gcdf_loss`, the 0-1 loss smoothed by Gaussian noise N(0, sigma^2 I) on the top
  layer's weights. Binary (``scores`` of shape (B,), targets +-1 or 0/1), IM (1):
  Phi(-y s / (sigma |x|)), exactly the expected 0-1 loss under the noise. Multi-class
  (``scores`` (B, m), integer targets), IM (6): sum_{j != y} Phi((s_j - s_y) / (|x| sigma sqrt 2)),
  an upper bound on the probability that the noisy classifier does not predict y. ``x_norm``
  is |x|, the norm of the top layer's input (1 when the features are normalised, as in the
  paper; a tensor of shape (B,) otherwise).
- :func:`tempered_cross_entropy`, IM (7): the cross-entropy of softmax(s / T).
- :func:`hinge_loss`, IM (8): sum_{j != y} max(0, gamma + s_j - s_y).

:func:`binary_curves` tabulates the three as functions of the margin z = s_y - s_j (Figure 1).
"""

from __future__ import annotations

import math

import pandas as pd
import torch
import torch.nn.functional as F


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _positive(name: str, value) -> None:
    if not torch.is_tensor(value) and (not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _phi(z: torch.Tensor) -> torch.Tensor:
    """The standard Gaussian CDF, IM (2)."""
    return 0.5 * torch.special.erfc(-z / math.sqrt(2.0))


def _check_multiclass(scores: torch.Tensor, targets: torch.Tensor) -> None:
    if scores.ndim != 2:
        raise ValueError(f"scores must be (B, classes) for the multi-class losses, got shape {tuple(scores.shape)}")
    if targets.shape != scores.shape[:1] or targets.dtype in (torch.float16, torch.float32, torch.float64):
        raise ValueError(f"targets must be B class indices (integers), got {targets.dtype} {tuple(targets.shape)}")


def _sum_over_other_classes(scores: torch.Tensor, targets: torch.Tensor, term) -> torch.Tensor:
    """sum_{j != y} term(s_j - s_y) for each example: the form of IM (6) and (8)."""
    _check_multiclass(scores, targets)
    terms = term(scores - scores.gather(1, targets[:, None]))
    return terms.masked_fill(F.one_hot(targets, scores.shape[1]).bool(), 0.0).sum(dim=1)


def gcdf_loss(scores: torch.Tensor, targets: torch.Tensor, sigma: float, x_norm=1.0,
              reduction: str = "mean") -> torch.Tensor:
    """The Gcdf loss L_sigma of IM (1) (binary, ``scores`` (B,)) or IM (6) (multi-class)."""
    _positive("sigma", sigma)
    x_norm = torch.as_tensor(x_norm, dtype=scores.dtype, device=scores.device)
    if (x_norm <= 0).any():
        raise ValueError("x_norm, the norm of the top layer's input, must be > 0")
    if scores.ndim == 1:
        y = targets.to(scores.dtype)
        if not bool(((y == 1) | (y == -1) | (y == 0)).all()):
            raise ValueError("binary targets must be +1/-1 (or 1/0)")
        y = torch.where(y == 0, -torch.ones_like(y), y)
        return _reduce(_phi(-y * scores / (sigma * x_norm)), reduction)
    return _reduce(_sum_over_other_classes(
        scores, targets, lambda gap: _phi(gap / (x_norm.reshape(-1, 1) * sigma * math.sqrt(2.0)))), reduction)


def tempered_cross_entropy(scores: torch.Tensor, targets: torch.Tensor, temperature: float,
                           reduction: str = "mean") -> torch.Tensor:
    """-log softmax(s / T)_y, IM (7)."""
    _positive("temperature", temperature)
    _check_multiclass(scores, targets)
    return _reduce(F.cross_entropy(scores / temperature, targets, reduction="none"), reduction)


def hinge_loss(scores: torch.Tensor, targets: torch.Tensor, margin: float, reduction: str = "mean") -> torch.Tensor:
    """sum_{j != y} max(0, gamma + s_j - s_y), IM (8)."""
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    return _reduce(_sum_over_other_classes(scores, targets, lambda gap: torch.clamp(margin + gap, min=0.0)), reduction)


def binary_curves(z=None, sigmas=(0.5, 1.0, 2.0, 4.0), temperatures=(0.5, 1.0, 2.0, 4.0),
                  margins=(0.5, 1.0, 2.0, 4.0)) -> pd.DataFrame:
    """Figure 1: for two classes and margin z = s_y - s_j, the Gcdf loss Phi(-z / (sigma sqrt 2)),
    the cross-entropy log(1 + exp(-z / T)) and the hinge max(0, gamma - z), each for several
    values of its parameter; columns ``loss``, ``parameter``, ``z``, ``value``. Computed by the
    multi-class functions on the scores (0, -z) with target 0."""
    z = torch.linspace(-5, 10, 601, dtype=torch.float64) if z is None else torch.as_tensor(z, dtype=torch.float64)
    scores = torch.stack([torch.zeros_like(z), -z], dim=1)
    targets = torch.zeros(len(z), dtype=torch.long)
    frames = []
    for name, fn, values in (("gcdf", gcdf_loss, sigmas), ("cross-entropy", tempered_cross_entropy, temperatures),
                             ("hinge", hinge_loss, margins)):
        for value in values:
            frames.append(pd.DataFrame({"loss": name, "parameter": float(value), "z": z.numpy(),
                                        "value": fn(scores, targets, value, reduction="none").numpy()}))
    return pd.concat(frames, ignore_index=True)


def noisy_zero_one(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, sigma: float,
                   samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Monte-Carlo estimate of the 0-1 loss of the linear classifier (W, b) under noise
    N(0, sigma^2 I) on W, per example: for multi-class ``W`` (m, n) the probability that the
    noisy argmax is not y; for binary ``W`` (n,) that y (W x + b) < 0 (y +-1). ``samples``
    draws, vectorised."""
    eps = sigma * torch.randn(samples, *W.shape, generator=generator, dtype=W.dtype)
    if W.ndim == 1:
        scores = (W + eps) @ x.T + b  # (samples, B)
        return (y * scores < 0).to(W.dtype).mean(dim=0)
    scores = torch.einsum("smn,bn->sbm", W + eps, x) + b  # (samples, B, m)
    return (scores.argmax(dim=-1) != y).to(W.dtype).mean(dim=0)


def second_order_bound(scores: torch.Tensor, y: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The right-hand side of IM (9) for a binary logistic classifier, per example:
    (L_c + sigma^2/2 Tr H) / log 2, with L_c = log(1 + e^{-y s}) and the Hessian in the top
    weights H = p (1 - p) x x^T (p = sigmoid(y s)), so Tr H = p (1 - p) |x|^2."""
    margin = y * scores
    p = torch.sigmoid(margin)
    trace = p * (1 - p) * x.pow(2).sum(dim=1)
    return (F.softplus(-margin) + 0.5 * sigma ** 2 * trace) / math.log(2.0)


__all__ = ["gcdf_loss", "tempered_cross_entropy", "hinge_loss", "binary_curves", "noisy_zero_one",
           "second_order_bound"]
