"""Profile: where a train step's time goes, by model component, forward/backward and op kind.

    python experiments/bench/profile_step.py [--config trimodal] [--fusion imro] [--steps 5]

Traces `--steps` train steps with `jax.profiler` and sums the time of every executed XLA op
per step, by model component, pass (forward / backward / optimizer) and op kind
(`imro_jax.perf.op_profile` says how each op is attributed). Op times are summed over threads
(CPU runs independent ops concurrently), so shares are of the summed op time; the wall time per
step is printed beside them. `--hlo_dump FILE` also writes the optimised HLO text.
"""

from __future__ import annotations

import collections

import jax

import benchlib
from imro_jax import perf
from imro_jax.eval import tables


def _rows(counter: collections.Counter, total: float, top: int | None = None):
    return [(name, f"{seconds * 1e3:.2f}", f"{100 * seconds / total:.1f}")
            for name, seconds in counter.most_common(top)]


def main(argv=None) -> None:
    parser = benchlib.base_parser(__doc__)
    parser.add_argument("--fusion", default="", help="override model.fusion")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=12, help="slowest single ops to list")
    parser.add_argument("--hlo_dump", default="", help="write the optimised HLO text here")
    args = parser.parse_args(argv)
    report = perf.Report("Profile of one train step", args.results, benchlib.REPO)
    config = benchlib.resolve_config(args)
    if args.fusion:
        config = benchlib.variant(config, fusion=args.fusion)
    batch = perf.synthetic_batch(config.model, config.data.batch_size)
    bench = perf.build_step_bench(config.model.fusion, config, batch, devices=jax.devices()[:1])
    hlo = bench.compile_train().as_text()
    bench.train()
    wall = perf.Summary.of([perf.wall_seconds(bench.train) for _ in range(args.steps)])
    groups = perf.group_op_times(perf.trace_op_times(bench.train, args.steps), perf.instruction_metadata(hlo))
    if args.hlo_dump:
        with open(args.hlo_dump, "w") as f:
            f.write(hlo)
    total = sum(groups["pass"].values())
    sections = []
    for key, top in (("pass", None), ("kind", None), ("component", None), ("op", args.top)):
        sections.append(f"By {key} (ms of op time per step, % of {total * 1e3:.1f} ms):\n\n"
                        + tables.markdown_table([key, "ms/step", "%"], _rows(groups[key], total, top)))
    report.finish(
        "\n\n".join(sections),
        notes=[f"{benchlib.config_note(args, config)}, {args.steps} traced steps",
               f"wall time per step: {wall.fmt(1e3, 1)} ms (median [IQR])"],
    )


if __name__ == "__main__":
    main()
