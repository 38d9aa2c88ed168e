"""Benchmark 3: step time and memory against modalities and tokens, IMRO against concat fusion.

    python experiments/bench/scaling.py [--tokens 64,256,1024,4096] [--modalities 1,2,3,6]
        [--time_cap 1024] [--plot PATH]

On a 2-core CPU each sweep takes ~5 minutes (compiling dominates); run them separately with
`--modalities ''` and `--tokens ''` (plots `scaling_tokens.png`, `scaling_modalities.png`).

Model: M `feature` modalities, each a sequence of L tokens (`[batch, L, 16]`), width 64, 4 heads,
MLP 128, one block per encoder (`--depth`), batch 4 (`--batch`): the shapes vary, nothing else.
Two sweeps: L over `--tokens` at M = 3, and M over `--modalities` at L = 256 (`--fixed_tokens`).

Per-modality encoders cost O(sum_m L_m^2) in both fusions. IMRO's fusion is a cross-attention
from F query tokens to each modality (O(F sum_m L_m)); `concat` adds one joint self-attention
block over all F + sum_m L_m tokens (O((sum_m L_m)^2)). For every point the table gives:

* memory of the compiled train step (`memory_analysis()`: arguments + temporaries + outputs -
  aliased) and XLA's flops, for every point (compiling allocates nothing);
* train-step time, imro and concat interleaved per round, for L <= `--time_cap` (CPU: larger
  points are compiled but not run; say so in the table);
* the hand-counted model FLOPs of each fusion (`imro_jax.perf.hand_count`).

The PNG shows time, memory and FLOPs against L and M. The crossover reported is where concat's
step becomes slower than IMRO's beyond the IQR of their paired ratio (or that it is slower at
every point), and the joint length S at which the joint block's attention term 4 B S^2 d
overtakes its linear terms.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

import benchlib
from imro_jax import perf
from imro_jax.eval import results_files
from imro_jax.eval import tables

FUSIONS = ("imro", "concat")


def sweep_config(base: ml_collections.ConfigDict, modalities: int, args) -> ml_collections.ConfigDict:
    """The base config with `modalities` feature-sequence encoders and the sweep's sizes."""
    config = benchlib.variant(
        base, dim=args.dim, num_heads=4, mlp_dim=2 * args.dim, depth=args.depth, fusion_tokens=4,
    )
    config.model.modalities = ml_collections.ConfigDict(
        {f"m{i}": dict(encoder="feature", input_dim=16) for i in range(modalities)}
    )
    config.data.batch_size = args.batch
    return config


def measure_point(base, modalities: int, tokens: int, args) -> dict:
    """Compiles both fusions at (M, L); times them interleaved when L <= time_cap."""
    point = {"modalities": modalities, "tokens": tokens}
    benches = {}
    for fusion in FUSIONS:
        config = benchlib.variant(sweep_config(base, modalities, args), fusion=fusion)
        batch = perf.synthetic_batch(config.model, args.batch, feature_length=tokens)
        point[f"{fusion}_model_flops"] = perf.train_flops(perf.train_step_terms(config, batch))
        if tokens <= args.time_cap:
            bench = perf.build_step_bench(fusion, config, batch, devices=args.devices)
            compiled = bench.compile_train()
            benches[fusion] = bench
        else:  # too large to run: compiled for its memory and flops only
            compiled = perf.compile_train_abstract(config, batch, devices=args.devices)
        point[f"{fusion}_memory"] = perf.memory_bytes(compiled)
        point[f"{fusion}_xla_flops"] = perf.xla_flops(compiled)
    if benches:
        for bench in benches.values():
            bench.train()
        times = perf.interleaved_timings({f: b.train for f, b in benches.items()},
                                         rounds=args.rounds, warmup=1)
        for fusion in FUSIONS:
            point[f"{fusion}_time"] = perf.Summary.of(times[fusion])
        point["ratio"] = perf.paired_ratio(times["concat"], times["imro"])
    print(f"  M={modalities} L={tokens}: "
          + ("timed" if benches else "compiled only"), flush=True)
    return point


def crossover(points: list[dict], key: str) -> str:
    """Where concat's step time overtakes IMRO's (ratio IQR above 1), over one swept key."""
    timed = sorted((p for p in points if "ratio" in p), key=lambda p: p[key])
    if not timed:
        return "not timed"
    slower = [p for p in timed if p["ratio"].q1 > 1.0]
    span = ", ".join(f"{p[key]}: {p['ratio'].median:.2f}" for p in timed)
    if len(slower) == len(timed):
        return f"concat slower at every timed point, no crossover in range (concat/imro {span})"
    if not slower:
        return f"concat never slower beyond the IQR (concat/imro {span})"
    return f"concat slower from {key} = {slower[0][key]} on (concat/imro {span})"


def plot(path: str, token_points: list[dict], modality_points: list[dict], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = [(points, key, label) for points, key, label in (
        (token_points, "tokens", f"tokens per modality L (M = {args.fixed_modalities})"),
        (modality_points, "modalities", f"modalities M (L = {args.fixed_tokens})"),
    ) if len(points) > 0]
    fig, axes = plt.subplots(len(sweeps), 3, figsize=(15, 4.3 * len(sweeps)), squeeze=False)
    for row, (points, key, label) in enumerate(sweeps):
        x = np.array([p[key] for p in points])
        for fusion, color in zip(FUSIONS, ("tab:blue", "tab:red")):
            timed = [p for p in points if f"{fusion}_time" in p]
            if timed:
                tx = np.array([p[key] for p in timed])
                med = np.array([p[f"{fusion}_time"].median for p in timed]) * 1e3
                lo = np.array([p[f"{fusion}_time"].q1 for p in timed]) * 1e3
                hi = np.array([p[f"{fusion}_time"].q3 for p in timed]) * 1e3
                axes[row, 0].errorbar(tx, med, yerr=[med - lo, hi - med], marker="o", color=color,
                                      label=fusion, capsize=3)
            axes[row, 1].plot(x, [p[f"{fusion}_memory"] / 2**20 for p in points], marker="o",
                              color=color, label=fusion)
            axes[row, 2].plot(x, [p[f"{fusion}_model_flops"] / 1e9 for p in points], marker="o",
                              color=color, label=f"{fusion} (hand count)")
            axes[row, 2].plot(x, [p[f"{fusion}_xla_flops"] / 1e9 for p in points], ls="--",
                              color=color, label=f"{fusion} (XLA, all ops)")
        for col, ylabel in enumerate(("train step ms (median, IQR)", "memory MiB (compiled)",
                                      "GFLOP per train step")):
            ax = axes[row, col]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"IMRO vs concat fusion: batch {args.batch}, width {args.dim}, depth {args.depth} "
                 f"(time measured up to L = {args.time_cap})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv=None) -> None:
    parser = benchlib.base_parser(__doc__, rounds=5)
    parser.add_argument("--tokens", default="64,256,1024,4096")
    parser.add_argument("--modalities", default="1,2,3,6")
    parser.add_argument("--fixed_modalities", type=int, default=3)
    parser.add_argument("--fixed_tokens", type=int, default=256)
    parser.add_argument("--time_cap", type=int, default=1024,
                        help="largest L that is run (larger ones are compiled only)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--plot", default="",
                        help="PNG path (default experiments/bench/scaling_<sweeps>.png; 'none': no plot)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.tokens, args.modalities, args.fixed_modalities, args.fixed_tokens = "8", "1", 1, 8
        args.batch, args.dim, args.rounds, args.time_cap = 2, 16, 2, 8
    args.devices = jax.devices()[:1]
    report = perf.Report("Benchmark 3: scaling with modalities and tokens", args.results, benchlib.REPO)
    base = benchlib.load_config(benchlib.BASE_CONFIG, args.override)
    cache = {}

    def point(m, l):
        if (m, l) not in cache:
            cache[(m, l)] = measure_point(base, m, l, args)
        return cache[(m, l)]

    token_points = [point(args.fixed_modalities, l) for l in _ints(args.tokens)]
    modality_points = [point(m, args.fixed_tokens) for m in _ints(args.modalities)]
    if not args.plot:
        swept = [name for name, pts in (("tokens", token_points), ("modalities", modality_points)) if pts]
        args.plot = str(benchlib.RESULTS.with_name(f"scaling_{'_'.join(swept)}.png"))
    if args.plot == "none":
        args.plot = ""
    rows = []
    for p in sorted(cache.values(), key=lambda p: (p["modalities"], p["tokens"])):
        row = [p["modalities"], p["tokens"]]
        for fusion in FUSIONS:
            t = p.get(f"{fusion}_time")
            row += [t.fmt(1e3, 1) if t else "not run", f"{p[f'{fusion}_memory'] / 2**20:.4g}",
                    f"{p[f'{fusion}_model_flops'] / 1e9:.3g}"]
        row.append(p["ratio"].fmt(1, 2) if "ratio" in p else "-")
        rows.append(row)
    header = ["M", "L", "imro ms", "imro MiB", "imro GFLOP", "concat ms", "concat MiB",
              "concat GFLOP", "concat/imro time"]
    if args.plot:
        plot(args.plot, token_points, modality_points, args)
    d, h, f = args.dim, 2 * args.dim, 4
    report.finish(tables.markdown_table(header, rows), notes=[
        f"feature-sequence modalities, batch {args.batch}, width {args.dim}, depth {args.depth}, "
        f"float32, 1 device; time: median [IQR] of {args.rounds} interleaved rounds; L > "
        f"{args.time_cap} compiled only (CPU cap: a concat step at M=3, L=4096 needs "
        f"~{4 * args.batch * 4 * (3 * 4097 + f) ** 2 / 2**30:.0f} GiB for its attention "
        f"probabilities alone)",
        "memory: compiled step's arguments + temporaries + outputs - aliased (donated) bytes; "
        "GFLOP: hand-counted matmul FLOPs of the train step",
        f"over L: {crossover(token_points, 'tokens')}",
        f"over M: {crossover(modality_points, 'modalities')}",
        f"analytic: concat's joint block is attention-dominated (4 B S^2 d > 8 B S d^2 + 4 B S d h) "
        f"for S = F + M(L+1) > 2d + h = {2 * d + h} tokens",
        f"plot: `{results_files.repo_relative(args.plot, benchlib.REPO)}`" if args.plot else "no plot",
    ])


if __name__ == "__main__":
    main()
