"""Helpers the training tests import (a plain module: `from conftest import` is ambiguous
when pytest collects several test directories, each with its own conftest.py).

Importing this module points JAX's persistent compilation cache at a session-wide temporary
directory, shared with the subprocess runs started with `subprocess_env`.
"""

import atexit
import os
import shutil
import sys
import tempfile

import jax
import numpy as np
from testenv import cpu_subprocess_env

COMPILATION_CACHE = tempfile.mkdtemp(prefix="imro-train-tests-xla-")
atexit.register(shutil.rmtree, COMPILATION_CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", COMPILATION_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

HERE = os.path.dirname(os.path.abspath(__file__))


def subprocess_env(cpu_devices: int = 8) -> dict:
    """Environment for a `toy_run.py` subprocess with `cpu_devices` devices and this session's cache."""
    return cpu_subprocess_env(COMPILATION_CACHE, IMRO_TEST_CPU_DEVICES=str(cpu_devices))


def toy_run_command(workdir, *overrides) -> list[str]:
    return [sys.executable, os.path.join(HERE, "toy_run.py"), str(workdir), *overrides]


def tree_equal(a, b) -> bool:
    """Bitwise equality of two pytrees of arrays."""
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b)
    )
