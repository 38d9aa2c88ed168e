"""Experiment 4: training stability (paper Sec. 5.1), IMRO against uniform fusion.

    python experiments/stability.py [--quick] [--out DIR] [--seeds N] [--steps N]

The paper states ``Var(grad Z) <= sum_m R_m^2 Var(grad Z_m)``. We measure it on Handwritten with
``imro_jax.eval.stability`` (its docstring defines every quantity): ``LHS = Var(grad Z)``,
``RHS = sum_m Var(R_m grad Z_m)`` and the literal ``RHS' = sum_m mean_b(R_bm)^2 Var(grad Z_m)``.
IMRO is measured with its token fusion alone (``model.reliability.decision = 0``): the default's
R-weighted vote of the unimodal heads reaches every encoder outside Z, where the decomposition is
not defined.

Each run saves checkpoints every ``measure_every`` steps (kept) and logs every step; the
gradient variances are measured at every checkpoint, and loss / gradient-norm curves come from
the runs' ``metrics.jsonl``. ``--quick``: 1 seed, 40 steps, measured at steps 20 and 40 on 8
samples.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

import common
from imro_jax.data import load_split, subset_rows
from imro_jax.eval import reports
from imro_jax.eval import stability
from imro_jax.eval import tables
from imro_jax.eval.results_files import environment, write_results
from imro_jax.train import loop
from imro_jax.train import run_cache
from imro_jax.train.model_task import model_task

NAME = "stability"
# IMRO with its token fusion alone (the ablation "no vote"; module docstring: the bound is about Z)
METHODS = {"imro": common.NO_VOTE, "uniform": {}}
SETTINGS = {
    "full": dict(seeds=5, measure_every=50, samples=32),
    "quick": dict(seeds=1, measure_every=common.QUICK_STEPS // 2, samples=8),
}


def measurement_batch(config, count: int) -> dict:
    """The first ``count`` training samples in file order (the same for every run)."""
    batch = load_split(config.data, "train")
    return {k: v for k, v in subset_rows(batch, count).items() if k != "corruption"}


def main(argv=None) -> dict:
    args, mode, setting = common.start(NAME, __doc__.splitlines()[0], SETTINGS, argv)
    overrides = common.train_overrides(args)
    steps = common.load_config("handwritten", overrides).train.num_steps
    overrides.update({"checkpoint.every_steps": setting["measure_every"],  # (--quick: already so)
                      "checkpoint.keep_last": steps // setting["measure_every"] + 1, "train.log_every": 1})
    runs = {m: [] for m in METHODS}
    batch, measures = None, {}
    for seed in range(setting["seeds"]):
        for method in METHODS:
            config = common.load_config("handwritten", {**overrides, **common.method_overrides(method),
                                                         **METHODS[method], "seed": seed})
            trained = run_cache.train_or_reuse(config, args.workdir)
            if batch is None:
                batch = measurement_batch(config, setting["samples"])
            if method not in measures:  # one compiled measurement per fusion (the models differ)
                measures[method] = stability.make_variance_measure(trained.model, len(trained.model.spec.modality_names))
            task = model_task(config)
            points = []
            for step in run_cache.checkpoint_steps(config, trained.workdir, task):
                params = loop.restore_params(config, trained.workdir, task, step)
                values = jax.device_get(measures[method](params, batch))
                points.append({"step": step, **{k: np.asarray(v).tolist() for k, v in values.items()}})
            history = trained.history()
            runs[method].append({
                "seed": seed,
                "points": points,
                "loss": [(r["step"], r["loss"]) for r in history if "loss" in r],
                "grad_norm": [(r["step"], r["grad_norm"]) for r in history if "grad_norm" in r],
            })
            print(f"[{NAME}] {method} seed {seed}: " + ", ".join(
                f"step {p['step']} LHS/RHS {p['lhs'] / p['rhs']:.3f}" for p in points), flush=True)
    payload, markdown = summarize(runs, setting, mode, steps, args)
    write_results(args.out, payload, markdown)
    print(markdown)
    return payload


def _curve(records):
    steps = np.array([s for s, _ in records[0]])
    values = np.array([[v for _, v in r] for r in records])  # [seeds, steps]
    return steps, values


def summarize(runs, setting, mode, steps, args):
    out, seeds = args.out, setting["seeds"]
    label = common.run_label(mode, seeds, SETTINGS[mode]["seeds"])
    md = [f"# Training stability (paper Sec. 5.1): IMRO vs uniform fusion on Handwritten\n\n{label} run: {seeds} "
          f"seed(s), {steps} train steps, gradient variances over {setting['samples']} fixed training samples at "
          f"every {setting['measure_every']} steps. Definitions: see `experiments/stability.py`. IMRO is measured with "
          "its token fusion alone (`model.reliability.decision = 0`): the default IMRO predicts by the R-weighted "
          "vote of the unimodal heads, outside Z, where the decomposition is not defined.\n"]
    rows, holds = [], {}
    for method, method_runs in runs.items():
        points = [p for r in method_runs for p in r["points"]]
        ratio = np.array([p["lhs"] / p["rhs"] for p in points])
        literal = np.array([p["lhs"] / p["rhs_literal"] for p in points])
        holds[method] = float(np.mean(ratio <= 1.0))
        rows.append([method, len(points), f"{np.median(ratio):.3f}", f"{ratio.min():.3f} .. {ratio.max():.3f}",
                     f"{100 * holds[method]:.0f}%", f"{np.median(literal):.3f}", f"{100 * np.mean(literal <= 1):.0f}%"])
    md += ["## Does Var(grad Z) <= sum_m R_m^2 Var(grad Z_m) hold?\n",
           tables.markdown_table(["method", "measurements", "median LHS/RHS", "range", "bound holds",
                                  "median LHS/RHS'", "literal bound holds"], rows), "",
           "LHS/RHS > 1 means positively correlated per-modality gradients (the bound fails); RHS' uses the "
           "batch-mean R_m^2 (the paper's literal form).\n"]

    grad_rows, loss_curves, grad_curves, bands, ratio_curves = [], {}, {}, {}, {}
    for method, method_runs in runs.items():
        steps_axis, grads = _curve([r["grad_norm"] for r in method_runs])
        _, losses = _curve([r["loss"] for r in method_runs])
        late = steps_axis > steps // 5  # after warmup and the first drop
        window = grads[:, late] if late.any() else grads
        grad_rows.append([method, tables.fmt(window.var(axis=1), scale=1, digits=3),
                          tables.fmt(window.mean(axis=1), scale=1, digits=3),
                          tables.fmt(losses[:, -1], scale=1, digits=4)])
        loss_curves[method], grad_curves[method] = losses.mean(0), grads.mean(0)
        bands[method] = losses.std(0)
        ratio_steps = np.array([p["step"] for p in method_runs[0]["points"]])  # the same checkpoints in every run
        ratio_curves[method] = np.array([[p["lhs"] / p["rhs"] for p in r["points"]] for r in method_runs]).mean(0)
    md += ["## Gradient norm and loss across seeds\n",
           tables.markdown_table(["method", "variance of the grad norm over steps (after 20% of training)", "mean grad norm",
                                  "final train loss"], grad_rows), ""]
    reports.plot_curves(steps_axis, loss_curves, out / "loss.png", xlabel="step", ylabel="train loss",
                        title=f"Train loss, mean +- std over {seeds} seed(s)", bands=bands)
    reports.plot_curves(steps_axis, grad_curves, out / "grad_norm.png", xlabel="step",
                        ylabel="global gradient norm", title="Gradient norm (mean over seeds)")
    reports.plot_curves(ratio_steps, ratio_curves, out / "bound_ratio.png", xlabel="step",
                        ylabel="Var(grad Z) / sum_m Var(R_m grad Z_m)",
                        title="Sec. 5.1 bound holds where the ratio <= 1")
    md += ["## Plots\n", "![loss](loss.png) ![gradient norm](grad_norm.png) ![bound ratio](bound_ratio.png)", "",
           f"Command: `{args.command}`"]
    payload = {"mode": mode, "seeds": seeds, "steps": steps, "setting": setting, "runs": runs,
               "bound_holds_fraction": holds, "environment": environment()}
    return payload, "\n".join(md)


if __name__ == "__main__":
    main(sys.argv[1:])
