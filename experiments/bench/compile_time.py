"""Benchmark 5: compile time of the train step per config, and no recompilation after step 1.

    python experiments/bench/compile_time.py [--configs trimodal,trimodal:uniform,...] [--steps 10]

For each config (`name` or `name:fusion`): builds the step as `imro train` does, then calls it
with a fresh host batch every step (new numpy arrays of the same shapes, placed on the mesh by
`imro_jax.train.input.to_global_batch`, as the loop's prefetcher does). A `jax.monitoring`
listener (`imro_jax.perf.CompileCounter`) records the trace, lowering and XLA-compile durations of
the first call and counts every compilation of `train_step` in the calls after it; the jitted
function's own cache size (`_cache_size()`) is read as a second check. Also reported: the
process CPU seconds of the first call (the compile is mostly single-threaded, so on a loaded
machine CPU seconds estimate the idle-machine wall time better than wall seconds do).

Target: < 30 s for the tri-modal base config on CPU, and 0 compilations after the first step.
"""

from __future__ import annotations

import time

import jax

import benchlib
from imro_jax import perf
from imro_jax.eval import tables
from imro_jax.train import input as input_lib

DEFAULT_CONFIGS = "trimodal,trimodal:uniform,trimodal:concat,trimodal:late,handwritten,synth_caption"


def measure(spec: str, args) -> dict:
    """Compile phases, first-call CPU time and recompilations for one `name[:fusion]`."""
    name, _, fusion = spec.partition(":")
    config = benchlib.resolve_config(args, name)
    if fusion:
        config = benchlib.variant(config, fusion=fusion)

    def host_batch(seed):
        return perf.synthetic_batch(config.model, config.data.batch_size, seed=seed)

    bench = perf.build_step_bench(spec, config, host_batch(0), devices=jax.devices()[:1])
    with perf.CompileCounter() as first:
        wall, cpu = time.perf_counter(), time.process_time()
        bench.train()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    with perf.CompileCounter() as later:
        for step in range(1, args.steps):
            bench.batch = input_lib.to_global_batch(host_batch(step), bench.runtime.batch_sharding)
            bench.train()
    return {
        "config": spec,
        "trace": first.seconds("trace", "train_step"),
        "lower": first.seconds("lower", "train_step"),
        "compile": first.seconds("compile", "train_step"),
        "first_wall": wall,
        "first_cpu": cpu,
        "first_compiles": first.count("train_step"),
        "cache_hits": first.cache_hits,
        "later_compiles": later.count("train_step"),
        "cache_size": getattr(bench.runtime.jitted, "_cache_size", lambda: -1)(),
    }


def main(argv=None) -> None:
    parser = benchlib.base_parser(__doc__)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help="comma-separated config names, each optionally ':fusion'")
    parser.add_argument("--steps", type=int, default=10, help="calls per config (first included)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.configs, args.steps = "bench_tiny", 3
    report = perf.Report("Benchmark 5: compile time and recompilation", args.results, benchlib.REPO)
    results = []
    for spec in args.configs.split(","):
        results.append(measure(spec, args))
        print(f"  {spec}: compile {results[-1]['compile']:.1f} s", flush=True)
    rows = [
        (r["config"], f"{r['trace']:.1f}", f"{r['lower']:.1f}", f"{r['compile']:.1f}",
         f"{r['first_wall']:.1f}", f"{r['first_cpu']:.1f}", r["first_compiles"],
         r["later_compiles"], r["cache_size"])
        for r in results
    ]
    header = ["config", "trace s", "lower s", "XLA compile s", "first call wall s",
              "first call CPU s", "compiles (call 1)", f"compiles (calls 2-{args.steps})",
              "jit cache size"]
    base = next((r for r in results if r["config"] == "trimodal"), None)
    notes = [
        f"jax.monitoring events of `train_step` on {jax.devices()[0].platform}, 1 device; every "
        f"call after the first gets a new host batch of the same shapes",
        "recompilation: " + ("none after the first call (every config)"
                             if all(r["later_compiles"] == 0 and r["cache_size"] == 1 for r in results)
                             else "FOUND (see table)"),
    ]
    if any(r["cache_hits"] for r in results):
        notes.append("some first calls were served by the persistent compilation cache "
                     "(JAX_COMPILATION_CACHE_DIR is set): their compile time is a cache load")
    if base is not None:
        notes.append(f"base config: first call {base['first_wall']:.1f} s wall, "
                     f"{base['first_cpu']:.1f} s CPU against the < 30 s target")
    report.finish(tables.markdown_table(header, rows), notes)


if __name__ == "__main__":
    main()
