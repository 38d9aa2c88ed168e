"""Benchmark: examples/s of the grain input pipeline for each dataset.

  python experiments/bench/input_pipeline.py --data_dir /tmp/tfds \
      --datasets imro_synth,handwritten --synth_config small --worker_counts 0,2

Builds missing datasets first (imro_synth/default takes minutes; cmu_* need their pickles in the
manual dir and are skipped otherwise). For each dataset and worker count it times
``--num_batches`` training batches after ``--warmup`` batches and reports examples/s, batches/s
and MB/s of numpy batch data (`imro_jax.perf.pull_batches`) as the "Input pipeline" section of
`RESULTS.md` (``--results``; ``--json`` also writes the rows). `input_vs_step.py` sets the
pipeline's rate against the train step's.
"""

from __future__ import annotations

import argparse
import json

import benchlib
from imro_jax import perf
from imro_jax.data import datasets, make_pipeline
from imro_jax.eval.tables import markdown_table


def measure_pipeline(data_config, *, num_batches: int = 50, warmup: int = 5) -> dict:
    """Times ``num_batches`` training batches of ``make_pipeline`` after ``warmup``: ``examples_per_s``,
    ``batches_per_s``, ``mb_per_s`` and ``batch_size``."""
    iterator = make_pipeline(data_config, split="train", train=True, seed=0)
    try:
        perf.pull_batches(iterator, warmup)
        seconds, examples, nbytes = perf.pull_batches(iterator, num_batches)
    finally:
        if hasattr(iterator, "close"):
            iterator.close()
    return {
        "examples_per_s": examples / seconds,
        "batches_per_s": num_batches / seconds,
        "mb_per_s": nbytes / seconds / 1e6,
        "batch_size": data_config.batch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="")
    parser.add_argument("--manual_dir", default="", help="cmu_* pickles")
    parser.add_argument("--datasets", default="imro_synth,handwritten,cmu_mosi,cmu_mosei")
    parser.add_argument("--synth_config", default="small", help="imro_synth builder config")
    parser.add_argument("--worker_counts", default="0,2")
    parser.add_argument("--num_batches", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", default="", help="also write the results to this file")
    parser.add_argument("--results", default=str(benchlib.RESULTS),
                        help="markdown log to write the section to ('' = print only)")
    args = parser.parse_args()
    report = perf.Report("Input pipeline", args.results, benchlib.REPO)
    results, skipped = [], []
    for name in args.datasets.split(","):
        overrides = {"data_dir": args.data_dir}
        if name == "imro_synth":
            overrides["builder_config"] = args.synth_config
        if name.startswith("cmu_"):
            overrides["manual_dir"] = args.manual_dir
        config = datasets.default_data_config(name, **overrides)
        try:
            datasets.prepare_dataset(config)
        except FileNotFoundError as err:
            skipped.append(f"{name} skipped: {str(err).splitlines()[0]}")
            print(skipped[-1])
            continue
        for workers in (int(w) for w in args.worker_counts.split(",")):
            config.worker_count = workers
            row = {"dataset": f"{name}/{config.builder_config}", "worker_count": workers}
            row.update(measure_pipeline(config, num_batches=args.num_batches, warmup=args.warmup))
            results.append(row)
            print(
                f"{row['dataset']:>24s} workers={workers}: {row['examples_per_s']:9.0f} examples/s "
                f"{row['batches_per_s']:7.1f} batches/s (batch {row['batch_size']}) {row['mb_per_s']:7.1f} MB/s"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    table = markdown_table(
        ["dataset", "workers", "examples/s", "batches/s", "batch", "MB/s"],
        [[r["dataset"], r["worker_count"], f"{r['examples_per_s']:.0f}", f"{r['batches_per_s']:.1f}",
          r["batch_size"], f"{r['mb_per_s']:.1f}"] for r in results])
    report.finish(table, notes=[f"{args.num_batches} training batches timed after {args.warmup} (grain, "
                                "`imro_jax.perf.pull_batches`)", *skipped])


if __name__ == "__main__":
    main()
