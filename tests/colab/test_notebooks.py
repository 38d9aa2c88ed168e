"""Each Colab notebook runs top to bottom on its smallest setting, and is committed small and clean."""

import os
import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient

COLAB = pathlib.Path(__file__).resolve().parents[2] / "colab"
NOTEBOOKS = sorted(COLAB.glob("*.ipynb"))


def test_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"info_primitives.ipynb"} <= names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    assert path.stat().st_size < 300_000
    assert "colab-badge.svg" in nb.cells[0].source, "first cell must carry the Open in Colab badge"
    assert "pip" in nb.cells[1].source, "second cell must install the repo"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs committed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    monkeypatch.setenv("IMRO_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("IMRO_NOTEBOOK_WORKDIR", str(tmp_path))
    # The kernel must not inherit the 8-device test flags' cost; it needs only the repo on its path.
    monkeypatch.setenv("PYTHONPATH", str(COLAB.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(COLAB.parent)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
