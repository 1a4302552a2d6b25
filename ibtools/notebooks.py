"""Keep the committed chapter notebooks small and their checked outputs current.

A chapter is committed without outputs (the book build executes it), except for the cells
marked ``# NBVAL_CHECK_OUTPUT``, whose printed text nbval compares on every test run. After
editing such a cell, refresh what is stored with ``make outputs``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


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


if __name__ == "__main__":
    for name in sys.argv[1:]:
        refresh(Path(name))
        print(f"refreshed the checked outputs of {name}")
