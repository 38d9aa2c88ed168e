"""The workaround the tests rely on (`--xla_cpu_multi_thread_eigen=false`, tests/conftest.py) lets an
FFT + collective program finish on simulated CPU devices with the installed jax."""

import subprocess
import sys


def test_fft_collective_program_finishes_with_the_workaround_flag():
    proc = subprocess.run([sys.executable, "-m", "imro_jax.perf.cpu_fft_check", "--devices", "2", "--timeout", "90"],
                          capture_output=True, text=True, timeout=300)
    assert "--xla_cpu_multi_thread_eigen=false: ok" in proc.stdout, proc.stdout + proc.stderr[-2000:]
