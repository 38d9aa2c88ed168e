"""Environment of the subprocesses the tests start (scripts, CLI runs, notebooks' kernels aside).

A subprocess must not inherit this process's 8 simulated devices (it decides its own device
count) but must keep the compiler options of `tests/conftest.py`: the bitwise resume test
compares a subprocess's losses with this process's, and the flags change the last bit.
"""

import importlib.metadata
import os

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def fft_deadlock_workaround_flags() -> str:
    """`--xla_cpu_multi_thread_eigen=false` for jax >= 0.11, else "".

    With jax 0.11.x a jitted program holding an FFT (the log-mel front end) and a collective
    deadlocks on >= 2 simulated CPU devices: the FFT's parallel tasks wait on XLA:CPU's shared
    Eigen pool while other devices' threads block in the collective
    (`experiments/compat/cpu_fft_collective.py` reproduces it). jax 0.10.x is unaffected and keeps
    its default (multi-threaded Eigen is ~20% faster on the suite).
    """
    major, minor = (int(part) for part in importlib.metadata.version("jaxlib").split(".")[:2])
    return " --xla_cpu_multi_thread_eigen=false" if (major, minor) >= (0, 11) else ""


def cpu_subprocess_env(cache_dir, **extra: str) -> dict[str, str]:
    """`os.environ` for a CPU-only subprocess sharing the persistent XLA cache `cache_dir`.

    Args:
        cache_dir: persistent compilation cache directory (every program is cached).
        **extra: further variables, e.g. `IMRO_TEST_CPU_DEVICES="4"`.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)]
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(cache_dir),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        **extra,
    )
    return env
