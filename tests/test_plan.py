"""The planner: kinds of runs, the probe of the training loop, the projection, plan files, jobs, the CLI."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time

import pandas as pd
import pytest
import torch
from conftest import TinyConfig, make_regression
from hypothesis import given, settings
from hypothesis import strategies as st

import ibtools.__main__ as cli
from ibtools import plan, train
from ibtools.experiments import get
from ibtools.experiments.ch03_ib_vs_eb import IBRunConfig

# --- kinds ----------------------------------------------------------------------------------------


def test_learning_rates_seeds_and_cost_free_settings_do_not_split_kinds():
    grid = get("ib-mnist").grid("full")  # EB, IB under 2 conventions, exact ISGD x 22 rates x 20 seeds, 3 costs
    kinds = plan.group_kinds(grid)
    assert len({c.lr for c in grid}) == 22 and len({c.seed for c in grid}) == 20
    assert [len(runs) for runs in kinds.values()] == [22 * 20, 2 * 22 * 20, 22 * 20]
    assert {c.minibatch for c in list(kinds.values())[1]} == {"per-example", "loss-share"}
    assert plan.kind_labels(list(kinds)) == ["method=eb", "method=ib", "method=exact-isgd"]
    deep = plan.group_kinds(get("sibp-deep").grid("full"))  # 4 methods x 3 initialisations (init_std)
    assert len(deep) == 4 and all(len(runs) == 3 for runs in deep.values())


def test_datasets_architectures_methods_and_clipping_on_or_off_split_kinds():
    music = plan.group_kinds(get("ib-music").grid("full"))
    assert len(music) == 4 * 2  # datasets x methods
    base = IBRunConfig(task="music", dataset="jsb-chorales", method="eb", lr=0.1)

    def key(**changes):
        return plan.cost_key(dataclasses.replace(base, **changes))

    assert key() == key(lr=1.0, seed=3)
    assert key(clip=8.0) == key(clip=0.1) != key()  # a threshold costs its norm, whatever it is
    assert key() != key(method="ib")
    assert key() != key(dataset="nottingham")
    exact_net = get("isgd-exact-net")
    assert plan.cost_key(exact_net.grid("full")[0]) != plan.cost_key(exact_net.grid("reduced")[0])  # convnet, mlp
    clipping = plan.group_kinds(get("ib-clipping").grid("full"))
    assert len(clipping) == 6 * 2  # the thresholds of a dataset cost alike


# --- the projection --------------------------------------------------------------------------------

def test_makespan_of_hand_computed_schedules():
    # 3, 3 start at once; the 2s go to whichever worker is free first
    assert plan.makespan([3, 3, 2, 2, 2], 2) == 7
    assert plan.makespan([5, 1, 1, 1, 1, 1], 2) == 5
    assert plan.makespan([1, 1, 1, 1, 1, 5], 2) == 7  # grid order matters: the long run last, not 5
    assert plan.makespan([2.0, 4.0], 8) == 4.0
    with pytest.raises(ValueError, match="at least one worker"):
        plan.makespan([1.0], 0)


def brute_force_greedy(durations, workers):
    """The pool simulated clock tick by clock tick (integer durations): a free worker takes
    the next run in order; the lowest-numbered free worker first."""
    busy_until, queue, clock = [0] * workers, list(durations), 0
    while queue or any(t > clock for t in busy_until):
        for w in range(workers):
            if busy_until[w] <= clock and queue:
                busy_until[w] = clock + queue.pop(0)
        if queue or any(t > clock for t in busy_until):
            clock += 1
    return max([clock] + busy_until)


def optimal(durations, workers):
    best = math.inf
    for assignment in itertools.product(range(workers), repeat=len(durations)):
        loads = [0] * workers
        for d, w in zip(durations, assignment):
            loads[w] += d
        best = min(best, max(loads))
    return best


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=7), st.integers(1, 3))
def test_makespan_is_the_pool_simulated_and_within_grahams_bound_of_the_optimum(durations, workers):
    span = plan.makespan(durations, workers)
    assert span == brute_force_greedy(durations, workers)
    best = optimal(durations, workers)
    assert best <= span <= (2 - 1 / workers) * best
    assert plan.projected_wall_s(durations, 1, startup_s=9.0) == sum(durations)  # in-process, no pool
    assert plan.projected_wall_s(durations, workers + 1, startup_s=2.0, slowdown=1.5) == pytest.approx(
        2.0 + 1.5 * plan.makespan(durations, workers + 1))


def test_more_single_threaded_workers_than_cores_slow_each_run_down():
    assert plan.cpu_slowdown(2, 2) == 1.0
    assert plan.cpu_slowdown(1, 8) == 1.0
    assert plan.cpu_slowdown(6, 2) == 3.0


def test_a_run_is_setup_evaluations_and_epochs():
    kind = dict(steps_per_epoch=10, s_per_step=0.5, epoch_end_s=1.0, evals_per_epoch=2, eval_s=3.0, setup_s=4.0,
                epochs=3, wall_s=99.0)
    assert plan.epoch_seconds(kind) == 10 * 0.5 + 1.0 + 2 * 3.0
    assert plan.run_seconds(kind) == 4.0 + 3.0 + 3 * 12.0
    assert plan.run_seconds({**kind, "steps_per_epoch": 0}) == 99.0  # no training loop: timed whole


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


def test_on_cuda_the_probe_never_times_a_runs_first_steps(monkeypatch):
    """A CUDA graph's warm-up and capture, and torch.compile's compiling, are one-off costs:
    on CUDA the first steps go untimed even when the probe is asked for no warm-up."""
    monkeypatch.setattr(plan, "sync", lambda device: None)
    for device, untimed in (("cuda", plan.CUDA_WARMUP), ("cpu", 0)):
        probe = plan.Probe(steps=10, warmup=0, budget_s=10.0)
        probe._device = torch.device(device)
        for _ in range(untimed + 1):
            probe.stepped(None, 1.0, 1, False)
        assert (len(probe._warm_s), len(probe._timed)) == (untimed, 1)


def test_a_run_shorter_than_the_probe_is_timed_whole(tiny_experiment):
    with plan.probe(steps=50, warmup=2) as measured:
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


# --- choosing the number of workers ------------------------------------------------------------------

def test_the_fewest_workers_within_five_percent_of_the_best_throughput():
    assert plan.choose_jobs({1: 10.0, 2: 18.0, 4: 19.5, 8: 19.6}) == 4
    assert plan.choose_jobs({1: 10.0, 2: 9.0}) == 1  # sharing the GPU only slows it down
    assert plan.choose_jobs({1: 1.0, 2: 2.0, 4: 4.0}) == 4
    with pytest.raises(ValueError, match="no throughput"):
        plan.choose_jobs({})


def test_workers_are_bounded_by_gpu_memory_and_cpu_cores():
    gb = 1e9
    assert plan.jobs_that_fit(9.5 * gb, 80 * gb, cores=16, context_bytes=0.5 * gb) == 8
    assert plan.jobs_that_fit(0.5 * gb, 80 * gb, cores=16, context_bytes=0.5 * gb) == 16
    assert plan.jobs_that_fit(100 * gb, 80 * gb, cores=16, context_bytes=0.5 * gb) == 1
    assert plan.jobs_that_fit(math.nan, 80 * gb, cores=16) == 1
    assert plan.concurrency_counts(1) == [1]
    assert plan.concurrency_counts(8) == [1, 2, 4, 8]
    assert plan.concurrency_counts(6) == [1, 2, 4, 6]
    assert plan.gpu_slowdown(2, {1: 10.0, 2: 16.0}) == pytest.approx(1.25)
    assert plan.gpu_slowdown(4, {1: 10.0, 2: 16.0}) == 1.0  # not measured: the plan says so


def test_run_defaults_to_the_workers_a_plan_found_fill_the_card():
    table = pd.DataFrame(columns=plan.COLUMNS)
    measured = plan.Plan("x", "full", "cuda", 2, table, dict(gpus=2, jobs_fit_per_gpu=6, jobs_best_per_gpu=3))
    assert plan.fill_jobs(measured) == 6
    assert plan.fill_jobs(plan.Plan("x", "full", "cuda", 1, table, dict(gpus=1, jobs_fit_per_gpu=5))) == 5
    assert plan.default_jobs("sibp-mnist", "full", device="cpu") == 1


def test_a_cuda_plan_takes_the_measured_best_workers_and_their_slowdown():
    gb = 1e9
    table = pd.DataFrame([dict(kind="all runs", runs=4, s_per_run=10.0, peak_bytes=20 * gb, host_peak_bytes=gb,
                               timed_out=False, steps_per_epoch=1)], columns=plan.COLUMNS)
    machine = dict(device="NVIDIA H200", threads=16, startup_s=3.0, cores=16, free_bytes=140 * gb, gpus=1,
                   context_bytes=0.5 * gb)
    settings = dict(command="test", steps=5, limit_s=30.0)
    throughputs = {1: 0.1, 2: 0.18, 4: 0.19}  # runs per second
    measured = plan._plan(get("sgdl"), "full", torch.device("cuda"), "best", table, [10.0] * 4, {"cifar10"}, machine,
                          throughputs, settings)
    assert measured.jobs == 4 and measured.totals["jobs_best_per_gpu"] == 4
    assert measured.totals["jobs_fit_per_gpu"] == 6  # 140 GB / 20.5 GB
    assert measured.totals["slowdown"] == pytest.approx(4 * 0.1 / 0.19)
    assert measured.totals["wall_s"] == pytest.approx(3.0 + 4 * 0.1 / 0.19 * 10.0)
    unmeasured = plan._plan(get("sgdl"), "full", torch.device("cuda"), 2, table, [10.0] * 4, {"cifar10"}, machine,
                            None, settings)
    assert unmeasured.totals["slowdown"] == 1.0 and any("--jobs best" in note for note in unmeasured.notes)
    assert plan.fill_jobs(measured) == 4 and plan.fill_jobs(unmeasured) == 6


# --- a real preset, end to end ---------------------------------------------------------------------

def test_plan_of_a_full_preset_writes_a_file_that_reads_back_with_provenance(tmp_path, capsys):
    assert cli.main(["plan", "sibp-vanishing", "--device", "cpu", "--steps", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "sibp-vanishing" / "full" / "plan-cpu.json"
    assert f"wrote {path}" in out and "projected wall time" in out and "method=sibp, batch_size=10" in out
    read = plan.read_plan(path)
    assert (read.experiment, read.scale, read.device, read.jobs) == ("sibp-vanishing", "full", "cpu", 1)
    kinds = read.kinds
    assert list(kinds.columns) == plan.COLUMNS and len(kinds) == 4 and kinds["runs"].sum() == 4
    assert (kinds["steps_per_epoch"] == [10, 1, 10, 1]).all() and (kinds["epochs"] == [300, 3000, 300, 3000]).all()
    assert (kinds["timed_steps"] >= 1).all() and (kinds["s_per_step"] > 0).all()
    assert read.totals["wall_s"] == pytest.approx((kinds["runs"] * kinds["s_per_run"]).sum())
    assert read.totals["download_bytes"] == 0 and read.totals["datasets"] == []
    provenance = read.provenance
    assert provenance["command"] == f"python -m ibtools plan sibp-vanishing --device cpu --steps 2 --out {tmp_path}"
    assert provenance["device"].startswith("CPU") and provenance["torch"] == torch.__version__
    for key in ("date", "ibtools", "git_commit", "threads", "load_average"):
        assert provenance[key] not in (None, "")
    assert plan.load_plan("sibp-vanishing", "full", "cpu", results_dir=tmp_path).totals == read.totals
    assert plan.load_plan("sibp-vanishing", "full", "cuda", results_dir=tmp_path) is None
    assert json.loads(path.read_text())["notes"]


def test_a_chapter_shows_the_command_the_committed_result_and_the_plan_with_its_provenance(tmp_path, capsys):
    assert cli.main(["plan", "sibp-vanishing", "--device", "cpu", "--steps", "2", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    written = plan.read_plan(tmp_path / "sibp-vanishing" / "full" / "plan-cpu.json")
    lines = plan.full_scale_summary("sibp-vanishing", tmp_path).splitlines()
    assert lines[0] == "sibp-vanishing: python -m ibtools run sibp-vanishing --scale full --out book/results"
    assert lines[1] == "  no full-scale result is committed yet"
    assert lines[2].startswith(f"  plan on {written.provenance['device']}, {written.provenance['date'][:10]} "
                               f"({written.provenance['command']}): 4 runs of 4 kind(s), projected "
                               f"{plan.format_seconds(written.totals['wall_s'])} with --jobs 1")
    written.totals["lower_bound"] = True  # a probe stopped at its time limit
    plan.write_plan(written, tmp_path)
    assert "projected >= " in plan.full_scale_summary("sibp-vanishing", tmp_path)
    assert plan.full_scale_summary("sibp-vanishing", tmp_path / "elsewhere").splitlines()[1:] == [
        "  no full-scale result is committed yet"]


# --- the command line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["plan", "ib-mnsit", "--device", "cpu"], "unknown experiment 'ib-mnsit'. Did you mean 'ib-mnist'?"),
    (["plan", "--device", "cpu"], "give one experiment name"),
    (["plan", "ib-mnist", "--all"], "give one experiment name"),
    (["plan", "ib-mnist", "--device", "cpu", "--jobs", "best"], "on the CPU give a number"),
    (["plan", "ib-mnist", "--device", "gpu"], "unknown device 'gpu'"),
])
def test_plan_errors_exit_2_naming_the_fix(args, message, tmp_path, capsys):
    assert cli.main([*args, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_plan_on_cuda_without_a_gpu_exits_2_naming_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["plan", "ib-mnist", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "--device cpu" in capsys.readouterr().err


def test_plan_jobs_must_be_a_count_or_best(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["plan", "ib-mnist", "--jobs", "0"])
    assert exit_.value.code == 2 and "--jobs" in capsys.readouterr().err
