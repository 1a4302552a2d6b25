"""The command line: list the experiments, run one at either scale, plan a sweep, run a benchmark.

    python -m ibtools list
    python -m ibtools run isgd-convex                       # reduced scale, on this machine
    python -m ibtools run isgd-exact-net --scale full --device cuda --seeds 20 --out book/results
    python -m ibtools plan ib-mnist --device cpu            # what its full sweep will cost
    python -m ibtools bench isgd_steps
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

from . import __version__, data, plan
from .experiments import EXPERIMENTS, SCALES, get, results_file, save_results
from .sweep import ResultsCache, SweepError, missing, run_columns, slurm_executor
from .train import resolve_device

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def cmd_list(args) -> int:
    print("Experiments (python -m ibtools run NAME):")
    for exp in sorted(EXPERIMENTS.values(), key=lambda e: (e.chapter, e.name)):
        reduced, full = len(exp.grid("reduced")), len(exp.grid("full"))
        print(f"  ch{exp.chapter:02d}  {exp.name:<18} {exp.title}  [{reduced} runs reduced, {full} full]")
    print("\nDatasets (ibtools.data.load):")
    for name, text in data.DATASETS.items():
        print(f"  {name:<22} {text}")
    benches = sorted(p.stem for p in BENCHMARKS_DIR.glob("*.py") if not p.stem.startswith("_"))
    if benches:
        print("\nBenchmarks (python -m ibtools bench NAME):\n  " + "  ".join(benches))
    return 0


def command_line(args) -> str:
    """The command as typed, for a provenance record."""
    return "python -m ibtools " + shlex.join(args.argv)


def _run_folder(args, experiment) -> Path:
    return Path(args.out) / experiment.name / args.scale


def cuda_graphs(device: torch.device) -> str:
    """What a sweep's provenance says of CUDA graphs on ``device``: train() captures every step
    of a graph-safe optimizer on CUDA (:func:`ibtools.train.make_step`, ``capture=None``) and
    runs the others eagerly, unless ``$IBTOOLS_CAPTURE`` is ``0``; the CPU has no graphs."""
    if device.type != "cuda":
        return "none (cpu)"
    if os.environ.get("IBTOOLS_CAPTURE", "1") == "0":
        return "none (IBTOOLS_CAPTURE=0)"
    return "captured where the optimizer is graph-safe"


def ib_solver(device: torch.device) -> str:
    """How the IB layers solve eq. (8) in a sweep on ``device`` (:func:`ibtools.ib_layers.set_fuse`,
    from ``$IBTOOLS_FUSE``)."""
    from .ib_layers import fuse_mode

    mode = fuse_mode()
    return "fused (torch.compile)" if mode == "on" or (mode == "auto" and device.type == "cuda") else "eager"


def tf32_allowed(scale: str, device: torch.device, refused: bool) -> bool:
    """Whether a sweep's runs may use TF32 matrix products: at full scale on CUDA, unless
    ``--no-tf32`` (``refused``). TF32 keeps float32's range with about 10 bits of mantissa in
    the products' inputs; the reduced scale is defined on the CPU, which has no TF32."""
    return scale == "full" and device.type == "cuda" and not refused


def cmd_run(args) -> int:
    experiment = get(args.experiment)
    if args.status:
        return cmd_status(args)
    device = resolve_device(args.device)
    out = _run_folder(args, experiment)
    cache = ResultsCache(out / "cache")
    executor, where = None, ""
    if args.executor == "processes":
        if args.jobs is None:  # 1 on the CPU; on a GPU what fills the card (ibtools.plan)
            args.jobs = plan.default_jobs(experiment.name, args.scale, device, plans_dirs=(args.out, plan.RESULTS_DIR))
        where = f", {args.jobs} worker processes" if args.jobs > 1 else ""
    else:
        executor = slurm_executor(out / "slurm", partition=args.partition, gpus_per_task=args.gpus_per_task,
                                  time_min=args.time, runs_per_task=args.runs_per_task,
                                  cluster="slurm" if args.executor == "slurm" else "local",
                                  slurm_array_parallelism=args.array_parallelism)
        where = f", {args.runs_per_task} run(s) per {args.executor} task"
    tf32 = tf32_allowed(args.scale, device, args.no_tf32)
    # Through the environment, which worker processes inherit, to every run's train() (tf32=None).
    os.environ["IBTOOLS_TF32"] = "1" if tf32 else "0"
    print(f"{experiment.name} at {args.scale} scale on {device_description(device)}{where}"
          f"{', TF32 matrix products' if tf32 else ''}; "
          f"results in {out} (finished runs are kept: rerun the same command to resume)")
    table = experiment.sweep(args.scale, device=device, cache=cache, seeds=args.seeds, jobs=args.jobs or 1,
                             executor=executor)
    provenance = {
        "experiment": experiment.name, "scale": args.scale, "seeds": args.seeds,
        "command": command_line(args),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_description(device), "torch": torch.__version__,
        "tf32": tf32, "cuda_graphs": cuda_graphs(device), "ib_solver": ib_solver(device),
        "ibtools": __version__, "git_commit": git_commit(), "config_fields": run_columns(table),
    }
    runs = table.groupby(run_columns(table), dropna=False)["diverged"].first()
    provenance["runs"] = len(runs)
    if table.attrs.get("skipped_datasets"):
        provenance["skipped_datasets"] = table.attrs["skipped_datasets"]
    if args.scale == "full":  # where the data were read from
        provenance["data"] = {name: os.environ.get(name, "(unset)") for name in ("IBTOOLS_DATA", "IBTOOLS_UCI")}
    save_results(table, out, provenance)
    print(f"wrote {results_file(out)} ({len(table)} rows, {len(runs)} runs, {int(runs.sum())} diverged)")
    return 0


def cmd_status(args) -> int:
    """How much of a sweep is done: the runs of the grid found intact in OUT's cache."""
    experiment = get(args.experiment)
    out = _run_folder(args, experiment)
    configs = experiment.grid(args.scale, **({"seeds": args.seeds} if args.seeds else {}))
    todo = set(missing(configs, experiment=experiment.name, version=experiment.version,
                       cache=ResultsCache(out / "cache")))
    by_method: dict[str, list[int]] = {}
    for config in dict.fromkeys(configs):
        counts = by_method.setdefault(str(getattr(config, "method", "all")), [0, 0])
        counts[0] += config not in todo
        counts[1] += 1
    total = sum(c[1] for c in by_method.values())
    print(f"{experiment.name} at {args.scale} scale: {total - len(todo)} of {total} runs finished "
          f"(cache: {out / 'cache'})")
    for method, (done, count) in by_method.items():
        print(f"  {method:<14} {done:>6} / {count}")
    print("  complete: 'python -m ibtools run' writes the table" if not todo else
          f"  {len(todo)} to go: rerun the 'python -m ibtools run' command to compute only those")
    return 0


def load_benchmark(name: str):
    """The module ``benchmarks/NAME.py`` of the repository checkout."""
    path = BENCHMARKS_DIR / f"{name}.py"
    if not path.exists():
        known = sorted(p.stem for p in BENCHMARKS_DIR.glob("*.py") if not p.stem.startswith("_"))
        raise SystemExit(f"no benchmark {name!r} in {BENCHMARKS_DIR}; known: {', '.join(known) or 'none'} "
                         "(benchmarks live in the repository checkout, not in an installed wheel)")
    spec = importlib.util.spec_from_file_location(f"benchmarks.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cmd_bench(args) -> int:
    load_benchmark(args.name).main(device=resolve_device(args.device))
    return 0


def cmd_plan(args) -> int:
    # The probes time steps as `run` would take them, TF32 included (full scale on CUDA).
    os.environ["IBTOOLS_TF32"] = "1" if tf32_allowed(args.scale, resolve_device(args.device), args.no_tf32) else "0"
    return plan.run_command(args, command_line(args))


def jobs_or_best(text: str) -> int | str:
    return text if text in ("best", "auto") else positive_int(text)


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"need a number > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"need a whole number >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ibtools",
        description="Run the experiments of the book 'Implicit and Robust Backpropagation'. "
                    "Every experiment has two scales: 'reduced' (the default: CPU, offline, what the "
                    "book executes) and 'full' (the paper's data, architectures, epochs and seeds; "
                    "meant for a GPU, downloads full datasets into $IBTOOLS_DATA).",
        epilog="Examples:\n  python -m ibtools list\n  python -m ibtools run isgd-convex\n"
               "  python -m ibtools run isgd-exact-net --scale full --device cuda --out book/results\n"
               "  python -m ibtools bench isgd_steps\n\nA run writes OUT/EXPERIMENT/SCALE/results.csv "
               "and provenance.json; the book shows a committed full-scale result from book/results.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list experiments, datasets and benchmarks").set_defaults(func=cmd_list)
    run = sub.add_parser("run", help="run one experiment's sweep (resumable) and write its results table",
                         description="Run every config of an experiment's preset grid. Finished runs are "
                                     "cached under OUT, so an interrupted run resumes where it stopped.")
    run.add_argument("experiment", help="an experiment name from 'python -m ibtools list'")
    run.add_argument("--scale", choices=SCALES, default="reduced",
                     help="reduced: CPU-sized, offline (default); full: the paper's setup, for a GPU")
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    run.add_argument("--seeds", type=positive_int, default=None, help="number of seeds (default: the preset's)")
    run.add_argument("--out", default="results", help="output directory (default: ./results)")
    run.add_argument("--no-tf32", action="store_true",
                     help="full scale on CUDA: float32 matrix products throughout (by default TF32 is "
                          "allowed there, and recorded in provenance.json)")
    parallel = run.add_argument_group(
        "many runs at once", "Runs are independent; the cache under OUT is all they share, so an "
        "interrupted sweep, on any executor, resumes by running the same command again.")
    parallel.add_argument("--jobs", type=positive_int, default=None,
                          help="worker processes on this machine. On the CPU each uses one thread "
                               "(default 1); on GPUs they take turns over every visible card (default: "
                               "as many as fill the card, from this device's plan file, else a quick probe)")
    parallel.add_argument("--executor", choices=("processes", "slurm", "submitit-local"), default="processes",
                          help="processes: this machine (default); slurm: a SLURM job array through "
                               "submitit; submitit-local: the same job array as local subprocesses")
    parallel.add_argument("--partition", default=None, help="slurm: the partition to submit to")
    parallel.add_argument("--gpus-per-task", type=int, default=1, help="slurm: GPUs per array task (default 1)")
    parallel.add_argument("--time", type=positive_int, default=240, help="slurm: minutes per array task (default 240)")
    parallel.add_argument("--runs-per-task", type=positive_int, default=1,
                          help="slurm: runs computed one after another by each array task (default 1)")
    parallel.add_argument("--array-parallelism", type=positive_int, default=256,
                          help="slurm: array tasks running at once at most (default 256)")
    run.add_argument("--status", action="store_true", help="only say how many runs are finished (as 'status')")
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="how many runs of a sweep are finished in OUT's cache")
    status.add_argument("experiment", help="an experiment name from 'python -m ibtools list'")
    status.add_argument("--scale", choices=SCALES, default="reduced")
    status.add_argument("--seeds", type=positive_int, default=None)
    status.add_argument("--out", default="results", help="the --out of the run command (default: ./results)")
    status.set_defaults(func=cmd_status)
    planner = sub.add_parser(
        "plan", help="what a sweep will cost (time, memory, download) before it starts",
        description="Time a few steps of each kind of run in an experiment's grid on random stand-ins of the "
                    "full-scale data (nothing is downloaded), and project the sweep: runs per kind, seconds per "
                    "epoch and per run, wall time at --jobs, peak memory per run, download size. Writes "
                    "OUT/NAME/SCALE/plan-DEVICE.json.")
    planner.add_argument("experiment", nargs="?", help="an experiment name from 'python -m ibtools list'")
    planner.add_argument("--all", action="store_true", help="plan every experiment and print the total")
    planner.add_argument("--scale", choices=SCALES, default="full", help="the preset to plan (default: full)")
    planner.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    planner.add_argument("--no-tf32", action="store_true",
                         help="time float32 matrix products throughout, as `run --no-tf32` runs them")
    planner.add_argument("--jobs", type=jobs_or_best, default=1,
                         help="worker processes the sweep will use (default 1); on CUDA 'best' measures how many "
                              "share a GPU best and plans for them")
    planner.add_argument("--out", default="results", help="output directory (default: ./results)")
    planner.add_argument("--steps", type=positive_int, default=plan.STEPS,
                         help="training steps timed per kind, fewer where they are slow (default %(default)s)")
    planner.add_argument("--limit", type=positive_float, default=plan.LIMIT_S,
                         help="seconds a kind's probe may take (default %(default)g); one stopped there gives "
                              "lower bounds")
    planner.set_defaults(func=cmd_plan)
    bench = sub.add_parser("bench", help="run a speed benchmark from benchmarks/ and print its ratios")
    bench.add_argument("name", help="a benchmark name (file stem in benchmarks/)")
    bench.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when available)")
    bench.set_defaults(func=cmd_bench)
    return parser


def data_unavailable(err: SweepError) -> str | None:
    """The data error's message when every failed run of a sweep failed because its dataset
    is unavailable (a run reports its traceback as text), else None: one message then says
    it all, with its fix, where a traceback per run would bury it."""
    name = f"{data.DataUnavailableError.__module__}.{data.DataUnavailableError.__name__}: "
    messages = []
    for _, trace in err.failures:
        head, found, message = trace.rpartition(name)
        if not found or not head.endswith("\n"):
            return None
        messages.append(message.strip())
    return "\n\n".join(dict.fromkeys(messages)) or None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # for the provenance record
    try:
        return args.func(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except data.DataUnavailableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except SweepError as err:
        print(f"error: {data_unavailable(err) or err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
