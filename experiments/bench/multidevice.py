"""Benchmark 6: the same train step on 1, 2, 4, 8 simulated CPU devices.

    python experiments/bench/multidevice.py [--config trimodal] [--devices 1,2,4,8] [--steps 8]
        [--mesh_model 1]

One subprocess per device count (`--xla_force_host_platform_device_count=n`, set before JAX
starts) builds the step on a ("data", "model") mesh of n devices (`--mesh_model` devices on
"model", the rest on "data"), starts from the same host-drawn state (`imro_jax.perf.host_initial_state`,
same seed) and the same global batch, and runs `--steps` steps. Correctness: the losses of every
step equal the 1-device run's to float32 reduction-order rounding (max relative difference
reported; flagged above 1e-4). Throughput: median step time after 2 warm-up steps, examples/s
and examples/s per device.

Simulated devices share the host's cores, so per-device throughput on a CPU falls roughly as
1/n by construction; what the CPU run shows is correctness and the SPMD partitioning overhead.
On a multi-GPU machine the same script measures real scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import jax
import numpy as np

import benchlib
from imro_jax import perf
from imro_jax.eval import tables
from imro_jax.train.mesh import simulated_cpu_xla_flags

TOLERANCE = 1e-4


def worker(args) -> None:
    """Runs in the subprocess: prints one JSON line with losses and step times."""
    config = benchlib.resolve_config(args)
    config.mesh.model = args.mesh_model
    batch = perf.synthetic_batch(config.model, config.data.batch_size)
    bench = perf.build_step_bench(config.model.fusion, config, batch)
    losses, times, metrics = [], [], {}
    for _ in range(args.steps):
        times.append(perf.wall_seconds(lambda: metrics.update(bench.train())))
        losses.append(float(metrics["loss"]))
    print("RESULT " + json.dumps({
        "devices": jax.device_count(), "losses": losses, "times": times[2:] or times,
        "batch": config.data.batch_size, "mesh": dict(bench.runtime.batch_sharding.mesh.shape),
    }), flush=True)


def run_worker(n: int, argv: list[str]) -> dict:
    env = perf.simulated_cpu_env(n, extra_flags=simulated_cpu_xla_flags() if n > 1 else "")  # "" on jax 0.10
    proc = subprocess.run([sys.executable, __file__, "--worker", *argv], env=env,
                          capture_output=True, text=True, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{n}-device worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> None:
    parser = benchlib.base_parser(__doc__)
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--mesh_model", type=int, default=1, help="devices on the 'model' axis")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.tiny:
        args.devices, args.steps = "1,2", 3
        argv = [*argv, "--steps", "3"]
    report = perf.Report("Benchmark 6: multi-device (simulated CPU devices)", args.results, benchlib.REPO)
    counts = [int(n) for n in args.devices.split(",")]
    child_argv = [a for a in argv if a != "--worker"]
    results = {}
    for n in counts:
        results[n] = run_worker(n, child_argv)
        print(f"  {n} devices: loss {results[n]['losses'][-1]:.6f}", flush=True)
    reference = np.asarray(results[counts[0]]["losses"])
    rows, worst = [], 0.0
    for n in counts:
        r = results[n]
        losses = np.asarray(r["losses"])
        rel = float(np.max(np.abs(losses - reference) / np.maximum(np.abs(reference), 1e-12)))
        worst = max(worst, rel)
        step = perf.Summary.of(r["times"])
        rate = r["batch"] / step.median
        rows.append((n, "x".join(str(v) for v in r["mesh"].values()), f"{losses[0]:.6f}",
                     f"{losses[-1]:.6f}", f"{rel:.1e}", step.fmt(1e3, 1), f"{rate:.0f}",
                     f"{rate / n:.0f}"))
    header = ["devices", "mesh data x model", "loss step 1", f"loss step {args.steps}",
              f"max rel. diff to {counts[0]} dev.", "step ms", "examples/s", "examples/s/device"]
    report.finish(tables.markdown_table(header, rows), notes=[
        f"config `{benchlib.config_label(args)}`, global batch "
        f"{results[counts[0]]['batch']}, {args.steps} steps from the same host-drawn state; "
        f"simulated devices share {os.cpu_count()} CPU cores",
        f"correctness: max relative loss difference {worst:.1e} "
        f"({'OK' if worst <= TOLERANCE else 'ABOVE'} the {TOLERANCE:g} tolerance)",
    ])


if __name__ == "__main__":
    main()
