"""The live panel of every chapter: a learning-rate slider first, then the method, seed and
scale controls, a Run button, a progress bar and a plot that updates.

The panel only turns control values into an experiment's configs and hands them to the
sweep runner; everything it computes goes through the same cache as the CLI, so a learning
rate run once is read back instantly afterwards.
"""

from __future__ import annotations

import os

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from . import plots
from .experiments import Experiment, get
from .sweep import run_columns

# With the config's fields, the columns that identify one row of a run, for merging tables of
# runs made at different times.
ROW_POSITION = ["kind", "step", "epoch"]


def lr_slider(lrs: list[float], value: float | None = None, description: str = "learning rate η") -> W.FloatLogSlider:
    """A log-scale slider spanning the learning rates of an experiment's grid."""
    low, high = np.log10(min(lrs)), np.log10(max(lrs))
    start = value if value is not None else float(np.median(lrs))
    return W.FloatLogSlider(value=start, base=10, min=low, max=high, step=(high - low) / 100,
                            description=description, readout_format=".3g", continuous_update=False,
                            style={"description_width": "initial"}, layout=W.Layout(width="480px"))


class LearningRatePanel:
    """Run one experiment at a learning rate picked on a slider and see where it lands.

    Left: training curves at the chosen learning rate. Right: the final metric against every
    learning rate run so far (at this scale), so dragging the slider and pressing Run traces
    out the learning-rate sensitivity curve point by point."""

    def __init__(self, experiment: Experiment | str, *, metric: str | None = None,
                 curve_metric: str = "train_loss", curve_kind: str = "epoch",
                 lr: float | None = None, logy: bool = True, **fixed):
        self.experiment = get(experiment) if isinstance(experiment, str) else experiment
        self.metric = metric or self.experiment.metric
        self.curve_metric, self.curve_kind, self.logy, self.fixed = curve_metric, curve_kind, logy, fixed
        grid = self.experiment.grid("reduced", **fixed)
        methods = list(dict.fromkeys(c.method for c in grid))
        self.slider = lr_slider(sorted({c.lr for c in grid}), lr)
        self.methods = W.SelectMultiple(options=methods, value=tuple(methods), description="methods",
                                        rows=min(4, len(methods)))
        self.seeds = W.IntSlider(value=1, min=1, max=5, description="seeds")
        self.scale = W.ToggleButtons(options=["reduced", "full"], value="reduced", description="scale",
                                     tooltips=["CPU, seconds", "the paper's setup: needs a GPU and the full data"])
        self.button = W.Button(description="Run", button_style="primary", icon="play")
        self.progress = W.Output()
        self.plot = W.Output()
        self.results: dict[str, pd.DataFrame] = {}
        self.button.on_click(lambda _: self.run())
        self.widget = W.VBox([self.slider, W.HBox([self.methods, W.VBox([self.seeds, self.scale])]),
                              self.button, self.progress, self.plot])

    def run(self) -> pd.DataFrame:
        """Run the current selection (cached runs are read back) and redraw."""
        self.button.disabled = True
        try:
            with self.progress:
                self.progress.clear_output()
                table = self.experiment.sweep(self.scale.value, lrs=[float(self.slider.value)],
                                              methods=list(self.methods.value), seeds=self.seeds.value,
                                              **self.fixed)
            seen = self.results.get(self.scale.value)
            self.results[self.scale.value] = table if seen is None else (
                pd.concat([seen, table]).drop_duplicates(
                    subset=run_columns(table) + [c for c in ROW_POSITION if c in table]))
            self.draw(table)
        finally:
            self.button.disabled = False
        return table

    def draw(self, latest: pd.DataFrame) -> None:
        with self.plot:
            self.plot.clear_output(wait=True)
            fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
            plots.curves(latest, float(self.slider.value), self.curve_metric, self.curve_kind, ax=left,
                         logy=self.logy)
            plots.loss_vs_lr(self.results[self.scale.value], self.metric, ax=right, logy=self.logy)
            right.axvline(float(self.slider.value), color="black", ls=":", lw=1)
            fig.tight_layout()
            plt.show()

    def _ipython_display_(self):
        display(self.widget)


BOOK_NOTE = ("*Live panel: open this chapter as a notebook (`jupyter lab book/` in a clone of the "
             "repository) to drive it. The figure below replays a precomputed grid without a kernel.*")


def explorer(draw, *, lr: float = 1.0, lr_range: tuple[float, float] = (1e-3, 1e3), **controls):
    """Redraw ``draw(lr=..., **values)`` as the sliders move: a log-scale learning-rate slider
    first, then one control per keyword (an ipywidgets widget, or anything ``interactive``
    accepts, such as a ``(min, max, step)`` tuple or a list of options). For the formulas of a
    chapter that need no training; in the rendered book, the pointer to the notebook."""
    if os.environ.get("IBTOOLS_BOOK") == "1":
        return Markdown(BOOK_NOTE)
    return W.interactive(draw, lr=lr_slider(list(lr_range), lr), **controls)


def panel(experiment: Experiment | str, **kwargs):
    """The chapter's live panel; in the rendered book (no kernel) a pointer to the notebook instead."""
    if os.environ.get("IBTOOLS_BOOK") == "1":
        return Markdown(BOOK_NOTE)
    return LearningRatePanel(experiment, **kwargs)
