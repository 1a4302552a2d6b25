"""The planner's probe of the training loop."""

from __future__ import annotations

import time

import pytest
import torch
from conftest import TinyConfig, make_regression

from ibtools import plan, train

# --- the probe --------------------------------------------------------------------------------------

def test_the_probe_reports_the_runs_shape_and_stops_it_early(tiny_experiment):
    config = TinyConfig(method="sgd", lr=0.1, epochs=3)  # 64 examples in batches of 16
    returned = "not returned"
    with plan.probe(steps=2, warmup=1) as measured:
        returned = tiny_experiment.run(config)
    assert returned == "not returned"  # stopped inside the training loop, after 3 of its 12 steps
    assert measured.stopped and measured.timed_steps == 2
    assert (measured.steps_per_epoch, measured.epochs, measured.evals_per_epoch) == (4, 3, 1)
    assert measured.step_s > 0 and measured.eval_s > 0 and measured.setup_s >= 0
    rows = tiny_experiment.run(config)  # outside the probe the same run is whole
    assert sum(row["kind"] == "step" for row in rows) == 12


def test_a_run_shorter_than_the_probe_is_timed_whole(tiny_experiment):
    with plan.probe(steps=50) as measured:
        rows = tiny_experiment.run(TinyConfig(method="sgd", lr=0.1, epochs=3))
    assert not measured.stopped and len(rows) == 12 + 4
    assert measured.timed_steps == 12 - 2  # after the two warm-up steps


class SlowAtEpochEnds(train.WatchedOptimizer):
    """Sleeps 50 ms after the last step of each epoch, as an experiment recording something would."""

    def __init__(self, optimizer, steps_per_epoch):
        super().__init__(optimizer)
        self.steps_per_epoch = steps_per_epoch

    def after(self, loss):
        if self.steps % self.steps_per_epoch == 0:
            time.sleep(0.05)


def test_the_probe_times_the_optimizers_end_of_epoch_work_once_and_evaluates_a_slice():
    data = make_regression(n_train=640, n_test=160)
    with plan.probe(steps=3, warmup=1) as measured:
        train.train(torch.nn.Linear(3, 1), data,
                    lambda m: SlowAtEpochEnds(torch.optim.SGD(m.parameters(), lr=0.01), 40),
                    loss="least_squares", epochs=2, batch_size=16, seed=0, device="cpu", evals_per_epoch=2)
    assert measured.epoch_end_s == pytest.approx(0.05, abs=0.04)
    assert measured.step_s < 0.02  # no step reached an epoch's end
    assert (measured.steps_per_epoch, measured.evals_per_epoch) == (40, 2)
    assert 0 < measured.eval_s < 1


class SlowSteps(train.WatchedOptimizer):
    def update(self, closure):
        time.sleep(10)


def test_at_its_time_limit_the_probe_interrupts_the_run_and_keeps_lower_bounds(tiny_experiment):
    start = time.perf_counter()
    with plan.probe(steps=3, limit_s=0.3) as measured:
        train.train(torch.nn.Linear(3, 1), make_regression(),
                    lambda m: SlowSteps(torch.optim.SGD(m.parameters(), lr=0.1)),
                    loss="least_squares", epochs=2, batch_size=16, seed=0, device="cpu")
    assert time.perf_counter() - start < 2
    assert measured.timed_out and measured.stopped and measured.timed_steps == 1
    assert 0.1 < measured.step_s < 0.3  # the step in progress, as far as it got
    assert measured.steps_per_epoch == 4


def test_probe_settings_are_checked():
    with pytest.raises(ValueError, match="steps >= 1"):
        with plan.probe(steps=0):
            pass
