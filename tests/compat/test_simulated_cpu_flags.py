"""The extra XLA flags for simulated CPU devices: gated by jaxlib version, and accepted by the
installed XLA (which aborts on an unknown flag)."""

import subprocess
import sys

import pytest
from testenv import cpu_subprocess_env

from imro_jax.train import mesh


@pytest.mark.parametrize("version,expected", [
    ((0, 7), []),
    ((0, 10), [f"{mesh.CPU_COLLECTIVE_TIMEOUT_FLAG}={mesh.CPU_COLLECTIVE_TERMINATE_TIMEOUT_S}"]),
    ((0, 12), [f"{mesh.CPU_COLLECTIVE_TIMEOUT_FLAG}={mesh.CPU_COLLECTIVE_TERMINATE_TIMEOUT_S}",
               mesh.CPU_FFT_DEADLOCK_WORKAROUND]),
])
def test_flags_follow_the_jaxlib_version(monkeypatch, version, expected):
    monkeypatch.setattr(mesh, "_jaxlib_version", lambda: version)
    assert mesh.simulated_cpu_xla_flags().split() == expected


def test_installed_xla_accepts_the_flags_and_runs_a_collective(tmp_path):
    program = ("import jax, jax.numpy as jnp\n"
               "x = jax.device_put(jnp.arange(4.0), jax.sharding.NamedSharding("
               "jax.make_mesh((2,), ('d',)), jax.sharding.PartitionSpec('d')))\n"
               "print('sum', float(jax.jit(jnp.sum)(x)))\n")
    env = cpu_subprocess_env(tmp_path)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count=2 {mesh.simulated_cpu_xla_flags()}"
    proc = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "sum 6.0" in proc.stdout, proc.stderr[-2000:]
