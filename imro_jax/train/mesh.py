"""The device mesh with named axes ("data", "model") sized from the config."""

import importlib.metadata
import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "model")


class MeshError(ValueError):
    """The requested mesh does not fit the available devices (message is one line)."""


def resolve_mesh_shape(data: int, model: int, num_devices: int) -> tuple[int, int]:
    """Resolves `(data, model)` axis sizes; `-1` means "all remaining devices".

    Args:
        data: size of the "data" axis, or -1.
        model: size of the "model" axis, or -1.
        num_devices: devices available (all processes together).

    Returns:
        `(data, model)` with `data * model == num_devices`.

    Raises:
        MeshError: both are -1, a size is < 1, or the product cannot equal `num_devices`.
    """
    sizes = {"data": int(data), "model": int(model)}
    free = [name for name, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise MeshError("at most one of mesh.data, mesh.model may be -1")
    for name, size in sizes.items():
        if size != -1 and size < 1:
            raise MeshError(f"mesh.{name} must be a positive size or -1, got {size}")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if num_devices % fixed:
            fixed_desc = " x ".join(f"{n}={s}" for n, s in sizes.items() if s != -1)
            raise MeshError(
                f"cannot build mesh ({fixed_desc}) on {num_devices} devices: "
                f"{num_devices} is not divisible by {fixed}"
            )
        sizes[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise MeshError(
            f"mesh data={sizes['data']} x model={sizes['model']} needs {fixed} devices "
            f"but {num_devices} are available (use -1 for 'the rest')"
        )
    return sizes["data"], sizes["model"]


def make_mesh(data: int, model: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a `("data", "model")` mesh over `devices` (default: every device of every process).

    Args:
        data: "data" axis size (batch and, with FSDP, large parameters are sharded over it), or -1.
        model: "model" axis size (attention heads, MLP hidden units), or -1.
        devices: devices to use; all of them must be used.

    Returns:
        A `jax.sharding.Mesh` of shape `[data, model]` with `Auto` axis types (GSPMD propagation).
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(data, model, len(devices))
    if len(devices) == jax.device_count():
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)
    # A subset of devices (tests, 1-device runs): keep their order.
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=(AxisType.Auto,) * 2)


CPU_FFT_DEADLOCK_WORKAROUND = "--xla_cpu_multi_thread_eigen=false"
# XLA:CPU aborts the process (`Termination timeout ... of 40 seconds exceeded`) when a simulated
# device's thread reaches a collective more than 40 s after the others. On a loaded 2-core machine
# running 8 simulated devices beside other jobs that happens without any deadlock (seen in CI).
CPU_COLLECTIVE_TERMINATE_TIMEOUT_S = 900
CPU_COLLECTIVE_TIMEOUT_FLAG = "--xla_cpu_collective_call_terminate_timeout_seconds"


def _jaxlib_version() -> tuple[int, int]:
    major, minor = (int(part) for part in importlib.metadata.version("jaxlib").split(".")[:2])
    return major, minor


def simulated_cpu_xla_flags() -> str:
    """Extra `XLA_FLAGS` for simulated CPU devices (`--xla_force_host_platform_device_count`).

    - jaxlib >= 0.10: the collective termination timeout is raised from 40 s to
      `CPU_COLLECTIVE_TERMINATE_TIMEOUT_S`. The simulated devices are threads of one process; on an
      oversubscribed CPU one of them can reach an all-gather more than 40 s after the others, and
      XLA then aborts the whole process. The flag exists in jaxlib 0.10.2 and 0.11.2 (checked) and
      not in 0.7.1, whose timeout is fixed; XLA rejects unknown flags, so older versions get none.
    - jaxlib >= 0.11: a jitted program holding an FFT (the spectrogram encoder's log-mel) and a
      collective deadlocks on >= 2 simulated CPU devices: the FFT's parallel tasks wait on XLA:CPU's
      shared Eigen pool while the other devices' threads block in the collective
      (`python -m imro_jax.perf.cpu_fft_check` reproduces it). Single-threaded Eigen avoids it.

    Returns:
        The flags, space separated ("" when none applies).
    """
    version = _jaxlib_version()
    flags = []
    if version >= (0, 10):
        flags.append(f"{CPU_COLLECTIVE_TIMEOUT_FLAG}={CPU_COLLECTIVE_TERMINATE_TIMEOUT_S}")
    if version >= (0, 11):
        flags.append(CPU_FFT_DEADLOCK_WORKAROUND)
    return " ".join(flags)
