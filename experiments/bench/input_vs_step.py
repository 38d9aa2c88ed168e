"""Benchmark 4: grain input pipeline throughput against the train step's consumption.

    python experiments/bench/input_vs_step.py [--config trimodal] [--synth_config small]
        [--data_dir /tmp/imro_bench_tfds] [--rounds 8] [--batches 10] [--loop_steps 40]

Three measurements at the config's batch size, in one process:

1. pipeline alone: `make_pipeline` batches/s in rounds of `--batches` batches. Its read threads
   keep filling a buffer of `data.prefetch_buffer_size` batches while the step runs, so each
   round first drains that many batches untimed: the timed batches come at the rate the
   pipeline sustains, not out of the buffer;
2. step alone: the jitted train step on a device batch from that pipeline;
   (1) and (2) alternate round by round, so their per-round ratio (pipeline examples/s over
   step examples/s; > 1 means the input keeps up) sees the same machine load;
3. the real loop: `imro_jax.train.input.Prefetcher` (the loop's background thread and device
   prefetch) feeding `--loop_steps` train steps; the time the loop blocks in `next(prefetcher)`
   is the input stall. On a CPU the pipeline and the step share the same cores, so (3) is the
   honest test of "the step never waits on input".

The dataset is built first if missing (`imro_synth/small`: 2000 train examples, same shapes as
`default`). `--tiny` uses the `handwritten` dataset and config with a width-16, one-block model.
"""

from __future__ import annotations


import jax
import numpy as np

import benchlib
from imro_jax import perf
from imro_jax.data import datasets, make_pipeline
from imro_jax.eval import tables
from imro_jax.train import input as input_lib


def loop_stalls(bench: perf.StepBench, data_config, steps: int, depth: int) -> dict:
    """Runs the loop's Prefetcher + train step; returns wall and wait seconds and examples."""
    iterator = make_pipeline(data_config, split="train", train=True, seed=1)
    prefetcher = input_lib.Prefetcher(iterator, bench.runtime.batch_sharding, depth)

    def step(item):
        bench.batch = item[0]  # (device batch, iterator state)
        bench.train()

    try:  # the first 2 batches include the pipeline's start-up
        waits, wall = perf.input_waits(prefetcher, step, steps, skip=2)
    finally:
        prefetcher.close()
    return {"wall": wall, "waits": waits, "examples": steps * data_config.batch_size}


def main(argv=None) -> None:
    parser = benchlib.base_parser(__doc__, rounds=8)
    parser.add_argument("--data_dir", default="/tmp/imro_bench_tfds")
    parser.add_argument("--synth_config", default="small", help="imro_synth builder config")
    parser.add_argument("--worker_count", type=int, default=-1, help="grain workers (-1: config's)")
    parser.add_argument("--batches", type=int, default=20, help="batches (and steps) per round")
    parser.add_argument("--loop_steps", type=int, default=40)
    args = parser.parse_args(argv)
    if args.tiny:
        args.config, args.rounds, args.batches, args.loop_steps = "handwritten", 2, 2, 4
        args.override = [*args.override, "model.dim=16", "model.mlp_dim=32", "model.depth=1",
                         "model.num_heads=2", "data.batch_size=8", "data.prefetch_buffer_size=4"]
    report = perf.Report("Benchmark 4: input pipeline vs train step", args.results, benchlib.REPO)
    config = benchlib.load_config(args.config, args.override)
    config.data.data_dir = args.data_dir
    if config.data.name == "imro_synth":
        config.data.builder_config = args.synth_config
    if args.worker_count >= 0:
        config.data.worker_count = args.worker_count
    datasets.prepare_dataset(config.data)

    iterator = make_pipeline(config.data, split="train", train=True, seed=0)
    first = next(iterator)
    bench = perf.build_step_bench(config.model.fusion, config, first, devices=jax.devices()[:1])
    bench.train()
    perf.pull_batches(iterator, 2 + config.data.prefetch_buffer_size)  # warm-up
    pipeline_rate, step_rate = np.zeros(args.rounds), np.zeros(args.rounds)
    for r in range(args.rounds):
        perf.pull_batches(iterator, config.data.prefetch_buffer_size)  # drain what was read ahead
        seconds, examples, _ = perf.pull_batches(iterator, args.batches)
        pipeline_rate[r] = examples / seconds
        steps = perf.wall_seconds(lambda: [bench.train() for _ in range(args.batches)])
        step_rate[r] = args.batches * config.data.batch_size / steps
    if hasattr(iterator, "close"):
        iterator.close()
    loop = loop_stalls(bench, config.data, args.loop_steps, config.train.prefetch)

    ratio = perf.Summary.of(pipeline_rate / step_rate)
    stall = loop["waits"].sum() / loop["wall"]
    rows = [
        ("pipeline alone, examples/s", perf.Summary.of(pipeline_rate).fmt(1, 0)),
        ("train step alone, examples/s", perf.Summary.of(step_rate).fmt(1, 0)),
        ("pipeline / step (per-round ratio)", ratio.fmt(1, 2)),
        ("loop (Prefetcher + step), examples/s", f"{loop['examples'] / loop['wall']:.0f}"),
        ("loop: time blocked on input, % of wall", f"{100 * stall:.1f}"),
        ("loop: wait per step, ms", perf.Summary.of(loop["waits"]).fmt(1e3, 2)),
    ]
    dataset = f"{config.data.name}/{config.data.builder_config or 'default'}"
    report.finish(tables.markdown_table(["quantity", "value (median [IQR])"], rows), notes=[
        f"dataset {dataset}, batch {config.data.batch_size}, grain workers "
        f"{config.data.worker_count}, read threads {config.data.read_threads}, prefetch "
        f"{config.train.prefetch}; model `{args.config}` (fusion {config.model.fusion}) on 1 "
        f"{jax.devices()[0].platform} device; {args.rounds} alternating rounds of "
        f"{args.batches} batches / steps, then {args.loop_steps} loop steps",
        f"the step {'does not wait' if stall < 0.05 else 'WAITS'} on input in the loop "
        f"({100 * stall:.1f}% of wall blocked; pipeline/step ratio {ratio.median:.2f})",
    ])


if __name__ == "__main__":
    main()
