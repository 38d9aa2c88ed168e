"""MI-bound staircase benchmark of Poole et al. (2019), Fig. 2, with imro_jax.info.

``imro_jax.info.staircase`` with d = 20: the true MI steps through 2, 4, 6, 8, 10 nats (4000 Adam
steps each, lr 5e-4, batch K = 64, a fresh batch every step). One critic per bound (InfoNCE, NWJ,
JS, SMILE tau=5, DV, MINE) is trained on the same batches. Writes, under ``--out`` (default
``experiments/results/mi_benchmark``), with ``imro_jax.eval.results_files.write_results``:

* ``results.md``: bias and variance per bound x MI level x critic, over the last quarter of each
  stage; ``summary.json`` the same numbers; ``results.json`` the setting, table and runtime;
* ``staircase.png``: estimate vs. step, one panel per bound, one row per critic type;
* ``raw.npz`` (git-ignored): the per-step estimates.

Critics: separable g(x)^T h(y) with 2 x 256 ReLU layers and 32-d embeddings (as the paper);
concat MLP([x; y]) with 2 x 64 ReLU layers. The paper's concat critic is 256 wide, which costs
K^2 = 4096 pair evaluations per step and about an hour on 2 CPU cores, so the CPU run narrows
it to 64; ``--concat-width 256`` restores it on an accelerator.

    python experiments/mi_benchmark.py [--quick] [--out DIR] [--seed N] [--concat-width W]
"""

from __future__ import annotations

import math
import pathlib
import sys
import time

import jax
import numpy as np

import common
from imro_jax.eval import tables
from imro_jax.eval.results_files import environment, summary_payload, write_results
from imro_jax.info import staircase

NAME = "mi_benchmark"
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


def markdown_report(stats: dict, config: dict, runtime_s: float, command: str) -> str:
    """The results table as markdown: one table per critic, cells "bias / variance"."""
    lines = [
        "# MI staircase benchmark (Poole et al. 2019, Fig. 2)\n",
        f"d = {DIM}, K = {BATCH_SIZE}, Adam {LEARNING_RATE:g}, {config['steps_per_stage']} steps "
        f"per MI level, statistics over the last {int(TAIL_FRACTION * 100)}% of each level. "
        f"log K = {math.log(BATCH_SIZE):.2f} nats. Runtime {runtime_s:.0f} s on {config['device']}.\n",
        "Cells: bias (estimate minus true MI, nats) / variance (nats^2).\n",
    ]
    for critic_name, critic_stats in stats.items():
        rows = [[TITLES[bound], *(f"{s['bias']:+.2f} / {s['variance']:.2f}"
                                  + (f" ({s['non_finite']} non-finite)" if s["non_finite"] else "")
                                  for s in critic_stats[bound])] for bound in BOUNDS]
        lines += [f"## {critic_name} critic {config['critics'][critic_name]}\n",
                  tables.markdown_table(["bound", *(f"MI {mi:g}" for mi in MI_LEVELS)], rows), ""]
    lines += ["![MI staircase](staircase.png)\n", f"Command: `{command}`"]
    return "\n".join(lines)


def summary(stats: dict, command: str) -> dict:
    """summary.json: ``methods["<critic> <bound>"]["bias@<MI>" | "variance@<MI>"]``, nats."""
    methods = {f"{critic} {bound}": {f"{key}@{mi:g}": s[key] for mi, s in zip(MI_LEVELS, by_bound[bound])
                                     for key in ("bias", "variance")}
               for critic, by_bound in stats.items() for bound in BOUNDS}
    return summary_payload(command, 1, methods, digits=3)


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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = common.parse_args(NAME, __doc__.splitlines()[0], argv, extra=lambda parser: (
        parser.add_argument("--seed", type=int, default=0),
        parser.add_argument("--concat-width", type=int, default=None,
                            help="hidden width of the concat critic (paper: 256; default 64 on CPU)")))
    if args.seeds is not None:
        raise SystemExit(f"[{NAME}] one seed per run: --seed N picks it (--seeds is not an option here)")
    preset = PRESETS["quick" if args.quick else "full"]
    critics = {"separable": dict(preset["separable"]), "concat": dict(preset["concat"])}
    if args.concat_width is not None:
        critics["concat"]["hidden_dim"] = args.concat_width
    steps_per_stage = args.steps or preset["steps_per_stage"]
    config = {
        "dim": DIM, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "mi_levels": MI_LEVELS,
        "steps_per_stage": steps_per_stage, "bounds": BOUNDS, "critics": critics, "seed": args.seed,
        "tail_fraction": TAIL_FRACTION, "device": f"{jax.devices()[0].platform} ({environment()['cpu_count']} cores)",
    }
    start = time.perf_counter()
    estimates = {}
    for critic_name, critic_kwargs in critics.items():
        print(f"[{NAME}] training {len(BOUNDS)} bounds with the {critic_name} critic {critic_kwargs}", flush=True)
        estimates[critic_name] = staircase.train_staircase(
            critic_name, critic_kwargs, BOUNDS, MI_LEVELS, steps_per_stage=steps_per_stage, seed=args.seed,
            learning_rate=LEARNING_RATE, batch_size=BATCH_SIZE, dim=DIM)
    runtime_s = time.perf_counter() - start

    stats = {name: staircase.stage_statistics(values, BOUNDS, MI_LEVELS, steps_per_stage=steps_per_stage,
                                              tail_fraction=TAIL_FRACTION) for name, values in estimates.items()}
    report = markdown_report(stats, config, runtime_s, args.command)
    write_results(args.out, {"config": config, "runtime_s": runtime_s, "statistics": stats,
                             "command": args.command, "environment": environment()},
                  report, summary(stats, args.command))
    np.savez_compressed(args.out / "raw.npz", bounds=np.array(BOUNDS), true_mi=np.repeat(MI_LEVELS, steps_per_stage),
                        **{name: values.astype(np.float32) for name, values in estimates.items()})
    plot(estimates, steps_per_stage, args.out / "staircase.png")
    print(report)
    return stats


if __name__ == "__main__":
    main()
