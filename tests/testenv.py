"""Environment of the subprocesses the tests start (scripts, CLI runs, notebooks' kernels aside).

A subprocess must not inherit this process's 8 simulated devices (it decides its own device
count) but must keep the compiler options of `tests/conftest.py`: the bitwise resume test
compares a subprocess's losses with this process's, and the flags change the last bit.
"""

import os

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


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
