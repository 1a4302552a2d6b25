"""Chapter 7: the Figure 2 problem and its tables, the CIFAR ResNet, and the SGDL presets of
Table 1 and appendix A.3.1, with a cut-down run."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import rerun_as_recorded
from ibtools import data, igd
from ibtools.experiments import ch07_large_lr as ch07
from ibtools.models import BasicBlock, CIFARResNet


def test_the_second_difference_penalty_sums_squared_second_differences():
    x = torch.randn(7, dtype=torch.float64)
    D = ch07.second_difference(7)
    assert float(x @ D @ x) == pytest.approx(float(((x[2:] - 2 * x[1:-1] + x[:-2]) ** 2).sum()))
    torch.testing.assert_close(D, D.T)


def test_figure2_tables_hold_the_spectral_radius_the_iterates_and_the_fixed_points():
    steps = [0.05, 0.5, 3.0]
    radius, errors, fits = ch07.figure2_tables(steps, mu=1.0, epochs=5, n=20)
    A, b, D, z, _ = ch07.figure2_problem(20)
    np.testing.assert_allclose(radius.rho, igd.spectral_radius(A, D, 1.0, torch.tensor(steps, dtype=torch.float64)))
    assert (radius.bound == igd.step_bound(A, D, 1.0)).all()
    x_star = igd.minimiser(A, b, D, 1.0)
    first = errors[errors.epoch == 0].error.to_numpy()
    np.testing.assert_allclose(first, float(x_star.norm()))  # IGD starts at 0
    for t, rows in fits.groupby("t"):
        if float(igd.spectral_radius(A, D, 1.0, t)) < 1:
            np.testing.assert_allclose(rows.fit, igd.fixed_point(A, b, t, D, 1.0))
        else:
            assert rows.fit.isna().all()  # IGD diverges: no fixed point to draw
    assert radius.rho.iloc[-1] > 1  # t = 3 > 2 overshoots every data point: 1 - t < -1


def test_resnet56_has_the_paper_s_shape():
    model = CIFARResNet(56, 10)
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 27
    assert 0.84e6 < sum(p.numel() for p in model.parameters()) < 0.86e6  # He et al.: 0.85M
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    block = BasicBlock(16, 32, stride=2)
    x = torch.randn(1, 16, 8, 8)
    shortcut = block.shortcut(x)
    assert shortcut.shape == (1, 32, 4, 4) and torch.equal(shortcut[:, 8:24], x[:, :, ::2, ::2])
    with pytest.raises(ValueError, match="6n"):
        CIFARResNet(57)


def test_full_presets_follow_table_1_and_appendix_a31():
    full = ch07.sgdl.grid("full")
    assert {(c.dataset, c.depth, c.width, c.epochs, c.batch_size, c.pad, c.flip) for c in full} == {
        (name, 56, 16, 150, 256, 4, True) for name in ("cifar10", "cifar100")}
    rates = {(c.dataset, c.method): c.lr for c in full}
    assert rates[("cifar10", "sgdl")] == 1.0 and rates[("cifar100", "sgdl")] == 1.3
    for name in ("cifar10", "cifar100"):
        assert rates[(name, "sgdl")] >= 10 * rates[(name, "sgdm")]
        assert (rates[(name, "adam")], rates[(name, "adadelta")]) == (0.001, 1.0)
    reduced = ch07.sgdl.grid("reduced")
    assert sorted(c.lr for c in reduced if c.method == "sgd") == sorted(set(ch07.REDUCED_SGD_RATES) | {0.1})


def test_the_optimizers_have_table_1_s_settings():
    params = [torch.nn.Parameter(torch.zeros(1))]
    config = ch07.SGDLConfig(method="sgdm", lr=0.1)
    sgdm = ch07.make_optimizer(config, params).param_groups[0]
    assert (sgdm["momentum"], sgdm["weight_decay"]) == (0.9, 0.005)
    sgdl = ch07.make_optimizer(dataclasses.replace(config, method="sgdl", lr=1.0), params).param_groups[0]
    assert (sgdl["momentum"], sgdl["weight_decay"], sgdl["lr"]) == (0, 0.005, 1.0)
    adadelta = ch07.make_optimizer(dataclasses.replace(config, method="adadelta", lr=1.0), params).param_groups[0]
    assert adadelta["rho"] == 0.9
    assert ch07.decay_steps("sgdl", 150, 10) == [500, 1000] and ch07.decay_steps("adadelta", 150, 10) == []


def test_a_cut_down_run_trains_with_the_decay_and_reports_errors(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 12, 12, generator=gen)
    y = torch.randint(0, 3, (64,), generator=gen)
    tiny = data.Dataset("tiny", x, y, x[:16], y[:16], "classification", 3, "stand-in")
    monkeypatch.setattr(ch07.data, "load", lambda name: tiny)
    rates = []
    real = ch07.StepDecay

    class Recording(real):
        def after(self, loss):
            super().after(loss)
            rates.append(self.optimizer.param_groups[0]["lr"])

    monkeypatch.setattr(ch07, "StepDecay", Recording)
    config = ch07.SGDLConfig(method="sgdl", lr=1.0, epochs=3, batch_size=32, width=4)
    table = pd.DataFrame(ch07.run(config))
    epochs = table[table.kind == "epoch"]
    np.testing.assert_allclose(epochs.train_error, 1 - epochs.train_acc)
    assert rates == pytest.approx([1.0, 0.1, 0.1, 0.01, 0.01, 0.01])  # divided after epochs 1 and 2 of 3
    with pytest.raises(ValueError, match="method"):
        ch07.run(dataclasses.replace(config, method="lbfgs"))


def test_the_committed_sgdl_runs_are_reproduced_by_rerunning_one():
    from ibtools.experiments import load_results

    table, provenance = load_results("sgdl", "reduced")
    assert provenance["command"] == "python -m ibtools run sgdl --out book/results"
    config = next(c for c in ch07.sgdl.grid("reduced") if c.method == "sgdl")
    fresh = rerun_as_recorded(ch07.run, config, provenance)
    stored = table[(table.method == "sgdl") & (table.kind == "epoch")]
    np.testing.assert_allclose(fresh[fresh.kind == "epoch"].test_error, stored.test_error, atol=2e-3)
    np.testing.assert_allclose(fresh[fresh.kind == "epoch"].train_loss, stored.train_loss, rtol=1e-3)


def test_the_full_preset_trains_resnet56_with_crops_and_flips_at_full_size(monkeypatch):
    """One step of the full preset's network and augmentation on a batch of CIFAR-shaped stand-in data."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, 32, 32, generator=gen)
    y = torch.randint(0, 100, (256,), generator=gen)
    monkeypatch.setattr(ch07.data, "load", lambda name: data.Dataset(name, x, y, x[:64], y[:64], "classification",
                                                                     100, "stand-in"))
    config = next(c for c in ch07.sgdl.grid("full") if c.dataset == "cifar100" and c.method == "sgdl")
    table = pd.DataFrame(ch07.run(dataclasses.replace(config, epochs=1)))
    steps = table[table.kind == "step"]
    assert len(steps) == 1 and np.isfinite(steps.loss).all()


@pytest.mark.parametrize("t", [0.1, 0.2, 1.0])
def test_vs_21a_to_21c_read_left_to_right_are_one_epoch_of_igd_in_the_order_n_to_1(t):
    g = torch.Generator().manual_seed(0)
    A, b = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    D = torch.diag(torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
    x, mu = torch.randn(3, generator=g, dtype=torch.float64), 0.5
    P = igd.component_map(A, t, D, mu)[0]
    K, c = ch07.paper_epoch_map(A, b, t, D, mu)
    torch.testing.assert_close(K, P[0] @ P[1] @ P[2] @ P[3])  # K_N = P_1 P_2 ... P_N
    c21 = b[0] * A[0] + b[1] * P[0] @ A[1] + b[2] * P[0] @ P[1] @ A[2] + b[3] * P[0] @ P[1] @ P[2] @ A[3]
    torch.testing.assert_close(c, c21)  # (21c): sum_j b_j K_(j-1) a_j
    backward = ch07.igd_epoch(A, b, t, D, mu, x, reverse=True)
    torch.testing.assert_close(backward, K @ x + t * c)  # one epoch visiting a_4, a_3, a_2, a_1
    K_ours, c_ours = igd.epoch_map(A, b, t, D, mu)
    torch.testing.assert_close(ch07.igd_epoch(A, b, t, D, mu, x), K_ours @ x + t * c_ours)  # the order 1..N
    torch.testing.assert_close(K, K_ours.T)
    assert float((backward - ch07.igd_epoch(A, b, t, D, mu, x)).norm()) > 1e-3  # the orders do differ


def test_on_the_figure2_problem_both_orders_match_their_maps_with_the_same_radius():
    table = ch07.offset_check(ch07.OFFSET_STEPS)
    assert (table.ours < 1e-12 * table["size"]).all() and (table.paper < 1e-12 * table["size"]).all()
    np.testing.assert_allclose(table.rho_ours, table.rho_paper, rtol=1e-10)


def test_on_a_fine_grid_a_larger_step_contracts_faster_up_to_t_about_one():
    radius = ch07.figure2_radius(ch07.FINE_STEPS)
    stable = radius[radius.rho < 1]
    best = radius.loc[radius.rho.idxmin()]
    assert 0.9 < best.t < 1.1 and best.rho < 0.05
    assert (np.diff(stable[stable.t <= best.t].rho) < 0).all()
    assert (np.diff(stable[stable.t >= best.t].rho) > 0).all()
    assert 1.85 < stable.t.max() < 1.95 < radius.bound.iloc[0]


def test_the_standard_error_of_a_test_error_on_1000_digits():
    assert ch07.standard_error(0.045, 1000) == pytest.approx((0.045 * 0.955 / 1000) ** 0.5)
    assert data.load("mnist-5k").x_test.shape[0] == 1000


def chapter_claims():
    """The chapter's claims from the data it shows: its grids, the paper's examples and the committed SGDL runs."""
    from ibtools.experiments import load_results

    _, _, fits = ch07.figure2_tables(ch07.FIGURE2_STEPS, mu=1.0, epochs=60)
    runs, _ = load_results("sgdl", "reduced")
    return ch07.claims(ch07.figure2_radius(ch07.FINE_STEPS), fits, ch07.paper_examples(), runs)


def test_the_chapter_s_claims_have_evidence_and_the_verdicts_its_prose_expects():
    from ibtools import claims

    found = chapter_claims()
    assert all(c.evidence.strip() for c in found)
    assert claims.verdicts(found) == {
        "convergent steps": None,
        "larger step, smaller rho": True,
        "bound (7.2) on Figure 2": True,
        "bound (7.2) on example 1": True,
        "convergence at rho = 1": True,
        "x(t) within the noise": True,
        "gap grows with t": True,
        "SGDL level with SGDM and AdaDelta": True,
        "SGDL ahead of SGD at 0.1 and Adam": True,
        "SGD's best rate": None,
        "SGDL before and after the decay": None,
    }
    by_name = {c.name: c for c in found}
    assert "one seed" in by_name["SGDL level with SGDM and AdaDelta"].evidence
    assert "one draw of the data" in by_name["convergent steps"].evidence
    for name in ("SGDL level with SGDM and AdaDelta", "SGDL ahead of SGD at 0.1 and Adam"):
        assert "(one seed)" in by_name[name].text
    assert "4 of the 12 epochs" in by_name["SGDL ahead of SGD at 0.1 and Adam"].text
    assert "199 of 378 convergent steps" in by_name["larger step, smaller rho"].evidence
    assert '"within a fairly large range' in by_name["larger step, smaller rho"].paper
    for name in ("bound (7.2) on Figure 2", "bound (7.2) on example 1"):
        assert "positive semi-definite" in by_name[name].paper and "where it fails" in by_name[name].paper
    assert "t <= 0.5" in by_name["bound (7.2) on example 1"].text
    assert '"calculated solution of a large radius (3.0)' in by_name["x(t) within the noise"].paper
    assert "Theorem 1" not in by_name["gap grows with t"].text
    assert all("21c" not in c.text for c in found)


def test_sgdl_s_four_results_differ_by_less_than_one_standard_error_of_1000_test_digits():
    from ibtools.experiments import load_results

    runs, _ = load_results("sgdl", "reduced")
    final = runs[runs.kind == "epoch"].sort_values("epoch").groupby(["method", "lr"]).tail(1).set_index(
        ["method", "lr"]).test_error
    four = [final.loc[("sgdl", 1.0)], final.loc[("sgdm", 0.1)], final.loc[("adadelta", 1.0)], final.loc[("sgd", 1.0)]]
    p = float(np.mean(four))
    assert max(four) - min(four) < (p * (1 - p) / 1000) ** 0.5
