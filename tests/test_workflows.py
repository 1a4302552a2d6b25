"""The GitHub Actions workflows: valid as actionlint sees them (with shellcheck on every ``run:``
script), and doing what the book relies on: publishing to Pages on push to main, testing pull
requests with ``make test``, and warning a fork whose ``_config.yml`` still names another repository.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
BIN = Path(sys.executable).parent  # actionlint and shellcheck come as wheels in the project's venv
ACTIONLINT, SHELLCHECK = BIN / "actionlint", BIN / "shellcheck"


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    missing = [str(p) for p in (ACTIONLINT, SHELLCHECK) if not p.is_file()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: install requirements.txt into this venv")
    return subprocess.run([str(ACTIONLINT), "-shellcheck", str(SHELLCHECK), "-no-color", *map(str, files)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))


def triggers(workflow: dict) -> dict:
    # YAML 1.1 reads the key `on` as the boolean True
    return workflow.get("on", workflow.get(True))


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_every_workflow_passes_actionlint():
    files = sorted(WORKFLOWS.glob("*.y*ml"))
    assert files, f"no workflows in {WORKFLOWS}"
    result = actionlint(*files)
    assert result.returncode == 0, f"actionlint found problems:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("broken, expected", [
    # an expression naming a matrix the job does not have
    ("    runs-on: ${{ matrix.os }}\n    steps:\n      - run: echo hi\n", 'property "os" is not defined'),
    # a script shellcheck objects to (an unquoted expansion)
    ("    runs-on: ubuntu-latest\n    steps:\n      - run: ls $HOME\n", "SC2086"),
], ids=["undefined-matrix", "shellcheck"])
def test_actionlint_reports_a_broken_workflow(tmp_path, broken, expected):
    workflow = tmp_path / "broken.yml"
    workflow.write_text("on: push\njobs:\n  build:\n" + broken, encoding="utf-8")
    result = actionlint(workflow)
    assert result.returncode != 0, "actionlint passed a broken workflow"
    assert expected in result.stdout, result.stdout


def test_publish_workflow_deploys_main_to_pages():
    workflow = load("publish.yml")
    assert triggers(workflow)["push"]["branches"] == ["main"]
    assert {"pages": "write", "id-token": "write"}.items() <= workflow["permissions"].items()
    assert "group" in workflow["concurrency"]
    uses = [step.get("uses", "").split("@")[0] for step in steps(workflow)]
    for action in ("actions/checkout", "actions/setup-python", "actions/configure-pages",
                   "actions/upload-pages-artifact", "actions/deploy-pages"):
        assert action in uses, f"publish.yml does not use {action}"
    assert any("make book" in step.get("run", "") for step in steps(workflow))
    upload = next(s for s in steps(workflow) if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    deploy = next(job for job in workflow["jobs"].values()
                  if any(s.get("uses", "").startswith("actions/deploy-pages") for s in job["steps"]))
    assert deploy["environment"]["name"] == "github-pages"


def test_publish_workflow_warns_when_config_names_another_repository():
    check = next(step for step in steps(load("publish.yml")) if "::warning" in step.get("run", ""))
    assert "_config.yml" in check["run"] and "repository_url" in check["run"]
    assert check["env"]["REPOSITORY"] == "${{ github.server_url }}/${{ github.repository }}"
    assert "exit 1" not in check["run"]


def test_pull_requests_run_make_test_where_chromium_is_debian():
    workflow = load("test.yml")
    assert "pull_request" in triggers(workflow)
    job = next(iter(workflow["jobs"].values()))
    assert job["container"].startswith("debian:")
    runs = [step.get("run", "") for step in job["steps"]]
    assert any("chromium chromium-driver" in run for run in runs)
    assert any(run.strip() == "make test" for run in runs)
