"""The live panel of every chapter: step-size sliders first (a learning rate; for methods with
a proximal parameter, their step η and λ), then the method, seed and scale controls, a Run
button, a progress bar and a plot that updates.

The panel only turns control values into an experiment's configs and hands them to the
sweep runner; everything it computes goes through the same cache as the CLI, so a learning
rate run once is read back instantly afterwards.
"""

from __future__ import annotations

import os

import ipywidgets as W
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from . import plots
from .experiments import Experiment, get
from .sweep import run_columns

# With the config's fields, the columns that identify one row of a run, for merging tables of
# runs made at different times.
ROW_POSITION = ["kind", "step", "epoch"]


def lr_slider(lrs: list[float], value: float | None = None, description: str = "learning rate η",
              margin: float = 0.0) -> W.FloatLogSlider:
    """A log-scale slider spanning the values of an experiment's grid and ``margin`` decades
    beyond it either side (widened to a decade either side of a grid narrower than two decades,
    so that there is room to move)."""
    low, high = np.log10(min(lrs)) - margin, np.log10(max(lrs)) + margin
    if high - low < 2:
        low, high = low - 1, high + 1
    start = value if value is not None else float(np.median(lrs))
    return W.FloatLogSlider(value=start, base=10, min=low, max=high, step=(high - low) / 100,
                            description=description, readout_format=".3g", continuous_update=False,
                            style={"description_width": "initial"}, layout=W.Layout(width="480px"))


def is_proximal(config) -> bool:
    """Whether a run's update has a proximal parameter: its config has a nonzero ``lam``."""
    return bool(getattr(config, "lam", 0))


def _names(methods: list[str]) -> str:
    return ", ".join(plots.label(m) for m in methods)


class LearningRatePanel:
    """Run one experiment at step sizes picked on sliders and see where they land.

    Methods whose configs carry a proximal parameter ``lam`` (SIBP, ProxBP, BCD) get two
    sliders, their step η and λ; the others (SGD, Adam, ...) a learning-rate slider. Left:
    training curves of the latest runs. Right: the final metric against the step size over
    every run so far at this scale (the proximal methods' at the current λ), so dragging the
    sliders and pressing Run traces out the sensitivity curves point by point. ``figure``, a
    function ``figure(table, fig=...)`` of the table of every run so far that draws on the
    matplotlib figure ``fig``, replaces those two plots by a chapter's own (e.g.
    :func:`ibtools.plots.exploration_measures`).

    Every run is drawn, diverged ones included (their losses are plotted up to where they
    stopped and marked ``x``). The figures are made with :func:`ibtools.plots.detached_figure`,
    never through pyplot, so that no other kernel thread draws them while Run builds them."""

    def __init__(self, experiment: Experiment | str, *, metric: str | None = None,
                 curve_metric: str = "train_loss", curve_kind: str = "epoch",
                 lr: float | None = None, eta: float | None = None, lam: float | None = None,
                 logy: bool = True, figure=None, **fixed):
        self.experiment = get(experiment) if isinstance(experiment, str) else experiment
        self.metric = metric or self.experiment.metric
        self.curve_metric, self.curve_kind, self.logy, self.fixed = curve_metric, curve_kind, logy, fixed
        self.figure = figure
        grid = self.experiment.grid("reduced", **fixed)
        methods = list(dict.fromkeys(c.method for c in grid))
        self.proximal = list(dict.fromkeys(c.method for c in grid if is_proximal(c)))
        plain = [m for m in methods if m not in self.proximal]
        self.slider = self.eta = self.lam = None
        if plain:
            description = f"learning rate ({_names(plain)})" if self.proximal else "learning rate η"
            self.slider = lr_slider(sorted({c.lr for c in grid if c.method in plain}), lr, description)
        if self.proximal:
            chosen = [c for c in grid if c.method in self.proximal]
            # a decade past the preset: the proximal methods' claim is stability at large steps
            self.eta = lr_slider(sorted({c.lr for c in chosen}), eta, f"η ({_names(self.proximal)})", margin=1)
            self.lam = lr_slider(sorted({c.lam for c in chosen}), lam, f"λ ({_names(self.proximal)})", margin=1)
        self.methods = W.SelectMultiple(options=methods, value=tuple(methods), description="methods",
                                        rows=min(4, len(methods)))
        self.seeds = W.IntSlider(value=1, min=1, max=5, description="seeds")
        self.scale = W.ToggleButtons(options=["reduced", "full"], value="reduced", description="scale",
                                     tooltips=["CPU, seconds", "the paper's setup: needs a GPU and the full data"])
        self.button = W.Button(description="Run", button_style="primary", icon="play")
        self.progress = W.Output()
        self.plot = W.Output()
        self.results: dict[str, pd.DataFrame] = {}
        self._confirmed: tuple[str, int] | None = None  # the full-scale selection whose cost was shown, its jobs
        self.button.on_click(lambda _: self.run())
        sliders = [s for s in (self.slider, self.eta, self.lam) if s is not None]
        self.widget = W.VBox(sliders + [W.HBox([self.methods, W.VBox([self.seeds, self.scale])]),
                                        self.button, self.progress, self.plot])

    def _selections(self) -> list[dict]:
        """The grid axes of what Run computes: one set for the methods with a learning rate, one
        for those with a step η and a proximal λ."""
        chosen = list(self.methods.value)
        plain = [m for m in chosen if m not in self.proximal]
        proximal = [m for m in chosen if m in self.proximal]
        common = dict(seeds=self.seeds.value, **self.fixed)
        selections = []
        if plain:
            selections.append(dict(lrs=[float(self.slider.value)], methods=plain, **common))
        if proximal:
            selections.append(dict(lrs=[float(self.eta.value)], lams=[float(self.lam.value)], methods=proximal,
                                   **common))
        return selections

    def _full_scale_plan(self, jobs: int) -> str:
        """What Run at full scale will cost at ``jobs`` workers, from :mod:`ibtools.plan`: the
        runs not yet cached, timed a few steps each on stand-in data; the confirmation message
        ("" when every run is cached)."""
        from . import plan
        from .sweep import missing

        configs = [c for axes in self._selections() for c in self.experiment.grid("full", **axes)]
        todo = missing(configs, experiment=self.experiment.name, version=self.experiment.version)
        if not todo:
            return ""
        projected = plan.plan_grid(self.experiment, todo, jobs=jobs)
        totals = projected.totals
        return (f"Full scale: {len(todo)} run(s) to compute ({len(configs) - len(todo)} cached), projected "
                f"{plan.format_seconds(totals['wall_s'])} on {projected.provenance['device']} with {jobs} "
                f"worker(s); download {plan.format_bytes(totals['download_bytes'])}, peak memory "
                f"{plan.format_bytes(totals['peak_bytes'])} a run. Press the button again to start.")

    def run(self) -> pd.DataFrame:
        """Run the current selection (cached runs are read back) and redraw. At full scale the
        first press says what the runs will cost and the second, with nothing changed, starts
        them on the workers that fill this machine (the path ``python -m ibtools run`` takes)."""
        self.button.disabled = True
        try:
            with self.progress:
                self.progress.clear_output()
                if not self.methods.value:
                    print("select at least one method")
                    return pd.DataFrame()
                jobs = 1
                if self.scale.value == "full":
                    from .plan import default_jobs

                    selection = repr(self._selections())
                    if self._confirmed is None or self._confirmed[0] != selection:
                        # what fills this machine, found once: the runs start on as many
                        jobs = default_jobs(self.experiment.name, "full")
                        message = self._full_scale_plan(jobs)
                        if message:
                            self._confirmed = (selection, jobs)
                            self.button.description = "Start full-scale runs"
                            print(message)
                            return pd.DataFrame()
                    else:
                        jobs = self._confirmed[1]
                self._confirmed = None
                self.button.description = "Run"
                tables = [self.experiment.sweep(self.scale.value, jobs=jobs, **axes) for axes in self._selections()]
            table = pd.concat(tables, ignore_index=True)
            table.attrs["config_fields"] = tables[0].attrs["config_fields"]
            seen = self.results.get(self.scale.value)
            if seen is not None:
                merged = pd.concat([seen, table], ignore_index=True)
                merged = merged.drop_duplicates(subset=run_columns(table) + [c for c in ROW_POSITION if c in table])
                merged.attrs["config_fields"] = table.attrs["config_fields"]
            self.results[self.scale.value] = table if seen is None else merged
            self.draw(table)
        finally:
            self.button.disabled = False
        return table

    def at_current_lam(self, table: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``table`` the step-size curve shows: every run of a method without λ,
        and the proximal methods' runs at the λ on the slider."""
        if self.lam is None or "lam" not in table:
            return table
        keep = ~table["method"].isin(self.proximal) | np.isclose(table["lam"], float(self.lam.value), rtol=1e-9)
        out = table[keep]
        out.attrs = dict(table.attrs)
        return out

    def title(self) -> str:
        parts = []
        if self.slider is not None and set(self.methods.value) - set(self.proximal):
            parts.append(f"lr = {self.slider.value:.3g}")
        if self.eta is not None and set(self.methods.value) & set(self.proximal):
            parts.append(f"η = {self.eta.value:.3g}, λ = {self.lam.value:.3g}")
        return "training at " + "; ".join(parts)

    def draw(self, latest: pd.DataFrame) -> None:
        """Redraw the plot from ``latest`` (the runs of the last Run) and every run so far."""
        fig = plots.detached_figure()
        if self.figure is not None:
            self.figure(self.results[self.scale.value], fig=fig)
        else:
            left, right = plots.subplots(2, (11, 3.8), fig)
            plots.curves(latest, None, self.curve_metric, self.curve_kind, ax=left, logy=self.logy,
                         title=self.title())
            suffix = f" (λ = {self.lam.value:.3g})" if self.lam is not None else ""
            plots.loss_vs_lr(self.at_current_lam(self.results[self.scale.value]), self.metric, ax=right,
                             logy=self.logy, title=f"{self.metric.replace('_', ' ')} after training{suffix}")
            for slider in (self.slider, self.eta):
                if slider is not None:
                    right.axvline(float(slider.value), color="black", ls=":", lw=1)
        image = plots.png(fig)
        with self.plot:
            self.plot.clear_output(wait=True)
            display(image)

    def _ipython_display_(self):
        display(self.widget)


BOOK_NOTE = ("*Live panel: open this chapter as a notebook (`jupyter lab book/` in a clone of the "
             "repository) to drive it. The figure below replays a precomputed grid without a kernel.*")


def explorer(draw, *, lr: float = 1.0, lr_range: tuple[float, float] = (1e-3, 1e3), **controls):
    """Redraw ``draw(fig, lr=..., **values)`` as the sliders move: ``draw`` draws on the
    matplotlib figure ``fig`` (a :func:`ibtools.plots.detached_figure`, for the reason given
    there), which is then shown. A log-scale learning-rate slider comes first, then one control
    per keyword (an ipywidgets widget, or anything ``interactive`` accepts, such as a
    ``(min, max, step)`` tuple or a list of options). For the formulas of a chapter that need
    no training; in the rendered book, the pointer to the notebook."""
    if os.environ.get("IBTOOLS_BOOK") == "1":
        return Markdown(BOOK_NOTE)

    def redraw(**values):
        fig = plots.detached_figure()
        draw(fig, **values)
        display(plots.png(fig))

    return W.interactive(redraw, lr=lr_slider(list(lr_range), lr), **controls)


def panel(experiment: Experiment | str, **kwargs):
    """The chapter's live panel; in the rendered book (no kernel) a pointer to the notebook instead."""
    if os.environ.get("IBTOOLS_BOOK") == "1":
        return Markdown(BOOK_NOTE)
    return LearningRatePanel(experiment, **kwargs)
