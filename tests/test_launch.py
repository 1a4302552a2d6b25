"""Launching a chapter elsewhere: the launch buttons' settings, Binder's environment, and the
chapters' first code cell, which installs ibtools where it is missing (on Colab) from the
repository named in ``_config.yml``, and does nothing where ibtools is installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

from ibtools import notebooks

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "book").glob("0*.ipynb"))
CONFIG = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
BIN = Path(sys.executable).parent


def test_config_names_the_repository_and_launch_services():
    repository = CONFIG["repository"]
    assert repository["url"].startswith("https://github.com/")
    assert repository["branch"] == "main"
    assert repository["path_to_book"] == ""  # _config.yml sits at the root: pages are paths from there
    launch = CONFIG["launch_buttons"]
    assert launch["binderhub_url"] == "https://mybinder.org"
    assert launch["colab_url"] == "https://colab.research.google.com"
    assert launch["notebook_interface"] == "jupyterlab"
    assert CONFIG["sphinx"]["config"]["html_theme_options"]["use_download_button"] is True
    assert CONFIG["sphinx"]["recursive_update"] is True  # else html_theme_options would replace the above


def test_install_cell_is_rendered_from_config():
    assert notebooks.repository_url() == CONFIG["repository"]["url"]
    source = "".join(notebooks.install_cell()["source"])
    assert f'url = "{CONFIG["repository"]["url"]}"' in source
    assert '"https://example.org/fork"' in "".join(notebooks.install_cell("https://example.org/fork")["source"])


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_starts_with_the_install_cell(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    first = notebooks.first_code_cell(notebook)
    expected = notebooks.install_cell()
    assert first["source"] == expected["source"], (
        f"{path.name}'s first code cell is not the install cell for {notebooks.repository_url()}: "
        f"run python -m ibtools.notebooks --install-cell book/*.ipynb")
    assert "remove-cell" in first["metadata"].get("tags", []), "the rendered book would show the install cell"
    assert first["outputs"] == [] and first["execution_count"] is None


def test_writing_the_install_cell_again_changes_nothing(tmp_path):
    for path in CHAPTERS:
        copy = tmp_path / path.name
        shutil.copy(path, copy)
        assert not notebooks.write_install_cell(copy), f"{path.name} is not as write_install_cell leaves it"


def test_a_new_url_rewrites_the_install_cell_in_place(tmp_path):
    copy = tmp_path / CHAPTERS[0].name
    shutil.copy(CHAPTERS[0], copy)
    before = json.loads(copy.read_text(encoding="utf-8"))
    assert notebooks.write_install_cell(copy, "https://github.com/someone/fork")
    after = json.loads(copy.read_text(encoding="utf-8"))
    assert len(after["cells"]) == len(before["cells"])
    assert '"https://github.com/someone/fork"' in "".join(notebooks.first_code_cell(after)["source"])
    assert [c for c in after["cells"] if c.get("id") != notebooks.INSTALL_CELL_ID] == \
        [c for c in before["cells"] if c.get("id") != notebooks.INSTALL_CELL_ID]


def test_binder_environment():
    requirements = (REPO / "binder" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    lines = [line.strip() for line in requirements if line.strip() and not line.startswith("#")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines  # torch 2.13.0+cpu, not CUDA
    nested = [line.split(None, 1)[1] for line in lines if line.startswith("-r ")]
    # pip reads a nested -r path relative to the file that names it
    assert [(REPO / "binder" / path).resolve() for path in nested] == [REPO / "requirements.txt"]
    post_build = REPO / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable"
    assert "pip install --no-deps -e ." in post_build.read_text(encoding="utf-8")
    result = subprocess.run([str(BIN / "shellcheck"), str(post_build)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# --- the install cell, run where ibtools is missing ------------------------------------------------

def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args],
                   cwd=cwd, check=True, capture_output=True)


def tiny_repository(path: Path) -> Path:
    """A git repository shaped like the book's: an ``ibtools`` package (no dependencies) and book/."""
    (path / "ibtools").mkdir(parents=True)
    (path / "ibtools" / "__init__.py").write_text('WHERE = "the clone"\n')
    (path / "book").mkdir()
    (path / "book" / "intro.md").write_text("# A book\n")
    (path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "ibtools"\nversion = "0.0.1"\n\n'
        '[tool.setuptools.packages.find]\ninclude = ["ibtools*"]\n')
    git("init", "-q", "-b", "main", cwd=path)
    git("add", ".", cwd=path)
    git("commit", "-q", "-m", "a tiny book", cwd=path)
    return path


def setuptools_wheel(folder: Path) -> Path:
    """The setuptools installed here, packed as a wheel, so pip can build offline."""
    dist = importlib.metadata.distribution("setuptools")
    site = Path(dist.locate_file(""))
    unpacked = folder / f"setuptools-{dist.version}"
    for top in sorted({Path(str(f)).parts[0] for f in dist.files}):
        source = site / top
        if top.startswith("..") or not source.exists():
            continue
        if source.is_dir():
            shutil.copytree(source, unpacked / top, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            unpacked.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, unpacked / top)
    subprocess.run([sys.executable, "-m", "wheel", "pack", "-d", str(folder), str(unpacked)],
                   check=True, capture_output=True)
    shutil.rmtree(unpacked)
    return folder


def bare_python(path: Path) -> Path:
    """A fresh environment without ibtools (nor setuptools), whose pip is this one's."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(path)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    pip_only = path / "pip-only"  # pip alone: this environment's other packages stay out of sight
    pip_only.mkdir()
    (pip_only / "pip").symlink_to(Path(importlib.import_module("pip").__file__).parent)
    (Path(site) / "pip-only.pth").write_text(f"{pip_only}\n")
    return python


def test_install_cell_clones_installs_and_enters_the_book(tmp_path):
    origin = tiny_repository(tmp_path / "origin" / "implicit-backprop-book")
    python = bare_python(tmp_path / "env")
    wheels = setuptools_wheel(tmp_path / "wheels")
    work = tmp_path / "work"  # where the notebook's kernel starts, as /content on Colab
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "PYTHON"))}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels), PIP_DISABLE_PIP_VERSION_CHECK="1")
    check = subprocess.run([str(python), "-c", "import ibtools"], cwd=work, env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "No module named 'ibtools'" in check.stderr

    cell = "".join(notebooks.install_cell(origin.as_uri())["source"])
    after = ("\nimport os, ibtools\n"
             "print(ibtools.__file__)\nprint(os.getcwd())\nprint(ibtools.WHERE)\n")
    result = subprocess.run([str(python), "-c", cell + after], cwd=work, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    clone = work / origin.name
    module, cwd, where = result.stdout.strip().splitlines()[-3:]
    assert Path(module) == clone / "ibtools" / "__init__.py"
    assert Path(cwd) == clone / "book"
    assert where == "the clone"
    assert (clone / ".git").is_dir()

    # A new kernel finds the clone through pip's editable install, from anywhere, and the cell,
    # run again there, does nothing and prints nothing.
    again = subprocess.run([str(python), "-c", cell + "\nimport ibtools\nprint(ibtools.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(clone / "ibtools" / "__init__.py") and not again.stderr


def test_install_cell_does_nothing_where_ibtools_is_installed(tmp_path):
    cell = "".join(notebooks.install_cell()["source"])
    result = subprocess.run([sys.executable, "-c", cell + "\nimport os; print(os.getcwd())"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path) and not list(tmp_path.iterdir())
