"""Chapter 2: implicit backpropagation's update for one unit, for relu, arctan and
piecewise-cubic activations.

Fagan & Iyengar, *Robust Implicit Backpropagation*, sections 3-4 and appendix A. Nothing here
trains a network: the chapter studies the update map itself, eqs. (7)-(8), so each function
returns a tidy table of what one IB or EB step does to one unit, over grids of the
pre-activation theta^T z and the learning rate, for the chapter's figures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .. import ib

F64 = torch.float64


def _t(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=float), dtype=F64)


def eb_preactivation(activation, b: float, c, z_sq: float, lr: float, mu: float = 0.0) -> torch.Tensor:
    """Where one explicit step moves the pre-activation: theta^T z after
    theta <- theta (1 - lr mu) - lr sigma'(theta^T z) b z, i.e. c (1 - lr mu) - lr z_sq sigma'(c) b."""
    c = _t(c)
    return c * (1 - lr * mu) - lr * z_sq * ib.activation_derivative(activation)(c) * b


def ib_preactivation(activation, b: float, c, z_sq: float, lr: float, mu: float = 0.0) -> torch.Tensor:
    """Where one IB step, eq. (7), moves it: c / (1 + lr mu) - lr z_sq alpha, alpha from eq. (8)."""
    c = _t(c)
    alpha = ib.solve_alpha(activation, torch.full_like(c, b), c, torch.full_like(c, z_sq), lr, mu)
    return c / (1 + lr * mu) - lr * z_sq * alpha


def update_table(activation, *, b: float, lr: float, c_values, z_sq: float = 1.0, mu: float = 0.0,
                 curve=np.linspace(-3, 3, 241)) -> pd.DataFrame:
    """For each starting pre-activation c: the unit's loss term b sigma(q) as a curve over q,
    and the points where the step starts, where EB lands and where IB lands on it.

    Columns: c (the slider), series ("b·σ(q)", "start", "EB", "IB"), q, value."""
    sigma = ib.activation_fn(activation)
    c_values = _t(c_values)
    landing = {"start": c_values,
               "EB": eb_preactivation(activation, b, c_values, z_sq, lr, mu),
               "IB": ib_preactivation(activation, b, c_values, z_sq, lr, mu)}
    curve = _t(curve)
    frames = []
    for i, c in enumerate(c_values.tolist()):
        frames.append(pd.DataFrame({"c": c, "series": "b·σ(q)", "q": curve.numpy(),
                                    "value": (b * sigma(curve)).numpy()}))
        for name, q in landing.items():
            frames.append(pd.DataFrame({"c": [c], "series": [name], "q": [float(q[i])],
                                        "value": [float(b * sigma(q[i]))]}))
    return pd.concat(frames, ignore_index=True)


def objective(activation, alpha, *, b: float, c: float, z_sq: float, lr: float, mu: float = 0.0) -> torch.Tensor:
    """The one-dimensional IB objective, eq. (8), at the given alphas."""
    alpha = _t(alpha)
    sigma = ib.activation_fn(activation)
    return b * sigma(c / (1 + lr * mu) - alpha * lr * z_sq) + lr * (1 + lr * mu) * z_sq * alpha**2 / 2


def arctan_stationary_points(*, b: float, c: float, z_sq: float, lr: float, mu: float = 0.0) -> np.ndarray:
    """The real stationary points of (8) for the arctan, by numpy's polynomial roots: a
    reference, independent of :func:`ibtools.ib.solve_alpha`'s closed form.

    With k = lr z_sq and c' = c / (1 + lr mu), the derivative of (8) vanishes where
    (1 + lr mu) a (1 + (c' - k a)^2) = b, a cubic in a."""
    k, cp, m = lr * z_sq, c / (1 + lr * mu), 1 + lr * mu
    # m a (1 + cp^2 - 2 cp k a + k^2 a^2) - b = 0
    roots = np.roots([m * k**2, -2 * m * cp * k, m * (1 + cp**2), -b])
    return np.sort(roots[np.abs(roots.imag) < 1e-9].real)


def arctan_objective_table(*, b: float, lr: float, c_values, z_sq: float = 1.0, mu: float = 0.0,
                           alphas=np.linspace(-2.5, 2.5, 401)) -> pd.DataFrame:
    """Eq. (8) for the arctan as a curve over alpha, its stationary points, and IB's choice.

    Columns: c (the slider), series ("objective (8)", "stationary points", "IB's α"), alpha, value."""
    frames = []
    for c in np.asarray(c_values, dtype=float):
        point = dict(b=b, c=float(c), z_sq=z_sq, lr=lr, mu=mu)
        frames.append(pd.DataFrame({"c": c, "series": "objective (8)", "alpha": alphas,
                                    "value": objective("arctan", alphas, **point).numpy()}))
        roots = arctan_stationary_points(**point)
        frames.append(pd.DataFrame({"c": c, "series": "stationary points", "alpha": roots,
                                    "value": objective("arctan", roots, **point).numpy()}))
        chosen = ib.solve_alpha("arctan", _t(b), _t(c), _t(z_sq), lr, mu).reshape(1)
        frames.append(pd.DataFrame({"c": [c], "series": ["IB's α"], "alpha": chosen.numpy(),
                                    "value": objective("arctan", chosen, **point).numpy()}))
    return pd.concat(frames, ignore_index=True)


def alpha_map_table(activation, *, b: float, lrs, c_values=np.linspace(-3, 3, 301), z_sq: float = 1.0,
                    mu: float = 0.0) -> pd.DataFrame:
    """alpha as a function of the pre-activation: EB's sigma'(c) b against IB's alpha, per
    learning rate. Columns: lr (the slider), series, c, alpha."""
    c = _t(c_values)
    eb = (ib.activation_derivative(activation)(c) * b).numpy()
    frames = []
    for lr in lrs:
        alpha = ib.solve_alpha(activation, torch.full_like(c, b), c, torch.full_like(c, z_sq), lr, mu)
        frames.append(pd.DataFrame({"lr": lr, "series": "EB: σ'(c) b", "c": c.numpy(), "alpha": eb}))
        frames.append(pd.DataFrame({"lr": lr, "series": "IB: α of (8)", "c": c.numpy(), "alpha": alpha.numpy()}))
    return pd.concat(frames, ignore_index=True)


def step_length_table(activations, *, b: float, c: float, lrs, z_sq: float = 1.0, mu: float = 0.1) -> pd.DataFrame:
    """How far one step moves a unit's parameters, ||theta_{t+1} - theta_t||, as the learning
    rate grows, with ||theta_t|| = |c| / ||z|| (theta parallel to z). EB's step grows linearly
    in lr; IB's stays bounded when mu > 0 (section 4.1).

    Columns: activation, method, lr, step."""
    rows = []
    norm_z = np.sqrt(z_sq)
    theta_norm = abs(c) / norm_z
    for activation in activations:
        slope = float(ib.activation_derivative(activation)(_t(c)))
        for lr in lrs:
            alpha = float(ib.solve_alpha(activation, _t(b), _t(c), _t(z_sq), lr, mu))
            sign = np.sign(c) if c != 0 else 1.0
            # theta = sign * theta_norm * z/||z||; both steps move along z.
            eb_step = abs(-lr * mu * sign * theta_norm - lr * slope * b * norm_z)
            ib_step = abs(sign * theta_norm * (1 / (1 + lr * mu) - 1) - lr * alpha * norm_z)
            name = activation if isinstance(activation, str) else "piecewise cubic"
            rows += [dict(activation=name, method="eb", lr=lr, step=eb_step),
                     dict(activation=name, method="ib", lr=lr, step=ib_step)]
    return pd.DataFrame(rows)
