"""Chapter 1's experiments: the closed forms they must reproduce and the claims the chapter makes."""

import math

import pytest
import torch

from ibtools.experiments import ch01_isgd as ch01


def final(rows, key="train_loss"):
    return [r for r in rows if r["kind"] in ("epoch", "step")][-1][key]


@pytest.mark.parametrize("lr", [0.3, 1.0, 1.75, 2.5, 8.0])
def test_quadratic_runs_follow_the_closed_forms(lr):
    esgd = ch01.run_quadratic(ch01.QuadraticConfig(method="esgd", lr=lr, steps=6))
    isgd = ch01.run_quadratic(ch01.QuadraticConfig(method="isgd", lr=lr, steps=6))
    for t in range(7):
        assert esgd[t]["theta"] == pytest.approx((1 - lr) ** t, rel=1e-12)
        assert isgd[t]["theta"] == pytest.approx((1 + lr) ** -t, rel=1e-12)
    assert not isgd[-1]["diverged"]
    assert esgd[-1]["diverged"] == (0.5 * (1 - lr) ** 12 > 100 * 0.5)


def test_quadratic_esgd_diverges_past_two_and_isgd_never_does():
    table = ch01.quadratic.sweep("reduced", cache=False, progress=False)
    last = table.groupby(["method", "lr"]).tail(1)
    esgd, isgd = last[last.method == "esgd"], last[last.method == "isgd"]
    assert not isgd["diverged"].any()
    assert (esgd[esgd.lr < 2]["loss"] < 0.5).all()
    assert (esgd[esgd.lr > 2]["loss"] > 0.5).all()


@pytest.mark.parametrize("problem", ["least-squares", "logistic"])
def test_convex_isgd_survives_a_learning_rate_at_which_esgd_diverges(problem):
    isgd = ch01.run_convex(ch01.ConvexConfig(problem=problem, method="isgd", lr=100.0, epochs=1))
    esgd = ch01.run_convex(ch01.ConvexConfig(problem=problem, method="esgd", lr=100.0, epochs=1))
    assert not isgd[-1]["diverged"] and math.isfinite(final(isgd))
    assert esgd[-1]["diverged"]
    assert math.isfinite(esgd[-1]["last_finite_loss"])


@pytest.mark.parametrize("problem", ["least-squares", "logistic"])
def test_convex_methods_agree_at_small_learning_rates(problem):
    losses = {m: final(ch01.run_convex(ch01.ConvexConfig(problem=problem, method=m, lr=1e-3, epochs=1)))
              for m in ("esgd", "isgd")}
    assert losses["esgd"] == pytest.approx(losses["isgd"], rel=5e-3)


def test_exact_isgd_network_run_trains_and_reports_accuracy():
    config = ch01.ExactNetConfig(method="exact-isgd", lr=1.0, inner_steps=3)
    rows = ch01.run_exact_net(config)
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert epochs[0]["epoch"] == 0.0 and epochs[-1]["epoch"] == 1.0
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert 0.0 <= epochs[-1]["test_acc"] <= 1.0


def test_presets_reduced_is_small_and_full_is_the_papers_setup():
    reduced, full = ch01.exact_net.grid("reduced"), ch01.exact_net.grid("full")
    assert {c.dataset for c in reduced} == {"mnist-5k"}
    assert {(c.dataset, c.architecture, c.epochs, c.batch_size, c.inner_steps, c.inner_lr_ratio)
            for c in full} == {("mnist", "convnet", 1, 100, 100, 0.1)}
    assert len({c.seed for c in full}) == 20
    assert len(ch01.convex.grid("reduced", seeds=3, lrs=[0.1])) == 2 * 2 * 3


def test_paper_convnet_has_the_papers_shapes():
    net = ch01.build_network("convnet")
    out = net(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 10)
    assert net.head[0].in_features == 320 and net.head[0].out_features == 50


@pytest.mark.parametrize("bad, message", [
    (dict(problem="ridge"), "unknown problem"),
    (dict(method="adam"), "unknown method"),
    (dict(lr=0.0), "learning rate"),
    (dict(lr=float("nan")), "learning rate"),
])
def test_bad_convex_configs_say_what_to_do(bad, message):
    config = dict(problem="logistic", method="isgd", lr=0.1, epochs=1) | bad
    with pytest.raises(ValueError, match=message):
        ch01.run_convex(ch01.ConvexConfig(**config))
