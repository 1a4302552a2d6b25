"""Chapter 2's tables of one-unit updates: the behaviours the chapter shows must be the math's."""

import numpy as np
import pytest

from ibtools.experiments import ch02_ib as ch02


def land(activation, b, c, lr=1.0, z_sq=1.0, mu=0.0):
    return (float(ch02.eb_preactivation(activation, b, c, z_sq, lr, mu)),
            float(ch02.ib_preactivation(activation, b, c, z_sq, lr, mu)))


@pytest.mark.parametrize("c", [0.1, 0.5, 0.99])
def test_relu_ib_stops_at_the_hinge_where_eb_overshoots(c):
    eb, ib = land("relu", 1.0, c)
    assert eb == pytest.approx(c - 1.0) and eb < 0
    assert ib == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("c, jumps", [(-0.3, True), (-0.49, True), (-0.51, False), (-2.0, False)])
def test_relu_ib_looks_past_the_flat_side_only_when_it_pays(c, jumps):
    eb, ib = land("relu", -1.0, c)
    assert eb == c  # EB's gradient is zero on the flat side
    assert (ib == pytest.approx(c + 1.0)) if jumps else (ib == c)


def test_relu_far_on_the_slope_ib_and_eb_take_the_same_step():
    eb, ib = land("relu", 1.0, 2.5)
    assert eb == pytest.approx(1.5) and ib == pytest.approx(1.5)


def test_update_table_has_the_curve_and_the_three_points_for_every_start():
    table = ch02.update_table("arctan", b=1.0, lr=2.0, c_values=[-1.0, 0.0, 1.0])
    counts = table.groupby(["c", "series"]).size().unstack()
    assert (counts[["start", "EB", "IB"]] == 1).all().all() and (counts["b·σ(q)"] > 100).all()
    starts = table[table.series == "start"]
    np.testing.assert_allclose(starts.q, [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(starts.value, np.arctan([-1.0, 0.0, 1.0]))


@pytest.mark.parametrize("b, c, lr", [(1.0, 1.5, 4.0), (-2.0, 0.3, 10.0), (0.5, -1.0, 0.1)])
def test_arctan_stationary_points_are_stationary_and_ib_picks_the_one_nearest_zero(b, c, lr):
    point = dict(b=b, c=c, z_sq=1.0, lr=lr)
    roots = ch02.arctan_stationary_points(**point)
    h = 1e-6
    for a in roots:
        slope = (ch02.objective("arctan", [a + h], **point) - ch02.objective("arctan", [a - h], **point)) / (2 * h)
        assert abs(float(slope)) < 1e-5
    table = ch02.arctan_objective_table(b=b, lr=lr, c_values=[c])
    chosen = table[table.series == "IB's α"].alpha.iloc[0]
    assert chosen == pytest.approx(roots[np.argmin(np.abs(roots))], abs=1e-8)


def test_a_case_with_three_stationary_points_exists_in_the_chapters_figure():
    counts = [len(ch02.arctan_stationary_points(b=1.0, c=c, z_sq=1.0, lr=4.0)) for c in np.arange(-1, 3.01, 0.1)]
    assert 1 in counts and 3 in counts


def test_alpha_maps_agree_at_small_learning_rate_and_part_at_large():
    table = ch02.alpha_map_table("smoothstep", b=1.0, lrs=[1e-4, 10.0])
    small, large = (table[table.lr == lr].pivot(index="c", columns="series", values="alpha") for lr in (1e-4, 10.0))
    assert np.abs(small.iloc[:, 0] - small.iloc[:, 1]).max() < 1e-3
    assert np.abs(large.iloc[:, 0] - large.iloc[:, 1]).max() > 0.1


def test_step_length_grows_for_eb_and_stays_bounded_for_ib_with_ridge():
    lrs = [1e2, 1e4, 1e6]
    table = ch02.step_length_table(["relu", "arctan", "smoothstep", "hardtanh"], b=1.0, c=0.5, lrs=lrs, mu=0.1)
    for _, rows in table.groupby("activation"):
        eb = rows[rows.method == "eb"].step.to_numpy()
        ib = rows[rows.method == "ib"].step.to_numpy()
        assert eb[-1] / eb[0] == pytest.approx(1e4, rel=1e-3)
        assert ib[-1] < 10 and ib[-1] / ib[0] < 1.1
