"""What the book draws: summaries over seeds, loss-versus-learning-rate plots, training curves,
and the kernel-free interactive figure of the rendered book.

Every function takes the tidy table a sweep returns (one row per method, lr, seed, step or
epoch) and knows nothing of how it was computed. Diverged runs are drawn, not dropped: an
``x`` at the top of the axes marks a learning rate at which a run diverged.
"""

from __future__ import annotations

import io
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from IPython.display import Image
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from .sweep import run_columns

METHOD_COLORS = {"esgd": "#d62728", "eb": "#d62728", "isgd": "#1f77b4", "ib": "#1f77b4",
                 "exact-isgd": "#2ca02c", "start": "#000000",
                 "sgd": "#d62728", "sibp": "#1f77b4", "proxbp": "#2ca02c", "bcd": "#8c564b", "adam": "#ff7f0e",
                 "rmsprop": "#9467bd", "sgdl": "#1f77b4", "sgdm": "#2ca02c", "adadelta": "#bcbd22"}
METHOD_LABELS = {"esgd": "ESGD (explicit)", "isgd": "ISGD (implicit)", "exact-isgd": "exact ISGD (inner GD)",
                 "eb": "EB (explicit)", "ib": "IB (implicit)",
                 "sgd": "SGD", "adam": "Adam", "rmsprop": "RMSProp", "sibp": "SIBP", "proxbp": "ProxBP", "bcd": "BCD",
                 "sgdm": "SGDM", "sgdl": "SGDL", "adadelta": "AdaDelta"}
PALETTE = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def subplots(ncols: int, figsize: tuple[float, float], fig: Figure | None = None):
    """``ncols`` axes side by side (one ``Axes`` when ``ncols`` is 1) on ``fig``, resized to
    ``figsize`` inches, or on a new pyplot figure when ``fig`` is None (a chapter's cell, which
    the notebook shows when the cell ends)."""
    if fig is None:
        return plt.subplots(1, ncols, figsize=figsize)[1]
    fig.set_size_inches(figsize)
    return fig.subplots(1, ncols)


def detached_figure() -> Figure:
    """A figure pyplot does not know of, for the live panels' callbacks.

    In JupyterLab with ipykernel 7 a widget's messages may be handled on a kernel subshell
    thread, and after each one the kernel fires IPython's ``post_execute`` hooks there, which
    draw (and flush) every open pyplot figure. A pyplot figure being built by a Run callback
    on the main thread is then drawn by two threads at once, and matplotlib is not thread-safe
    (seen as a mathtext ``ParseException`` on a log axis's tick labels). A figure outside
    pyplot is drawn only by whoever holds it; :func:`png` shows it."""
    return Figure(layout="tight")


def png(fig: Figure) -> Image:
    """``fig`` rendered to a PNG image for ``IPython.display.display`` (any backend, no pyplot)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return Image(data=buffer.getvalue(), format="png")


def color(method: str, i: int = 0) -> str:
    return METHOD_COLORS.get(str(method).lower(), PALETTE[i % len(PALETTE)])


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def final_rows(table: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """The last recorded row of each run: its final metrics, or where it stopped if it diverged.
    With ``metric``, the last row that holds that metric (a run may also record rows of other
    kinds, such as chapter 5's regret rows), else the run's last row."""
    key = table[metric].notna() if metric is not None and metric in table else pd.Series(True, index=table.index)
    ordered = table.assign(_has=key).sort_values(["_has", "step"], kind="stable").drop(columns="_has")
    ordered.attrs = dict(table.attrs)
    return ordered.groupby(run_columns(table), as_index=False, dropna=False).tail(1)


def summarize(table: pd.DataFrame, metric: str = "train_loss") -> pd.DataFrame:
    """Mean and standard deviation of ``metric`` at the end of training over seeds, per method
    and learning rate, counting only runs that did not diverge; ``diverged`` is the fraction
    of seeds that did."""
    last = final_rows(table, metric)
    keys = [c for c in run_columns(last) if c != "seed"]
    value = last[metric].where(~last["diverged"].astype(bool))
    out = (last.assign(value=value).groupby(keys, dropna=False)
           .agg(mean=("value", "mean"), std=("value", "std"), diverged=("diverged", "mean"),
                seeds=("seed", "nunique"))
           .reset_index())
    out["std"] = out["std"].fillna(0.0)
    return out


def loss_vs_lr(table: pd.DataFrame, metric: str = "train_loss", ax=None, title: str | None = None,
               logy: bool = True):
    """Final ``metric`` against learning rate, mean +- one standard deviation over seeds.

    Learning rates at which any seed diverged are marked with an ``x`` at the top."""
    if ax is None:
        ax = subplots(1, (6, 4))
    stats = summarize(table, metric)
    top = np.nanmax(stats["mean"] + stats["std"]) if stats["mean"].notna().any() else 1.0
    for i, (method, rows) in enumerate(stats.groupby("method", sort=False)):
        c = color(method, i)
        ax.plot(rows["lr"], rows["mean"], "o-", color=c, label=label(method), ms=4)
        ax.fill_between(rows["lr"], (rows["mean"] - rows["std"]).clip(lower=1e-12),
                        rows["mean"] + rows["std"], color=c, alpha=0.2, lw=0)
        bad = rows[rows["diverged"] > 0]
        if len(bad):
            ax.scatter(bad["lr"], np.full(len(bad), top * 1.5), marker="x", color=c, s=40,
                       label=f"{label(method)}: diverged")
    return _style_lr_axes(ax, metric, title or f"{metric.replace('_', ' ')} after training", logy)


def seed_scatter(table: pd.DataFrame, metric: str = "train_loss", ax=None, title: str | None = None,
                 logy: bool = True):
    """Final ``metric`` of every run against learning rate, one point per seed, the methods
    side by side (shifted a little along the log axis); runs that diverged as an ``x`` at the
    top. The per-seed view of :func:`loss_vs_lr`."""
    if ax is None:
        ax = subplots(1, (6, 4))
    last = final_rows(table, metric)
    ok = ~last["diverged"].astype(bool)
    top = last.loc[ok, metric].max() * 1.5 if ok.any() else 1.0
    methods = list(dict.fromkeys(last["method"]))
    for i, method in enumerate(methods):
        rows = last[last["method"] == method]
        shift = 10 ** (0.04 * (i - (len(methods) - 1) / 2))
        good, bad = rows[~rows["diverged"].astype(bool)], rows[rows["diverged"].astype(bool)]
        ax.scatter(good["lr"] * shift, good[metric], s=12, alpha=0.7, color=color(method, i), label=label(method))
        if len(bad):
            ax.scatter(bad["lr"] * shift, np.full(len(bad), top), marker="x", s=30, color=color(method, i),
                       label=f"{label(method)}: diverged")
    return _style_lr_axes(ax, metric, title or f"{metric.replace('_', ' ')} of each seed", logy)


def _style_lr_axes(ax, metric: str, title: str, logy: bool):
    """A learning-rate axis (log), the metric's (log if ``logy``), title, grid and legend."""
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("learning rate $\\eta$")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def mean_curves(table: pd.DataFrame, lr: float | None, metric: str = "loss", kind: str = "step") -> pd.DataFrame:
    """Mean of ``metric`` over seeds along training, per method, at the learning rate closest to
    ``lr`` (``lr=None``: every row, for a table that holds one step size per method)."""
    rows = table[table["kind"] == kind]
    if lr is not None:
        nearest = rows["lr"].unique()[np.argmin(np.abs(np.log(rows["lr"].unique()) - np.log(lr)))]
        rows = rows[rows["lr"] == nearest]
    means = rows.groupby(["method", "step"], sort=False, as_index=False)[metric].mean()
    return means.sort_values("step", kind="stable")  # a curve runs along the steps, whatever the row order


def curves(table: pd.DataFrame, lr: float | None, metric: str = "loss", kind: str = "step", ax=None,
           logy: bool = True, title: str | None = None):
    """Training curves (mean over seeds) of every method at one learning rate (``lr=None``: of
    every run in ``table``, one step size per method)."""
    if ax is None:
        ax = subplots(1, (6, 4))
    means = mean_curves(table, lr, metric, kind)
    for i, (method, rows) in enumerate(means.groupby("method", sort=False)):
        ax.plot(rows["step"], rows[metric], color=color(method, i), label=label(method))
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title or (f"training at $\\eta$ = {lr:.3g}" if lr is not None else "training"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def run_label(rows: pd.DataFrame) -> str:
    """"ADAM, lr 0.01": the optimizer and rate of one run's rows."""
    return f"{label(rows['method'].iloc[0])}, lr {rows['lr'].iloc[0]:g}"


def runs_by_rate(table: pd.DataFrame):
    """Yield (label, colour, line style, rows) for each (method, lr) of ``table``; a method's
    runs at several rates share its colour and differ in line style."""
    styles = ["-", "--", ":", "-."]
    methods = list(dict.fromkeys(table["method"]))
    for (method, lr), rows in table.groupby(["method", "lr"], sort=True):
        rank = sorted(table.loc[table["method"] == method, "lr"].unique()).index(lr)
        yield run_label(rows), color(method, methods.index(method)), styles[rank % len(styles)], rows


def regret_curves(table: pd.DataFrame, axes=None, scope: str = "layer", title: str = "", fig: Figure | None = None):
    """Chapter 5's measurements of each run (rows of kind "regret"): left, the regret of the
    tracked units of ``scope`` divided by sqrt(N) (mean over units); right, the cumulative loss
    (solid) and the Taylor optimum (dashed), both divided by sqrt(N). On two given ``axes``, or
    two new ones on ``fig`` (a new pyplot figure when None)."""
    if axes is None:
        axes = subplots(2, (11, 3.6), fig)
    rows = table[(table["kind"] == "regret") & (table["scope"] == scope)]
    for name, c, style, run in runs_by_rate(rows):
        mean = run.groupby("rounds")[["regret", "cum_loss", "taylor_opt"]].mean()
        root = np.sqrt(mean.index.to_numpy(float))
        axes[0].plot(mean.index, mean["regret"] / root, style, marker="o", ms=3, color=c, label=name)
        axes[1].plot(mean.index, mean["cum_loss"] / root, style, color=c, label=f"{name}: loss")
        axes[1].plot(mean.index, mean["taylor_opt"] / root, style, color=c, alpha=0.5, lw=2.5,
                     label=f"{name}: Taylor optimum")
    axes[0].set(xlabel="round N", ylabel="regret / sqrt(N)", title=f"{title}regret ({scope})")
    axes[1].set(xlabel="round N", ylabel="cumulative / sqrt(N)", title=f"{title}loss and Taylor optimum")
    for ax in axes:
        ax.legend(fontsize=7)
    return axes


def exploration_measures(table: pd.DataFrame, axes=None, title: str = "", fig: Figure | None = None):
    """Chapter 6's three measures of each run: novelty (rows of kind "hamming", as a fraction of
    D x M), switches per data point and volume per unit (sorted, against their rank). On three
    given ``axes``, or three new ones on ``fig`` (a new pyplot figure when None)."""
    if axes is None:
        axes = subplots(3, (14, 3.6), fig)
    for name, c, style, run in runs_by_rate(table):
        h = run[run["kind"] == "hamming"]
        axes[0].plot(h["step"], h["fraction"], style, marker="o", ms=3, color=c, label=name)
        for ax, kind in ((axes[1], "switches"), (axes[2], "volume")):
            curve = run[run["kind"] == kind]
            ax.plot(curve["rank"], curve["value"], style, color=c, label=name)
    axes[0].set(xlabel="epoch", ylabel="min Hamming distance / (D M)", yscale="log", title=f"{title}novelty")
    axes[1].set(xlabel="data points (sorted)", ylabel="switches / possible", title=f"{title}switches")
    axes[2].set(xlabel="units (sorted)", ylabel="log-product of singular values", title=f"{title}volume")
    axes[0].legend(fontsize=7)
    return axes


def lr_slider_figure(table: pd.DataFrame, *, curve_metric: str = "train_loss", final_metric: str = "train_loss",
                     title: str = "", logy: bool = True, curve_kind: str = "epoch") -> go.Figure:
    """A figure that works without a kernel: training curves at one learning rate (left) and the
    final metric against learning rate (right), with a slider over the swept learning rates that
    redraws the curves and moves the marker in the browser.

    The curves are ``curve_metric`` on rows of ``curve_kind``: by default the full training
    loss at each evaluation; ``curve_kind="step", curve_metric="loss"`` draws the mini-batch loss."""
    lrs = sorted(table["lr"].unique())
    methods = list(dict.fromkeys(table["method"]))
    stats = summarize(table, final_metric)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.12,
                        subplot_titles=("training curves at the chosen learning rate",
                                        f"{final_metric.replace('_', ' ')} after training"))
    curves_at = {lr: mean_curves(table, lr, curve_metric, curve_kind) for lr in lrs}
    for i, method in enumerate(methods):
        rows = curves_at[lrs[0]]
        rows = rows[rows["method"] == method]
        fig.add_trace(go.Scatter(x=rows["step"], y=rows[curve_metric], mode="lines", name=label(method),
                                 line=dict(color=color(method, i)), legendgroup=method), row=1, col=1)
    for i, method in enumerate(methods):
        s = stats[stats["method"] == method]
        fig.add_trace(go.Scatter(x=s["lr"], y=s["mean"], mode="lines+markers", name=label(method),
                                 error_y=dict(type="data", array=s["std"], visible=True),
                                 line=dict(color=color(method, i)), legendgroup=method, showlegend=False,
                                 customdata=s["diverged"],
                                 hovertemplate="lr %{x:.3g}<br>mean %{y:.4g}<br>diverged %{customdata:.0%}"),
                      row=1, col=2)
    fig.add_trace(go.Scatter(x=[lrs[0], lrs[0]], y=[0, 1], yaxis="y2", mode="lines", showlegend=False,
                             line=dict(color="black", dash="dot"), hoverinfo="skip"), row=1, col=2)
    marker = len(fig.data) - 1
    fig.data[marker].update(yaxis="y3")
    # Learning rates at which a seed diverged: an x along the top of the right panel, drawn
    # on the same unit overlay axis as the marker, so it sits there whatever the loss scale.
    for i, method in enumerate(methods):
        bad = stats[(stats["method"] == method) & (stats["diverged"] > 0)]
        fig.add_trace(go.Scatter(x=bad["lr"], y=[0.95 - 0.05 * i] * len(bad), mode="markers", xaxis="x2",
                                 yaxis="y3", marker=dict(symbol="x", size=9, color=color(method, i)),
                                 name=f"{label(method)}: diverged", legendgroup=method,
                                 showlegend=len(bad) > 0, customdata=bad["diverged"],
                                 hovertemplate="lr %{x:.3g}: %{customdata:.0%} of seeds diverged<extra></extra>"))
    fig.update_layout(yaxis3=dict(overlaying="y2", range=[0, 1], visible=False))
    steps = []
    for lr in lrs:
        xs, ys = [], []
        for method in methods:
            rows = curves_at[lr]
            rows = rows[rows["method"] == method]
            xs.append(rows["step"].tolist())
            ys.append(rows[curve_metric].tolist())
        diverged = ", ".join(label(m) for m in methods
                             if stats[(stats["method"] == m) & (stats["lr"] == lr)]["diverged"].gt(0).any())
        note = f"learning rate {lr:.3g}" + (f" — diverged: {diverged}" if diverged else "")
        steps.append(dict(method="update", label=f"{lr:.3g}",
                          args=[{"x": xs + [[lr, lr]], "y": ys + [[0, 1]]},
                                {"title.text": f"{title}<br><sub>{note}</sub>"},
                                list(range(len(methods))) + [marker]]))
    fig.update_layout(
        title=dict(text=f"{title}<br><sub>learning rate {lrs[0]:.3g}</sub>"),
        sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix="learning rate η = "),
                      pad=dict(t=50))],
        height=560, margin=dict(t=90, b=150), template="plotly_white",
        legend=dict(orientation="h", yanchor="top", y=-0.62, x=0))
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="learning rate η", type="log", row=1, col=2)
    fig.update_yaxes(title_text=curve_metric.replace("_", " "), type="log" if logy else "linear",
                     exponentformat="power", row=1, col=1)
    fig.update_yaxes(title_text=final_metric.replace("_", " "), type="log" if logy else "linear",
                     exponentformat="power", row=1, col=2)
    return fig


def slider_figure(table: pd.DataFrame, *, slider: str, x: str, y: str, series: str, title: str = "",
                  slider_label: str | None = None, x_title: str | None = None, y_title: str | None = None,
                  logx: bool = False, logy: bool = False, modes: dict[str, str] | None = None,
                  markers: dict[str, dict] | None = None, start: float | None = None,
                  second: str | None = None, second_label: str | None = None,
                  second_start: float | None = None, across_second: tuple = ()) -> go.Figure:
    """A kernel-free figure of curves that change with one or two parameters: one trace per
    value of ``series``, drawn from the rows whose ``slider`` column (and ``second`` column, if
    given) equal the sliders' values.

    ``modes`` maps a series to a plotly mode ("lines", "markers", "lines+markers", ...) and
    ``markers`` to extra marker settings (e.g. ``{"symbol": "circle-open", "size": 16}``);
    ``start`` and ``second_start`` pick the values shown first (default: the first).

    With ``second``, the figure holds one set of traces per value of ``second``, one set shown
    at a time: the first slider redraws every set, the second shows the set of its value, so the
    two sliders act independently in the browser with no script. A series whose rows are the
    same for every value of both sliders (a fixed curve) is drawn once and never redrawn. The
    series named in ``across_second`` follow the first slider only: their rows are picked by
    ``slider`` whatever their ``second`` column holds (a baseline without that parameter)."""
    values = sorted(table[slider].unique())
    own = ~table[series].isin(list(across_second))
    seconds = sorted(table.loc[own, second].unique()) if second else [None]
    names = list(dict.fromkeys(table[series]))
    first = _nearest(values, start)
    first_second = _nearest(seconds, second_start) if second else None
    modes, markers = modes or {}, markers or {}

    def rows(name, value, value2):
        chosen = (table[slider] == value) & (table[series] == name)
        if second and name not in across_second:
            chosen &= table[second] == value2
        return table[chosen]

    def fixed(name):
        reference = rows(name, values[0], seconds[0])[[x, y]].to_numpy()
        return all(np.array_equal(rows(name, v, v2)[[x, y]].to_numpy(), reference)
                   for v in values for v2 in seconds)

    static = [name for name in names if fixed(name)]
    dynamic = [name for name in names if name not in static]
    fig = go.Figure()

    def add(name, i, value, value2, visible, showlegend):
        r = rows(name, value, value2)
        marker = dict(size=11, color=color(name, i)) | markers.get(name, {})
        fig.add_trace(go.Scatter(x=r[x], y=r[y], name=label(name), mode=modes.get(name, "lines"),
                                 line=dict(color=color(name, i)), marker=marker, visible=visible,
                                 legendgroup=str(name), showlegend=showlegend))

    for name in static:
        add(name, names.index(name), values[0], seconds[0], True, True)
    redrawn = []  # indices of the traces the first slider redraws, set by set
    for value2 in seconds:
        for name in dynamic:
            redrawn.append(len(fig.data))
            add(name, names.index(name), first, value2, value2 == first_second, True)
    steps = []
    for value in values:
        xs, ys = [], []
        for value2 in seconds:
            for name in dynamic:
                r = rows(name, value, value2)
                xs.append(r[x].tolist())
                ys.append(r[y].tolist())
        steps.append(dict(method="restyle", label=f"{value:.3g}", args=[{"x": xs, "y": ys}, redrawn]))
    sliders = [dict(active=values.index(first), steps=steps, pad=dict(t=45),
                    currentvalue=dict(prefix=f"{slider_label or slider} = "))]
    if second:
        shown = [[s == value2 for s in seconds for _ in dynamic] for value2 in seconds]
        sliders.append(dict(active=seconds.index(first_second), pad=dict(t=125),
                            currentvalue=dict(prefix=f"{second_label or second} = "),
                            steps=[dict(method="restyle", label=f"{value2:.3g}", args=[{"visible": visible}, redrawn])
                                   for value2, visible in zip(seconds, shown)]))
    fig.update_layout(
        title=title, template="plotly_white", height=470 + 80 * (len(sliders) - 1),
        margin=dict(t=60, b=130 + 80 * (len(sliders) - 1)), sliders=sliders,
        legend=dict(orientation="h", yanchor="top", y=-0.5 - 0.25 * (len(sliders) - 1), x=0))
    fig.update_xaxes(title_text=x_title or x, type="log" if logx else "linear")
    fig.update_yaxes(title_text=y_title or y, type="log" if logy else "linear", exponentformat="power")
    return fig


def _nearest(values: list, target: float | None):
    """The value closest to ``target``, the first when there is none."""
    return values[0] if target is None else values[int(np.argmin(np.abs(np.asarray(values) - target)))]


class KernelFreeFigure:
    """Displays a plotly figure in the rendered book without a kernel or a network.

    Building the book (``IBTOOLS_BOOK=1``) emits HTML that uses the plotly.js the book serves
    from its ``_static`` folder; in Jupyter the figure is shown by plotly's own renderer."""

    def __init__(self, figure: go.Figure):
        self.figure = figure

    def _repr_mimebundle_(self, include=None, exclude=None):
        if os.environ.get("IBTOOLS_BOOK") == "1":
            html = self.figure.to_html(full_html=False, include_plotlyjs=False, config={"responsive": True})
            return {"text/html": html, "text/plain": "<interactive figure>"}
        return self.figure._repr_mimebundle_(include, exclude)


def show(figure: go.Figure) -> KernelFreeFigure:
    """Wrap a plotly figure so it renders both in Jupyter and in the offline HTML book."""
    return KernelFreeFigure(figure)
