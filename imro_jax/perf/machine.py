"""The machine a measurement ran on, and the fastest it multiplies matrices (the MFU ceiling).

MFU (model FLOPs utilisation) of a step is its model FLOPs per second over a ceiling rate
measured in the same run:

    MFU = (model FLOPs / step seconds) / (2 m k n / matmul seconds),

with the ceiling a `[m, k] @ [k, n]` product (`matmul_probe`, square for the ceiling, or the
model's own largest product) timed interleaved with the step, so both see the same load.
"""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import platform
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def matmul_probe(shape: tuple[int, int, int], dtype: Any = jnp.float32) -> tuple[Callable[[], jax.Array], float]:
    """A jitted `[m, k] @ [k, n]` `jnp.dot` on N(0, 1) data, compiled and run once, and its FLOPs.

    Args:
        shape: `(m, k, n)`; `(n, n, n)` for the square ceiling probe.
        dtype: operand dtype (e.g. the step's compute dtype).

    Returns:
        `(call, flops)`: `call()` runs one product and blocks until it is done; `flops = 2 m k n`.
    """
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"matmul shape must be (m, k, n), all positive, got {shape}")
    m, k, n = shape
    key_a, key_b = jax.random.split(jax.random.key(0), 2)
    a = jax.random.normal(key_a, (m, k), jnp.float32).astype(dtype)
    b = jax.random.normal(key_b, (k, n), jnp.float32).astype(dtype)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, b))
    return (lambda: jax.block_until_ready(dot(a, b))), 2.0 * m * k * n


def numpy_matmul_probe(size: int) -> Callable[[], np.ndarray]:
    """`call()` of a float32 `[size, size] @ [size, size]` in numpy (its BLAS); 2 size^3 FLOPs."""
    a, b = np.random.default_rng(0).standard_normal((2, size, size), dtype=np.float32)
    return lambda: a @ b


def cpu_name() -> str:
    """The CPU model (`/proc/cpuinfo`'s "model name" where there is one)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    """`{"cpu", "python", "versions", "devices"}`: machine, software and devices, as text."""
    import flax
    import optax

    devices = jax.devices()
    jaxlib = importlib.metadata.version("jaxlib")  # jax's own dependency, not imported here
    return {
        "cpu": f"{cpu_name()}, {os.cpu_count()} logical cores",
        "python": platform.python_version(),
        "versions": f"jax {jax.__version__}, jaxlib {jaxlib}, flax {flax.__version__}, "
                    f"optax {optax.__version__}, numpy {np.__version__}",
        "devices": f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform})",
    }


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")
