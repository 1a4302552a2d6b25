"""The speed benchmarks (ibtools.bench and benchmarks/*.py) measure what they say.

Their timing helpers alternate and divide as documented; ib_overhead and sibp take each step
as the training loop takes it (make_step and a BatchClosure), warm a captured step up past its
capture before timing, and report which steps replayed graphs (on this CPU, through GraphStep
with a capture that replays by calling the step); the epoch benchmark runs the training loop
itself on data of the papers' shapes with the chapters' configurations, and its step counts,
scaling and ratios follow from what it timed. Timings are shortened to a few blocks here.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from test_steps import replaying_capture

import ibtools.train as train_module
from ibtools import bench
from ibtools.__main__ import load_benchmark
from ibtools.experiments import ch03_ib_vs_eb as ch03
from ibtools.experiments import ch04_sibp as ch04
from ibtools.experiments import ch07_large_lr as ch07
from ibtools.models import CIFARResNet
from ibtools.sibp import SIBP
from ibtools.steps import EagerStep, GraphStep
from ibtools.train import StepDecay, make_step

CPU = torch.device("cpu")


# --- ibtools.bench ----------------------------------------------------------------------------------

def test_timed_blocks_alternate_the_order_of_the_functions_block_by_block():
    calls = []
    samples = bench.timed_blocks({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, CPU,
                                 blocks=3, number=2, warmup=1)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] + ["b", "b", "a", "a"] + ["a", "a", "b", "b"]
    assert [len(samples[name]) for name in "ab"] == [3, 3] and all(t > 0 for t in samples["a"] + samples["b"])


def test_median_ratio_is_the_median_of_the_blocks_ratios_not_the_ratio_of_medians():
    ib, eb = [4.0, 1.0, 9.0], [1.0, 1.0, 3.0]  # ratios 4, 1, 3
    assert bench.median_ratio(ib, eb) == 3.0
    assert statistics.median(ib) / statistics.median(eb) == 4.0
    with pytest.raises(ValueError, match="one time per block"):
        bench.median_ratio([1.0], [1.0, 2.0])


def _closure(model, optimizer):
    from ibtools.train import BatchClosure

    g = torch.Generator().manual_seed(0)
    return BatchClosure(model, torch.nn.functional.cross_entropy, optimizer, torch.rand(8, 4, generator=g),
                        torch.randint(0, 3, (8,), generator=g))


def test_after_warmup_calls_every_call_of_a_graph_step_replays_its_graph():
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = GraphStep(optimizer, capture=replaying_capture())
    closure = _closure(model, optimizer)
    warmup = bench.warmup_calls([step, EagerStep(optimizer)], eager=1)
    for _ in range(warmup):
        step(closure)
    assert step.captures == 1
    step(closure)
    assert step.replays == step.calls - step.warmup and step.captures == 1
    assert bench.warmup_calls([EagerStep(optimizer)], eager=3) == 3


def test_replays_graph_and_graph_captured_name_the_steps_that_replayed():
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    graph, unused = GraphStep(optimizer, capture=replaying_capture()), GraphStep(optimizer)
    watched = train_module._WatchedStep(StepDecay(optimizer, []), GraphStep(optimizer, capture=replaying_capture()))
    warming = GraphStep(optimizer, capture=replaying_capture())
    closure = _closure(model, optimizer)
    for _ in range(5):
        graph(closure), watched(closure)
    for _ in range(3):
        warming(closure)  # warm-up only: nothing replayed yet
    assert bench.replays_graph(graph) and bench.replays_graph(watched)
    assert not bench.replays_graph(unused) and not bench.replays_graph(warming)
    assert bench.graph_captured({"EB": graph, "IB": unused, "W": watched, "E": make_step(optimizer, CPU)}) == "EB, W"
    assert bench.graph_captured({"EB": EagerStep(optimizer)}) == "none"


def test_full_scale_precision_has_no_tf32_on_the_cpu():
    with bench.full_scale_precision(CPU) as used:
        assert used == {"tf32": False}


# --- ib_overhead and sibp ------------------------------------------------------------------------------

@pytest.fixture
def short_timing(monkeypatch):
    """Shorten a benchmark module's timed_blocks to two blocks of one call (its warm-up kept)
    and record what each call measured: ``record(module)`` patches ``module``."""
    measured = []

    def record(module):
        def timed(functions, device, blocks, number, warmup=3):
            samples = bench.timed_blocks(functions, device, blocks=2, number=1, warmup=warmup)
            measured.append((warmup, samples))
            return samples
        monkeypatch.setattr(module, "timed_blocks", timed)
        return measured
    return record


def test_ib_overhead_times_steps_as_train_takes_them_and_its_ratios_are_the_blocks(device, short_timing,
                                                                                  monkeypatch):
    module = load_benchmark("ib_overhead")
    made = []

    def spying_make_step(optimizer, dev, capture=None, model=None):
        made.append((dev, capture, model))
        return make_step(optimizer, dev, capture, model)
    monkeypatch.setattr(module, "make_step", spying_make_step)
    measured = short_timing(module)
    table = module.measure(device, quick=True)
    assert len(made) == 6 and all(d == device and m is not None for d, c, m in made)
    # the sweeps' way: captured where CUDA allows, but for the RNN, whose sweeps run eagerly
    assert [c for _, c, _ in made] == [None] * 4 + [False] * 2
    steps = [samples for _, samples in measured if "EB" in samples]
    assert len(steps) == 3
    for (_, row), samples in zip(table.iterrows(), steps):
        assert row["EB ms"] == pytest.approx(statistics.median(samples["EB"]) * 1e3)
        assert row["IB ms"] == pytest.approx(statistics.median(samples["IB"]) * 1e3)
        assert row["IB/EB"] == pytest.approx(bench.median_ratio(samples["IB"], samples["EB"]))
        assert row["EB ms"] > 0 and row["IB ms"] > 0 and row["alpha alone ms"] > 0
    assert list(table["captured"]) == (["EB, IB", "EB, IB", "none"] if device.type == "cuda" else ["none"] * 3)
    assert table.attrs["tf32"] == (device.type == "cuda")
    for column in ("architecture", "IB/EB", "bound, whole step", "EB ms", "IB ms", "bound, IB layers",
                   "paper measured"):  # what chapters 2 and 3 read
        assert column in table.columns


def _graph_steps(module, monkeypatch):
    """Make the module's steps GraphSteps whose capture replays by calling the step."""
    made = []

    def graph_make_step(optimizer, dev, capture=None, model=None):
        made.append(GraphStep(optimizer, capture=replaying_capture()))
        return made[-1]
    monkeypatch.setattr(module, "make_step", graph_make_step)
    return made


@pytest.mark.parametrize("name", ["ib_overhead", "sibp"])
def test_a_captured_step_is_warmed_up_and_captured_before_it_is_timed(name, short_timing, monkeypatch):
    module = load_benchmark(name)
    if name == "sibp":  # the shallow network shows it, in a fraction of the deep one's time
        monkeypatch.setattr(module, "NETWORKS", {"784-500-10": module.NETWORKS["784-500-10"]})
    made = _graph_steps(module, monkeypatch)
    short_timing(module)
    table = module.measure(CPU, quick=True)
    assert made and all(step.captures == 1 and step.replays == step.calls - step.warmup for step in made)
    timed_calls = 2  # two blocks of one call
    assert all(step.replays > timed_calls for step in made)
    expected = "EB, IB" if name == "ib_overhead" else "SGD, SIBP, ProxBP"
    assert set(table["captured"]) == {expected}


def test_sibp_times_steps_as_train_takes_them_and_its_ratios_are_the_blocks(device, short_timing):
    module = load_benchmark("sibp")
    measured = short_timing(module)
    table = module.measure(device, quick=True)
    assert len(measured) == 2
    for (_, row), (_, samples) in zip(table.iterrows(), measured):
        for method in ("SGD", "SIBP", "ProxBP"):
            seconds = statistics.median(samples[method])
            assert seconds > 0
            assert row[f"{method} ms/step"] == pytest.approx(seconds * 1e3)
            assert row[f"{method} s/epoch"] == pytest.approx(seconds * module.STEPS_PER_EPOCH)
        for method in ("SIBP", "ProxBP"):
            assert row[f"{method}/SGD"] == pytest.approx(bench.median_ratio(samples[method], samples["SGD"]))
    assert "SIBP/SGD" in table.columns and "network" in table.columns  # what chapter 4 reads
    if device.type == "cpu":
        assert set(table["captured"]) == {"none"}


# --- epoch ---------------------------------------------------------------------------------------------

def test_the_epoch_tasks_are_the_chapters_full_scale_configurations():
    module = load_benchmark("epoch")
    mnist, resnet, sibp = module.tasks()
    assert (mnist.rows, mnist.batch_size, mnist.shape) == (60_000, ch03.TASKS["mnist-classifier"][1], (1, 28, 28))
    eb, ib = (method.make_model() for method in mnist.methods)
    assert [m.name for m in mnist.methods] == ["EB", "IB"]
    assert (eb.head[0].mode, ib.head[0].mode) == ("explicit", "implicit")
    assert mnist.methods[1].make_optimizer(ib).param_groups[0]["lr"] in ch03.MNIST_LRS["full"]

    full = ch07.sgdl_configs("full", methods=["sgdm"])[0]
    assert (resnet.name, resnet.rows, resnet.batch_size, resnet.shape) == ("ResNet-56 CIFAR-10", 50_000,
                                                                           full.batch_size, (3, 32, 32))
    model = resnet.methods[0].make_model()
    optimizer = resnet.methods[0].make_optimizer(model)
    group = optimizer.optimizer.param_groups[0]
    assert isinstance(optimizer, StepDecay) and (group["momentum"], group["weight_decay"]) == (0.9, full.weight_decay)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in CIFARResNet(56, 10, 3, 16).parameters())
    x = torch.rand(2, 3, 32, 32)
    assert resnet.augment(x, torch.Generator().manual_seed(0)).shape == x.shape

    assert (sibp.rows, sibp.batch_size, [m.name for m in sibp.methods]) == (60_000, 100, ["SGD", "SIBP"])
    net = sibp.methods[1].make_model()
    solver = sibp.methods[1].make_optimizer(net)
    table2 = ch04.mnist_configs("full", methods=("sibp",), seeds=1)[0]
    assert isinstance(solver, SIBP)
    assert [m.out_features for m in net.modules() if hasattr(m, "out_features")] == [500, 10]
    group = solver.param_groups[0]
    assert (group["lr"], group["lam"], group["cg_iters"]) == (1.0, 1.0, table2.cg_iters)
    assert sibp.methods[0].make_optimizer(net).param_groups[0]["lr"] == 0.1


def _timed_epochs(module, monkeypatch):
    measured = []

    def timed(functions, device, blocks, number, warmup=3):
        samples = bench.timed_blocks(functions, device, blocks, number, warmup)
        measured.append(samples)
        return samples
    monkeypatch.setattr(module, "timed_blocks", timed)
    return measured


def test_the_epoch_benchmark_times_whole_epochs_of_the_loop_and_scales_them(device, monkeypatch):
    module = load_benchmark("epoch")
    measured = _timed_epochs(module, monkeypatch)
    table = module.measure(device, quick=True, repeats=3)
    assert list(table["task"]) == ["MNIST classifier"] * 2 + ["ResNet-8 CIFAR-10"] + ["784-500-10"] * 2
    assert list(table["method"]) == ["EB", "IB", "SGDM", "SGD", "SIBP"]
    assert (table["steps"] == module.QUICK_BATCHES).all()
    assert (table["rows"] == module.QUICK_BATCHES * table["batch"]).all()
    assert list(table["rows"] * table["scale"]) == pytest.approx([60_000] * 2 + [50_000] + [60_000] * 2)
    assert (table["epoch s"] > 0).all() and (table["evaluation s"] > 0).all()
    for (task, rows), samples in zip(table.groupby("task", sort=False), measured):
        epochs = {m: [two - one for one, two in zip(samples[m, 1], samples[m, 2])] for m in rows["method"]}
        baseline = rows["method"].iloc[0]
        for _, row in rows.iterrows():
            assert row["epoch s"] == pytest.approx(statistics.median(epochs[row["method"]]) * row["scale"])
            if row["method"] == baseline:
                assert math.isnan(row["ratio"])
            else:
                assert row["ratio"] == pytest.approx(bench.median_ratio(epochs[row["method"]], epochs[baseline]))
    expected = {"MNIST classifier": "epoch <= 0.5 s", "ResNet-8 CIFAR-10": "epoch <= 3 s",
                "784-500-10": "SIBP/SGD <= 5"}
    assert [expected[t] for t in table["task"]] == list(table["target"])
    if device.type == "cpu":
        assert set(table["captured"]) == {"eager"}


def test_an_epochs_steps_are_the_batches_of_the_rows_timed(monkeypatch):
    module = load_benchmark("epoch")
    monkeypatch.setattr(module, "tasks", lambda quick=False: [module.mnist_classifier()])
    table = module.measure(CPU, fraction=250 / 60_000, repeats=2)
    assert list(table["rows"]) == [250, 250] and list(table["steps"]) == [3, 3]  # 100 + 100 + 50
    assert list(table["scale"]) == pytest.approx([240.0, 240.0])


def test_epoch_main_says_that_cpu_seconds_are_scaled(monkeypatch, capsys):
    module = load_benchmark("epoch")
    monkeypatch.setattr(module, "tasks", lambda quick=False: [module.mnist_classifier()])
    module.main(CPU)
    out = capsys.readouterr().out
    assert "SCALED" in out and "evaluation included" in out and "epoch <= 0.5 s" in out and "TF32 off" in out


@pytest.mark.parametrize("fraction, repeats", [(0.0, 2), (1.5, 2), (0.5, 1)])
def test_the_epoch_benchmark_refuses_a_fraction_outside_0_1_or_a_single_block(fraction, repeats):
    with pytest.raises(ValueError, match="0 < fraction <= 1 and repeats >= 2"):
        load_benchmark("epoch").measure(CPU, fraction=fraction, repeats=repeats)
