"""Chapter 8: the network with a normalised top layer, ghost batches, the tracked alternative
losses, the presets and the reading of the losses at a fixed training loss."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import rerun_as_recorded
from ibtools import data
from ibtools.experiments import ch08_alt_losses as ch08


def tiny_data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 8, 8, generator=gen)
    y = torch.randint(0, 4, (96,), generator=gen)
    return data.Dataset("tiny", x, y, x[:32], y[:32], "classification", 4, "stand-in")


def test_the_top_layer_sees_unit_features():
    config = ch08.AltLossConfig(lr=0.1, width=16)
    model = ch08.build(config, (1, 8, 8), 4).eval()
    x = torch.randn(5, 1, 8, 8)
    features = torch.nn.functional.normalize(model.features(x), dim=1)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(model(x), model.top(features))
    conv = ch08.build(dataclasses.replace(config, architecture="convnet"), (3, 32, 32), 10)
    assert conv(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_ghost_batches_accumulate_the_gradient_of_each_ghost_batch_with_its_own_statistics():
    config = ch08.AltLossConfig(lr=0.1, width=16)
    torch.manual_seed(0)
    model = ch08.build(config, (1, 8, 8), 4)
    twin = ch08.build(config, (1, 8, 8), 4)
    twin.load_state_dict(model.state_dict())
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 4, (64,))
    ghost = ch08.GhostBatches(torch.optim.SGD(model.parameters(), lr=0.1), ghost=16)
    from ibtools.train import BatchClosure, cross_entropy

    loss = ghost.step(BatchClosure(model, cross_entropy, ghost, x, y))
    # by hand: four batches of 16, each normalised on its own, gradients averaged
    ghost_losses = [cross_entropy(twin(x[i:i + 16]), y[i:i + 16]) for i in range(0, 64, 16)]
    grads = [torch.autograd.grad(value, list(twin.parameters())) for value in ghost_losses]
    with torch.no_grad():
        for p, *g in zip(twin.parameters(), *grads):
            p -= 0.1 * sum(g) / 4
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b)
    assert ghost.steps == 1
    assert float(loss) == pytest.approx(float(sum(ghost_losses)) / 4, rel=1e-6)  # the mean of the ghost losses


def test_a_cut_down_run_tracks_every_loss_and_parameter_each_epoch(monkeypatch):
    monkeypatch.setattr(ch08.data, "load", lambda name: tiny_data())
    config = ch08.AltLossConfig(lr=0.1, batch_size=64, ghost=32, width=16, epochs=3)
    table = pd.DataFrame(ch08.run(config))
    alt = table[table.kind == "alt"]
    assert set(alt.epoch) == {0, 1, 2, 3}
    sparse = pd.DataFrame(ch08.run(dataclasses.replace(config, epochs=5, track_every=2)))
    assert set(sparse[sparse.kind == "alt"].epoch) == {0, 2, 4, 5}  # every second epoch, and the last
    expected = len(ch08.SIGMAS) + len(ch08.TEMPERATURES) + len(ch08.MARGINS)
    assert (alt.groupby("epoch").size() == expected).all()
    ce_at_t1 = alt[(alt.loss == "cross-entropy") & (alt.parameter == 1.0)]
    np.testing.assert_allclose(ce_at_t1.value, ce_at_t1.train_ce)  # T = 1 is the loss trained on
    assert ((alt[alt.loss == "gcdf"].value >= 0) & (alt[alt.loss == "gcdf"].value <= 3)).all()  # 3 wrong classes


def test_at_training_loss_interpolates_between_the_epochs_around_the_level():
    rows = []
    for epoch, ce in enumerate([2.0, 1.0, 0.5]):
        rows.append(dict(lr=0.1, batch_size=256, epoch=epoch, train_ce=ce, loss="gcdf", parameter=1.0, value=10.0 * ce))
    rows += [dict(lr=0.001, batch_size=256, epoch=e, train_ce=2.0, loss="gcdf", parameter=1.0, value=1.0) for e in range(3)]
    read = ch08.at_training_loss(pd.DataFrame(rows), 0.75)
    assert list(read.lr) == [0.1]  # the slow run never reaches 0.75
    assert read.epoch.iloc[0] == pytest.approx(1.5) and read.value.iloc[0] == pytest.approx(7.5)


def test_presets_follow_the_paper():
    full = ch08.alt_losses.grid("full")
    assert {(c.dataset, c.architecture) for c in full} == {("mnist", "mlp"), ("cifar10", "convnet")}
    assert {(c.lr, c.batch_size) for c in full} == {(0.1, 256), (0.001, 256), (0.1, 16384)}
    assert {c.method for c in full} == {"sgdm"} and {c.ghost for c in full} == {256}
    reduced = ch08.alt_losses.grid("reduced")
    assert {(c.lr, c.batch_size, c.epochs, c.track_every) for c in reduced} == {
        (0.1, 256, 100, 1), (0.001, 256, 300, 3), (0.1, 2048, 300, 3)}
    with pytest.raises(ValueError, match="momentum"):
        ch08.alt_losses.grid("reduced", methods=["adam"])


def test_the_committed_runs_are_reproduced_by_rerunning_one():
    from ibtools.experiments import load_results

    table, provenance = load_results("alt-losses", "reduced")
    assert provenance["command"] == "python -m ibtools run alt-losses --seeds 3 --out book/results"
    assert provenance["device"].endswith("(x86_64, 1 threads)")  # computed as every run now is: one thread
    config = next(c for c in ch08.alt_losses.grid("reduced") if c.batch_size == 256 and c.lr == 0.1)
    assert config.seed == 0
    fresh = rerun_as_recorded(ch08.run, config, provenance)
    fresh = fresh[fresh.kind == "alt"]
    stored = table[(table.kind == "alt") & (table.batch_size == 256) & np.isclose(table.lr, 0.1) & (table.seed == 0)]
    for epoch in (10, 50, 100):
        a = fresh[fresh.epoch == epoch].value.to_numpy()
        b = stored[stored.epoch == epoch].value.to_numpy()
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("dataset,shape", [("mnist", (1, 28, 28)), ("cifar10", (3, 32, 32))])
def test_each_full_preset_takes_a_ghost_batched_step_at_full_size(dataset, shape, monkeypatch):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, *shape, generator=gen)
    y = torch.randint(0, 10, (512,), generator=gen)
    monkeypatch.setattr(ch08.data, "load", lambda name: data.Dataset(name, x, y, x[:64], y[:64], "classification",
                                                                     10, "stand-in"))
    config = next(c for c in ch08.alt_losses.grid("full") if c.dataset == dataset and c.batch_size == 16384)
    table = pd.DataFrame(ch08.run(dataclasses.replace(config, epochs=1)))
    assert len(table[table.kind == "step"]) == 1  # one update for the whole stand-in set, in 2 ghost batches
    assert set(table[table.kind == "alt"].epoch) == {0, 1}


def committed_claims():
    from ibtools import losses
    from ibtools.experiments import load_results

    runs, _ = load_results("alt-losses", "reduced")
    alt = runs[runs.kind == "alt"]
    level = ch08.LEVEL
    fixed = ch08.at_training_loss(alt, level)
    demo = ch08.bound_demo()
    threshold = losses.binary_curvature_threshold()[0]
    return alt, fixed, ch08.claims(fixed, alt, level, demo, losses.bound_9_counterexample(classes=3), threshold)


def test_the_chapter_s_claims_on_the_committed_runs():
    from ibtools import claims

    alt, fixed, found = committed_claims()
    floors = alt.groupby(["lr", "batch_size", "seed"]).train_ce.min()
    assert len(floors) == 9 and floors.max() <= ch08.LEVEL - 0.05  # every seed passes the level with room
    assert fixed.groupby(["lr", "batch_size"]).seed.nunique().tolist() == [3, 3, 3]
    assert all(c.evidence.strip() for c in found)
    assert claims.verdicts(found) == {
        "gcdf-rate-crossover": True, "cross-entropy-rate-crossover": True, "hinge-rate-crossover": True,
        "gcdf-tie": False, "small-sigma-ratio": False, "large-parameters-one-statistic": True,
        "batch-like-rate": True, "along-training": True, "noisy-descent": False, "slow-run-floor": None,
        "bound-9-binary": True, "curvature-form-range": True, "binary-gcdf-exact": True, "union-bound-gap": None,
        "bound-9-several-classes": True}
    text = {c.name: c.text for c in found}
    assert "γ ≥ 4" in text["hinge-rate-crossover"]  # not γ ≥ 2: at γ = 2 the small rate is lower
    assert "less than an order of magnitude" in text["small-sigma-ratio"]
    # the crossover sits between sigma = 1 and 2, not in [0.5, 1]: at sigma = 1 the small rate is lower at every seed
    assert ch08.crossover(fixed, "gcdf", (0.1, 256), (0.001, 256)) == (1.0, 2.0)
    assert "between σ = 1 and σ = 2" in text["gcdf-tie"] and "unlike the paper" in text["gcdf-tie"]
    # the paper's comparison levels: about 0.6 on CIFAR-10 (Figure 7), about 0.08 on MNIST (Figure 12)
    assert "0.08" in text["slow-run-floor"] and "Figure 12" in text["slow-run-floor"]
    assert "not near zero as in the paper" not in text["slow-run-floor"]
    # the large parameters restate one statistic; the 18 pairs are not independent
    assert "not 18 independent" in text["batch-like-rate"]
    assert "σ|x| ≈ 1.99" in text["curvature-form-range"] and "4, 8 lie beyond it" in text["curvature-form-range"]
    assert "union bound" in text["bound-9-several-classes"]
    for c in found:  # every run has three seeds, and the experiments' claims say so
        if c.name not in {"bound-9-binary", "curvature-form-range", "binary-gcdf-exact", "union-bound-gap",
                          "bound-9-several-classes"}:
            assert "3 seeds each" in c.evidence, c.name


def test_at_training_loss_keeps_the_seeds_apart_and_the_mean_margin_reads_the_hinge_loss():
    rows = []
    for seed, scale in ((0, 1.0), (1, 2.0)):
        for epoch, ce in enumerate([2.0, 1.0, 0.5]):
            for gamma in (4.0, 8.0):
                rows.append(dict(lr=0.1, batch_size=256, seed=seed, epoch=epoch, train_ce=ce, loss="hinge",
                                 parameter=gamma, value=9 * gamma - 9 * scale * (3 - epoch)))
    fixed = ch08.at_training_loss(pd.DataFrame(rows), 0.75)
    assert sorted(fixed.seed) == [0, 0, 1, 1]
    margins = ch08.mean_margin(fixed).set_index("seed")
    assert margins.active.all()  # hinge(8) - hinge(4) = 36: every term active
    np.testing.assert_allclose(margins.margin.loc[[0, 1]], [1.5, 3.0])  # gamma - hinge / 9, at epoch 1.5
    rows[0] = rows[0] | dict(value=10.0)  # seed 0, epoch 0, gamma 4: some term inactive
    assert not ch08.mean_margin(ch08.at_training_loss(pd.DataFrame(rows), 2.0 - 1e-9)).active.all()


def test_the_bound_demonstration_labels_depend_on_the_weights():
    """Labels drawn independently of the weights leave the classifier at chance and every
    comparison degenerate; the demonstration's come from its own weights, with 10% flipped."""
    demo = ch08.bound_demo()
    for classes, rows in demo.groupby("classes"):
        assert (rows.accuracy > 0.85).all()  # chance: 1 / classes
        assert (rows.noisy_zero_one < 1 - 1 / classes - 0.15).all()  # the noise does not wash the labels out
        assert (rows.above_noisy_ce == 0).all() and (rows.noisy_zero_one <= rows.gcdf + 0.01).all()
    two = demo[demo.classes == 2].set_index("sigma")
    np.testing.assert_allclose(two.gcdf, two.noisy_zero_one, atol=0.01)
    assert (two.loc[[0.5, 1.0, 2.0]].above_curvature == 0).all() and two.loc[4.0].above_curvature > 0
