"""The command line: python -m ibtools list | run | bench."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import REPO

import ibtools.__main__ as cli
from ibtools.experiments import EXPERIMENTS, get, load_results


def python_m_ibtools(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "ibtools", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


# --- as a program -----------------------------------------------------------------------------------

def test_help_describes_the_commands_and_the_two_scales(subprocess_env, tmp_path):
    done = python_m_ibtools(["--help"], subprocess_env, tmp_path)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for word in ("list", "run", "bench", "reduced", "full", "python -m ibtools run isgd-convex",
                 "results.csv", "provenance.json"):
        assert word in text


def test_unknown_experiment_exits_2_suggesting_the_closest_name(subprocess_env, tmp_path):
    done = python_m_ibtools(["run", "isgd-quadratc", "--out", str(tmp_path)], subprocess_env, tmp_path)
    assert done.returncode == 2
    assert "unknown experiment 'isgd-quadratc'" in done.stderr
    assert "Did you mean 'isgd-quadratic'?" in done.stderr
    assert "python -m ibtools list" in done.stderr
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())  # nothing written


# --- in process ------------------------------------------------------------------------------------

def test_run_help_explains_resuming_and_the_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for word in ("--scale", "{reduced,full}", "--device", "--seeds", "--out", "resumes"):
        assert word in text


def test_list_prints_every_experiment_and_dataset(capsys):
    from ibtools import data

    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert EXPERIMENTS, "the chapters register their experiments on import"
    for experiment in EXPERIMENTS.values():
        assert experiment.name in out and experiment.title in out
        assert f"ch{experiment.chapter:02d}" in out
        assert f"[{len(experiment.grid('reduced'))} runs reduced, {len(experiment.grid('full'))} full]" in out
    for name in data.DATASETS:
        assert name in out


def test_list_includes_a_registered_experiment(capsys, tiny_experiment):
    assert cli.main(["list"]) == 0
    assert "ch99  tiny-test" in capsys.readouterr().out


def test_unknown_experiment_in_process_returns_2(capsys, tmp_path):
    assert cli.main(["run", "isgd-convx", "--out", str(tmp_path)]) == 2
    assert "Did you mean 'isgd-convex'?" in capsys.readouterr().err


def test_unknown_scale_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "isgd-quadratic", "--scale", "huge"])
    assert exit_.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def test_run_writes_results_and_provenance_that_load_results_reads_back(tmp_path, capsys):
    argv = ["run", "isgd-quadratic", "--out", str(tmp_path), "--device", "cpu"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "isgd-quadratic" / "reduced"
    assert (folder / "results.csv").is_file() and (folder / "provenance.json").is_file()
    assert f"wrote {folder / 'results.csv'}" in out

    loaded = load_results("isgd-quadratic", "reduced", results_dir=tmp_path)
    assert loaded is not None
    table, provenance = loaded
    experiment = get("isgd-quadratic")
    configs = experiment.grid("reduced")
    assert table.groupby(["method", "lr", "seed"]).ngroups == len(configs)
    assert provenance["runs"] == len(configs)
    assert {"experiment", "scale", "command", "date", "device", "torch", "ibtools", "git_commit"} <= set(provenance)
    assert provenance["experiment"] == "isgd-quadratic" and provenance["scale"] == "reduced"
    assert provenance["torch"] == torch.__version__ and provenance["device"].startswith("CPU")
    assert provenance["tf32"] is False and provenance["cuda_graphs"] == "none (cpu)"
    assert provenance["command"] == "python -m ibtools " + shlex.join(argv)
    assert json.loads((folder / "provenance.json").read_text()) == provenance

    # the file holds what the experiment computes, and the summary line counts its divergences
    expected = experiment.sweep(cache=False, progress=False)
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)
    diverged = expected.groupby(["method", "lr", "seed"])["diverged"].first().sum()
    assert f"{len(expected)} rows, {len(configs)} runs, {diverged} diverged" in out

    # a string works as results_dir too, and a missing result is None
    assert load_results("isgd-quadratic", "reduced", results_dir=str(tmp_path))[1] == provenance
    assert load_results("isgd-quadratic", "full", results_dir=tmp_path) is None


def test_rerunning_resumes_from_the_cache_under_out(tmp_path, tiny_experiment, capsys):
    argv = ["run", "tiny-test", "--out", str(tmp_path), "--device", "cpu", "--seeds", "1"]
    assert cli.main(argv) == 0
    computed = len(tiny_experiment.run.calls)
    assert computed == len(tiny_experiment.grid("reduced", seeds=1)) == 6
    assert len(list((tmp_path / "tiny-test" / "reduced" / "cache" / "tiny-test").glob("*.json"))) == computed
    first, _ = load_results("tiny-test", "reduced", results_dir=tmp_path)
    assert cli.main(argv) == 0
    assert len(tiny_experiment.run.calls) == computed  # everything read back
    second, provenance = load_results("tiny-test", "reduced", results_dir=tmp_path)
    pd.testing.assert_frame_equal(first, second)
    assert provenance["seeds"] == 1 and provenance["runs"] == 6
    assert "finished runs are kept" in capsys.readouterr().out


def test_run_on_cuda_without_a_gpu_exits_2_naming_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["run", "isgd-quadratic", "--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--device cpu" in err
    assert not any(tmp_path.iterdir())


def test_run_with_a_malformed_device_exits_2(tmp_path, capsys):
    assert cli.main(["run", "isgd-quadratic", "--device", "gpu", "--out", str(tmp_path)]) == 2
    assert "unknown device 'gpu'" in capsys.readouterr().err


def test_bench_with_an_unknown_name_fails_clearly(capsys, tmp_path, monkeypatch):
    (tmp_path / "isgd_steps.py").write_text("def main(device):\n    pass\n")
    (tmp_path / "_helpers.py").write_text("")
    monkeypatch.setattr(cli, "BENCHMARKS_DIR", tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "isgd_stesp"])
    message = str(exit_.value.code)
    assert "no benchmark 'isgd_stesp'" in message and "known: isgd_steps" in message
    assert "_helpers" not in message


def test_bench_with_no_benchmarks_at_all_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "BENCHMARKS_DIR", tmp_path)
    with pytest.raises(SystemExit, match="no benchmark 'nope'.*known: none"):
        cli.main(["bench", "nope"])


def test_bench_runs_the_benchmark_on_the_resolved_device(tmp_path, monkeypatch):
    (tmp_path / "hello.py").write_text(
        "from pathlib import Path\n"
        "def main(device):\n"
        f"    Path({str(tmp_path / 'ran')!r}).write_text(str(device))\n")
    monkeypatch.setattr(cli, "BENCHMARKS_DIR", tmp_path)
    assert cli.main(["bench", "hello", "--device", "cpu"]) == 0
    assert (tmp_path / "ran").read_text() == "cpu"


def test_the_benchmarks_folder_is_the_repository_one():
    assert cli.BENCHMARKS_DIR == REPO / "benchmarks"


# --- many runs at once, and how far a sweep has got ---------------------------------------------------

def test_run_with_two_jobs_writes_the_table_of_one_job(tmp_path, capsys):
    for jobs in ("1", "2"):
        assert cli.main(["run", "isgd-quadratic", "--device", "cpu", "--out", str(tmp_path / jobs), "--jobs", jobs]) == 0
    assert "2 worker processes" in capsys.readouterr().out
    one, _ = load_results("isgd-quadratic", "reduced", results_dir=tmp_path / "1")
    two, provenance = load_results("isgd-quadratic", "reduced", results_dir=tmp_path / "2")
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    assert "--jobs 2" in provenance["command"]


def test_status_counts_the_finished_runs_of_the_grid_by_method(tmp_path, tiny_experiment, capsys):
    status = ["status", "tiny-test", "--out", str(tmp_path), "--seeds", "1"]
    assert cli.main(status) == 0
    out = capsys.readouterr().out
    assert "tiny-test at reduced scale: 0 of 6 runs finished" in out and "6 to go" in out
    assert "sgd" in out and "momentum" in out
    experiment = get("tiny-test")
    cache = tmp_path / "tiny-test" / "reduced" / "cache"
    experiment.sweep(cache=cli.ResultsCache(cache), progress=False, seeds=1, methods=["sgd"])
    assert cli.main(status) == 0
    out = capsys.readouterr().out
    assert "3 of 6 runs finished" in out and "3 / 3" in out and "0 / 3" in out
    assert cli.main(["run", "tiny-test", "--status", "--out", str(tmp_path), "--seeds", "1"]) == 0
    assert "3 of 6 runs finished" in capsys.readouterr().out


def test_a_run_that_raises_exits_1_naming_its_config_after_the_others_finish(tmp_path, capsys):
    from conftest import registered, tiny_configs

    def fails_at_large_rates(config, device=None):
        if config.lr >= 1.0:
            raise ArithmeticError("this rate is refused")
        return [dict(kind="epoch", step=0, epoch=0.0, loss=config.lr, diverged=False)]

    for _ in registered("failing-test", fails_at_large_rates, tiny_configs):
        assert cli.main(["run", "failing-test", "--out", str(tmp_path), "--seeds", "1", "--device", "cpu"]) == 1
        err = capsys.readouterr().err
        assert "2 run(s) of failing-test raised; the other 4 finished" in err
        assert "TinyConfig(method='sgd', lr=1.0" in err and "ArithmeticError: this rate is refused" in err
        assert not (tmp_path / "failing-test" / "reduced" / "results.csv").exists()


# --- TF32 at full scale on CUDA ---------------------------------------------------------------

def reports_tf32(config, device=None):
    """A run that only says whether its train() would allow TF32 (as ``tf32=None`` reads it)."""
    return [dict(kind="epoch", step=0, epoch=0.0, loss=config.lr, diverged=False,
                 tf32=os.environ.get("IBTOOLS_TF32") == "1")]


@pytest.fixture
def seen_as_a_gpu(monkeypatch):
    """This machine as one with a GPU to the command line (nothing runs on it: the experiment
    of :func:`reports_tf32` only reads its environment)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cli, "device_description", lambda device: f"a GPU ({device})")


@pytest.mark.parametrize("scale, device, flags, allowed", [
    ("full", "cuda", [], True),
    ("full", "cuda", ["--no-tf32"], False),
    ("reduced", "cuda", [], False),
    ("full", "cpu", [], False),
])
def test_tf32_is_allowed_at_full_scale_on_cuda_unless_refused_and_recorded(
        tmp_path, capsys, seen_as_a_gpu, scale, device, flags, allowed):
    from conftest import registered, tiny_configs

    for _ in registered("tf32-test", reports_tf32, tiny_configs):
        argv = ["run", "tf32-test", "--scale", scale, "--device", device, "--jobs", "1", "--seeds", "1",
                "--out", str(tmp_path), *flags]
        assert cli.main(argv) == 0
        table, provenance = load_results("tf32-test", scale, results_dir=tmp_path)
    assert (table["tf32"] == allowed).all()
    assert provenance["tf32"] is allowed
    assert provenance["cuda_graphs"] == ("captured where the optimizer is graph-safe" if device == "cuda"
                                         else "none (cpu)")
    assert provenance["ib_solver"] == ("fused (torch.compile)" if device == "cuda" else "eager")
    assert ("TF32 matrix products" in capsys.readouterr().out) is allowed


def test_worker_processes_inherit_the_tf32_setting(tmp_path, seen_as_a_gpu):
    from conftest import registered, tiny_configs

    for _ in registered("tf32-test", reports_tf32, tiny_configs):
        argv = ["run", "tf32-test", "--scale", "full", "--device", "cuda", "--jobs", "2", "--seeds", "1",
                "--out", str(tmp_path)]
        assert cli.main(argv) == 0
        table, _ = load_results("tf32-test", "full", results_dir=tmp_path)
    assert table["tf32"].all()


def test_no_tf32_is_a_flag_of_run_and_plan():
    parser = cli.build_parser()
    for command in ("run", "plan"):
        assert parser.parse_args([command, "isgd-quadratic"]).no_tf32 is False
        assert parser.parse_args([command, "isgd-quadratic", "--no-tf32"]).no_tf32 is True
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "ib_overhead", "--no-tf32"])


@pytest.mark.parametrize("scale, flags, allowed", [("full", [], True), ("full", ["--no-tf32"], False),
                                                   ("reduced", [], False)])
def test_plan_times_steps_with_the_tf32_setting_run_would_use(monkeypatch, seen_as_a_gpu, scale, flags, allowed):
    seen = []
    monkeypatch.setattr(cli.plan, "run_command", lambda args, command: seen.append(os.environ["IBTOOLS_TF32"]) or 0)
    assert cli.main(["plan", "ib-mnist", "--scale", scale, "--device", "cuda", *flags]) == 0
    assert seen == ["1" if allowed else "0"]


# --- data missing: one message, its fix, no traceback -----------------------------------------

@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """An empty data folder and no way to download: every full-scale dataset is missing."""
    from ibtools import data

    monkeypatch.setenv("IBTOOLS_DATA", str(tmp_path / "empty"))
    monkeypatch.delenv("IBTOOLS_UCI", raising=False)
    for name in data.MIRRORS:
        monkeypatch.setitem(data.MIRRORS, name, ("file:///nonexistent/",))
    return tmp_path / "empty"


def assert_data_messages_alone(err: str, folder, datasets: list[str]) -> None:
    """One message per missing dataset, each with its fix, after "error:", and no traceback."""
    assert err.count("error: ") == 1  # after the progress bar, if any
    assert err[err.index("error: "):].startswith(f"error: {datasets[0]!r} is unavailable: the download of")
    assert err.count("To fix:") == len(datasets)
    for dataset in datasets:
        assert err.count(f"{dataset!r} is unavailable") == 1
        assert f"place these files by hand in {folder / dataset}" in err
    assert "Traceback" not in err and "run(s) of" not in err


@pytest.mark.parametrize("experiment, datasets", [
    ("ib-mnist", ["mnist"]), ("ib-music", ["jsb-chorales", "musedata", "nottingham", "piano-midi"])])
def test_a_full_scale_run_without_its_data_prints_the_data_error_alone(no_data, tmp_path, capsys,
                                                                       experiment, datasets):
    argv = ["run", experiment, "--scale", "full", "--seeds", "1", "--device", "cpu",
            "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 1
    assert_data_messages_alone(capsys.readouterr().err, no_data, datasets)
    assert not (tmp_path / "out" / experiment / "full" / "results.csv").exists()
    # status needs no data: it counts the cache
    assert cli.main(["status", experiment, "--scale", "full", "--out", str(tmp_path / "out")]) == 0
    assert "0 of" in capsys.readouterr().out


def test_runs_that_all_fail_for_missing_data_print_its_message_once(no_data, tmp_path, capsys):
    from conftest import registered, tiny_configs

    from ibtools import data

    def needs_mnist(config, device=None):
        data.load("mnist")
        return []

    for _ in registered("needs-mnist", needs_mnist, tiny_configs):
        assert cli.main(["run", "needs-mnist", "--out", str(tmp_path), "--seeds", "1", "--device", "cpu"]) == 1
    assert_data_messages_alone(capsys.readouterr().err, no_data, ["mnist"])


def test_a_sweep_failing_for_other_reasons_too_keeps_every_traceback(no_data):
    from ibtools import data
    from ibtools.sweep import SweepError, compute

    def missing(config):
        data.load("mnist")

    def broken(config):
        raise ArithmeticError("not data")

    failures = [(name, compute(run, name, "x", 1, None).error) for name, run in
                (("a", missing), ("b", missing), ("c", broken))]
    assert cli.data_unavailable(SweepError("x", failures[:2], 0)).count("'mnist' is unavailable") == 1
    assert cli.data_unavailable(SweepError("x", failures, 0)) is None
