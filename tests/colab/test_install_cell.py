"""The notebooks' install cell: which packages it pins, and that it returns to the clone after a restart.

The cell itself runs in a simulated Colab over an older preinstalled jax in `.ci/install_checks.py`.
"""

import ast
import pathlib
import re
import sys

import nbformat

COLAB = pathlib.Path(__file__).resolve().parents[2] / "colab"
sys.path.insert(0, str(COLAB))

import _make_notebooks  # noqa: E402

FREEZE = """\
flax==0.10.2
jax==0.4.33
jax-cuda12-pjrt==0.4.33
jax-cuda12-plugin==0.4.33
jax_cuda12_plugin==0.4.33
jaxlib==0.4.33
jaxtyping==0.2.36
libtpu==0.0.2
libtpu-nightly==0.1.dev20240101
numpy==1.26.4
numpyro==0.15.3
numpy @ file:///croot/numpy
optax==0.2.3
"""


def test_the_runtime_pins_are_the_accelerator_stack_and_numpy_only():
    pinned = [line for line in FREEZE.splitlines()
              if re.match(_make_notebooks.RUNTIME_PATTERN, line, re.I)]
    assert pinned == ["jax==0.4.33", "jax-cuda12-pjrt==0.4.33", "jax-cuda12-plugin==0.4.33",
                      "jax_cuda12_plugin==0.4.33", "jaxlib==0.4.33", "libtpu==0.0.2",
                      "libtpu-nightly==0.1.dev20240101", "numpy==1.26.4"]


def _colab_branch(source: str) -> list[ast.stmt]:
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and "google.colab" in ast.unparse(node.test):
            return node.body
    raise AssertionError("no `if 'google.colab' in sys.modules:` branch")


def test_every_notebook_installs_with_constraints_and_chdirs_outside_the_clone_guard():
    for path in sorted(COLAB.glob("*.ipynb")):
        source = nbformat.read(path, as_version=4).cells[1].source
        assert source == _make_notebooks.INSTALL, f"{path.name} is stale: run colab/_make_notebooks.py"
        branch = _colab_branch(source)
        top_level = [ast.unparse(stmt) for stmt in branch]
        assert "os.chdir(repo)" in top_level, "chdir must run on every run of the cell, not only after a clone"
        assert '"-c"' in source.replace("'", '"') and "pip" in source

