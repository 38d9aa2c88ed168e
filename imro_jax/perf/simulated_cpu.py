"""The environment of a subprocess that sees `n` simulated CPU devices.

JAX reads the device count when its CPU backend starts, so a different count needs a new
process: `--xla_force_host_platform_device_count=n` in `XLA_FLAGS` (and `JAX_NUM_CPU_DEVICES`
for the jax versions that read it), `JAX_PLATFORMS=cpu`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def simulated_cpu_env(devices: int, *, environ: Mapping[str, str] | None = None,
                      extra_flags: str = "") -> dict[str, str]:
    """`environ` (default `os.environ`) set up for `devices` simulated CPU devices.

    Args:
        devices: device count (>= 1).
        environ: the environment to start from; its `XLA_FLAGS` are kept except a device count.
        extra_flags: more XLA flags, e.g. `imro_jax.train.mesh.simulated_cpu_xla_flags()`.

    Returns:
        A new environment dict (the given one is not modified).
    """
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    env = dict(os.environ if environ is None else environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)]
    flags += [f"{DEVICE_COUNT_FLAG}={devices}", *extra_flags.split()]
    env.update(XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))
    return env
