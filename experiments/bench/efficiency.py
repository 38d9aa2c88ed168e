"""Benchmark 2: hardware efficiency, model FLOPs utilisation against a measured matmul ceiling.

    python experiments/bench/efficiency.py [--config trimodal] [--rounds 30] [--matmul_size 1024]

Model FLOPs per train step are counted three ways (see `imro_jax.perf.flops`):

* hand count from the config (matrix products, forward + backward), the MFU numerator;
* the same quantity read off the train step's jaxpr (every `dot_general`): must equal the hand count;
* XLA's `cost_analysis()["flops"]` of the compiled step: all ops (elementwise, softmax, norms,
  AdamW, the FFT) on top of the products, as the compiler counts them.

A third interleaved probe times a model-shaped product (the largest encoder MLP input,
`[batch * tokens, dim] @ [dim, mlp_dim]`): its rate against the square ceiling says how much of
the gap is the shape of the model's matrices rather than the rest of the step.

The ceiling is measured in the same run: a `[n, n] @ [n, n]` `jnp.dot` in the compute dtype
(`train.compute_dtype`), interleaved round by round with the train step, so both see the same
machine load. MFU per round = (model FLOPs / step time) / (2 n^3 / matmul time); the table gives
its median and IQR. Targets: >= 40% (CPU float32, base config), >= 50% (H100/H200, bf16, ViT-B).
"""

from __future__ import annotations

import jax

import benchlib
from imro_jax import perf
from imro_jax.eval import tables
from imro_jax.train import precision


def main(argv=None) -> None:
    parser = benchlib.base_parser(__doc__, rounds=30, warmup=3)
    parser.add_argument("--matmul_size", type=int, default=1024, help="n of the n x n ceiling matmul")
    args = parser.parse_args(argv)
    if args.tiny:
        args.rounds, args.warmup, args.matmul_size = min(args.rounds, 3), 1, 256
    report = perf.Report("Benchmark 2: hardware efficiency (MFU)", args.results, benchlib.REPO)
    config = benchlib.resolve_config(args)
    numpy_batch = perf.synthetic_batch(config.model, config.data.batch_size)
    bench = perf.build_step_bench(config.model.fusion, config, numpy_batch, devices=jax.devices()[:1])

    terms = perf.train_step_terms(config, numpy_batch)
    hand = perf.train_flops(terms)
    with bench.runtime.tracing_context():
        from_jaxpr = perf.jaxpr_matmul_flops(bench.runtime.jitted, bench.state, bench.batch)
    xla = perf.xla_flops(bench.compile_train())

    dtype = precision.compute_dtype(config.train.compute_dtype)
    matmul, matmul_flops = perf.matmul_probe((args.matmul_size,) * 3, dtype)
    shaped = perf.model_shaped_product(terms, config.model)
    shaped_matmul, shaped_flops = perf.matmul_probe(shaped, dtype)
    bench.train()
    times = perf.interleaved_timings(
        {"step": bench.train, "matmul": matmul, "shaped": shaped_matmul},
        rounds=args.rounds, warmup=args.warmup,
    )
    achieved = hand / times["step"]
    ceiling = matmul_flops / times["matmul"]
    shaped_rate = shaped_flops / times["shaped"]
    mfu = perf.Summary.of(achieved / ceiling)
    mfu_xla = perf.Summary.of(xla / times["step"] / ceiling)

    rows = [
        ("model FLOPs / step, hand count (matmuls, fwd+bwd)", f"{hand:.4g}"),
        ("model FLOPs / step, jaxpr dot_general count", f"{from_jaxpr:.4g} "
         f"({'equal' if abs(from_jaxpr - hand) <= 1e-9 * hand else f'ratio {from_jaxpr / hand:.4f}'})"),
        ("XLA cost_analysis flops / step (all ops)", f"{xla:.4g} ({xla / hand:.2f} x hand)"),
        ("hand count forward only (x train/forward)", f"{perf.forward_flops(terms):.4g} "
         f"(x{hand / perf.forward_flops(terms):.2f})"),
        ("train step time, ms", perf.Summary.of(times["step"]).fmt(1e3, 2)),
        ("achieved model GFLOP/s", perf.Summary.of(achieved).fmt(1e-9, 2)),
        (f"matmul ceiling {args.matmul_size}^2 {jax.numpy.dtype(dtype).name}, GFLOP/s",
         perf.Summary.of(ceiling).fmt(1e-9, 2)),
        ("**MFU** (hand FLOPs / step time / ceiling)", mfu.fmt(100, 1) + " %"),
        ("same with XLA's all-op flops", mfu_xla.fmt(100, 1) + " %"),
        (f"model-shaped matmul {shaped[0]}x{shaped[1]} @ {shaped[1]}x{shaped[2]} (largest MLP "
         f"input), GFLOP/s", perf.Summary.of(shaped_rate).fmt(1e-9, 2)),
        ("model-shaped matmul rate / ceiling", perf.Summary.of(shaped_rate / ceiling).fmt(100, 1) + " %"),
    ]
    table = tables.markdown_table(["quantity", "value (median [IQR])"], rows)
    groups = perf.flop_groups(terms)
    total = sum(groups.values())
    shares = sorted(groups.items(), key=lambda kv: -kv[1])
    table += "\n\nTrain FLOPs by part (hand count):\n\n" + tables.markdown_table(
        ["part", "GFLOP / step", "%"],
        [(name, f"{value * 1e-9:.4g}", f"{100 * value / total:.1f}") for name, value in shares],
    )
    target = benchlib.mfu_target(jax.default_backend())
    report.finish(table, notes=[
        f"{benchlib.config_note(args, config)}, {args.rounds} rounds interleaving step and matmul after {args.warmup} warm-up rounds",
        f"MFU {mfu.median:.1%} against the {target:.0%} target on {jax.default_backend()}: "
        f"{'met' if mfu.median >= target else 'not met'}",
    ])


if __name__ == "__main__":
    main()
