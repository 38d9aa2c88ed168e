"""Test-wide setup: 8 simulated CPU devices, float32 defaults, shared fixtures."""

import os

# Must happen before JAX initialises its backends: every test sees 8 CPU devices so that
# sharding over a ("data", "model") mesh is exercised without accelerators.
# The two XLA flags below cut compile time of the many small test programs by about a third on
# 2 cores; numerics are unaffected (they disable expensive optimisation passes, not precision).
# With jax >= 0.11 also `--xla_cpu_multi_thread_eigen=false` (imro_jax.train.mesh.simulated_cpu_xla_flags:
# an FFT + collective program deadlocks on simulated CPU devices there). Importing does not start
# a JAX backend, so the flags set below still apply.
from imro_jax.train.mesh import simulated_cpu_xla_flags  # noqa: E402

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
    + " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    + " " + simulated_cpu_xla_flags()
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture(scope="session")
def shared_xla_cache(tmp_path_factory):
    """One persistent XLA cache for the subprocesses of every test file in this test session (the
    experiments' --quick runs, the notebooks' kernels): the same program, e.g. the 40-step
    Handwritten IMRO train step of `experiments/handwritten.py --quick` and of the
    reproduce_handwritten notebook, compiles once. Under pytest-xdist the workers share it (their
    base temp dirs share a parent, which pytest rotates away with the session). Compiled programs
    only: no run, checkpoint or dataset is shared. ``IMRO_TEST_XLA_CACHE=DIR`` replaces it (and
    keeps the programs between sessions)."""
    if os.environ.get("IMRO_TEST_XLA_CACHE"):
        return os.environ["IMRO_TEST_XLA_CACHE"]
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / "shared-xla-cache"
    path.mkdir(exist_ok=True)
    return str(path)


# ----------------------------------------------------------------------------- scheduling
# CI runs `-n auto --dist loadfile`: one test file at a time per worker. By default pytest-xdist
# hands the files out by number of tests, most first, which started the few long files (the
# experiments' end-to-end runs, many minutes each, few tests) last and left one worker running
# them alone at the end. The longest go first here instead (longest-first is the classic rule for
# short makespans), so the many short files fill in beside them.


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order made below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """Orders the files by their number of `slow` tests, most first (stable otherwise)."""
    slow = {}
    for item in items:
        slow[item.path] = slow.get(item.path, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -slow[item.path])
