"""What the book shows: summaries over seeds, matplotlib figures, the kernel-free slider figure,
and the live learning-rate panel."""

from __future__ import annotations

import math
from dataclasses import dataclass

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from conftest import TINY_LRS, TinyConfig, TinyRun, registered, tiny_configs
from IPython.display import Image, Markdown

from ibtools import plots, widgets


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def run_rows(method, lr, seed, final, diverged=False, steps=3, curve=None):
    """One run: step rows with loss ``curve[t]`` and a last epoch row with train_loss ``final``.

    An early epoch row with a decoy train_loss checks that summaries use the final row."""
    curve = curve if curve is not None else [10.0 / (t + 1) for t in range(steps)]
    rows = [dict(method=method, lr=lr, seed=seed, kind="epoch", step=0, epoch=0.0, loss=99.0, train_loss=99.0,
                 diverged=diverged)]
    rows += [dict(method=method, lr=lr, seed=seed, kind="step", step=t, epoch=t / steps, loss=curve[t],
                  train_loss=math.nan, diverged=diverged) for t in range(len(curve))]
    if not diverged:
        rows.append(dict(method=method, lr=lr, seed=seed, kind="epoch", step=len(curve), epoch=1.0, loss=final,
                         train_loss=final, diverged=diverged))
    return rows


@pytest.fixture
def table() -> pd.DataFrame:
    """Two methods, two learning rates, three seeds, with hand-picked final losses:

    esgd 0.1: 1, 2, 3             -> mean 2, std 1, none diverged
    esgd 1.0: 4, diverged, 6      -> mean 5, std sqrt(2), a third diverged
    isgd 0.1: 0.5, 0.5, 0.5       -> mean 0.5, std 0
    isgd 1.0: all diverged        -> mean NaN, all diverged
    """
    rows = []
    for seed, final in enumerate([1.0, 2.0, 3.0]):
        rows += run_rows("esgd", 0.1, seed, final, curve=[3.0, 2.0, 1.0 + seed])
    for seed, final in enumerate([4.0, None, 6.0]):
        rows += run_rows("esgd", 1.0, seed, final, diverged=final is None, curve=[5.0, 7.0, 9.0 + seed])
    for seed in range(3):
        rows += run_rows("isgd", 0.1, seed, 0.5, curve=[3.0, 1.0, 0.5])
        rows += run_rows("isgd", 1.0, seed, None, diverged=True, curve=[2.0, 20.0])
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)  # order must not matter


def by_key(stats):
    return stats.set_index(["method", "lr"])


# --- summaries ---------------------------------------------------------------------------------------

def test_summarize_mean_std_and_diverged_fraction_over_seeds(table):
    stats = by_key(plots.summarize(table))
    assert len(stats) == 4
    assert stats.loc[("esgd", 0.1), ["mean", "std", "diverged", "seeds"]].tolist() == pytest.approx([2.0, 1.0, 0.0, 3])
    assert stats.loc[("esgd", 1.0), "mean"] == pytest.approx(5.0)
    assert stats.loc[("esgd", 1.0), "std"] == pytest.approx(math.sqrt(2.0))
    assert stats.loc[("esgd", 1.0), "diverged"] == pytest.approx(1 / 3)
    assert stats.loc[("isgd", 0.1), ["mean", "std", "diverged"]].tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert math.isnan(stats.loc[("isgd", 1.0), "mean"])
    assert stats.loc[("isgd", 1.0), "diverged"] == 1.0
    assert (stats["seeds"] == 3).all()


def test_summarize_of_one_seed_has_zero_spread():
    stats = plots.summarize(pd.DataFrame(run_rows("esgd", 0.1, 0, 0.25)))
    assert stats[["mean", "std", "diverged", "seeds"]].iloc[0].tolist() == [0.25, 0.0, 0.0, 1]


def test_summarize_keeps_problems_apart(table):
    both = pd.concat([table.assign(problem="a"), table.assign(problem="b", train_loss=table.train_loss * 10)])
    stats = plots.summarize(both).set_index(["problem", "method", "lr"])
    assert stats.loc[("a", "esgd", 0.1), "mean"] == pytest.approx(2.0)
    assert stats.loc[("b", "esgd", 0.1), "mean"] == pytest.approx(20.0)


def test_final_rows_are_the_last_recorded_row_of_each_run(table):
    last = plots.final_rows(table)
    assert len(last) == 12
    finished = last[~last.diverged]
    assert (finished["kind"] == "epoch").all() and (finished["step"] == 3).all()
    # a diverged run ends where it stopped: its last step
    stopped = last[(last.method == "isgd") & (last.lr == 1.0)]
    assert (stopped["step"] == 1).all() and (stopped["loss"] == 20.0).all()


def test_summarize_reads_a_csv_round_tripped_table(table, tmp_path):
    table.to_csv(tmp_path / "r.csv", index=False)
    again = plots.summarize(pd.read_csv(tmp_path / "r.csv"))
    pd.testing.assert_frame_equal(again, plots.summarize(table), check_dtype=False)


# --- matplotlib figures -------------------------------------------------------------------------------

def test_loss_vs_lr_draws_means_and_marks_divergence(table):
    ax = plots.loss_vs_lr(table, title="test")
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and ax.get_title() == "test"
    stats = plots.summarize(table)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"ESGD (explicit)", "ISGD (implicit)"}
    esgd = stats[stats.method == "esgd"]
    np.testing.assert_allclose(lines["ESGD (explicit)"].get_xdata(), esgd["lr"])
    np.testing.assert_allclose(lines["ESGD (explicit)"].get_ydata(), esgd["mean"])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "ESGD (explicit): diverged" in legend and "ISGD (implicit): diverged" in legend
    ax.figure.canvas.draw()  # renders without error


def test_loss_vs_lr_without_divergence_has_no_marks(table):
    ax = plots.loss_vs_lr(table[~table.diverged & (table.lr == 0.1)], logy=False)
    assert ax.get_yscale() == "linear"
    assert not any("diverged" in t.get_text() for t in ax.get_legend().get_texts())
    ax.figure.canvas.draw()


def test_curves_draws_the_mean_over_seeds_at_the_nearest_learning_rate(table):
    fig, ax = plt.subplots()
    assert plots.curves(table, 0.12, ax=ax) is ax  # 0.12 is nearest to 0.1
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["ESGD (explicit)"].get_ydata(), [3.0, 2.0, 2.0])  # mean of 1, 2, 3
    np.testing.assert_allclose(lines["ISGD (implicit)"].get_ydata(), [3.0, 1.0, 0.5])
    np.testing.assert_allclose(lines["ESGD (explicit)"].get_xdata(), [0, 1, 2])
    fig.canvas.draw()


def test_curves_of_epoch_metrics(table):
    ax = plots.curves(table, 0.1, metric="train_loss", kind="epoch", logy=False)
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["ESGD (explicit)"].get_ydata(), [99.0, 2.0])


# --- the kernel-free slider figure --------------------------------------------------------------------

def test_lr_slider_figure_has_one_step_per_learning_rate_and_each_redraws_the_curves(table):
    fig = plots.lr_slider_figure(table, title="demo", curve_metric="loss", curve_kind="step")
    assert isinstance(fig, go.Figure)
    slider = fig.layout.sliders[0]
    lrs = sorted(table["lr"].unique())
    assert len(slider.steps) == len(lrs) == 2
    assert [step.label for step in slider.steps] == [f"{lr:.3g}" for lr in lrs]

    methods = list(dict.fromkeys(table["method"]))  # in the order they first appear
    data = [step.args[0] for step in slider.steps]
    indices = [step.args[2] for step in slider.steps]
    for step, lr, d, idx in zip(slider.steps, lrs, data, indices):
        assert step.method == "update"
        # one curve per method plus the marker, and the traces they replace are those curves and the marker
        assert len(d["x"]) == len(d["y"]) == len(methods) + 1 == len(idx)
        assert [fig.data[i].name for i in idx[:-1]] == [plots.label(m) for m in methods]
        assert all(fig.data[i].xaxis == "x" for i in idx[:-1])
        assert d["x"][-1] == [lr, lr]  # the marker moves to the chosen learning rate
        assert f"learning rate {lr:.3g}" in step.args[1]["title.text"]
    # moving the slider changes the curves
    assert data[0]["y"][0] != data[1]["y"][0] and data[0]["y"][1] != data[1]["y"][1]
    esgd, isgd = methods.index("esgd"), methods.index("isgd")
    assert data[0]["y"][esgd] == pytest.approx([3.0, 2.0, 2.0]) and data[0]["x"][esgd] == [0, 1, 2]
    assert data[1]["y"][isgd] == pytest.approx([2.0, 20.0])
    # the first step is what the figure shows before the slider moves
    for i in range(len(methods)):
        assert list(fig.data[i].y) == pytest.approx(data[0]["y"][i])
    assert "diverged: " + ", ".join(plots.label(m) for m in methods) in slider.steps[1].args[1]["title.text"]
    assert "diverged" not in slider.steps[0].args[1]["title.text"]
    fig.to_json()  # a valid plotly figure


def test_show_in_the_book_is_html_without_the_plotly_bundle(table, monkeypatch):
    fig = plots.lr_slider_figure(table)
    monkeypatch.setenv("IBTOOLS_BOOK", "1")
    bundle = plots.show(fig)._repr_mimebundle_()
    html = bundle["text/html"]
    assert "Plotly.newPlot" in html and "sliders" in html
    assert "plotly.js v" not in html and "cdn.plot.ly" not in html
    assert len(html) < 200_000  # the bundle alone is megabytes
    assert bundle["text/plain"] == "<interactive figure>"


def test_show_outside_the_book_is_plotly_s_own_bundle(table, monkeypatch):
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")
    fig = plots.lr_slider_figure(table)
    bundle = plots.show(fig)._repr_mimebundle_()
    assert "application/vnd.plotly.v1+json" in bundle
    assert len(bundle["application/vnd.plotly.v1+json"]["data"]) == len(fig.data)
    assert bundle == fig._repr_mimebundle_(None, None)


# --- the live panel -----------------------------------------------------------------------------------

def test_panel_in_the_book_is_a_pointer_to_the_notebook(monkeypatch, tiny_experiment):
    monkeypatch.setenv("IBTOOLS_BOOK", "1")
    pointer = widgets.panel("tiny-test")
    assert isinstance(pointer, Markdown)
    assert "notebook" in pointer.data
    assert tiny_experiment.run.calls == []


def test_panel_in_a_notebook_is_the_learning_rate_panel(tiny_experiment):
    assert isinstance(widgets.panel("tiny-test"), widgets.LearningRatePanel)


def test_learning_rate_panel_slider_spans_the_grid_and_run_uses_its_value(tiny_experiment, results_cache_dir):
    panel = widgets.LearningRatePanel(tiny_experiment, lr=0.1)
    slider = panel.slider
    assert isinstance(slider, W.FloatLogSlider)
    assert slider.base == 10
    assert slider.min == pytest.approx(math.log10(min(TINY_LRS)))
    assert slider.max == pytest.approx(math.log10(max(TINY_LRS)))
    assert slider.value == pytest.approx(0.1)
    assert list(panel.methods.options) == ["sgd", "momentum"]
    assert panel.button.description == "Run"

    table = panel.run()
    assert set(table["lr"]) == {slider.value}
    assert set(table["method"]) == {"sgd", "momentum"} and set(table["seed"]) == {0}
    assert {"kind", "train_loss", "diverged"} <= set(table.columns)
    assert len(tiny_experiment.run.calls) == 2
    assert not panel.button.disabled

    slider.value = 0.01
    panel.methods.value = ("sgd",)
    second = panel.run()
    assert second["lr"].unique() == pytest.approx([0.01]) and set(second["method"]) == {"sgd"}
    assert sorted(panel.results["reduced"]["lr"].unique()) == pytest.approx([0.01, 0.1])  # the lr curve grows

    slider.value = 0.1
    panel.run()  # read back from the cache
    assert len(tiny_experiment.run.calls) == 3
    assert len(panel.results["reduced"].groupby(["method", "lr", "seed"])) == 3  # no duplicated runs


def test_learning_rate_panel_default_value_lies_inside_the_grid(tiny_experiment):
    slider = widgets.LearningRatePanel("tiny-test").slider
    assert min(TINY_LRS) <= slider.value <= max(TINY_LRS)


def test_lr_slider_spans_its_learning_rates():
    slider = widgets.lr_slider([1e-3, 1e-2, 1e2])
    assert (slider.min, slider.max) == pytest.approx((-3.0, 2.0))
    assert slider.value == pytest.approx(1e-2)


def test_lr_slider_widens_a_narrow_grid_to_a_decade_either_side():
    slider = widgets.lr_slider([10.0])
    assert (slider.min, slider.max) == pytest.approx((0.0, 2.0))
    assert slider.value == pytest.approx(10.0)


@dataclass(frozen=True)
class ProximalConfig:
    method: str
    lr: float
    lam: float = 0.0
    seed: int = 0


def proximal_configs(scale, lrs=None, methods=None, seeds=None, lams=None):
    """"plain" with a learning rate; "prox" with a step and a proximal parameter."""
    presets = {"plain": [(0.1, 0.0), (1.0, 0.0)], "prox": [(1.0, 1.0), (1.0, 10.0), (10.0, 1.0)]}
    configs = []
    for method in methods or presets:
        rates = lrs or sorted({lr for lr, _ in presets[method]})
        lambdas = (lams if lams and method == "prox" else None) or sorted({lam for _, lam in presets[method]})
        configs += [ProximalConfig(method=method, lr=lr, lam=lam, seed=s)
                    for lr in rates for lam in lambdas for s in range(seeds or 1)]
    return configs


def run_proximal(config, device=None):
    """A decaying loss whose level is set by the step sizes, so every run can be told apart."""
    level = config.lr * (1.0 + config.lam)
    return [dict(kind="epoch", step=t, epoch=float(t), loss=level / (t + 1), train_loss=level / (t + 1),
                 diverged=False) for t in range(3)]


@pytest.fixture
def proximal_experiment():
    yield from registered("proximal-test", run_proximal, proximal_configs)


def test_a_plain_experiment_has_only_the_learning_rate_slider(tiny_experiment):
    panel = widgets.LearningRatePanel(tiny_experiment)
    assert panel.eta is None and panel.lam is None and panel.proximal == []
    assert panel.slider.description == "learning rate η"


def test_the_panel_gives_proximal_methods_eta_and_lambda_and_the_others_a_learning_rate(proximal_experiment):
    panel = widgets.LearningRatePanel(proximal_experiment, lr=0.1, eta=1.0, lam=1.0)
    assert panel.proximal == ["prox"]
    assert "plain" in panel.slider.description and "prox" in panel.eta.description.lower()
    assert panel.widget.children[:3] == (panel.slider, panel.eta, panel.lam)
    assert (10 ** panel.lam.min, 10 ** panel.lam.max) == pytest.approx((0.1, 100.0))  # 1 and 10, widened
    assert (10 ** panel.eta.min, 10 ** panel.eta.max) == pytest.approx((0.1, 100.0))

    panel.slider.value, panel.eta.value, panel.lam.value = 0.3, 2.0, 5.0
    table = panel.run()
    steps = {m: set(zip(rows.lr.round(6), rows.lam.round(6))) for m, rows in table.groupby("method")}
    assert steps == {"plain": {(0.3, 0.0)}, "prox": {(2.0, 5.0)}}
    assert table[table.method == "prox"].train_loss.iloc[0] == pytest.approx(2.0 * 6.0)

    panel.lam.value = 1.0
    panel.run()
    everything = panel.results["reduced"]
    assert set(everything[everything.method == "prox"].lam.round(6)) == {1.0, 5.0}
    shown = panel.at_current_lam(everything)
    assert set(shown[shown.method == "prox"].lam.round(6)) == {1.0}  # the curve against eta is at this lambda
    assert set(shown[shown.method == "plain"].lr.round(6)) == {0.3}
    assert "λ = 1" in panel.title() and "lr = 0.3" in panel.title()

    panel.methods.value = ("prox",)
    only = panel.run()
    assert set(only.method) == {"prox"} and "lr" not in panel.title()
    panel.methods.value = ()
    assert panel.run().empty


@dataclass(frozen=True)
class TwoProblemConfig:
    problem: str
    method: str
    lr: float
    seed: int = 0


def two_problem_configs(scale, lrs=None, methods=None, seeds=None, problems=None):
    return [TwoProblemConfig(problem=p, method=m, lr=lr, seed=s)
            for p in (problems or ("a", "b")) for m in (methods or ("esgd",)) for lr in (lrs or [0.1, 1.0])
            for s in range(seeds or 1)]


def run_two_problems(config, device=None):
    """The same steps for both problems, different losses."""
    scale = 1.0 if config.problem == "a" else 10.0
    return [dict(kind="step", step=t, epoch=float(t), loss=scale * config.lr / (t + 1), train_loss=scale * config.lr,
                 diverged=False) for t in range(3)]


@pytest.fixture
def two_problem_experiment():
    yield from registered("two-problems", run_two_problems, two_problem_configs)


def test_learning_rate_panel_keeps_every_problem_of_every_run(two_problem_experiment):
    """Runs that differ in a config field other than method, lr and seed are not merged away."""
    panel = widgets.LearningRatePanel("two-problems", curve_metric="loss", curve_kind="step")
    for lr in (0.1, 1.0, 0.1):
        panel.slider.value = lr
        panel.run()
    runs = panel.results["reduced"].groupby(["problem", "method", "lr", "seed"])
    assert runs.ngroups == 4 and (runs.size() == 3).all()


def test_summaries_keep_runs_apart_by_every_config_field():
    """A sweep over a field the plots know nothing of (here: width) is summarised per value."""
    from dataclasses import dataclass

    from ibtools.sweep import sweep

    @dataclass(frozen=True)
    class Config:
        width: int
        method: str
        lr: float
        seed: int

    def run(config, device=None):
        return [dict(kind="epoch", step=0, train_loss=float(config.width + config.seed), diverged=False)]

    configs = [Config(w, "esgd", 0.1, s) for w in (1, 10) for s in (0, 2)]
    table = sweep(run, configs, experiment="widths", cache=False, progress=False)
    assert table.attrs["config_fields"] == ["width", "method", "lr", "seed"]
    stats = plots.summarize(table)
    assert stats.set_index("width")["mean"].to_dict() == {1: 2.0, 10: 11.0}


def test_slider_figure_redraws_each_series_from_the_rows_of_the_chosen_value():
    table = pd.DataFrame({
        "k": [1, 1, 1, 2, 2, 2],
        "series": ["curve", "curve", "point", "curve", "curve", "point"],
        "x": [0.0, 1.0, 0.5, 0.0, 1.0, 0.25],
        "y": [0.0, 1.0, 0.5, 0.0, 2.0, 0.5],
    })
    fig = plots.slider_figure(table, slider="k", x="x", y="y", series="series", start=2,
                              modes={"point": "markers"})
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["1", "2"] and fig.layout.sliders[0].active == 1
    assert steps[0].args[0]["y"] == [[0.0, 1.0], [0.5]] and steps[1].args[0]["y"] == [[0.0, 2.0], [0.5]]
    assert list(fig.data[0].y) == [0.0, 2.0] and fig.data[1].mode == "markers"


def test_explorer_is_a_pointer_in_the_book_and_interactive_in_a_notebook(monkeypatch):
    drawn = []

    def draw(fig, lr, c):
        drawn.append((lr, c))
        plots.subplots(1, (3, 2), fig).axvline(lr)

    panel = widgets.explorer(draw, lr=0.5, c=(-1.0, 1.0, 0.5))
    assert panel.children[0].description.startswith("learning rate") and panel.children[0].value == 0.5
    panel.children[1].value = 1.0
    shown = displayed(monkeypatch)
    panel.update()
    assert drawn[-1] == (0.5, 1.0)
    assert len(shown) == 1 and is_png(shown[0]) and plt.get_fignums() == []
    monkeypatch.setenv("IBTOOLS_BOOK", "1")
    assert "notebook" in widgets.explorer(draw)._repr_markdown_()


def test_slider_figure_with_a_second_slider_shows_one_set_of_traces_per_value_and_draws_fixed_series_once():
    rows = [{"k": k, "m": m, "series": "curve", "x": x, "y": x * x} for k in (1, 2) for m in (10, 20) for x in (0.0, 1.0)]
    rows += [{"k": k, "m": m, "series": "point", "x": float(k), "y": float(k * m)} for k in (1, 2) for m in (10, 20)]
    fig = plots.slider_figure(pd.DataFrame(rows), slider="k", x="x", y="y", series="series", second="m",
                              start=2, second_start=20, modes={"point": "markers"})
    # The curve is the same everywhere: one trace, never redrawn; the point has a trace per m.
    assert [t.name for t in fig.data] == ["curve", "point", "point"]
    assert list(fig.data[0].y) == [0.0, 1.0] and [t.visible for t in fig.data] == [True, False, True]
    first, second = fig.layout.sliders
    assert first.active == 1 and second.active == 1
    assert first.steps[0].args == ({"x": [[1.0], [1.0]], "y": [[10.0], [20.0]]}, (1, 2))
    assert first.steps[1].args[0]["y"] == [[20.0], [40.0]]
    assert [s.args[0]["visible"] for s in second.steps] == [[True, False], [False, True]]
    assert list(fig.data[2].y) == [40.0]  # k = 2, m = 20 shown first


def test_a_series_across_the_second_slider_follows_the_first_only():
    rows = [{"k": k, "m": m, "series": "tuned", "x": 0.0, "y": float(k * m)} for k in (1, 2) for m in (10, 20)]
    rows += [{"k": k, "m": 0.0, "series": "baseline", "x": 0.0, "y": -float(k)} for k in (1, 2)]
    fig = plots.slider_figure(pd.DataFrame(rows), slider="k", x="x", y="y", series="series", second="m",
                              across_second=("baseline",), start=1, second_start=10)
    first, second = fig.layout.sliders
    assert [step.label for step in second.steps] == ["10", "20"]  # the baseline's m = 0 is no value of the slider
    assert [t.name for t in fig.data] == ["tuned", "baseline", "tuned", "baseline"]
    assert [list(t.y) for t in fig.data] == [[10.0], [-1.0], [20.0], [-1.0]]
    assert first.steps[1].args[0]["y"] == [[20.0], [-2.0], [40.0], [-2.0]]  # k = 2 redraws both, in each set


def test_seed_scatter_draws_one_point_per_finished_run_and_an_x_per_diverged_run(table):
    ax = plots.seed_scatter(table)
    offsets = {c.get_label(): c.get_offsets() for c in ax.collections}
    assert len(offsets[plots.label("esgd")]) == 5 and len(offsets[plots.label("isgd")]) == 3
    assert len(offsets[f"{plots.label('esgd')}: diverged"]) == 1 and len(offsets[f"{plots.label('isgd')}: diverged"]) == 3
    finished = sorted(offsets[plots.label("esgd")][:, 1].tolist())
    assert finished == [1.0, 2.0, 3.0, 4.0, 6.0]
    assert set(offsets[f"{plots.label('isgd')}: diverged"][:, 1].tolist()) == {6.0 * 1.5}  # above the largest


# --- chapters 5 and 6: regret and exploration figures --------------------------------------------------

def regret_rows(method, lr, scale):
    """Two units of one layer; regret = scale * sqrt(N) for one, 3 scale sqrt(N) for the other."""
    return [dict(kind="regret", method=method, lr=lr, scope="layer", rounds=n, neuron=k,
                 regret=(1 + 2 * k) * scale * np.sqrt(n), cum_loss=10.0 * n, taylor_opt=10.0 * n - scale)
            for n in (1, 4, 9) for k in (0, 1)]


def test_regret_curves_draw_the_mean_regret_over_units_divided_by_sqrt_n_for_each_run():
    table = pd.DataFrame(regret_rows("adam", 0.01, 1.0) + regret_rows("sgd", 0.1, 2.0) + regret_rows("sgd", 1.0, 3.0))
    left, right = plots.regret_curves(table)
    lines = {line.get_label(): line for line in left.get_lines()}
    assert set(lines) == {"Adam, lr 0.01", "SGD, lr 0.1", "SGD, lr 1"}
    np.testing.assert_allclose(lines["SGD, lr 0.1"].get_ydata(), [4.0, 4.0, 4.0])  # mean of 2 and 6
    assert lines["SGD, lr 0.1"].get_color() == lines["SGD, lr 1"].get_color()  # one colour per optimizer,
    assert lines["SGD, lr 0.1"].get_linestyle() != lines["SGD, lr 1"].get_linestyle()  # a style per rate
    assert len(right.get_lines()) == 6  # loss and Taylor optimum per run


def exploration_rows(method, lr, level):
    rows = [dict(kind="hamming", method=method, lr=lr, step=n, fraction=level / n, value=level) for n in (1, 2, 3)]
    for kind in ("switches", "volume"):
        rows += [dict(kind=kind, method=method, lr=lr, step=i, rank=i / 2, value=level * (2 - i)) for i in range(3)]
    return rows


def test_exploration_measures_draw_each_run_on_the_three_axes():
    table = pd.DataFrame(exploration_rows("rmsprop", 1e-3, 0.5) + exploration_rows("sgd", 30.0, 0.2))
    axes = plots.exploration_measures(table)
    for ax, kind in zip(axes, ("hamming", "switches", "volume")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"RMSProp, lr 0.001", "SGD, lr 30"}
        expected = table[(table.kind == kind) & (table.method == "sgd")]
        np.testing.assert_allclose(lines["SGD, lr 30"].get_ydata(),
                                   expected.fraction if kind == "hamming" else expected.value)


def test_a_panel_with_a_figure_draws_it_from_every_run_so_far(tiny_experiment, monkeypatch):
    seen = []

    def figure(table, fig):
        seen.append(table.copy())
        plots.subplots(1, (4, 3), fig).plot(table.lr, table.train_loss)

    panel = widgets.LearningRatePanel(tiny_experiment, lr=0.1, figure=figure)
    shown = displayed(monkeypatch)
    panel.run()
    panel.slider.value = 0.01
    panel.run()
    assert len(seen) == 2 and sorted(seen[-1].lr.unique()) == pytest.approx([0.01, 0.1])
    assert len(shown) == 2 and all(is_png(image) for image in shown)


def displayed(monkeypatch) -> list:
    """What the live panels show from now on (``IPython.display.display`` as ``widgets`` calls it)."""
    shown = []
    monkeypatch.setattr(widgets, "display", shown.append)
    return shown


def is_png(image) -> bool:
    return isinstance(image, Image) and image.format == "png" and image.data.startswith(b"\x89PNG")


def test_a_panel_builds_its_figure_where_no_other_thread_can_draw_it(tiny_experiment, monkeypatch):
    # After a widget message handled on a kernel subshell thread, ipykernel fires IPython's
    # post_execute hooks there, and pyplot's hook draws every figure pyplot knows of. While Run
    # builds its figure, pyplot must know of none, and the figure is shown as a finished image.
    known_while_drawing = []
    curves = plots.curves

    def recording_curves(*args, **kwargs):
        known_while_drawing.append(plt.get_fignums())
        return curves(*args, **kwargs)

    monkeypatch.setattr(plots, "curves", recording_curves)
    shown = displayed(monkeypatch)
    widgets.LearningRatePanel(tiny_experiment, lr=0.1).run()
    assert known_while_drawing == [[]]
    assert plt.get_fignums() == [] and len(shown) == 1 and is_png(shown[0])


@pytest.fixture
def diverging_experiment():
    """The tiny experiment with a grid up to lr = 100, where SGD on its least squares diverges."""
    def configs(scale, lrs=None, methods=None, seeds=None):
        return tiny_configs(scale, lrs or [0.01, 100.0], methods, seeds)

    yield from registered("diverging-test", TinyRun(), configs)


def test_a_panel_draws_runs_that_diverged(diverging_experiment, monkeypatch):
    # At lr = 100 the loss overflows within the first epoch; the log axes must still be drawn,
    # with the runs marked.
    shown = displayed(monkeypatch)
    panel = widgets.LearningRatePanel("diverging-test", lr=0.1)
    panel.run()
    panel.slider.value = 100.0
    table = panel.run()
    assert table["diverged"].astype(bool).all()
    assert len(shown) == 2 and all(is_png(image) for image in shown)
    assert shown[0].data != shown[1].data


def test_run_at_full_scale_first_says_what_it_will_cost_then_starts_on_a_second_press(tiny_experiment, capsys):
    panel = widgets.LearningRatePanel(tiny_experiment, lr=0.1)
    panel.scale.value = "full"
    panel.methods.value = ("sgd",)
    assert panel.run().empty and tiny_experiment.run.calls == []  # probed in a worker, nothing computed here
    assert panel.button.description == "Start full-scale runs"
    message = capsys.readouterr().out  # what the panel's output area shows, outside a kernel
    assert "Full scale: 1 run(s) to compute (0 cached), projected" in message and "with 1 worker(s)" in message

    panel.slider.value = 1.0  # a changed selection is costed again before it starts
    assert panel.run().empty and tiny_experiment.run.calls == []
    table = panel.run()
    assert tiny_experiment.run.calls == [TinyConfig("sgd", 1.0, epochs=3)]  # the full preset's epochs
    assert set(table["lr"]) == {1.0} and panel.button.description == "Run"
    assert not panel.run().empty and len(tiny_experiment.run.calls) == 1  # cached: no plan, no run
