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

IM (9), section 5, for two classes with noise on the top layer's weights only:
L_sigma <= E_eps[L_c(w + eps)] / log 2 ~ (L_c + sigma^2/2 Tr H) / log 2. The inequality holds
exactly (:func:`noisy_cross_entropy` computes its right side); the curvature form
(:func:`bound_9`, with :func:`curvature`) is its second-order expansion, and bounds the binary
Gcdf loss only for sigma |x| up to about 2.82 (:func:`binary_curvature_threshold`). For several
classes the Gcdf loss (6) can exceed both (:func:`bound_9_counterexample`).
"""

from __future__ import annotations

import math

import numpy as np
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


def _binary_margin(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """y s with binary targets +-1 (0 read as -1); raises ValueError for other targets."""
    y = targets.to(scores.dtype)
    if not bool(((y == 1) | (y == -1) | (y == 0)).all()):
        raise ValueError("binary targets must be +1/-1 (or 1/0)")
    return torch.where(y == 0, -torch.ones_like(y), y) * scores


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
        return _reduce(_phi(-_binary_margin(scores, targets) / (sigma * x_norm)), reduction)
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


def noisy_cross_entropy(scores: torch.Tensor, targets: torch.Tensor, sigma: float, x_norm=1.0,
                        samples: int = 4000, generator: torch.Generator | None = None,
                        nodes: int = 160) -> torch.Tensor:
    """E_eps[L_c(w + eps, x, y)], the cross-entropy under noise N(0, sigma^2 I) on the top
    layer's weights, per example (IM section 5, the middle term of (9)).

    Binary (``scores`` (B,) = w^T x + b, targets +-1 or 0/1): y (w + eps)^T x + y b is
    z + sigma |x| xi with z = y s and xi ~ N(0, 1), so the expectation of
    log(1 + exp(-z - sigma |x| xi)) is a one-dimensional Gaussian integral, computed by
    Gauss-Hermite quadrature with ``nodes`` nodes. Multi-class (``scores`` (B, m), integer
    targets): the noisy scores are s_j + sigma |x| xi_j with independent xi_j; Monte-Carlo over
    ``samples`` draws from ``generator``. Returns shape (B,)."""
    _positive("sigma", sigma)
    spread = sigma * torch.as_tensor(x_norm, dtype=scores.dtype, device=scores.device)
    if scores.ndim == 1:
        margin = _binary_margin(scores, targets)
        xi, weight = (torch.as_tensor(a, dtype=scores.dtype, device=scores.device)
                      for a in np.polynomial.hermite_e.hermegauss(nodes))
        weight = weight / math.sqrt(2 * math.pi)
        noisy = margin[:, None] + spread.reshape(-1, 1) * xi
        return (F.softplus(-noisy) * weight).sum(dim=1)
    _check_multiclass(scores, targets)
    xi = torch.randn(samples, *scores.shape, generator=generator, dtype=scores.dtype)
    noisy = scores + spread.reshape(-1, 1) * xi  # (samples, B, m)
    return -torch.log_softmax(noisy, dim=-1).gather(-1, targets.expand(samples, -1)[..., None]).squeeze(-1).mean(0)


def curvature(scores: torch.Tensor, targets: torch.Tensor, x_norm=1.0) -> torch.Tensor:
    """Tr H, the trace of the Hessian of the cross-entropy in the top layer's weights, per
    example (IM section 5). Binary, L_c = log(1 + e^{-y w^T x}) with w (n,): H = p (1 - p) x x^T,
    Tr H = p (1 - p) |x|^2 with p = sigmoid(y s). Multi-class, W (m, n):
    H = (diag(p) - p p^T) (x) x x^T, Tr H = (1 - sum_j p_j^2) |x|^2 with p = softmax(s).
    Returns shape (B,)."""
    norm2 = torch.as_tensor(x_norm, dtype=scores.dtype, device=scores.device) ** 2
    if scores.ndim == 1:
        p = torch.sigmoid(_binary_margin(scores, targets))
        return p * (1 - p) * norm2
    _check_multiclass(scores, targets)
    p = torch.softmax(scores, dim=1)
    return (1 - p.pow(2).sum(dim=1)) * norm2


def bound_9(scores: torch.Tensor, targets: torch.Tensor, sigma: float, x_norm=1.0) -> torch.Tensor:
    """The curvature form of IM (9), per example: (L_c + sigma^2/2 Tr H) / log 2, with
    L_c the cross-entropy at the weights and Tr H from :func:`curvature`. Shape (B,).

    IM (9) reads, for two classes and noise on the top layer's weights only,
    L_sigma <= E_eps[L_c(w + eps)] / log 2 ~ (L_c + sigma^2/2 Tr H) / log 2. The inequality is
    exact (the 0-1 loss is at most L_c / log 2, since L_c >= log 2 wherever the prediction is
    wrong); the curvature form is the second-order expansion of its right side in sigma, and
    is itself an upper bound on the binary Gcdf loss only while sigma |x| is at most about
    2.82 (:func:`binary_curvature_threshold`). For several classes the Gcdf loss (6) is a sum
    over the wrong classes and can exceed both forms (:func:`bound_9_counterexample`)."""
    _positive("sigma", sigma)
    if scores.ndim == 1:
        ce = F.softplus(-_binary_margin(scores, targets))
    else:
        _check_multiclass(scores, targets)
        ce = F.cross_entropy(scores, targets, reduction="none")
    return (ce + 0.5 * sigma ** 2 * curvature(scores, targets, x_norm)) / math.log(2.0)


def _binary_curvature_gap(spread: float, margins: torch.Tensor) -> torch.Tensor:
    """Binary Gcdf loss minus the curvature form of (9) at margins z, for sigma |x| = spread."""
    y = torch.ones_like(margins)
    return gcdf_loss(margins, y, spread, reduction="none") - bound_9(margins, y, spread)


def binary_curvature_threshold(low: float = 1.0, high: float = 8.0, tol: float = 1e-6) -> tuple[float, float, float]:
    """The largest sigma |x| up to which the curvature form of IM (9) bounds the binary Gcdf
    loss at every margin z (a grid of step 0.001 on [-30, 300]; beyond it the Gaussian tail of
    the Gcdf loss is below the curvature term), found by bisection on [low, high]. Returns
    (threshold, margin z where the first failure sits, its excess) at ``high``'s side of the
    bracket, so the excess is > 0 and tiny. Raises ValueError if the bracket holds no change."""
    margins = torch.arange(-30.0, 300.0, 0.001, dtype=torch.float64)

    def worst(spread):
        gap = _binary_curvature_gap(spread, margins)
        k = int(gap.argmax())
        return float(gap[k]), float(margins[k])

    if worst(low)[0] > 0 or worst(high)[0] <= 0:
        raise ValueError(f"the curvature form must hold at sigma |x| = {low} and fail at {high}")
    while high - low > tol:
        middle = 0.5 * (low + high)
        low, high = (middle, high) if worst(middle)[0] <= 0 else (low, middle)
    excess, z = worst(high)
    return high, z, excess


def bound_9_counterexample(classes: int = 3, trials: int = 20000, seed: int = 0,
                           sigmas: tuple[float, float] = (0.05, 1.0)) -> dict:
    """The case, found by random search, where the Gcdf loss (6) for ``classes`` classes exceeds
    the curvature form of IM (9) by the most: scores of ``trials`` examples drawn as
    N(0, 2^2) for each class (target 0, |x| = 1), sigma log-uniform on ``sigmas`` (by default
    [0.05, 1], where the curvature form bounds the two-class loss: its margin noise is
    sigma sqrt 2 |x| <= 2.82). Returns the scores (list), sigma, the Gcdf loss, the curvature
    form and the excess (Gcdf minus bound; <= 0 when no case fails)."""
    if classes < 2:
        raise ValueError(f"classes must be >= 2, got {classes}")
    if not 0 < sigmas[0] < sigmas[1]:
        raise ValueError(f"sigmas must be a range 0 < low < high, got {sigmas}")
    g = torch.Generator().manual_seed(seed)
    scores = 2.0 * torch.randn(trials, classes, generator=g, dtype=torch.float64)
    sigmas = torch.exp(torch.empty(trials, dtype=torch.float64).uniform_(math.log(sigmas[0]), math.log(sigmas[1]), generator=g))
    targets = torch.zeros(trials, dtype=torch.long)
    # sigma |x| is what counts: sigma = 1 with |x| = sigmas is sigma = sigmas with |x| = 1
    gcdf = gcdf_loss(scores, targets, 1.0, x_norm=sigmas, reduction="none")
    bound = bound_9(scores, targets, 1.0, x_norm=sigmas)
    k = int((gcdf - bound).argmax())
    return dict(classes=classes, scores=[round(v, 4) for v in scores[k].tolist()], sigma=float(sigmas[k]),
                gcdf=float(gcdf[k]), bound=float(bound[k]), excess=float(gcdf[k] - bound[k]))


__all__ = ["gcdf_loss", "tempered_cross_entropy", "hinge_loss", "binary_curves", "noisy_zero_one",
           "noisy_cross_entropy", "curvature", "bound_9", "binary_curvature_threshold", "bound_9_counterexample"]
