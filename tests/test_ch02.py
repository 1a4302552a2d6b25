"""Chapter 2's tables of one-unit updates: the behaviours the chapter shows must be the math's."""

import numpy as np
import pandas as pd
import pytest
import torch

from ibtools import ib
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


def test_the_ridge_figure_shows_each_panel_with_and_without_the_ridge():
    lrs = [1e2, 1e4, 1e6]
    table = ch02.ridge_step_table(lrs, c=0.5, mu=0.1)
    assert list(dict.fromkeys(table.panel)) == ["relu, b = +1", "relu, b = -1", "arctan, b = +1",
                                                "smoothstep, b = +1", "hardtanh, b = +1"]
    ib = table[(table.method == "ib") & (table.lr == 1e6)].set_index(["panel", "mu"]).step
    # the referee's numbers at eta = 1e6 (mu = 0.1 / mu = 0)
    for panel, with_ridge, without in [("relu, b = +1", 0.5, 0.5), ("hardtanh, b = +1", 1.5, 1.5),
                                       ("smoothstep, b = +1", 1.467, 1.5), ("arctan, b = +1", 2.5, 100.3),
                                       ("relu, b = -1", 9.5, 1e6)]:
        assert ib[panel, 0.1] == pytest.approx(with_ridge, abs=1e-3 * max(1, with_ridge))
        assert ib[panel, 0.0] == pytest.approx(without, rel=1e-3)
    assert ch02.growth_exponent(table, "relu", "ib", b=-1.0, mu=0.0) == pytest.approx(1.0)
    assert abs(ch02.growth_exponent(table, "relu", "ib", b=-1.0, mu=0.1)) < 0.05


# --- without a ridge term (mu = 0, chapter 3's setting) the step is not bounded ------------------

LRS = np.logspace(0, 8, 33)


@pytest.mark.parametrize("c", [0.1, 0.5, 3.0])
def test_at_mu_0_the_relu_ib_step_for_negative_b_is_ebs_on_the_slope(c):
    steps = ch02.step_length_table(["relu"], b=-1.0, c=c, lrs=LRS, mu=0.0).pivot(index="lr", columns="method",
                                                                                values="step")
    np.testing.assert_allclose(steps.ib, steps.eb, rtol=1e-12)
    np.testing.assert_allclose(steps.ib, LRS, rtol=1e-12)  # grows in proportion to lr, like EB's


def test_at_mu_0_the_relu_ib_jump_off_the_flat_is_ebs_full_step():
    for lr in LRS:
        eb, ib = land("relu", -1.0, -0.4 * lr, lr=lr)
        assert eb == pytest.approx(-0.4 * lr) and ib - eb == pytest.approx(lr)


@pytest.mark.parametrize("b, c", [(1.0, 0.5), (-1.0, 0.5), (2.0, -1.0)])
def test_at_mu_0_the_arctan_step_grows_like_the_cube_root_of_lr(b, c):
    steps = ch02.step_length_table(["arctan"], b=b, c=c, lrs=LRS, mu=0.0)
    assert ch02.growth_exponent(steps, "arctan", "ib", lr_min=1e4) == pytest.approx(1 / 3, abs=0.01)
    assert ch02.growth_exponent(steps, "arctan", "eb", lr_min=1e4) == pytest.approx(1.0, abs=1e-9)
    with_ridge = ch02.step_length_table(["arctan"], b=b, c=c, lrs=LRS, mu=0.1)
    assert abs(ch02.growth_exponent(with_ridge, "arctan", "ib", lr_min=1e4)) < 0.01


def test_the_relu_with_positive_b_stays_bounded_at_mu_0_by_stopping_at_the_hinge():
    steps = ch02.step_length_table(["relu"], b=1.0, c=0.5, lrs=LRS, mu=0.0)
    assert np.allclose(steps[(steps.method == "ib") & (steps.lr >= 1)].step, 0.5)


# --- the root closest to zero is the paper's choice, not always the minimiser ----------------------

def test_a_brute_force_minimisation_finds_starts_in_the_figures_range_where_the_closest_root_loses():
    c_values = np.round(np.arange(-1, 3.01, 0.1), 2)  # the arctan figure's slider: eta = 4, b = 1
    table = ch02.closest_root_table(b=1.0, lr=4.0, c_values=c_values)
    assert (table.gap >= -1e-9).all()  # the closed form is exact, the grid within (spacing)^2
    worse = table[table.gap > 1e-3]
    assert list(worse.c) == [2.8, 2.9, 3.0] and (worse.roots == 3).all()
    row = worse.iloc[0]
    assert row.ib_alpha == pytest.approx(0.2, abs=1e-9) and row.best_alpha == pytest.approx(0.8179, abs=1e-4)
    assert row.ib_value == pytest.approx(1.1871, abs=1e-4) and row.best_value == pytest.approx(0.8973, abs=1e-4)
    # elsewhere the closest root is the grid's minimiser, to the grid's spacing
    np.testing.assert_allclose(table[table.gap <= 1e-3].ib_alpha, table[table.gap <= 1e-3].best_alpha, atol=2e-5)
    with pytest.raises(ValueError, match="must cover"):
        ch02.closest_root_table(b=2.0, lr=4.0, c_values=[0.0], grid=np.linspace(-1, 1, 11))


# --- what IB costs --------------------------------------------------------------------------------

def test_the_flop_bound_gives_section_4_5s_numbers():
    assert ch02.flop_bound(100, 100, "relu") == pytest.approx(0.04)
    assert ch02.flop_bound(100, 100, "arctan") == pytest.approx(0.34)  # not "a few percent"
    assert ch02.flop_bound(1000, 1000, "arctan") == pytest.approx(0.034)


def test_table_4s_bounds_are_recomputed_where_the_papers_counting_is_found():
    bounds = ch02.table4_bounds().set_index("architecture")
    rnn, classifier, autoencoder = (bounds.loc[n] for n in ("music RNN", "MNIST classifier", "MNIST autoencoder"))
    assert round(100 * rnn.recount, 2) == 11.33 and round(100 * classifier.recount, 2) == 6.27
    assert np.isnan(autoencoder.recount)
    # the book's count (every input of every IB layer, one flop per multiply-add) is another one
    assert [round(100 * v, 2) for v in bounds.book] == [11.80, 0.91, 8.81]
    assert not np.isclose(bounds.book, bounds.paper, atol=5e-4).any()


# --- the chapter's conclusions --------------------------------------------------------------------

def chapter_tables():
    """The tables the chapter shows, computed as the chapter computes them; the cost table (a CPU
    timing) as one measured run of the benchmark, fixed here."""
    c_values = np.round(np.arange(-2, 2.01, 0.1), 2)
    relu = {s: pd.concat([ch02.update_table("relu", b=float(s), lr=lr, c_values=c_values).assign(lr=lr)
                          for lr in [0.25, 0.5, 1.0, 2.0, 4.0]], ignore_index=True) for s in (+1, -1)}
    closest = ch02.closest_root_table(b=1.0, lr=4.0, c_values=np.round(np.arange(-1, 3.01, 0.1), 2))
    maps = {n: ch02.alpha_map_table(n, b=1.0, lrs=[0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0])
            for n in ("smoothstep", "arctan", "relu")}
    lrs = np.logspace(-2, 6, 33)
    steps = ch02.ridge_step_table(lrs, c=0.5, mu=0.1)
    no_ridge = ch02.no_ridge_step_table(lrs)
    overhead = pd.DataFrame({"architecture": ["MNIST classifier", "MNIST autoencoder", "RNN"],
                             "IB/EB": [1.043, 1.164, 1.314], "bound, IB layers": [0.118, 0.00909, 0.0881],
                             "bound, whole step": [0.004051, 0.009092, 0.07184]})
    return relu, closest, maps, steps, no_ridge, overhead, ch02.table4_bounds()


def test_the_chapters_claims_have_evidence_and_the_expected_verdicts():
    from ibtools import claims

    found = ch02.claims(*chapter_tables())
    assert all(c.evidence.strip() for c in found)
    assert claims.verdicts(found) == {
        "relu_stops_at_hinge": True, "relu_looks_past_flat": True, "closest_root_is_minimiser": False,
        "alpha_agrees_at_small_lr": True, "alpha_exceeds_past_bend": True, "bounded_with_ridge": True,
        "unbounded_without_ridge": True, "measured_overhead": None, "table4_reproduced": False}
    text = claims.markdown(found).data
    assert "c = 2.8" in text and "η^(1/3)" in text and "4.30%" in text and "11.33%" in text
    by_name = {c.name: c for c in found}
    # past the bend IB's alpha exceeds EB's (smoothstep at eta = 1, arctan at eta = 3)
    past = by_name["alpha_exceeds_past_bend"].evidence
    assert "smoothstep: +1.49 at c = 1.40, η = 1" in past and "arctan: +0.76 at c = 2.40, η = 3" in past
    # the ridge is credited only where it changes the result: relu b < 0 and arctan
    ridge = by_name["bounded_with_ridge"]
    assert "(relu, b = -1; arctan, b = +1)" in ridge.text and "1/μ" in ridge.text
    assert "relu, b = +1; smoothstep, b = +1; hardtanh, b = +1: bounded at μ = 0 too" in ridge.text
    assert "relu, b = -1: IB 0.01 / 1.00 (step 9.5 / 1e+06)" in ridge.evidence
    assert "arctan, b = +1: IB 0.00 / 0.33 (step 2.5 / 100.3)" in ridge.evidence
    assert "hardtanh, b = +1: IB 0.00 / 0.00 (step 1.5 / 1.5)" in ridge.evidence
    assert "hardtanh" in by_name["unbounded_without_ridge"].text and "smoothstep" in by_name["unbounded_without_ridge"].text
    # the measured whole-step time is set beside the whole-step flop bound, not the IB layers' bound
    cost = by_name["measured_overhead"].text
    assert "4.30% (section 4.5's flop bound for the whole step 0.41%)" in cost and "11.80%" not in cost
    assert "exceeds the flop bound in 3 of 3" in cost
    assert "inferred" in by_name["table4_reproduced"].text


# --- mini-batches: two conventions against the proximal step -------------------------------------

MINIBATCH_LRS = (0.001, 0.01, 0.1, 0.5, 1.0, 3.0, 10.0, 50.0)


@pytest.fixture(scope="module")
def minibatch_table():
    torch.set_num_threads(1)
    batches = {**ch02.synthetic_batches(), **ch02.network_batches()}
    return ch02.minibatch_table(batches, MINIBATCH_LRS)


def test_the_numerical_prox_is_the_single_example_closed_form_for_one_example():
    """One example (B = 1): the proximal step is eq. (7), whose alpha ibtools.ib solves in closed
    form; the numerical solver must find it (arctan, a convex case and one with three roots)."""
    theta = torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64)
    z = torch.tensor([[1.0, 2.0, 1.0]], dtype=torch.float64)
    for b, lr in ((1.0, 0.1), (0.2, 1.0)):
        grad = ch02.prox_gradient("arctan", theta, z, torch.tensor([[b]], dtype=torch.float64), lr)
        closed = (theta - ib.ib_update(theta, z[0], torch.tensor([b], dtype=torch.float64), lr, 0.0, "arctan")) / lr
        torch.testing.assert_close(grad, closed, rtol=1e-7, atol=1e-9)


def test_the_synthetic_batches_have_the_structure_claimed():
    batches = ch02.synthetic_batches(batch=6, n=9)
    _, _, z, b = batches["orthogonal inputs"]
    gram = z @ z.T
    torch.testing.assert_close(gram, 10 * torch.eye(6, dtype=torch.float64), atol=1e-10, rtol=0)
    assert torch.equal(z[:, -1], torch.ones(6, dtype=torch.float64))
    _, _, z, b = batches["repeated example"]
    assert torch.equal(z, z[:1].expand_as(z)) and torch.equal(b, b[:1].expand_as(b))
    with pytest.raises(ValueError, match="batch < n"):
        ch02.synthetic_batches(batch=10, n=9)


def test_each_convention_is_exact_in_its_case_and_the_two_bracket_the_prox_on_real_batches(minibatch_table):
    from ibtools import claims

    found = ch02.minibatch_claims(minibatch_table)
    assert all(c.evidence.strip() for c in found)
    assert claims.verdicts(found) == {"per-example_exact_for_repeated_example": True,
                                      "loss-share_exact_for_orthogonal_inputs": True,
                                      "conventions_bracket_the_prox": True}
    assert "For a batch that repeats one example the per-example convention" in found[0].text
    wide = minibatch_table.pivot_table(index=["batch", "lr"], columns="method", values="rel_error")
    # both conventions tend to EB, and to the prox, as lr -> 0
    smallest = wide.xs(MINIBATCH_LRS[0], level="lr")
    assert (smallest[["eb", "loss-share"]].max() < 5e-3).all() and smallest["per-example"].max() < 2e-2
    # a step's length and direction against the prox's: exact cases give 1 and 1
    exact = minibatch_table[(minibatch_table.batch == "repeated example") & (minibatch_table.method == "per-example")]
    assert np.allclose(exact["length"], 1, atol=1e-6) and np.allclose(exact["cosine"], 1, atol=1e-9)
