"""Benchmark 2: hardware efficiency, model FLOPs utilisation against matmul ceilings, by model width.

    python experiments/bench/efficiency.py [--config trimodal] [--widths 64,128,256,512] [--rounds 30]
        [--matmul_size 1024]

Model FLOPs per train step are counted three ways (see `imro_jax.perf.flops`):

* hand count from the config (matrix products, forward + backward), the MFU numerator;
* the same quantity read off the train step's jaxpr (every `dot_general`): must equal the hand count;
* XLA's `cost_analysis()["flops"]` of the compiled step: all ops (elementwise, softmax, norms,
  AdamW, the FFT) on top of the products, as the compiler counts them.

Widths (`--widths`; default: the config's own): the base config is a CPU smoke-size model (dim 64,
4 heads of 16, MLP 128) whose products have small contractions, which XLA:CPU runs far below a
square product's rate. Widening it (`dim = w`, `mlp_dim = w * mlp_dim / dim`, same heads, depth,
batch and tokens, so head_dim = w / heads) separates "the implementation is slow" from "these
matrices are small". Per width a model-shaped product (the largest encoder MLP input,
`[batch * tokens, dim] @ [dim, mlp_dim]`) is timed too: how close the step comes to the rate of its
own largest product.

Ceilings, measured in the same run: a `[n, n] @ [n, n]` `jnp.dot` in the compute dtype
(`train.compute_dtype`; XLA's own rate) and, on a CPU in float32, numpy's BLAS product of the same
size; the machine's ceiling per round is the faster of them. Every call (each width's step and
product, the ceilings) is interleaved round by round, so all see the same machine load; MFU per
round = (model FLOPs / step time) / ceiling rate, reported as median [IQR]. Targets: >= 40% (CPU
float32, base config), >= 50% (H100/H200, bf16, ViT-B).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

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


def measure_width(config, dtype) -> tuple[dict, dict]:
    """`({label: call}, facts)` of one width: its train step and model-shaped product, and the
    step's FLOPs counted three ways."""
    width = config.model.dim
    numpy_batch = perf.synthetic_batch(config.model, config.data.batch_size)
    bench = perf.build_step_bench(f"dim {width}", config, numpy_batch, devices=jax.devices()[:1])
    xla = perf.xla_flops(bench.compile_train())
    with bench.runtime.tracing_context():
        jaxpr = perf.jaxpr_matmul_flops(bench.runtime.jitted, bench.state, bench.batch)
    bench.train()
    terms = perf.train_step_terms(config, numpy_batch)
    shaped = perf.model_shaped_product(terms, config.model)
    shaped_call, shaped_flops = perf.matmul_probe(shaped, dtype)
    facts = dict(hand=perf.train_flops(terms), jaxpr=jaxpr, xla=xla, shaped=shaped, shaped_flops=shaped_flops,
                 terms=terms, forward=perf.forward_flops(terms))
    return {f"step {width}": bench.train, f"shaped {width}": shaped_call}, facts


def main(argv=None) -> None:
    parser = benchlib.base_parser(__doc__, rounds=30, warmup=3)
    parser.add_argument("--widths", default="", help="comma-separated model widths (default: the config's dim)")
    parser.add_argument("--matmul_size", type=int, default=1024, help="n of the n x n ceiling products")
    args = parser.parse_args(argv)
    if args.tiny:
        args.rounds, args.warmup, args.matmul_size = min(args.rounds, 3), 1, 256
    report = perf.Report("Benchmark 2: hardware efficiency (MFU)", args.results, benchlib.REPO)
    base = benchlib.resolve_config(args)
    widths = [int(w) for w in args.widths.split(",") if w] or [base.model.dim]
    dtype = precision.compute_dtype(base.train.compute_dtype)
    calls, facts = {}, {}
    for width in widths:
        width_calls, facts[width] = measure_width(base if width == base.model.dim else width_variant(base, width), dtype)
        calls.update(width_calls)
    n = args.matmul_size
    calls["jnp.dot"], ceiling_flops = perf.matmul_probe((n, n, n), dtype)
    probes = ["jnp.dot"]
    if jax.default_backend() == "cpu" and dtype == jnp.float32:  # numpy's BLAS is a CPU float32 ceiling only
        calls["numpy"], probes = perf.numpy_matmul_probe(n), ["jnp.dot", "numpy"]
    times = perf.interleaved_timings(calls, rounds=args.rounds, warmup=args.warmup)
    xla_rate = ceiling_flops / times["jnp.dot"]
    best = np.maximum.reduce([ceiling_flops / times[k] for k in probes])

    rows, mfu = [], {}
    for width in widths:
        f = facts[width]
        step_rate = f["hand"] / times[f"step {width}"]
        shaped_rate = f["shaped_flops"] / times[f"shaped {width}"]
        mfu[width] = perf.Summary.of(step_rate / best)
        m, k, n_ = f["shaped"]
        rows.append((width, f"{base.model.num_heads} x {width // base.model.num_heads}", f"{f['hand'] * 1e-9:.4g}",
                     "equal" if abs(f["jaxpr"] - f["hand"]) <= 1e-9 * f["hand"] else f"{f['jaxpr'] / f['hand']:.4f}",
                     f"{f['xla'] / f['hand']:.2f}", f"{f['hand'] / f['forward']:.2f}",
                     perf.Summary.of(times[f"step {width}"]).fmt(1e3, 2), mfu[width].fmt(100, 1),
                     perf.Summary.of(step_rate / xla_rate).fmt(100, 1),
                     perf.Summary.of(f["xla"] / times[f"step {width}"] / best).fmt(100, 1),
                     f"{m}x{k} @ {k}x{n_}", perf.Summary.of(shaped_rate / best).fmt(100, 1),
                     perf.Summary.of(step_rate / shaped_rate).fmt(100, 1)))
    table = tables.markdown_table(
        ["dim", "heads x head_dim", "GFLOP / step (hand)", "jaxpr / hand", "XLA all-op / hand", "train / forward",
         "step ms", "**MFU % (best matmul)**", "MFU % (jnp.dot)", "same, XLA all-op flops", "largest product",
         "its rate / best %", "step rate / its rate %"], rows)
    groups = perf.flop_groups(facts[widths[0]]["terms"])
    total = sum(groups.values())
    table += f"\n\nTrain FLOPs by part (hand count, dim {widths[0]}):\n\n" + tables.markdown_table(
        ["part", "GFLOP / step", "%"], [(name, f"{value * 1e-9:.4g}", f"{100 * value / total:.1f}")
                                       for name, value in sorted(groups.items(), key=lambda kv: -kv[1])])
    target = benchlib.mfu_target(jax.default_backend())
    met = [w for w in widths if mfu[w].median >= target]
    rates = ", ".join(f"{k} {perf.Summary.of(ceiling_flops / times[k]).fmt(1e-9, 1)}" for k in probes)
    report.finish(table, notes=[
        f"{benchlib.config_note(args, base)}" + ("; width varied, MLP ratio kept" if len(widths) > 1 else ""),
        f"ceilings: {n}^2 {jnp.dtype(dtype).name} products, GFLOP/s: {rates} (best: the fastest per round; "
        f"numpy only on a CPU in float32); {args.rounds} interleaved rounds after {args.warmup} warm-up; values are median [IQR] of per-round ratios",
        f"{target:.0%} MFU target (against the best matmul) on {jax.default_backend()}: "
        + (f"reached at dim {', '.join(map(str, met))}" if met else "reached at no width measured"),
    ])


if __name__ == "__main__":
    main()
