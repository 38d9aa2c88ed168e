"""Test-wide setup: 8 simulated CPU devices, float32 defaults, shared fixtures."""

import os

# Must happen before JAX initialises its backends: every test sees 8 CPU devices so that
# sharding over a ("data", "model") mesh is exercised without accelerators.
# The two XLA flags below cut compile time of the many small test programs by about a third on
# 2 cores; numerics are unaffected (they disable expensive optimisation passes, not precision).
# `--xla_cpu_multi_thread_eigen=false`: with jax 0.11.x (Python 3.12) a jitted program holding an
# FFT (the log-mel front end) and a collective deadlocks on >= 2 simulated CPU devices: the FFT's
# parallel tasks wait on XLA:CPU's shared Eigen pool while other devices' threads block in the
# collective (`experiments/compat/cpu_fft_collective.py` reproduces it; jax 0.10.2 is unaffected).
# Intra-op threads buy nothing with 8 devices on 2 cores.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
    + " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    + " --xla_cpu_multi_thread_eigen=false"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
