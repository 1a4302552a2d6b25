"""ibtools.authors: the authors' result files read exactly, and appendix E.15 set beside them."""

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from ibtools.authors import (COLUMNS, beside_e15, e15_agreement, e15_coverage, e15_runs, read_results,
                             run_identity)
from ibtools.experiments.ch03_ib_vs_eb import UCI_LRS, paper_e15

FIXTURES = Path(__file__).parent / "fixtures" / "authors"
COMMITTED = Path(__file__).parents[1] / "book" / "results" / "ib-uci" / "authors"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())["files"]


def _document(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def fixture_table():
    return read_results(FIXTURES)


def test_rows_hold_what_the_json_holds(fixture_table):
    table, _ = fixture_table
    for name in ("iris-explicit-lr0.5.json", "iris-implicit-lr0.5.json", "acute-truncated-explicit-lr0.01.json"):
        document = _document(name)
        rows = table[table["file"] == name].sort_values("epoch")
        results, hp = document["results"], document["hyperparameters"]
        assert list(rows["epoch"]) == list(range(1, len(results["train"]["average_loss"]) + 1))
        for split in ("train", "test"):
            assert list(rows[f"{split}_loss"]) == results[split]["average_loss"]
            assert list(rows[f"{split}_accuracy"]) == results[split]["average_accuracy"]
        assert set(rows["lr"]) == {hp["lr"]} and set(rows["batch_size"]) == {hp["batch_size"]}
        assert set(rows["method"]) == {"ib" if hp["sgdtype"] == "implicit" else "eb"}
        assert set(rows["dataset"]) == {hp["dataset_name"].removesuffix("_classification")}
    assert list(table.columns) == COLUMNS


def test_identity_comes_from_the_content_not_the_cut_name(fixture_table):
    table, _ = fixture_table
    # The name cuts the dataset to six characters; the file holds acute-nephritis's run.
    assert "data_acute-|" in MANIFEST["acute-truncated-explicit-lr0.01.json"]
    assert set(table.loc[table["file"] == "acute-truncated-explicit-lr0.01.json", "dataset"]) == {"acute-nephritis"}


def test_files_without_epochs_or_runs_are_skipped_with_the_reason(fixture_table, tmp_path):
    table, report = fixture_table
    assert report.skipped == {"acute-inflammation-implicit-lr0.01-emptied.json": "no epoch recorded",
                              "manifest.json": "lacks 'hyperparameters'"}
    assert report.read == 3 and "acute-inflammation" not in set(table["dataset"])
    (tmp_path / "x.json").write_bytes(b"\x00\x00\x00\x07")
    assert read_results(tmp_path)[1].skipped == {"x.json": "not a JSON file"}


def test_a_run_given_twice_is_taken_once_and_a_differing_copy_reported(tmp_path):
    original = FIXTURES / "iris-explicit-lr0.5.json"
    shutil.copy(original, tmp_path / "a.json")
    shutil.copy(original, tmp_path / "b.json")
    table, report = read_results(tmp_path)
    assert len(table) == 10 and report.duplicates == 1 and report.conflicts == []
    document = json.loads(original.read_text())
    document["results"]["train"]["average_loss"][-1] += 1.0
    (tmp_path / "b.json").write_text(json.dumps(document))
    assert read_results(tmp_path)[1].conflicts == [("a.json", "b.json")]


def test_git_revisions_fill_in_a_file_a_later_commit_emptied(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "results").mkdir()
    target = tmp_path / "results" / "run.json"
    document = _document("iris-implicit-lr0.5.json")
    target.write_text(json.dumps(document))
    git("add", "results")
    git("commit", "-q", "-m", "recorded")
    for split in ("train", "test"):
        document["results"][split] = {"average_loss": [], "average_accuracy": []}
    target.write_text(json.dumps(document))
    git("commit", "-q", "-am", "emptied")
    head, head_report = read_results(tmp_path)
    assert head.empty and head_report.skipped == {"results/run.json": "no epoch recorded"}
    both, report = read_results(tmp_path, revisions=("HEAD", "HEAD~1"))
    assert report.skipped == {} and report.read == 1
    assert list(both["train_loss"]) == _document("iris-implicit-lr0.5.json")["results"]["train"]["average_loss"]


def test_unknown_architecture_is_an_error():
    with pytest.raises(ValueError, match="unknown architecture 'lstm'"):
        run_identity({**_document("iris-explicit-lr0.5.json")["hyperparameters"], "architecture": "lstm"})


@pytest.fixture(scope="module")
def committed():
    return pd.read_csv(COMMITTED / "results.csv")


def test_committed_table_is_one_final_epoch_per_cell_and_holds_the_fixtures(committed):
    assert e15_runs(committed).equals(committed)
    assert not committed.duplicated(["dataset", "method", "lr"]).any()
    for name in ("iris-explicit-lr0.5.json", "iris-implicit-lr0.5.json"):
        hp, results = _document(name)["hyperparameters"], _document(name)["results"]
        row = committed[(committed["dataset"] == "iris") & (committed["lr"] == hp["lr"])
                        & (committed["method"] == ("ib" if hp["sgdtype"] == "implicit" else "eb"))]
        assert list(row["train_loss"]) == results["train"]["average_loss"][-1:]
    provenance = json.loads((COMMITTED / "provenance.json").read_text())
    assert provenance["runs_written"] == len(committed)


def test_e15_is_the_final_training_evaluation_rounded(committed):
    train = beside_e15(committed, quantity="train_loss")
    agreement = e15_agreement(train)
    assert agreement["paper_cells"] == paper_e15().size == agreement["compared"] == agreement["agree"]
    assert agreement["max_abs_difference"] <= 0.005
    # The test-set evaluation is not what E.15 prints.
    assert e15_agreement(beside_e15(committed, quantity="test_loss"))["agree"] < agreement["paper_cells"]


def test_e15_coverage_and_spellings(committed):
    coverage = e15_coverage(beside_e15(committed))
    assert coverage["paper_only"] == []
    assert ("abalone", 0.0003) in coverage["authors_only"]
    assert all(lr not in UCI_LRS or dataset not in paper_e15().index.get_level_values("dataset")
               for dataset, lr in coverage["authors_only"])
    e15 = pd.DataFrame([["mini-boone", "eb", *[1.0] * len(UCI_LRS)]],
                       columns=["dataset", "method", *UCI_LRS]).set_index(["dataset", "method"])
    runs = pd.DataFrame({"dataset": ["miniboone"], "method": ["eb"], "lr": [0.001], "train_loss": [1.004]})
    beside = beside_e15(runs, e15)
    assert e15_agreement(beside)["agree"] == 1
    assert e15_coverage(beside) == {"authors_only": [], "paper_only": [("miniboone", lr) for lr in UCI_LRS[1:]]}
    with pytest.raises(ValueError, match="twice"):
        beside_e15(pd.concat([runs, runs]), e15)
