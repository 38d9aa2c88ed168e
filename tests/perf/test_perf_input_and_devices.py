"""Input timing on a fake clock and fake batches; a subprocess on n simulated CPU devices."""

import subprocess
import sys

import numpy as np
import pytest
from perflib import FakeClock

from imro_jax import perf


def test_pull_batches_counts_examples_bytes_and_seconds():
    clock = FakeClock()

    def batches():
        for size in (2, 3, 4):
            clock.advance(0.5)  # each batch takes half a second to arrive
            yield {"a": np.zeros((size, 5), np.float32), "label": np.zeros(size, np.int32),
                   "mask": {"a": np.ones(size, bool)}}

    seconds, examples, nbytes = perf.pull_batches(batches(), 3, clock=clock)
    assert (seconds, examples) == (1.5, 9)
    assert nbytes == 9 * (5 * 4 + 4 + 1)
    with pytest.raises(ValueError, match="batches must be >= 0"):
        perf.pull_batches(iter(()), -1)


def test_input_waits_times_only_the_next_calls_after_the_skipped_steps():
    clock, seen = FakeClock(), []

    def batches():
        for i in range(10):
            clock.advance(i)  # batch i blocks for i seconds
            yield i

    def step(item):
        seen.append(item)
        clock.advance(100)  # the step itself

    waits, wall = perf.input_waits(batches(), step, 3, skip=2, clock=clock)
    assert seen == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(waits, [2, 3, 4])
    assert wall == 2 + 3 + 4 + 3 * 100


def test_simulated_cpu_env_gives_a_subprocess_that_many_devices():
    env = perf.simulated_cpu_env(3, environ={"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_foo=1",
                                             "PATH": "/bin"}, extra_flags="--xla_bar=2")
    assert env["XLA_FLAGS"] == "--xla_foo=1 --xla_force_host_platform_device_count=3 --xla_bar=2"
    assert (env["JAX_PLATFORMS"], env["JAX_NUM_CPU_DEVICES"], env["PATH"]) == ("cpu", "3", "/bin")
    inherited = perf.simulated_cpu_env(3)  # from os.environ (the tests' 8 devices replaced)
    proc = subprocess.run([sys.executable, "-c", "import jax; print(jax.device_count())"], env=inherited,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "3", proc.stderr[-2000:]
    with pytest.raises(ValueError, match="devices must be >= 1, got 0"):
        perf.simulated_cpu_env(0)
