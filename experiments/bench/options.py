"""The model's implementation options against the default, side by side (no patching).

    python experiments/bench/options.py [--config trimodal] [--rounds 40] \
        [--variants "absorbed_fusion_kv=True;head_major_qkv=True;absorbed_fusion_kv=True,head_major_qkv=True"]

Each variant is the config with `model.<key> = <value>` set (Python literals; the `ModelSpec`
options `attention_impl`, `head_major_qkv`, `absorbed_fusion_kv`, or any other model key such
as `remat`). The options are optional spec keys that the committed configs do not list (adding
them would change every config's run hash), so they are set with `benchlib.variant`, and the
spec validates them. Its train step is the production step (`imro_jax.perf.build_step_bench`). Every variant
starts from the same host-drawn state and batch, and the steps are timed interleaved round by
round against the default config. Reported: step time, paired ratio to the default, the
compiled step's memory, and the first-step loss and its relative difference (the options
compute the same function, so ~1e-7 or 0).
"""

from __future__ import annotations

import ast

import jax

import benchlib
from imro_jax import perf
from imro_jax.eval import tables

DEFAULT_VARIANTS = "absorbed_fusion_kv=True;head_major_qkv=True;absorbed_fusion_kv=True,head_major_qkv=True"


def model_changes(text: str) -> dict:
    """`"a=True,b=cudnn"` -> `{"a": True, "b": "cudnn"}` (Python literals, else strings)."""
    changes = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, value = item.split("=", 1)
        try:
            changes[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            changes[key] = value
    return changes


def main(argv=None) -> None:
    parser = benchlib.base_parser(__doc__, rounds=40, warmup=3)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help="';'-separated variants, each ','-separated model key=value overrides")
    args = parser.parse_args(argv)
    if args.tiny:
        args.rounds, args.warmup, args.variants = 3, 1, "absorbed_fusion_kv=True"
    report = perf.Report("Model implementation options", args.results, benchlib.REPO)
    names = ["default", *[v.strip() for v in args.variants.split(";") if v.strip()]]
    base = benchlib.resolve_config(args)
    batch = perf.synthetic_batch(base.model, base.data.batch_size)
    benches, first_loss, memory = {}, {}, {}
    for name in names:
        config = base if name == "default" else benchlib.variant(base, **model_changes(name))
        bench = perf.build_step_bench(name, config, batch, devices=jax.devices()[:1])
        memory[name] = perf.memory_bytes(bench.compile_train())
        first_loss[name] = float(bench.train()["loss"])
        benches[name] = bench
    times = perf.interleaved_timings({n: b.train for n, b in benches.items()},
                                         rounds=args.rounds, warmup=args.warmup)
    rows = []
    for name in names:
        rel = abs(first_loss[name] - first_loss["default"]) / abs(first_loss["default"])
        ratio = "1 (reference)" if name == "default" else \
            perf.paired_ratio(times[name], times["default"]).fmt()
        rows.append((name, perf.Summary.of(times[name]).fmt(1e3, 2), ratio,
                     f"{memory[name] / 2**20:.1f}", f"{first_loss[name]:.6f}", f"{rel:.1e}"))
    report.finish(tables.markdown_table(
        ["variant (model.*)", "train step ms", "ratio to default", "step memory MiB", "loss step 1", "rel. diff"],
        rows), notes=[
        f"{benchlib.config_note(args, base)}, same host-drawn state, {args.rounds} interleaved rounds",
        "step memory: arguments + temporaries + outputs - donated, from the compiled step's memory_analysis()",
    ])


if __name__ == "__main__":
    main()
