"""Fagan & Iyengar's own result files, read into a tidy table and set beside appendix E.15.

The authors' repository, github.com/francoisfagan/NN_ISGD, keeps one JSON file per run in
``results/``, written by ``pipeline.py`` (lines 31-35) as ``{"hyperparameters": ...,
"results": ...}``. What ``results`` holds was fixed by ``train_test.py`` as it stood when the
runs were made (commit 9969cbb and before): after every epoch, one evaluation pass in
``model.eval()`` over the test loader and then over the training loader (``train_and_test``,
lines 44-48 there), each the mean over the loader's mini-batches of the mini-batch mean loss,
and the percentage of examples classified correctly (``test``, lines 283-303). So
``results["train"]["average_loss"][k]`` is the training loss measured after epoch ``k + 1`` with
the weights of that moment, not a running average over the epoch's updates. The repository's
last commit (dff30fe) comments that evaluation out, and the files it wrote hold empty lists.

The run's identity is read from the file's ``hyperparameters``, never from its name: the names
cut each value to six characters (``utils.py``, ``Hp.get_experiment_name``, lines 131-144), so
that before commit e306634 kept UCI names whole (and in files committed as late as ff5ccae)
``acute-inflammation`` and ``acute-nephritis`` (and ``monks-1/2/3``, and more) wrote to the same
file, the later run replacing the earlier.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .experiments.ch03_ib_vs_eb import paper_e15
from .files import write_atomic

REPOSITORY = "francoisfagan/NN_ISGD"

# The last commit whose train_test.py records the per-epoch evaluation (see the module docstring);
# its files fill in those the repository's last commit emptied.
LAST_RECORDING_COMMIT = "9969cbb"

_MUSIC = {"JSB Chorales": "jsb-chorales", "MuseData": "musedata", "Nottingham": "nottingham",
          "Piano-midi.de": "piano-midi"}

# Columns that identify a run; two files with equal values here are the same run.
RUN_KEY = ["task", "dataset", "method", "lr", "seed", "clip", "batch_size", "epochs", "mu",
           "momentum", "inner_iterations", "intra_epoch"]
MEASURES = ["train_loss", "train_accuracy", "test_loss", "test_accuracy"]
COLUMNS = [*RUN_KEY, "epoch", *MEASURES, "file"]


@dataclass
class ReadReport:
    """What :func:`read_results` read: ``read`` files that gave rows, ``skipped`` maps each file it
    did not use to the reason, ``duplicates`` counts files whose run an earlier file already gave,
    and ``conflicts`` lists (kept, dropped) for those whose numbers differ from the kept file's."""

    read: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    duplicates: int = 0
    conflicts: list[tuple[str, str]] = field(default_factory=list)

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(self.skipped.values()))


def run_identity(hyperparameters: dict) -> dict:
    """The run a result file describes, in the book's terms, from its ``hyperparameters``.

    ``task``: ``"uci"`` for the ``classification`` architecture (three arctan layers as wide as the
    input and a linear layer, ``architectures.py``, class ``Classification``), ``"mnist-classifier"``
    for ``convffnn``, ``"mnist-autoencoder"``, ``"music"``. ``dataset``: the UCI name without its
    ``_classification`` suffix in lower case (the authors' spelling: ``miniboone`` and
    ``molec-biol-splice`` where appendix E.15 writes ``mini-boone`` and ``molec-biol-splce``),
    ``mnist``, or a music set as chapter 3 names it. ``method``: ``"ib"`` for ``sgdtype`` implicit,
    ``"eb"`` for explicit, ``"inner-isgd"`` for explicit with ``inner_ISGD_iterations`` > 0 (that
    many gradient steps on the mini-batch loss plus the proximal term, ``train_test.py`` lines
    219-234). ``lr``, ``seed``, ``clip`` (``clipping_threshold``: gradient-norm clipping, 0 = none),
    ``batch_size``, ``epochs`` (as configured), ``mu`` (ridge), ``momentum``, ``inner_iterations``,
    ``intra_epoch`` (whether the training set was also evaluated every 1000 mini-batches, which
    draws from the random generator that shuffles MNIST's batches, ``train_test.py`` lines 247-250).

    Raises ``ValueError`` for an architecture this table does not know.
    """
    architecture = hyperparameters["architecture"]
    name = hyperparameters["dataset_name"]
    if architecture == "classification":
        task, dataset = "uci", name.removesuffix("_classification").lower()
    elif architecture == "convffnn":
        task, dataset = "mnist-classifier", name
    elif architecture == "autoencoder":
        task, dataset = "mnist-autoencoder", name.removesuffix("_autoencoder")
    elif architecture == "music":
        task, dataset = "music", _MUSIC[name]
    else:
        raise ValueError(f"unknown architecture {architecture!r}: expected classification, convffnn, "
                         f"autoencoder or music")
    inner = int(hyperparameters.get("inner_ISGD_iterations", 0))
    implicit = hyperparameters["sgdtype"] == "implicit"
    return {"task": task, "dataset": dataset,
            "method": "ib" if implicit else ("inner-isgd" if inner else "eb"),
            "lr": float(hyperparameters["lr"]), "seed": int(hyperparameters["seed"]),
            "clip": float(hyperparameters["clipping_threshold"]),
            "batch_size": int(hyperparameters["batch_size"]), "epochs": int(hyperparameters["epochs"]),
            "mu": float(hyperparameters["mu"]), "momentum": float(hyperparameters["momentum"]),
            "inner_iterations": inner, "intra_epoch": bool(hyperparameters.get("intra_epoch", False))}


def result_rows(document: dict, file: str) -> list[dict]:
    """One row per recorded epoch of one result file (its parsed JSON), epochs numbered from 1.

    ``train_loss`` / ``test_loss``: the evaluation pass after that epoch (see the module
    docstring), mean over mini-batches of the mini-batch mean loss: negative log-likelihood of
    the softmax output for the classifiers (``F.nll_loss``), ``MSELoss() / 1000`` for the
    autoencoder, the per-sequence mean Bernoulli log-loss for music (``train_test.py``).
    ``train_accuracy`` / ``test_accuracy``: percent correct for the classifiers, 0 otherwise.

    Raises ``ValueError`` when the file records no epoch (the repository's last commit wrote such
    files) or its lists differ in length.
    """
    identity = run_identity(document["hyperparameters"])
    results = document["results"]
    series = {f"{split}_{what}": results[split][f"average_{what}"]
              for split in ("train", "test") for what in ("loss", "accuracy")}
    lengths = {len(values) for values in series.values()}
    if lengths == {0}:
        raise ValueError("no epoch recorded")
    if len(lengths) > 1:
        raise ValueError(f"per-epoch lists of different lengths {sorted(lengths)}")
    return [{**identity, "epoch": k + 1, **{name: float(values[k]) for name, values in series.items()},
             "file": file} for k in range(lengths.pop())]


def _git_files(repository: Path, revision: str) -> dict[str, bytes]:
    """Every file under ``results/`` at ``revision`` of a git repository, by path."""
    listing = subprocess.run(["git", "-C", str(repository), "ls-tree", "-r", "-z", revision, "--", "results/"],
                             capture_output=True, check=True).stdout
    entries = [entry.split(b"\t", 1) for entry in listing.split(b"\0") if entry]
    objects = [(meta.split()[2].decode(), path.decode()) for meta, path in entries]
    batch = subprocess.run(["git", "-C", str(repository), "cat-file", "--batch"],
                           input="".join(f"{sha}\n" for sha, _ in objects).encode(),
                           capture_output=True, check=True).stdout
    files, position = {}, 0
    for _, path in objects:
        header_end = batch.index(b"\n", position)
        size = int(batch[position:header_end].split()[2])
        files[path] = batch[header_end + 1:header_end + 1 + size]
        position = header_end + 2 + size  # the object, then the newline cat-file puts after it
    return files


def is_git_repository(path: Path) -> bool:
    """Whether ``path`` is itself a git repository: a bare one, or a checkout's top folder."""
    return ((path / "HEAD").is_file() and (path / "objects").is_dir()) or (path / ".git").exists()


def read_results(source: Path | str, *, revisions: tuple[str, ...] = ("HEAD",)) -> tuple[pd.DataFrame, ReadReport]:
    """The authors' result files as a tidy table, one row per run and recorded epoch, and a report.

    ``source`` is a git repository (a bare mirror or a checkout), read at each of ``revisions`` in
    turn, or a folder whose ``*.json`` files are result files under any names. A path is read at
    the first revision where it records an epoch; a run another file already gave is not taken
    again (counted in ``duplicates``). Files that are not
    JSON, record no epoch, or describe an unknown architecture are skipped, with the reason.

    Columns: :data:`COLUMNS` (see :func:`run_identity` and :func:`result_rows`); ``file`` is the
    path inside the repository, or the name in the folder.

    Raises ``FileNotFoundError`` when ``source`` is neither.
    """
    source = Path(source)
    if is_git_repository(source):
        batches = [_git_files(source, revision) for revision in revisions]
    elif source.is_dir():
        batches = [{path.name: path.read_bytes() for path in sorted(source.glob("*.json"))}]
    else:
        raise FileNotFoundError(f"{source} is neither a git repository nor a folder of result files: "
                                f"pass the NN_ISGD mirror or checkout, or a folder of its results/*.json")
    report, rows, seen, used = ReadReport(), [], {}, set()
    for files in batches:
        for path, content in files.items():
            if path in used:  # an earlier revision's version of this file was read
                continue
            try:
                file_rows = result_rows(json.loads(content), path)
            except (UnicodeDecodeError, json.JSONDecodeError):
                report.skipped.setdefault(path, "not a JSON file")
                continue
            except KeyError as error:
                report.skipped.setdefault(path, f"lacks {error}")
                continue
            except ValueError as error:
                report.skipped.setdefault(path, str(error))
                continue
            used.add(path)
            key = tuple(file_rows[0][column] for column in RUN_KEY)
            numbers = [tuple(row[column] for column in MEASURES) for row in file_rows]
            if key in seen:
                report.duplicates += 1
                if seen[key][1] != numbers:
                    report.conflicts.append((seen[key][0], path))
                continue
            seen[key] = (path, numbers)
            report.read += 1
            rows.extend(file_rows)
    # A path skipped at one revision but read at another is not lost.
    report.skipped = {path: reason for path, reason in report.skipped.items() if path not in used}
    return pd.DataFrame(rows, columns=COLUMNS), report


def e15_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The UCI runs of appendix E.15's protocol, final epoch only: batch 100, 10 epochs, seed 1,
    no clipping, ridge or momentum, plain EB or IB (``hyperparameter_lists/classification.json``).
    Same columns as :func:`read_results`' table, one row per dataset, method and rate."""
    runs = table[(table["task"] == "uci") & (table["batch_size"] == 100) & (table["epochs"] == 10)
                 & (table["seed"] == 1) & (table["clip"] == 0) & (table["mu"] == 0)
                 & (table["momentum"] == 0) & table["method"].isin(["eb", "ib"])]
    return runs[runs["epoch"] == runs["epochs"]].reset_index(drop=True)


# Appendix E.15 spells two datasets differently from the authors' folders (data/classification/).
E15_SPELLINGS = {"mini-boone": "miniboone", "molec-biol-splce": "molec-biol-splice"}


def beside_e15(runs: pd.DataFrame, e15: pd.DataFrame | None = None, *,
               quantity: str = "train_loss") -> pd.DataFrame:
    """Appendix E.15 cell by cell beside the authors' files: one row per (dataset, method, lr) of
    either, with ``paper`` (E.15's number, NaN where it has none), ``authors`` (``quantity`` of the
    final epoch in ``runs``, NaN where no file has it) and ``difference`` = authors - paper.

    ``runs``: :func:`e15_runs`' table (or one with its columns). ``e15``: index (dataset, method),
    one column per learning rate, as :func:`ibtools.experiments.ch03_ib_vs_eb.paper_e15` gives it
    (the default); its dataset names are read through :data:`E15_SPELLINGS`.
    Raises ``ValueError`` when ``runs`` holds one cell twice.
    """
    if e15 is None:
        e15 = paper_e15()
    paper = e15.rename(index=E15_SPELLINGS, level="dataset").rename_axis(columns="lr").stack()
    paper = paper.rename("paper").reset_index().astype({"lr": float})
    key = ["dataset", "method", "lr"]
    if runs.duplicated(key).any():
        raise ValueError("runs holds a (dataset, method, lr) cell twice: pass e15_runs(table)")
    authors = runs[[*key, quantity]].rename(columns={quantity: "authors"})
    both = paper.merge(authors, on=key, how="outer").sort_values(key, ignore_index=True)
    both["difference"] = both["authors"] - both["paper"]
    return both


def e15_agreement(beside: pd.DataFrame, *, tolerance: float = 0.005) -> dict:
    """How :func:`beside_e15`'s cells agree: ``paper_cells``, ``compared`` (cells both have),
    ``agree`` (|difference| <= ``tolerance``: E.15 prints two decimals, so 0.005 is rounding),
    ``max_abs_difference`` and ``median_ratio`` (authors / paper, over compared cells with
    paper > 0)."""
    compared = beside.dropna(subset=["paper", "authors"])
    positive = compared[compared["paper"] > 0]
    return {"paper_cells": int(beside["paper"].notna().sum()), "compared": len(compared),
            "agree": int((compared["difference"].abs() <= tolerance).sum()),
            "max_abs_difference": float(compared["difference"].abs().max()) if len(compared) else float("nan"),
            "median_ratio": float((positive["authors"] / positive["paper"]).median()) if len(positive) else float("nan")}


def e15_coverage(beside: pd.DataFrame) -> dict[str, list[tuple[str, float]]]:
    """The (dataset, lr) pairs of :func:`beside_e15`'s table that only the files have
    (``authors_only``) and that only appendix E.15 has (``paper_only``), sorted; a pair counts
    as present where either method has it."""
    pairs = beside.groupby(["dataset", "lr"])[["paper", "authors"]].count()
    return {"authors_only": sorted(pairs.index[(pairs["authors"] > 0) & (pairs["paper"] == 0)]),
            "paper_only": sorted(pairs.index[(pairs["paper"] > 0) & (pairs["authors"] == 0)])}


def write_e15_table(source: Path | str, out: Path | str,
                    revisions: tuple[str, ...] = ("HEAD", LAST_RECORDING_COMMIT)) -> dict:
    """Read ``source`` (see :func:`read_results`) and write :func:`e15_runs`' table to
    ``out/results.csv`` and ``out/provenance.json`` (repository, the commit of ``source``'s HEAD,
    the revisions read, date, command, files read, duplicates and skipped, with reasons).
    Returns the provenance."""
    source, out = Path(source), Path(out)
    table, report = read_results(source, revisions=revisions)
    runs = e15_runs(table)
    resolve = ["git", "-C", str(source), "rev-parse"]
    commits = {revision: subprocess.run([*resolve, revision], capture_output=True, text=True, check=True).stdout.strip()
               for revision in ("HEAD", *revisions)}
    provenance = {
        "repository": f"https://github.com/{REPOSITORY}", "head_commit": commits["HEAD"],
        "revisions_read": {revision: commits[revision] for revision in revisions},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m ibtools.authors " + " ".join(sys.argv[1:] or [str(source), str(out)]),
        "rows": "UCI runs with batch 100, 10 epochs, seed 1, no clipping: the final epoch's "
                "evaluation (ibtools.authors.e15_runs)",
        "files_read": report.read, "runs_written": len(runs), "duplicates": report.duplicates,
        "conflicting_duplicates": [list(pair) for pair in report.conflicts],
        "files_skipped": report.skipped_by_reason(), "skipped": report.skipped,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "results.csv", runs.to_csv(index=False))
    write_atomic(out / "provenance.json", json.dumps(provenance, indent=1) + "\n")
    return provenance


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m ibtools.authors NN_ISGD_REPOSITORY OUT_DIR")
    print(json.dumps(write_e15_table(sys.argv[1], sys.argv[2]), indent=1)[:2000])
