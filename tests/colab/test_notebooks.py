"""Each Colab notebook runs top to bottom on its smallest setting, and is committed small and clean."""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

COLAB = pathlib.Path(__file__).resolve().parents[2] / "colab"
NOTEBOOKS = sorted(COLAB.glob("*.ipynb"))


def test_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"info_primitives.ipynb", "quickstart.ipynb", "reproduce_handwritten.ipynb"} <= names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    assert path.stat().st_size < 300_000
    assert "colab-badge.svg" in nb.cells[0].source, "first cell must carry the Open in Colab badge"
    assert "pip" in nb.cells[1].source, "second cell must install the repo"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs committed"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch, shared_xla_cache):
    nb = nbformat.read(path, as_version=4)
    monkeypatch.setenv("IMRO_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("IMRO_NOTEBOOK_WORKDIR", str(tmp_path))  # runs, datasets: cold, private
    # compiled programs only: the session's XLA cache, shared with tests/experiments/test_quick.py
    # (the quick settings train the same programs), for the experiment scripts and the kernel itself
    monkeypatch.setenv("IMRO_XLA_CACHE", shared_xla_cache)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", shared_xla_cache)
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    # The kernel must not inherit the 8-device test flags' cost (it runs on one CPU device, like a
    # Colab CPU runtime; the flags that cut compile time stay); it needs only the repo on its path.
    flags = os.environ.get("XLA_FLAGS", "").split()
    monkeypatch.setenv("XLA_FLAGS", " ".join(f for f in flags if "host_platform_device_count" not in f))
    monkeypatch.setenv("PYTHONPATH", str(COLAB.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(COLAB.parent)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
