"""Experiment 4: training stability (paper Sec. 5.1), IMRO against uniform fusion.

    python experiments/stability.py [--quick] [--out DIR] [--seeds N] [--steps N]

The paper states ``Var(grad Z) <= sum_m R_m^2 Var(grad Z_m)``. We measure it on Handwritten as
follows (all quantities per sample b of a fixed batch of training samples, eval mode):

* ``Z_b = sum_m R_bm Z_bm`` is the output of the fusion attention (``ReliabilityAwareAttention``),
  ``Z_bm = Attention(Q, K_m, V_m)`` (after the output projection) the per-modality attention
  output, ``R_bm`` the weights of the fusion (IMRO: learned; uniform: 1/M).
* ``theta`` = the parameters of the modality streams that feed Z: every modality encoder and the
  fusion attention's key/value projections (shared by the modalities). The fusion queries and
  output projection act on all modalities at once and are left out.
* ``grad Z_b`` = d l_b / d theta through Z with R held fixed, where l_b is the sample's task loss
  (cross-entropy of the fused prediction); ``R_bm grad Z_bm`` = the part of it that flows through
  modality m's keys and values, i.e. through Z_bm (Flax method interceptors on the fusion
  attention stop the gradient of R and of the other modalities' keys/values; forward values are
  unchanged). By linearity ``grad Z_b = sum_m R_bm grad Z_bm`` exactly, provided the prediction
  depends on the streams only through Z: IMRO is therefore measured with its token fusion alone
  (``model.reliability.decision = 0``); the default's R-weighted vote of the unimodal heads reaches
  every encoder outside Z, and ``make_measure`` refuses such a model.
* ``Var(v) = sum over parameters of the variance over the batch samples`` (trace of the
  covariance).

We report ``LHS = Var(grad Z)``, ``RHS = sum_m Var(R_m grad Z_m)`` (equal to
``sum_m R_m^2 Var(grad Z_m)`` when R is constant over samples, as for uniform fusion) and the
literal ``RHS' = sum_m mean_b(R_bm)^2 Var(grad Z_m)``. ``LHS - RHS`` is the sum of the
cross-modality covariances, so the bound holds exactly when those are <= 0.

Each run saves checkpoints every ``measure_every`` steps (kept) and logs every step; the
gradient variances are measured at every checkpoint, and loss / gradient-norm curves come from
the runs' ``metrics.jsonl``. ``--quick``: 1 seed, 40 steps, measured at steps 20 and 40 on 8
samples.
"""

from __future__ import annotations

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import common
from imro_jax.data import load_split, subset_rows
from imro_jax.eval import reports
from imro_jax.eval import tables
from imro_jax.eval.results_files import environment, write_results
from imro_jax.models.fusion import ReliabilityAwareAttention
from imro_jax.models.loss import task_loss_per_sample
from imro_jax.models.registry import get_fusion
from imro_jax.train import loop
from imro_jax.train import run_cache
from imro_jax.train.model_task import model_task

NAME = "stability"
# The bound is about Z = sum_m R_m Z_m, so each model must predict through Z: IMRO is measured with
# its token fusion alone (``decision = 0``, the ablation "no vote"). The default IMRO predicts by the
# R-weighted vote of the unimodal heads, which reaches every encoder outside Z (check_decomposable).
METHODS = {"imro": {"model.reliability.decision": 0.0}, "uniform": {}}
SETTINGS = {
    "full": dict(seeds=5, measure_every=50, samples=32),
    "quick": dict(seeds=1, measure_every=common.QUICK_STEPS // 2, samples=8),
}
FUSION_ATTENTION = ("token_fusion", "reliability_attention", "attention")
STREAM_PARAMS = ("key_kernel", "key_bias", "value_kernel", "value_bias")


def is_upstream(path: tuple[str, ...]) -> bool:
    """The parameters of the modality streams: encoders and the fusion attention's K/V projections."""
    if path[0].startswith("encoders_"):
        return True
    return path[: len(FUSION_ATTENTION)] == FUSION_ATTENTION and path[-1] in STREAM_PARAMS


def split_params(params):
    """``(upstream, rest)``: two trees with None where the other holds the leaf."""
    names = lambda p: tuple(k.key for k in p)  # noqa: E731
    mark = lambda want: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda p, x: x if is_upstream(names(p)) == want else None, params)
    return mark(True), mark(False)


def _merge(upstream, rest):
    return jax.tree.map(lambda a, b: a if a is not None else b, upstream, rest, is_leaf=lambda x: x is None)


def one_path_interceptor(path_weights: jax.Array):
    """Forward values unchanged; R held fixed (stop-gradient) and the gradient allowed only
    through the keys/values of the modalities selected by ``path_weights [M]`` (0/1)."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, ReliabilityAwareAttention) and context.method_name == "__call__":
            queries, tokens, token_mask, reliability = args
            return next_fun(queries, tokens, token_mask, jax.lax.stop_gradient(reliability), **kwargs)
        if context.method_name == "key_value" and isinstance(module.parent, ReliabilityAwareAttention):
            key, value = next_fun(*args, **kwargs)  # [batch * modality, tokens, heads, head_dim]
            modality = jnp.arange(key.shape[0]) % path_weights.shape[0]
            keep = (path_weights[modality] > 0)[:, None, None, None]
            block = lambda x: jnp.where(keep, x, jax.lax.stop_gradient(x))  # noqa: E731
            return block(key), block(value)
        return next_fun(*args, **kwargs)

    return interceptor


def path_gradients(model, params, batch: dict, path_weights: jax.Array) -> jax.Array:
    """Per-sample gradients of the task loss w.r.t. the stream parameters, flattened ``[B, P]``,
    through the keys/values of the modalities with ``path_weights [M] > 0`` only, R held fixed.

    With one-hot weights this is ``R_bm grad Z_bm``; with all ones, ``grad Z_b``.
    """
    upstream, rest = split_params(params)

    def one(example):
        def loss(up):
            with nn.intercept_methods(one_path_interceptor(path_weights)):
                out = model.apply({"params": _merge(up, rest)}, example, train=False)
            return task_loss_per_sample(out, example)[0]

        return ravel_pytree(jax.grad(loss)(upstream))[0]

    return jax.vmap(one)(jax.tree.map(lambda x: x[:, None], batch))  # each sample as a batch of one


def check_decomposable(spec) -> None:
    """Raises ValueError when the prediction reaches the modality streams outside the fusion
    attention: with the R-weighted vote (``model.reliability.decision > 0``) every encoder also
    feeds the loss through its unimodal head, so a gradient "through Z_m only" is not defined
    (each path would carry the whole vote gradient, and LHS / RHS = M by construction)."""
    if spec.reliability.decision > 0 and get_fusion(spec.fusion).reliability_vote:
        raise ValueError(
            f"the Sec. 5.1 decomposition needs a prediction through the fused Z alone; model.reliability.decision = "
            f"{spec.reliability.decision} mixes in the unimodal heads' vote: measure with decision = 0")


def make_measure(model, num_modalities: int):
    """Jitted ``(params, batch) -> {"lhs", "rhs", "rhs_literal", "per_path" [M], "mean_r" [M]}``
    (see the module docstring). Refuses a model that is not decomposable (:func:`check_decomposable`)."""
    check_decomposable(model.spec)

    @jax.jit
    def measure(params, batch):
        reliability = model.apply({"params": params}, batch, train=False).reliability  # [B, M]

        def path(total, m):
            grads = path_gradients(model, params, batch, jax.nn.one_hot(m, num_modalities))  # [B, P]
            unweighted = grads / reliability[:, m, None]  # grad Z_bm
            literal = jnp.mean(reliability[:, m]) ** 2 * jnp.sum(jnp.var(unweighted, axis=0))
            return total + grads, (jnp.sum(jnp.var(grads, axis=0)), literal)

        size = ravel_pytree(split_params(params)[0])[0].size
        start = jnp.zeros((reliability.shape[0], size))
        total, (per_path, literal) = jax.lax.scan(path, start, jnp.arange(num_modalities))
        return {"lhs": jnp.sum(jnp.var(total, axis=0)), "rhs": jnp.sum(per_path), "rhs_literal": jnp.sum(literal),
                "per_path": per_path, "mean_r": jnp.mean(reliability, axis=0)}

    return measure


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
                measures[method] = make_measure(trained.model, len(trained.model.spec.modality_names))
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

    grad_rows, loss_curves, grad_curves, bands = [], {}, {}, {}
    for method, method_runs in runs.items():
        steps_axis, grads = _curve([r["grad_norm"] for r in method_runs])
        _, losses = _curve([r["loss"] for r in method_runs])
        late = steps_axis > steps // 5  # after warmup and the first drop
        variance = grads[:, late].var(axis=1) if late.any() else grads.var(axis=1)
        grad_rows.append([method, tables.fmt(variance, scale=1, digits=3),
                          tables.fmt(grads[:, late].mean(axis=1) if late.any() else grads.mean(axis=1), scale=1,
                                     digits=3),
                          tables.fmt(losses[:, -1], scale=1, digits=4)])
        loss_curves[method], grad_curves[method] = losses.mean(0), grads.mean(0)
        bands[method] = losses.std(0)
        ratio_steps = np.array([p["step"] for p in method_runs[0]["points"]])
        ratios = np.array([[p["lhs"] / p["rhs"] for p in r["points"]] for r in method_runs])
        grad_curves[f"{method} LHS/RHS"] = ratios.mean(0)
        grad_curves[f"{method} steps"] = ratio_steps
    md += ["## Gradient norm and loss across seeds\n",
           tables.markdown_table(["method", "variance of the grad norm over steps (after 20% of training)", "mean grad norm",
                                  "final train loss"], grad_rows), ""]
    reports.plot_curves(steps_axis, loss_curves, out / "loss.png", xlabel="step", ylabel="train loss",
                        title=f"Train loss, mean +- std over {seeds} seed(s)", bands=bands)
    reports.plot_curves(steps_axis, {m: grad_curves[m] for m in runs}, out / "grad_norm.png", xlabel="step",
                        ylabel="global gradient norm", title="Gradient norm (mean over seeds)")
    reports.plot_curves(grad_curves[f"{next(iter(METHODS))} steps"], {m: grad_curves[f"{m} LHS/RHS"] for m in runs},
                        out / "bound_ratio.png", xlabel="step", ylabel="Var(grad Z) / sum_m Var(R_m grad Z_m)",
                        title="Sec. 5.1 bound holds where the ratio <= 1")
    md += ["## Plots\n", "![loss](loss.png) ![gradient norm](grad_norm.png) ![bound ratio](bound_ratio.png)", "",
           f"Command: `{args.command}`"]
    payload = {"mode": mode, "seeds": seeds, "steps": steps, "setting": setting, "runs": runs,
               "bound_holds_fraction": holds, "environment": environment()}
    return payload, "\n".join(md)


if __name__ == "__main__":
    main(sys.argv[1:])
