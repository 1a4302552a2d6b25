"""Neural Taylor approximations (Balduzzi et al. 2017, section 2 and appendix A): T1-T3 of
A.2, Definition 1's Jacobian tensor against autograd, the recorder's running statistics and
closed-form optimum against the Taylor losses evaluated directly and against a solver, and
regret that grows like sqrt(N) for online gradient descent on a convex problem."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ibtools import taylor


pytestmark = pytest.mark.usefixtures("float64")


def mlp(seed=0, sizes=(5, 7, 4, 3)):
    torch.manual_seed(seed)
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).double()


def convnet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 2, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(2 * 2 * 2, 4)).double()


# --- T1-T3 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("make", [mlp, convnet])
def test_t1_t2_the_taylor_loss_and_its_gradient_equal_the_network_s_at_w(make, loss):
    net = make()
    x = torch.randn(6, 5) if make is mlp else torch.randn(6, 1, 8, 8)
    out = net(x)
    y = torch.randn_like(out) if loss == "mse" else torch.randint(0, out.shape[1], (6,))
    values = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters()}
    t = taylor.taylor_loss(net, x, y, values, loss)
    actual = taylor._loss(loss, net(x), y)
    actual.backward()
    t.backward()
    assert float(t) == pytest.approx(float(actual), rel=1e-12)  # T1
    for name, p in net.named_parameters():  # T2
        torch.testing.assert_close(values[name].grad, p.grad, rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.floats(0.0, 1.0), loss=st.sampled_from(["mse", "cross_entropy"]),
       scale=st.floats(0.01, 10.0))
def test_t3_the_taylor_loss_is_convex_in_v(seed, t, loss, scale):
    net = mlp(seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 5, generator=generator)
    y = torch.randn(4, 3, generator=generator) if loss == "mse" else torch.randint(0, 3, (4,), generator=generator)
    params = dict(net.named_parameters())
    v1 = {n: p.detach() + scale * torch.randn(p.shape, generator=generator) for n, p in params.items()}
    v2 = {n: p.detach() + scale * torch.randn(p.shape, generator=generator) for n, p in params.items()}
    mid = {n: t * v1[n] + (1 - t) * v2[n] for n in params}
    lhs = float(taylor.taylor_loss(net, x, y, mid, loss))
    rhs = t * float(taylor.taylor_loss(net, x, y, v1, loss)) + (1 - t) * float(taylor.taylor_loss(net, x, y, v2, loss))
    assert lhs <= rhs + 1e-9 * (1 + abs(rhs))


def test_the_taylor_approximation_is_the_first_order_expansion_of_the_network():
    net = mlp(1)
    x = torch.randn(5, 5)
    params = {n: p.detach() for n, p in net.named_parameters()}
    direction = {n: torch.randn_like(p) for n, p in params.items()}
    for h in (1e-3, 1e-4):
        moved = {n: params[n] + h * direction[n] for n in params}
        exact = torch.func.functional_call(net, moved, (x,))
        error = (taylor.taylor_output(net, x, moved) - exact).abs().max()
        assert error <= 50 * h ** 2  # second order in the step: relus do not switch for tiny h


def test_jacobian_tensor_is_the_gradient_of_each_output_with_respect_to_the_layer_s_weights():
    net = mlp(2)
    x = torch.randn(1, 5)
    G = taylor.jacobian_tensor(net, 2, x)
    assert G.shape == (3, 4, 7)
    for j in range(3):
        net.zero_grad()
        net(x)[0, j].backward()
        torch.testing.assert_close(G[j], net[2].weight.grad)
    # <G_l, V> = J V x_{l-1}: the layer's Taylor approximation of Definition 1
    V = torch.randn(4, 7)
    moved = {"2.weight": net[2].weight.detach() + V}
    expected = net(x).detach()[0] + torch.einsum("jab,ab->j", G, V)
    torch.testing.assert_close(taylor.taylor_output(net, x, moved)[0], expected)


def test_output_jacobian_in_forward_and_reverse_mode_match_autograd():
    net = convnet(3)
    x = torch.randn(2, 1, 8, 8)
    for index in (0, 3, 6):
        J = taylor.output_jacobian(net, index, x)
        head = net[:index + 1]
        a = head(x).detach().requires_grad_(True)
        out = net[index + 1:](a)
        for j in range(out.shape[1]):
            (grad,) = torch.autograd.grad(out[:, j].sum(), a, retain_graph=True)
            torch.testing.assert_close(J[:, j], grad)


# --- the recorder ---------------------------------------------------------------------------------------

def train_and_record(make, loss, neurons, layers, rounds=4, batch=6, lr=0.1, examples=None):
    net = make()
    recorder = taylor.TaylorRegret(net, neurons=neurons, layers=layers, loss=loss, checkpoints=[rounds - 1, rounds],
                                   examples=examples)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(7)
    history = []
    for _ in range(rounds):
        x = torch.randn(batch, 5, generator=generator) if make is mlp else torch.randn(batch, 1, 8, 8, generator=generator)
        out = net(x)
        y = (torch.randn(out.shape, generator=generator) if loss == "mse"
             else torch.randint(0, out.shape[1], (batch,), generator=generator))
        recorder.observe(x, y)
        kept = slice(None) if examples is None else slice(0, examples)
        history.append((copy.deepcopy(net), x[kept], y[kept]))
        optimizer.zero_grad()
        taylor._loss(loss, net(x), y).backward()
        optimizer.step()
    return recorder, history


def direct_sum(history, unit, v, loss):
    return sum(taylor.taylor_loss(m, x, y, taylor.unit_values(m, unit.layer, v, unit.neuron), loss) for m, x, y in history)


@pytest.mark.parametrize("make,neurons,layers", [(mlp, {0: [0, 3], 2: [1]}, [2, 4]),
                                                 (convnet, {0: [1], 3: [0]}, [0, 3, 6])])
def test_the_closed_form_taylor_optimum_is_the_minimum_of_the_summed_taylor_losses(make, neurons, layers):
    recorder, history = train_and_record(make, "mse", neurons, layers)
    for unit in recorder.units:
        value, v = recorder.optimum(unit)
        v = v.clone().requires_grad_(True)
        total = direct_sum(history, unit, v, "mse")
        total.backward()
        assert float(total) == pytest.approx(value, rel=1e-9, abs=1e-12)  # the running sums are the Taylor losses
        assert float(v.grad.abs().max()) < 1e-8  # and v is where their gradient vanishes
    rows = recorder.rows
    assert {r["round"] for r in rows} == {3, 4} and len(rows) == 2 * len(recorder.units)
    for row in rows:
        assert row["regret"] == pytest.approx(row["cum_loss"] - row["taylor_opt"])


def test_with_weights_that_do_not_move_the_regret_is_never_negative():
    """With lr -> 0 every round is at the same W, which the hindsight optimum can only improve on."""
    recorder, _ = train_and_record(mlp, "mse", {0: [0, 1], 2: [2]}, [2, 4], lr=1e-12)
    assert all(row["regret"] >= -1e-12 for row in recorder.rows)


def test_the_cumulative_loss_is_the_sum_of_the_losses_incurred_before_each_update():
    recorder, history = train_and_record(mlp, "mse", {0: [0]}, [])
    incurred = sum(float(taylor._loss("mse", m(x), y)) for m, x, y in history)
    # the deep copies were taken after observe and before the step: the round's own weights
    assert recorder.cum_loss == pytest.approx(incurred, rel=1e-12)


def test_the_closed_form_optimum_agrees_with_a_convex_solver_on_the_same_losses():
    recorder, history = train_and_record(mlp, "mse", {0: [2]}, [2])
    for unit in recorder.units:
        value, _ = recorder.optimum(unit)
        v = torch.zeros_like(recorder.optimum(unit)[1]).requires_grad_(True)
        solver = torch.optim.LBFGS([v], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                                   line_search_fn="strong_wolfe")

        def closure():
            solver.zero_grad()
            total = direct_sum(history, unit, v, "mse")
            total.backward()
            return total

        solver.step(closure)
        assert float(direct_sum(history, unit, v.detach(), "mse")) == pytest.approx(value, rel=1e-7)


@pytest.mark.parametrize("make,neurons,layers", [(mlp, {0: [1], 2: [0]}, [4]), (convnet, {3: [1]}, [0])])
def test_the_cross_entropy_taylor_optimum_found_by_the_solver_is_a_minimum_of_the_direct_sum(make, neurons, layers):
    recorder, history = train_and_record(make, "cross_entropy", neurons, layers, batch=8, examples=5)
    for unit in recorder.units:
        value, v = recorder.optimum(unit)
        v = v.clone().requires_grad_(True)
        total = direct_sum(history, unit, v, "cross_entropy")
        total.backward()
        assert float(total) == pytest.approx(value, rel=1e-9, abs=1e-12)
        assert float(v.grad.abs().max()) < 1e-5 * max(1.0, value)
    assert all(len(x) == 5 for _, x, _ in history)


def test_the_dense_shortcut_equals_the_explicit_matrix_of_the_taylor_approximation():
    net = mlp(4)
    x, y = torch.randn(5, 5), torch.randn(5, 3)
    view = taylor.layer_view(net, 2, x)
    for units in ([1], [0, 2, 3]):
        w = view.w[units].reshape(-1)
        shortcut = taylor.TaylorRegret._squared_terms(view, units, y, w)
        explicit_view = taylor.LayerView(f=view.f, jac=torch.cat([view.jac, torch.zeros_like(view.jac)], dim=3),
                                         z=torch.cat([view.z, torch.zeros_like(view.z)], dim=1), w=view.w)
        explicit = taylor.TaylorRegret._squared_terms(explicit_view, units, y, w)  # two positions, one all-zero
        for a, b in zip(shortcut, explicit):
            torch.testing.assert_close(a, b)


def test_bad_arguments_name_the_fix():
    net = mlp()
    with pytest.raises(ValueError, match="positions"):
        taylor.TaylorRegret(net, neurons={1: [0]})
    with pytest.raises(ValueError, match="neuron 9"):
        taylor.TaylorRegret(net, neurons={0: [9]})
    with pytest.raises(ValueError, match="nothing to track"):
        taylor.TaylorRegret(net)
    with pytest.raises(ValueError, match="max_layer_params"):
        taylor.TaylorRegret(net, layers=[0], max_layer_params=10)
    with pytest.raises(ValueError, match="unknown loss"):
        taylor.TaylorRegret(net, layers=[4], loss="hinge")
    with pytest.raises(ValueError, match="nn.Sequential"):
        taylor.sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no parameters"):
        taylor.taylor_output(net, torch.randn(2, 5), {"9.weight": torch.zeros(1)})


def test_sqrt_checkpoints_end_at_the_last_round_and_are_even_in_sqrt_n():
    points = taylor.sqrt_checkpoints(400, count=10)
    assert points[-1] == 400 and points[0] >= 1 and points == sorted(set(points))
    assert np.allclose(np.diff(np.sqrt(points)), np.sqrt(400) / 10, atol=0.1)
    with pytest.raises(ValueError):
        taylor.sqrt_checkpoints(0)


# --- regret on a convex problem ------------------------------------------------------------------------

def test_online_gradient_descent_on_a_convex_problem_has_regret_growing_like_sqrt_n():
    """A linear softmax classifier is its own Taylor approximation, so the recorder's regret is
    the online-convex-optimisation regret of Zinkevich (2003); projected OGD with steps
    D / (G sqrt(n)) keeps it below (3/2) G D sqrt(N)."""
    from ibtools.experiments.ch05_taylor import online_regret

    table = online_regret(1600, radius=4.0, checkpoints=4).set_index("rounds")
    assert table.attrs["optimum_norm"] <= 4.0  # the hindsight optimum lies in the ball OGD is projected on
    assert (table.regret <= table.bound).all()
    per_round = (table.regret / table.index).to_numpy()
    assert (np.diff(per_round[1:]) < 0).all()  # regret / N -> 0: no regret
    ratio = table.regret / np.sqrt(table.index)
    assert ratio.iloc[-1] < 2 * ratio.iloc[len(ratio) // 2]  # no faster than sqrt(N)
