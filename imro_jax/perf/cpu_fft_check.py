"""Checks the installed jax for the XLA:CPU deadlock of an FFT inside a multi-device program.

    python -m imro_jax.perf.cpu_fft_check [--devices 2] [--timeout 60]

With jax 0.11.2 (Python 3.12, 2026-11), a jitted step whose gradient needs a collective and
whose forward holds an FFT (as the spectrogram encoder's log-mel front end does) never finishes
on >= 2 simulated CPU devices (`--xla_force_host_platform_device_count`): one device does not
join the all-reduce/all-gather rendezvous and XLA aborts after 40 s, or the process hangs. The
FFT's parallel tasks wait on XLA:CPU's shared Eigen thread pool while the other devices' threads
sit in the collective. `--xla_cpu_multi_thread_eigen=false` avoids it. jax 0.10.2 is
unaffected. Real accelerators and a single CPU device do not take this path.

The script runs the minimal program in a subprocess per flag setting and prints one line each:
`ok` (finished) or `DEADLOCK` (killed at the timeout or aborted by XLA's rendezvous check).
Exit status 1 if the default setting deadlocks.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from imro_jax.perf.simulated_cpu import simulated_cpu_env
from imro_jax.train.mesh import CPU_FFT_DEADLOCK_WORKAROUND as WORKAROUND

PROGRAM = """
import numpy as np, jax, jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
mesh = Mesh(np.array(jax.devices()), ("data",))
x = jax.make_array_from_process_local_data(
    NamedSharding(mesh, P("data")), np.random.default_rng(0).normal(size=(64, 61, 64)).astype(np.float32))
w = jax.device_put(np.ones((64,), np.float32), NamedSharding(mesh, P()))

@jax.jit
def step(w, x):
    def loss(w):
        spectrum = jnp.fft.rfft(x * w, axis=-1)
        return jnp.mean(jnp.log(jnp.abs(spectrum) ** 2 + 1e-6))
    value, grad = jax.value_and_grad(loss)(w)
    return w - 0.01 * grad, value

for _ in range(20):
    w, value = step(w, x)
    float(value)
print("finished", jax.__version__)
"""


def run(devices: int, extra_flags: str, timeout: float) -> str:
    inherited = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # only the flags under test
    env = simulated_cpu_env(devices, environ=inherited, extra_flags=extra_flags)
    try:
        proc = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "DEADLOCK (killed at the timeout)"
    if proc.returncode == 0 and "finished" in proc.stdout:
        return "ok"
    if "rendezvous" in proc.stderr:
        return f"DEADLOCK (XLA rendezvous abort, exit {proc.returncode})"
    return f"error (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    import jax  # the version only; the programs run in subprocesses

    default = run(args.devices, "", args.timeout)
    workaround = run(args.devices, WORKAROUND, args.timeout)
    print(f"jax {jax.__version__}, {args.devices} simulated CPU devices, FFT + collective step:")
    print(f"  default XLA flags: {default}")
    print(f"  {WORKAROUND}: {workaround}")
    return 1 if default != "ok" else 0


if __name__ == "__main__":
    sys.exit(main())
