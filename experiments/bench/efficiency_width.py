"""Benchmark 2, width sweep: MFU of the same tri-modal step as the model gets wider.

    python experiments/bench/efficiency_width.py [--widths 64,128,256,512] [--rounds 20]

The base config is a CPU smoke-size model (dim 64, 4 heads of 16, MLP 128). Its products have
small contractions (16 in attention, 64 elsewhere), which XLA:CPU runs far below the square
1024^2 ceiling (`efficiency.py` measures its largest one at 30-45% of it). This sweep separates
"the implementation is slow" from "these matrices are small": it widens the model
(`dim = w`, `mlp_dim = w * base mlp_dim / base dim`, same heads, depth, batch and token counts,
so head_dim = w / heads) and measures, in one run, every width's train step, its largest
model-shaped product and the square ceiling, interleaved round by round.

Per width: hand-counted model FLOPs per step (`imro_jax.perf.hand_count`), step time, MFU = FLOPs /
step time / ceiling rate, the model-shaped product's rate over the ceiling, and their quotient
(how close the whole step comes to the rate of its own largest product).
"""

from __future__ import annotations

import jax

import benchlib
from imro_jax import perf
from imro_jax.eval import tables
from imro_jax.train import precision


def width_variant(config, width: int):
    """`config` with `model.dim = width` and the MLP ratio kept (`mlp_dim / dim`)."""
    if width % config.model.num_heads:
        raise ValueError(f"width {width} is not divisible by num_heads={config.model.num_heads}")
    ratio = config.model.mlp_dim / config.model.dim
    return benchlib.variant(config, dim=width, mlp_dim=int(round(width * ratio)))


def main(argv=None) -> None:
    parser = benchlib.base_parser(__doc__, rounds=20, warmup=2)
    parser.add_argument("--widths", default="64,128,256,512", help="comma-separated model widths")
    parser.add_argument("--matmul_size", type=int, default=1024, help="n of the n x n ceiling matmul")
    args = parser.parse_args(argv)
    if args.tiny:
        args.rounds, args.warmup, args.matmul_size, args.widths = min(args.rounds, 3), 1, 256, "16,32"
    widths = [int(w) for w in args.widths.split(",") if w]
    report = perf.Report("Benchmark 2: MFU against model width", args.results, benchlib.REPO)
    base = benchlib.resolve_config(args)
    dtype = precision.compute_dtype(base.train.compute_dtype)

    calls, hand, shaped = {}, {}, {}
    for width in widths:
        config = width_variant(base, width)
        numpy_batch = perf.synthetic_batch(config.model, config.data.batch_size)
        bench = perf.build_step_bench(f"dim {width}", config, numpy_batch, devices=jax.devices()[:1])
        bench.compile_train()
        bench.train()
        terms = perf.train_step_terms(config, numpy_batch)
        hand[width] = perf.train_flops(terms)
        shaped[width] = perf.model_shaped_product(terms, config.model)
        calls[f"step {width}"] = bench.train
        calls[f"shaped {width}"], hand[f"shaped {width}"] = perf.matmul_probe(shaped[width], dtype)
    calls["ceiling"], ceiling_flops = perf.matmul_probe((args.matmul_size,) * 3, dtype)
    times = perf.interleaved_timings(calls, rounds=args.rounds, warmup=args.warmup)

    ceiling = ceiling_flops / times["ceiling"]
    rows, mfu = [], {}
    for width in widths:
        step_rate = hand[width] / times[f"step {width}"]
        shaped_rate = hand[f"shaped {width}"] / times[f"shaped {width}"]
        mfu[width] = perf.Summary.of(step_rate / ceiling)
        m, k, n = shaped[width]
        rows.append((
            width, f"{base.model.num_heads} x {width // base.model.num_heads}",
            f"{hand[width] * 1e-9:.3g}", perf.Summary.of(times[f"step {width}"]).fmt(1e3, 1),
            mfu[width].fmt(100, 1),
            f"{m}x{k} @ {k}x{n}", perf.Summary.of(shaped_rate / ceiling).fmt(100, 1),
            perf.Summary.of(step_rate / shaped_rate).fmt(100, 1),
        ))
    table = tables.markdown_table(
        ["dim", "heads x head_dim", "GFLOP / step", "step ms", "**MFU %**", "largest product",
         "its rate / ceiling %", "step rate / its rate %"], rows)
    target = benchlib.mfu_target(jax.default_backend())
    met = [w for w in widths if mfu[w].median >= target]
    report.finish(table, notes=[
        f"{benchlib.config_note(args, base)}; width varied, MLP ratio kept",
        f"ceiling: {args.matmul_size}^2 {jax.numpy.dtype(dtype).name} `jnp.dot`, "
        f"{perf.Summary.of(ceiling).fmt(1e-9, 1)} GFLOP/s; {args.rounds} interleaved rounds after "
        f"{args.warmup} warm-up; values are median [IQR] of per-round ratios",
        f"{target:.0%} MFU target on {jax.default_backend()}: "
        + (f"reached at dim {', '.join(map(str, met))}" if met else "reached at no width measured"),
    ])


if __name__ == "__main__":
    main()
