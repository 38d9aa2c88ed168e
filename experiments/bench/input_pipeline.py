"""Benchmark 4: the grain input pipeline, alone per dataset and against the train step's consumption.

    python experiments/bench/input_pipeline.py [--config trimodal] [--synth_config small] [--data_dir DIR]
        [--datasets imro_synth,handwritten,cmu_mosi,cmu_mosei] [--worker_counts 0,2] [--manual_dir DIR]
        [--rounds 8] [--batches 20] [--loop_steps 40]

Datasets missing under `--data_dir` are built first (`imro_synth/small`: 2000 train examples,
the shapes of `default`; cmu_* need their pickles in `--manual_dir` and are skipped otherwise).

1. every dataset of `--datasets` (`''`: none) at each of `--worker_counts`: examples/s, batches/s
   and MB/s of numpy batch data over `--batches` training batches of `make_pipeline` after a
   warm-up (`imro_jax.perf.pull_batches`);
2. the config's dataset at its batch size, pipeline alone against the jitted train step alone, in
   rounds of `--batches` batches. The pipeline's read threads keep filling a buffer of
   `data.prefetch_buffer_size` batches while the step runs, so each round first drains that many
   batches untimed: the timed batches come at the rate the pipeline sustains. The two alternate
   round by round, so their per-round ratio (> 1: the input keeps up) sees the same machine load;
3. the real loop: `imro_jax.train.input.Prefetcher` (the loop's background thread and device
   prefetch) feeding `--loop_steps` train steps; the time the loop blocks in `next(prefetcher)` is
   the input stall. On a CPU the pipeline and the step share the same cores, so (3) is the honest
   test of "the step never waits on input".

`--tiny`: the `handwritten` dataset and config with a width-16, one-block model, no worker processes.
"""

from __future__ import annotations

import jax
import numpy as np

import benchlib
from imro_jax import perf
from imro_jax.data import datasets, make_pipeline
from imro_jax.eval import tables
from imro_jax.train import input as input_lib

TINY_MODEL = ["model.dim=16", "model.mlp_dim=32", "model.depth=1", "model.num_heads=2", "data.batch_size=8",
              "data.prefetch_buffer_size=4"]


def dataset_rates(names: list[str], worker_counts: list[int], args) -> tuple[list, list[str]]:
    """Table rows of (1) and the notes of the datasets skipped (no pickle)."""
    rows, skipped = [], []
    for name in names:
        overrides = {"data_dir": args.data_dir, **({"builder_config": args.synth_config} if name == "imro_synth" else {}),
                     **({"manual_dir": args.manual_dir} if name.startswith("cmu_") else {})}
        config = datasets.default_data_config(name, **overrides)
        try:
            datasets.prepare_dataset(config)
        except FileNotFoundError as err:
            skipped.append(f"{name} skipped: {str(err).splitlines()[0]}")
            continue
        for workers in worker_counts:
            config.worker_count = workers
            iterator = make_pipeline(config, split="train", train=True, seed=0)
            perf.pull_batches(iterator, 2)
            seconds, examples, nbytes = perf.pull_batches(iterator, args.batches)
            getattr(iterator, "close", lambda: None)()
            rows.append((f"{name}/{config.builder_config}", workers, f"{examples / seconds:.0f}",
                         f"{args.batches / seconds:.1f}", config.batch_size, f"{nbytes / seconds / 1e6:.1f}"))
            print(f"  {rows[-1][0]} workers={workers}: {rows[-1][2]} examples/s", flush=True)
    return rows, skipped


def loop_stalls(bench: perf.StepBench, data_config, steps: int, depth: int) -> dict:
    """Runs the loop's Prefetcher + train step; returns wall and wait seconds and examples."""
    prefetcher = input_lib.Prefetcher(make_pipeline(data_config, split="train", train=True, seed=1),
                                      bench.runtime.batch_sharding, depth)

    def step(item):
        bench.batch = item[0]  # (device batch, iterator state)
        bench.train()

    try:  # the first 2 batches include the pipeline's start-up
        waits, wall = perf.input_waits(prefetcher, step, steps, skip=2)
    finally:
        prefetcher.close()
    return {"wall": wall, "waits": waits, "examples": steps * data_config.batch_size}


def step_against_pipeline(config, args) -> tuple[list, list[str]]:
    """Table rows of (2) and (3), and their notes."""
    iterator = make_pipeline(config.data, split="train", train=True, seed=0)
    bench = perf.build_step_bench(config.model.fusion, config, next(iterator), devices=jax.devices()[:1])
    bench.train()
    perf.pull_batches(iterator, 2 + config.data.prefetch_buffer_size)  # warm-up
    pipeline_rate, step_rate = np.zeros(args.rounds), np.zeros(args.rounds)
    for r in range(args.rounds):
        perf.pull_batches(iterator, config.data.prefetch_buffer_size)  # drain what was read ahead
        seconds, examples, _ = perf.pull_batches(iterator, args.batches)
        pipeline_rate[r] = examples / seconds
        steps = perf.wall_seconds(lambda: [bench.train() for _ in range(args.batches)])
        step_rate[r] = args.batches * config.data.batch_size / steps
    getattr(iterator, "close", lambda: None)()
    loop = loop_stalls(bench, config.data, args.loop_steps, config.train.prefetch)
    ratio, stall = perf.Summary.of(pipeline_rate / step_rate), loop["waits"].sum() / loop["wall"]
    rows = [("pipeline alone, examples/s", perf.Summary.of(pipeline_rate).fmt(1, 0)),
            ("train step alone, examples/s", perf.Summary.of(step_rate).fmt(1, 0)),
            ("pipeline / step (per-round ratio)", ratio.fmt(1, 2)),
            ("loop (Prefetcher + step), examples/s", f"{loop['examples'] / loop['wall']:.0f}"),
            ("loop: time blocked on input, % of wall", f"{100 * stall:.1f}"),
            ("loop: wait per step, ms", perf.Summary.of(loop["waits"]).fmt(1e3, 2))]
    data = config.data
    return rows, [
        f"step against pipeline: dataset {data.name}/{data.builder_config or 'default'}, batch {data.batch_size}, "
        f"grain workers {data.worker_count}, read threads {data.read_threads}, prefetch {config.train.prefetch}; "
        f"model `{args.config}` (fusion {config.model.fusion}) on 1 {jax.devices()[0].platform} device; "
        f"{args.rounds} alternating rounds of {args.batches} batches / steps, then {args.loop_steps} loop steps",
        f"the step {'does not wait' if stall < 0.05 else 'WAITS'} on input in the loop "
        f"({100 * stall:.1f}% of wall blocked; pipeline/step ratio {ratio.median:.2f})"]


def main(argv=None) -> None:
    parser = benchlib.base_parser(__doc__, rounds=8)
    parser.add_argument("--data_dir", default="/tmp/imro_bench_tfds")
    parser.add_argument("--manual_dir", default="", help="cmu_* pickles")
    parser.add_argument("--datasets", default="imro_synth,handwritten,cmu_mosi,cmu_mosei",
                        help="datasets timed alone ('' = none)")
    parser.add_argument("--worker_counts", default="0,2", help="grain worker processes for the datasets alone")
    parser.add_argument("--synth_config", default="small", help="imro_synth builder config")
    parser.add_argument("--worker_count", type=int, default=-1, help="grain workers against the step (-1: config's)")
    parser.add_argument("--batches", type=int, default=20, help="batches (and steps) per round")
    parser.add_argument("--loop_steps", type=int, default=40)
    args = parser.parse_args(argv)
    if args.tiny:
        args.config, args.rounds, args.batches, args.loop_steps = "handwritten", 2, 2, 4
        args.datasets, args.worker_counts, args.override = "handwritten", "0", [*args.override, *TINY_MODEL]
    report = perf.Report("Benchmark 4: input pipeline", args.results, benchlib.REPO)
    config = benchlib.load_config(args.config, args.override)
    config.data.data_dir = args.data_dir
    if config.data.name == "imro_synth":
        config.data.builder_config = args.synth_config
    if args.worker_count >= 0:
        config.data.worker_count = args.worker_count
    datasets.prepare_dataset(config.data)
    names, workers = [n for n in args.datasets.split(",") if n], [int(w) for w in args.worker_counts.split(",") if w]
    alone, skipped = dataset_rates(names, workers, args)
    rows, notes = step_against_pipeline(config, args)
    table = tables.markdown_table(["quantity", "value (median [IQR])"], rows)
    if alone:
        table = tables.markdown_table(["dataset", "workers", "examples/s", "batches/s", "batch", "MB/s"], alone) + \
            "\n\nAgainst the train step:\n\n" + table
    report.finish(table, notes=[f"datasets alone: {args.batches} training batches timed after 2", *skipped, *notes])


if __name__ == "__main__":
    main()
