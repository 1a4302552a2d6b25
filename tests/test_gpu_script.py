"""scripts/gpu-check and scripts/gpu-wheels: shellcheck-clean, and gpu-check run here on the CPU
(``DEVICE=cpu``) as a GPU machine runs it: carried wheels installed where the tests find them,
each test's name and outcome in the log and the junit file, the plans saved, and the exit
status pytest's."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import REPO
from test_workflows import SHELLCHECK

GPU_CHECK = REPO / "scripts" / "gpu-check"


@pytest.mark.parametrize("script", ["gpu-check", "gpu-wheels"])
def test_the_scripts_are_shellcheck_clean(script):
    assert SHELLCHECK.is_file(), f"{SHELLCHECK} not found: install requirements.txt into this venv"
    done = subprocess.run([str(SHELLCHECK), str(REPO / "scripts" / script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def probe_wheel(folder: Path) -> Path:
    """A wheel of one module, ``gpu_check_probe`` (VALUE = 1), and one script, ``probe-tool``."""
    files = {
        "gpu_check_probe.py": "VALUE = 1\n",
        "gpu_check_probe-1.0.data/scripts/probe-tool": "#!/bin/sh\necho probe\n",
        "gpu_check_probe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: gpu-check-probe\nVersion: 1.0\n",
        "gpu_check_probe-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                                               "Tag: py3-none-any\n",
    }
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(text.encode())}" for name, text in files.items()]
    files["gpu_check_probe-1.0.dist-info/RECORD"] = "\n".join(record + ["gpu_check_probe-1.0.dist-info/RECORD,,"]) + "\n"
    path = folder / "gpu_check_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


PROBE_TESTS = '''
import os
import sys
from pathlib import Path


def test_a_carried_wheel_is_importable():
    import gpu_check_probe

    assert gpu_check_probe.VALUE == 1


def test_its_scripts_are_beside_the_python_running_the_tests():
    assert (Path(sys.executable).parent / "probe-tool").is_file()


def test_python3s_own_packages_are_there_too():
    import torch

    assert torch.__version__ == os.environ["EXPECTED_TORCH"]
'''

FAILING_TESTS = '''
def test_passes():
    pass


def test_fails_on_purpose():
    assert 1 == 2
'''


SLOW_TESTS = '''
import time


def test_quick():
    pass


def test_slow():
    time.sleep(600)
'''


def gpu_check(tmp_path: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    """scripts/gpu-check started as in the background of a script: with SIGINT ignored."""
    environment = {**os.environ, "OUT": str(out), "DEVICE": "cpu", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
                   "GPU_CHECK_VENV": str(tmp_path / "venv"), "WHEELS": str(tmp_path / "no-wheels"), **env}
    return subprocess.run(["bash", "-c", "trap '' INT; exec \"$0\"", str(GPU_CHECK)], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=600)


def outcomes(junit: Path) -> dict[str, str]:
    """{test name: passed | failed | error | skipped} from a junit file."""
    found = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        found[case.get("name")] = {"failure": "failed"}.get(kinds[0], kinds[0]) if kinds else "passed"
    return found


def test_carried_wheels_tests_and_plans_on_the_cpu(tmp_path):
    wheels, out = tmp_path / "wheels", tmp_path / "out"
    wheels.mkdir()
    probe_wheel(wheels)
    (tmp_path / "test_probe.py").write_text(PROBE_TESTS)
    done = gpu_check(tmp_path, out, WHEELS=str(wheels), GPU_CHECK_STAGES="tests plan", EXPECTED_TORCH=torch.__version__,
                     PYTEST_ARGS=f"{tmp_path / 'test_probe.py'} tests/test_cli.py::test_no_tf32_is_a_flag_of_run_and_plan",
                     PLAN_EXPERIMENTS="ib-mnist", PLAN_ARGS="--steps 2 --limit 2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["junit.xml", "plan.txt", "pytest.log", "setup.txt"]

    setup = (out / "setup.txt").read_text()
    assert f"({tmp_path / 'venv' / 'bin' / 'python'})" in setup.splitlines()[0]  # the wheels' environment
    assert f"torch {torch.__version__}" in setup and "missing packages:" in setup
    assert "versions other than requirements.txt's:" in setup
    assert "C compiler: " in setup and "torch.compile on cpu: works" in setup  # the fused solver's needs

    names = ["test_a_carried_wheel_is_importable", "test_its_scripts_are_beside_the_python_running_the_tests",
             "test_python3s_own_packages_are_there_too", "test_no_tf32_is_a_flag_of_run_and_plan"]
    assert outcomes(out / "junit.xml") == dict.fromkeys(names, "passed")
    log = (out / "pytest.log").read_text()
    for name in names:
        assert any(name in line and "PASSED" in line for line in log.splitlines()), name
    assert "=== tests (limit 480 s) started" in done.stdout

    plan = (out / "plan.txt").read_text()
    assert "=== plan ib-mnist" in done.stdout
    assert "--- ib-mnist/full/plan-cpu.json\n{" in plan and "wrote " in plan


def test_a_failing_test_fails_the_script_with_pytests_status(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "test_failing.py").write_text(FAILING_TESTS)
    done = gpu_check(tmp_path, out, GPU_CHECK_STAGES="tests", PYTEST_ARGS=str(tmp_path / "test_failing.py"))
    assert done.returncode == 1, done.stdout + done.stderr  # pytest's "tests failed"
    assert outcomes(out / "junit.xml") == {"test_passes": "passed", "test_fails_on_purpose": "failed"}
    log = (out / "pytest.log").read_text()
    assert "test_failing.py::test_passes PASSED" in log and "test_failing.py::test_fails_on_purpose FAILED" in log
    assert not (tmp_path / "venv").exists()  # no wheels, no environment: python3 as it is


def test_an_unknown_stage_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    done = gpu_check(tmp_path, out, GPU_CHECK_STAGES="tests benches")
    assert done.returncode == 2
    assert "unknown stage benches" in done.stderr
    assert not out.exists()


def test_a_run_stopped_at_its_limit_keeps_each_finished_tests_outcome(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "test_slow.py").write_text(SLOW_TESTS)
    done = gpu_check(tmp_path, out, GPU_CHECK_STAGES="tests", GPU_CHECK_TESTS_S="20",
                     PYTEST_ARGS=str(tmp_path / "test_slow.py"))
    assert done.returncode == 124, done.stdout + done.stderr
    assert "=== tests stopped at its limit" in done.stdout
    assert "test_slow.py::test_quick PASSED" in (out / "pytest.log").read_text()
    assert outcomes(out / "junit.xml")["test_quick"] == "passed"
