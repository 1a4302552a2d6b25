"""Keep the committed chapter notebooks small, their checked outputs current, and their install
cell in step with the book's repository.

A chapter is committed without outputs (the book build executes it), except for the cells
marked ``# NBVAL_CHECK_OUTPUT``, whose printed text nbval compares on every test run. After
editing such a cell, refresh what is stored with ``make outputs``.

Every chapter's first code cell installs ``ibtools`` where it is missing (on Colab, which opens
the notebook alone): it clones the repository named in ``_config.yml`` (``repository: url:``).
After changing that URL, ``python -m ibtools.notebooks --install-cell book/*.ipynb`` rewrites the
cell in every chapter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
CONFIG = Path(__file__).resolve().parents[1] / "_config.yml"
INSTALL_CELL_ID = "install-ibtools"
# Hidden from the rendered book (Jupyter Book drops cells tagged remove-cell); a reader who runs
# the notebook where ibtools is installed (locally, on Binder, under nbval) sees it do nothing.
INSTALL_CELL = """\
# Where ibtools is missing (Colab opens only this notebook): clone the book's repository and install it.
try:
    import ibtools
except ImportError:
    import os, subprocess, sys
    url = {url}
    clone = os.path.abspath(os.path.basename(url))
    if not os.path.isdir(clone):
        subprocess.run(["git", "clone", "--depth", "1", url, clone], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", clone], check=True)
    sys.path.insert(0, clone)  # pip's editable install reaches new kernels; this one needs the path
    os.chdir(os.path.join(clone, "book"))
"""


def is_checked(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK_MARK)


def text_outputs(cell) -> list:
    """The plain-text outputs of a cell: streams and text/plain results, nothing else."""
    kept = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream" and output.name == "stdout":
            kept.append(output)
        elif output.output_type == "execute_result" and "text/plain" in output.data:
            output.data = {"text/plain": output.data["text/plain"]}
            kept.append(output)
    return kept


def refresh(path: Path) -> None:
    """Execute ``path`` and store only the text outputs of its checked cells."""
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell in notebook.cells:
        if cell.cell_type == "code" and not is_checked(cell):
            cell.outputs, cell.execution_count = [], None
        elif cell.cell_type == "code":
            # nbval compares only cells that carry an execution count.
            cell.outputs = text_outputs(cell)
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, path)


def repository_url(config: Path = CONFIG) -> str:
    """The book's repository, ``repository: url:`` of ``_config.yml``."""
    return yaml.safe_load(config.read_text(encoding="utf-8"))["repository"]["url"].rstrip("/")


def install_cell(url: str | None = None) -> dict:
    """The chapters' first code cell, as notebook JSON, cloning ``url`` (default: the book's)."""
    source = INSTALL_CELL.format(url=json.dumps(url or repository_url())).rstrip("\n")
    return {"cell_type": "code", "execution_count": None, "id": INSTALL_CELL_ID,
            "metadata": {"tags": ["remove-cell"]}, "outputs": [],
            "source": source.splitlines(keepends=True)}


def first_code_cell(notebook: dict) -> dict | None:
    return next((cell for cell in notebook["cells"] if cell["cell_type"] == "code"), None)


def write_install_cell(path: Path, url: str | None = None) -> bool:
    """Put the install cell first among ``path``'s code cells (replacing an older one); True if
    the file changed. The notebook keeps its JSON layout (one-space indents, as Jupyter writes)."""
    text = path.read_text(encoding="utf-8")
    notebook = json.loads(text)
    cell, cells = install_cell(url), notebook["cells"]
    first = first_code_cell(notebook)
    if first is not None and first.get("id") == INSTALL_CELL_ID:
        if first["source"] == cell["source"] and first["metadata"].get("tags") == cell["metadata"]["tags"]:
            return False  # current (the timings `make outputs` records in its metadata may stay)
        cells[cells.index(first)] = cell
    else:
        cells.insert(cells.index(first) if first is not None else len(cells), cell)
    new = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    if sys.argv[1:2] == ["--install-cell"]:
        for name in sys.argv[2:]:
            changed = write_install_cell(Path(name))
            print(f"{name}: install cell {'written' if changed else 'already current'}")
    else:
        for name in sys.argv[1:]:
            refresh(Path(name))
            print(f"refreshed the checked outputs of {name}")
