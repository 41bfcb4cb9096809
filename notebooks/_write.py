"""The one way the notebook builders write a notebook: no outputs, a Python 3 kernel."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook


def write_notebook(cells: list, name: str) -> Path:
    """Write ``cells`` to ``notebooks/<name>`` and say where."""
    nb = new_notebook(cells=cells)
    kernel = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["kernelspec"] = kernel
    nb.metadata["language_info"] = {"name": "python"}
    path = Path(__file__).with_name(name)
    nbformat.write(nb, path)
    print(f"wrote {path}")
    return path
