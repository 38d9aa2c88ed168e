"""MI-bound staircase benchmark of Poole et al. (2019), Fig. 2, with imro_jax.info.

``imro_jax.info.staircase`` with d = 20: the true MI steps through 2, 4, 6, 8, 10 nats (4000 Adam
steps each, lr 5e-4, batch K = 64, a fresh batch every step). One critic per bound (InfoNCE, NWJ,
JS, SMILE tau=5, DV, MINE) is trained on the same batches. Writes, under ``--out`` (default ``experiments/results``):

* ``mi_benchmark.png``: estimate vs. step, one panel per bound, one row per critic type;
* ``mi_benchmark.md``: bias and variance per bound x MI level x critic, over the last quarter
  of each stage;
* ``mi_benchmark.json`` (config, table, runtime) and ``mi_benchmark_raw.npz`` (per-step
  estimates).

Critics: separable g(x)^T h(y) with 2 x 256 ReLU layers and 32-d embeddings (as the paper);
concat MLP([x; y]) with 2 x 64 ReLU layers. The paper's concat critic is 256 wide, which costs
K^2 = 4096 pair evaluations per step and about an hour on 2 CPU cores, so the CPU run narrows
it to 64 (about 4 minutes); ``--concat-width 256`` restores it on an accelerator.

Usage::

    python experiments/mi_benchmark.py            # full run, about 10 minutes on 2 CPU cores
    python experiments/mi_benchmark.py --quick --out /tmp/mi   # CI smoke run, < 1 minute
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time

import jax
import numpy as np

from imro_jax.eval import tables
from imro_jax.info import staircase

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
BOUNDS = ("infonce", "nwj", "js", "smile", "dv", "mine")
TITLES = {
    "infonce": "InfoNCE", "nwj": "NWJ", "js": "JS", "smile": "SMILE (tau=5)", "dv": "DV",
    "mine": "MINE",
}
MI_LEVELS = (2.0, 4.0, 6.0, 8.0, 10.0)
DIM = 20
BATCH_SIZE = 64
LEARNING_RATE = 5e-4
TAIL_FRACTION = 0.25  # statistics over the last quarter of each stage
EMA_SPAN = 200  # smoothing of the plotted curves, as in Poole et al.'s plots
PRESETS = {
    "full": {"steps_per_stage": 4000, "separable": {"hidden_dim": 256, "embed_dim": 32},
             "concat": {"hidden_dim": 64}},
    "quick": {"steps_per_stage": 50, "separable": {"hidden_dim": 32, "embed_dim": 16},
              "concat": {"hidden_dim": 16}},
}


def markdown_report(stats: dict, config: dict, runtime_s: float) -> str:
    """The results table as markdown: one table per critic, cells "bias / variance"."""
    lines = [
        "# MI staircase benchmark (Poole et al. 2019, Fig. 2)",
        "",
        f"d = {DIM}, K = {BATCH_SIZE}, Adam {LEARNING_RATE:g}, {config['steps_per_stage']} steps "
        f"per MI level, statistics over the last {int(TAIL_FRACTION * 100)}% of each level. "
        f"log K = {math.log(BATCH_SIZE):.2f} nats. Runtime {runtime_s:.0f} s on "
        f"{config['device']}. Command: `{config['command']}`.",
        "",
        "Cells: bias (estimate minus true MI, nats) / variance (nats^2).",
        "",
    ]
    for critic_name, critic_stats in stats.items():
        rows = [[TITLES[bound], *(f"{s['bias']:+.2f} / {s['variance']:.2f}"
                                  + (f" ({s['non_finite']} non-finite)" if s["non_finite"] else "")
                                  for s in critic_stats[bound])] for bound in BOUNDS]
        lines += [f"## {critic_name} critic {config['critics'][critic_name]}", "",
                  tables.markdown_table(["bound", *(f"MI {mi:g}" for mi in MI_LEVELS)], rows), ""]
    return "\n".join(lines)


def plot(estimates: dict, steps_per_stage: int, path: pathlib.Path) -> None:
    """Estimate vs. step per bound (columns) and critic (rows), as in Poole et al.'s Fig. 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true_mi = np.repeat(MI_LEVELS, steps_per_stage)
    steps = np.arange(true_mi.size)
    alpha = 2.0 / (min(EMA_SPAN, steps_per_stage) + 1.0)
    fig, axes = plt.subplots(len(estimates), len(BOUNDS), figsize=(2.6 * len(BOUNDS),
                             2.6 * len(estimates)), sharex=True, sharey=True, squeeze=False)
    for row, (critic_name, values) in enumerate(estimates.items()):
        for col, bound in enumerate(BOUNDS):
            ax = axes[row, col]
            raw = np.clip(values[:, col], -5.0, 20.0)  # keep -inf/outliers inside the frame
            smooth = np.empty_like(raw)
            smooth[0] = raw[0]
            for t in range(1, raw.size):
                smooth[t] = alpha * raw[t] + (1.0 - alpha) * smooth[t - 1]
            line = ax.plot(steps, raw, alpha=0.25, linewidth=0.5)[0]
            ax.plot(steps, smooth, color=line.get_color(), linewidth=1.2)
            ax.plot(steps, true_mi, color="k", linewidth=1.0, label="true MI")
            ax.axhline(math.log(BATCH_SIZE), color="k", linestyle="--", linewidth=0.8,
                       label="log K")
            ax.set_ylim(-1.0, max(MI_LEVELS) + 2.0)
            if row == 0:
                ax.set_title(TITLES[bound])
            if col == 0:
                ax.set_ylabel(f"{critic_name}\nMI (nats)")
            if row == len(estimates) - 1:
                ax.set_xlabel("step")
    axes[0, 0].legend(loc="upper left", fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark and writes its outputs; returns the statistics."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke run: 50 steps per level, small critics (< 1 minute)")
    parser.add_argument("--out", default=str(RESULTS), help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concat-width", type=int, default=None,
                        help="hidden width of the concat critic (paper: 256; default 64 on CPU)")
    args = parser.parse_args(argv)

    preset = PRESETS["quick" if args.quick else "full"]
    critics = {"separable": dict(preset["separable"]), "concat": dict(preset["concat"])}
    if args.concat_width is not None:
        critics["concat"]["hidden_dim"] = args.concat_width
    steps_per_stage = preset["steps_per_stage"]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "dim": DIM, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE,
        "mi_levels": MI_LEVELS, "steps_per_stage": steps_per_stage, "bounds": BOUNDS,
        "critics": critics, "seed": args.seed, "tail_fraction": TAIL_FRACTION,
        "device": f"{jax.devices()[0].platform} ({os.cpu_count()} cores visible)",
        "command": " ".join(["python experiments/mi_benchmark.py", *(argv or sys.argv[1:])]),
    }

    start = time.perf_counter()
    estimates = {}
    for critic_name, critic_kwargs in critics.items():
        print(f"training {len(BOUNDS)} bounds with the {critic_name} critic {critic_kwargs}",
              flush=True)
        estimates[critic_name] = staircase.train_staircase(
            critic_name, critic_kwargs, BOUNDS, MI_LEVELS, steps_per_stage=steps_per_stage, seed=args.seed,
            learning_rate=LEARNING_RATE, batch_size=BATCH_SIZE, dim=DIM)
    runtime_s = time.perf_counter() - start

    stats = {name: staircase.stage_statistics(values, BOUNDS, MI_LEVELS, steps_per_stage=steps_per_stage,
                                              tail_fraction=TAIL_FRACTION) for name, values in estimates.items()}
    report = markdown_report(stats, config, runtime_s)
    (out / "mi_benchmark.md").write_text(report)
    (out / "mi_benchmark.json").write_text(
        json.dumps({"config": config, "runtime_s": runtime_s, "statistics": stats}, indent=1)
    )
    np.savez_compressed(out / "mi_benchmark_raw.npz", bounds=np.array(BOUNDS),
                        true_mi=np.repeat(MI_LEVELS, steps_per_stage),
                        **{name: values.astype(np.float32) for name, values in estimates.items()})
    plot(estimates, steps_per_stage, out / "mi_benchmark.png")
    print(report)
    print(f"wrote {out}/mi_benchmark.{{png,md,json}} and mi_benchmark_raw.npz "
          f"({runtime_s:.0f} s of training)")
    return stats


if __name__ == "__main__":
    main()
