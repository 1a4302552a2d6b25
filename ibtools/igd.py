"""Incremental gradient descent (IGD) with a constant step on regularised least squares.

*Training by Vanilla SGD with Larger Learning Rates* (ICLR 2021 submission), section 5 and
appendix A.2, examples 1-3; *VS (n)* below is its equation (n). The objective

    f(x) = 1/2 |A x - b|^2 + mu/2 x^T D x = sum_i f_i(x),   f_i(x) = 1/2 (a_i^T x - b_i)^2 + mu/(2N) x^T D x

(rows a_i^T of the N x d matrix A, D symmetric positive semi-definite) is minimised by IGD:
the components are visited in order i = 1..N, each with the step

    x <- x - t grad f_i(x) = P_i(t) x + t b_i a_i,   P_i(t) = I - t a_i a_i^T - t (mu/N) D.

One epoch is therefore the affine map

    x <- K_N(t) x + t c(t),   K_N(t) = P_N(t) ... P_1(t),   c(t) = sum_j b_j P_N(t) ... P_{j+1}(t) a_j,

with the product of the components visited *after* j applied to b_j a_j. VS (21) writes the same
map with the product read left to right, K_j(t) = P_1(t) P_2(t) ... P_j(t) and
c(t) = sum_j b_j K_{j-1}(t) a_j: that is one epoch visiting the components in the order N, ..., 1.
The order is arbitrary; this module visits them in the order 1, ..., N. The factors are symmetric,
so the two orders' K_N(t) are transposes of each other and have the same spectral radius.

The spectral radius decides convergence as VS appendix A.2 (example 2) states it: rho(K_N(t)) < 1
is sufficient (IGD converges from every start, at the linear rate rho, to the fixed point
x(t) = t (I - K_N(t))^{-1} c(t)) and rho(K_N(t)) <= 1 is necessary. At rho = 1 IGD may still
converge: unregularised least squares with fewer equations than unknowns has rho = 1 (every null
vector of A is left fixed), and IGD converges to a limit that keeps its start's null-space part.
From the matrix AM-GM inequality, a conjecture for positive semi-definite factors, and assuming
the factors commute, VS derives (section 5; appendix A.2, example 3) the step bound
t < 2N / rho(mu D + A^T A) (:func:`step_bound`; the chapter's (7.2)), offered as sufficient.
P_i(t) is positive semi-definite only while t lambda_max(a_i a_i^T + (mu/N) D) <= 1
(:func:`psd_limit`), and the bound only covers that range: the upper bound
K_N(t) <= (I - t (mu D + A^T A) / N)^N does not bound negative eigenvalues. Applied beyond it the
bound fails: the paper's own example 1 (f(x) = sum x_i^2, A = sqrt(2) I, commuting factors) has
rho(K_N(t)) = |1 - 2t|, so IGD diverges from t = 1, while the bound is t < N; its factors are
positive semi-definite only for t <= 1/2. More generally, for A = diag(s) with N = d, IGD diverges
from t = 2 / max s^2, N times below the bound. :func:`spectral_radius` computes rho(K_N(t))
exactly, so the two can be compared. The minimiser x* = (A^T A + mu D)^{-1} A^T b is x(t) for every
t only under interpolation (every component minimised at x*; the IGD analogue of VS Theorem 1,
which is stated for SGD with random minibatches): otherwise x(t) -> x* as t -> 0.

Every function takes one step t or a 1-D tensor of steps and then works on all of them at
once (batched matrix products); the visit of the N components is sequential by definition.
"""

from __future__ import annotations

import torch


def _check(A: torch.Tensor, D: torch.Tensor | None, mu: float) -> tuple[torch.Tensor, torch.Tensor]:
    A = torch.as_tensor(A)
    if A.ndim != 2:
        raise ValueError(f"A must be an N x d matrix (one row per component), got shape {tuple(A.shape)}")
    if not A.is_floating_point():
        A = A.to(torch.get_default_dtype())
    d = A.shape[1]
    D = torch.eye(d, dtype=A.dtype, device=A.device) if D is None else torch.as_tensor(D, dtype=A.dtype,
                                                                                       device=A.device)
    if D.shape != (d, d):
        raise ValueError(f"D must be a {d} x {d} matrix to match A's {d} columns, got shape {tuple(D.shape)}")
    if not torch.allclose(D, D.T):
        raise ValueError("D must be symmetric (the regulariser is x^T D x); pass (D + D.T) / 2")
    if mu < 0:
        raise ValueError(f"mu must be >= 0, got {mu}")
    return A, D


def _steps(t, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    steps = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    scalar = steps.ndim == 0
    steps = steps.reshape(-1)
    if not torch.isfinite(steps).all() or (steps <= 0).any():
        raise ValueError(f"step sizes must be finite and > 0, got {t}")
    return steps, scalar


def component_map(A, t, D=None, mu: float = 0.0) -> torch.Tensor:
    """P_i(t) = I - t a_i a_i^T - t (mu/N) D for every component: (T, N, d, d) for T steps."""
    A, D = _check(A, D, mu)
    steps, _ = _steps(t, A)
    N, d = A.shape
    eye = torch.eye(d, dtype=A.dtype, device=A.device)
    outer = A[:, :, None] * A[:, None, :]  # a_i a_i^T
    return eye - steps[:, None, None, None] * (outer + (mu / N) * D)


def _epoch_maps(A, b, t, D, mu: float):
    """(K, c, steps, scalar): the epoch maps for every step as a batch, (T, d, d) and (T, d),
    the steps (T,), and whether ``t`` was one step."""
    A, D = _check(A, D, mu)
    b = torch.as_tensor(b, dtype=A.dtype, device=A.device).reshape(-1)
    if len(b) != A.shape[0]:
        raise ValueError(f"b has {len(b)} entries, A has {A.shape[0]} rows")
    steps, scalar = _steps(t, A)
    P = component_map(A, steps, D, mu)
    T, d = len(steps), A.shape[1]
    K = torch.eye(d, dtype=A.dtype, device=A.device).expand(T, d, d).clone()
    c = torch.zeros(T, d, dtype=A.dtype, device=A.device)
    for i in range(A.shape[0]):  # the components, in the order IGD visits them
        K = P[:, i] @ K
        c = (P[:, i] @ c[..., None])[..., 0] + b[i] * A[i]
    return K, c, steps, scalar


def epoch_map(A, b, t, D=None, mu: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(K_N(t), c(t)): one epoch of IGD visiting the components in the order 1, ..., N is
    x <- K_N(t) x + t c(t), K_N(t) = P_N(t) ... P_1(t), c(t) = sum_j b_j P_N(t) ... P_{j+1}(t) a_j
    (VS (21) is the order N, ..., 1; module docstring). For a 1-D tensor of steps, a batch:
    (T, d, d) and (T, d)."""
    K, c, _, scalar = _epoch_maps(A, b, t, D, mu)
    return (K[0], c[0]) if scalar else (K, c)


def spectral_radius(A, D, mu: float, t) -> torch.Tensor:
    """rho(K_N(t)), the largest modulus of an eigenvalue of the epoch map: IGD with step t
    converges from every start, at the linear rate it gives, if it is < 1, and cannot converge
    from every start if it is > 1; at exactly 1 it may converge or not (module docstring). ``D`` None is the
    identity; ``t`` one step or a 1-D tensor of them. The arguments come in the order of
    :func:`step_bound`'s, with the step last."""
    A = torch.as_tensor(A)
    K, _, _, scalar = _epoch_maps(A, torch.zeros(A.shape[0] if A.ndim else 0), t, D, mu)
    rho = torch.linalg.eigvals(K).abs().amax(dim=-1)
    return rho[0] if scalar else rho


def step_bound(A, D=None, mu: float = 0.0) -> float:
    """The paper's bound on the step, 2N / rho(mu D + A^T A) (the chapter's (7.2); VS section 5 and
    appendix A.2, example 3), offered there as sufficient. It rests on the matrix AM-GM conjecture
    for positive semi-definite factors, so it covers only t <= :func:`psd_limit`, and on the P_i
    commuting; applied beyond that range it is not sufficient (module docstring: the paper's
    example 1 converges only for t < 1, the bound gives N)."""
    A, D = _check(A, D, mu)
    return float(2 * A.shape[0] / torch.linalg.eigvalsh(mu * D + A.T @ A).abs().max())


def psd_limit(A, D=None, mu: float = 0.0) -> float:
    """The largest step at which every factor P_i(t) = I - t (a_i a_i^T + (mu/N) D) is positive
    semi-definite, 1 / max_i lambda_max(a_i a_i^T + (mu/N) D): the range the matrix AM-GM
    conjecture behind :func:`step_bound` covers (VS appendix A.2, example 3). Infinite where every
    a_i a_i^T + (mu/N) D is zero."""
    A, D = _check(A, D, mu)
    top = float(torch.linalg.eigvalsh(A[:, :, None] * A[:, None, :] + (mu / A.shape[0]) * D).amax())
    return 1 / top if top > 0 else float("inf")


def minimiser(A, b, D=None, mu: float = 0.0) -> torch.Tensor:
    """x* = (A^T A + mu D)^+ A^T b, the minimiser of f (the least-norm one if f is not strictly convex)."""
    A, D = _check(A, D, mu)
    b = torch.as_tensor(b, dtype=A.dtype, device=A.device).reshape(-1)
    return torch.linalg.lstsq(A.T @ A + mu * D, (A.T @ b)[:, None], driver="gelsd" if A.device.type == "cpu"
                              else None).solution[:, 0]


def fixed_point(A, b, t, D=None, mu: float = 0.0) -> torch.Tensor:
    """x(t) = t (I - K_N(t))^{-1} c(t), where IGD with step t ends up from every start if
    rho(K_N(t)) < 1. Raises torch's error where I - K_N(t) is singular (an eigenvalue 1, as for
    unregularised least squares with fewer equations than unknowns: the limit then depends on
    the start; use :func:`iterate`)."""
    K, c, steps, scalar = _epoch_maps(A, b, t, D, mu)
    eye = torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)
    x = torch.linalg.solve(eye - K, steps[:, None] * c)
    return x[0] if scalar else x


def iterate(A, b, t, epochs: int, D=None, mu: float = 0.0, x0=None) -> torch.Tensor:
    """The iterates of IGD at the end of each epoch, starting from ``x0`` (default 0): (epochs
    + 1, d), or (T, epochs + 1, d) for T steps; computed with the epoch map, one product an epoch."""
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    K, c, steps, scalar = _epoch_maps(A, b, t, D, mu)
    x = torch.zeros_like(c) if x0 is None else torch.as_tensor(x0, dtype=c.dtype, device=c.device).expand_as(c).clone()
    path = [x]
    for _ in range(epochs):
        x = (K @ x[..., None])[..., 0] + steps[:, None] * c
        path.append(x)
    out = torch.stack(path, dim=1)
    return out[0] if scalar else out
