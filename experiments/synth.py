"""Experiment 2: the tri-modal `imro_synth` benchmark (text, vision, audio with known quality).

    python experiments/synth.py [--task classification|regression] [--quick] [--out DIR] [--seeds N] [--steps N]

Classification models of every fusion (``experiments/configs/trimodal.py``) and caption models
of the token fusions (``experiments/configs/synth_caption.py``) are trained with
``imro_jax.train``, then evaluated on the test split. ``--task regression``: instead, models of
every fusion that supports regression predict the continuous score of the ``*_regression``
builder configs (``experiments/configs/synth_regression.py``: known noise std 0.2, so the best
MAE is 0.16), scored by MAE (and Pearson correlation, RMSE) under the same corruptions, without
captions (default ``--out``: ``experiments/results/synth_regression``). Each is scored:

* noise injected into each modality alone at increasing levels (text: token blanking; vision
  and audio: additive Gaussian noise), with each method's oracle (the noisy modality masked);
* every missing-modality pattern (each non-empty proper subset of the three dropped);
* conflict: every test sample gets one modality (uniformly drawn) from a sample of class y + 1
  (regression: the class of the same sample in the classification builder config);
* interpretability: Spearman correlation between the per-sample weights R[b, m] each fusion
  uses (``ModelOutput.reliability``) and the ground-truth quality q[b, m] of the clean test set;
* captioning: token accuracy and exact match of greedy captions under the same corruptions.

Writes ``results.json``, ``results.md`` and PNG plots to ``--out``
(default ``experiments/results/synth``). ``--quick``: small dataset, 1 seed, 40 steps,
an imro classifier and an imro caption model, 2 noise levels per modality.
"""

from __future__ import annotations

import sys

import numpy as np

import common
from imro_jax.data import subset_rows
from imro_jax.data.synth import MODALITIES, quality_matrix
from imro_jax.eval import protocols
from imro_jax.eval import reports
from imro_jax.eval import sweep as sw
from imro_jax.eval import tables
from imro_jax.eval.results_files import environment, summary_payload, write_results

NAME = "synth"
CEILING = "oracle (q on the simplex)"
SETTINGS = {
    "full": dict(seeds=3, builder="default", eval_examples=2000, methods=None,
                 caption_methods=common.TOKEN_METHODS, noise=protocols.SYNTH_NOISE),
    "quick": dict(seeds=1, builder="small", eval_examples=128, methods=("imro",),
                  caption_methods=("imro",),
                  noise=protocols.SYNTH_NOISE_QUICK),
}
# What differs between the tasks: the config, the scorer, the headline metric and its format.
TASKS = {
    "classification": dict(config="trimodal", builder_suffix="", scorer=sw.classification_scorer, metric="accuracy",
                           clean=("accuracy", "nll", "ece", "auroc"), scale=100, digits=1, unit="%",
                           reference="late", captions=True),
    "regression": dict(config="synth_regression", builder_suffix="_regression", scorer=sw.regression_scorer,
                       metric="mae", clean=("mae", "corr", "rmse"), scale=1, digits=3, unit="(lower is better)",
                       reference=None, captions=False),
}


def extra_flags(parser) -> None:
    parser.add_argument("--task", choices=sorted(TASKS), default="classification",
                        help="classification (and captions), or regression on the continuous score")


def main(argv=None) -> dict:
    args, mode, setting = common.start(NAME, __doc__.splitlines()[0], SETTINGS, argv, extra=extra_flags)
    task = TASKS[args.task]
    if args.task != "classification" and args.out == common.RESULTS / NAME:
        args.out = common.RESULTS / f"{NAME}_{args.task}"
    builder = setting["builder"] + task["builder_suffix"]
    overrides = {**common.train_overrides(args, full_steps=protocols.SYNTH_TRAIN_STEPS), "data.builder_config": builder}
    steps = overrides["train.num_steps"]
    methods = list(setting["methods"] or common.methods_for(args.task))
    caption_methods = list(setting["caption_methods"]) if task["captions"] else []
    print(f"[{NAME}] {mode}, {args.task}: {setting['seeds']} seeds, models {methods}, captioners {caption_methods}, "
          f"{steps} steps", flush=True)
    per_seed, test, classes, imro = [], None, None, None
    for seed in range(setting["seeds"]):
        models = common.train_methods(common.load_config(task["config"], overrides), methods, args.workdir, seed=seed)
        captioners = common.train_methods(common.load_config("synth_caption", overrides), caption_methods,
                                          args.workdir, seed=seed)
        if test is None:
            class_data = None if args.task == "classification" else common.load_config(
                "trimodal", {**overrides, "data.builder_config": setting["builder"]}).data
            test, classes = protocols.synth_eval_split(models[methods[0]].config.data, "test",
                                                       setting["eval_examples"], class_data)
        predictors = {m: sw.model_predictor(t.model, t.variables) for m, t in models.items()}
        caption_predictors = {m: sw.caption_predictor(t.model, t.variables) for m, t in captioners.items()}
        quality, num_classes = quality_matrix(test), int(np.max(classes)) + 1
        weights = {m: p(test)["reliability"] for m, p in predictors.items()}
        per_seed.append({
            args.task: protocols.modality_protocol(
                predictors, test, noise=setting["noise"], seed=seed, scorer=task["scorer"],
                oracle=methods, num_classes=num_classes, classes=None if args.task == "classification" else classes),
            "spearman": {m: reports.reliability_quality_correlation(w, quality, MODALITIES) for m, w in weights.items()},
            "spearman_ceiling": reports.simplex_quality_ceiling(quality, MODALITIES),
            "steps_per_s": {m: t.steps_per_second() for m, t in
                            {**models, **{f"caption/{k}": v for k, v in captioners.items()}}.items()},
        })
        if captioners:
            per_seed[-1]["captions"] = protocols.modality_protocol(
                caption_predictors, test, noise=setting["noise"], seed=seed, scorer=sw.caption_scorer,
                oracle=caption_methods, num_classes=num_classes, kinds=False)
        imro = imro or models.get("imro")
        metric = task["metric"]
        print(f"[{NAME}] seed {seed}: clean {metric} " + str({m: round(task["scale"] * v[metric], 3) for m, v in
                                                             per_seed[-1][args.task]["clean"].items()}))
        # Written after every seed, so that a long run that is stopped leaves the seeds it finished.
        payload, markdown, summary = summarize(per_seed, setting, mode, steps, methods, caption_methods, test, imro,
                                               args)
        if len(per_seed) < setting["seeds"]:
            markdown = (f"**Interim**: {len(per_seed)} of the {setting['seeds']} seeds this command asked for were "
                        f"finished when this file was written.\n\n{markdown}")
        write_results(args.out, payload, markdown, summary)
    print(markdown)
    return payload


def _clean_table(per_seed, methods, metrics, part):
    """Clean test scores: accuracies in % (1 decimal), the other metrics as they are (3 decimals)."""
    percent = ("accuracy", "token_accuracy", "exact_match")
    return tables.seed_table(per_seed, methods, metrics, lambda s, m, k: s[part]["clean"][m][k],
                             scale=lambda k: 100 if k in percent else 1, digits=lambda k: 1 if k in percent else 3)


def summarize(per_seed, setting, mode, steps, methods, caption_methods, test, imro, args):
    seeds, out, task = len(per_seed), args.out, TASKS[args.task]
    label = (f"{common.run_label(mode, seeds, SETTINGS[mode]['seeds'])} run: {seeds} seed(s), "
             f"{steps} train steps (batch 32), builder `{setting['builder']}{task['builder_suffix']}`, "
             f"first {len(test['label'])} test samples")
    title = "captioning" if caption_methods else f"{args.task} of the continuous score"
    md = [f"# imro_synth: tri-modal robustness, interpretability and {title}\n\n{label}. "
          "Mean +- std over seeds.\n"]
    md += ["## Clean test\n", _clean_table(per_seed, methods, task["clean"], args.task), ""]

    rho = tables.seed_table(per_seed, [*methods, CEILING], ("pooled", "within_sample", *MODALITIES),
                            lambda s, m, k: (s["spearman_ceiling"] if m == CEILING else s["spearman"][m])[k],
                            scale=1, digits=3)
    md += ["## Interpretability: Spearman(R[b, m], ground-truth q[b, m]) on the clean test set\n",
           "`pooled`: over all (sample, modality) pairs; `within_sample`: mean over samples of the rank "
           "correlation across the 3 modalities; n/a: the weights are constant (uniform, concat, late). "
           f"`{CEILING}`: the weights q[b, m] / sum_m' q[b, m'] (reports.simplex_quality_ceiling), the "
           "best a weight on the simplex can reach pooled: weights sum to 1 even when every modality "
           "of a sample is poor.\n",
           rho, ""]

    payload = {"mode": mode, "task": args.task, "seeds": seeds, "steps": steps, "methods": methods,
               "caption_methods": caption_methods, "setting": setting,
               "environment": environment(), "tables": {}}
    caption_task = dict(TASKS["classification"], metric="token_accuracy", reference=None)
    parts = [(args.task, methods, task)] + ([("captions", caption_methods, caption_task)] if caption_methods else [])
    for part, names, spec in parts:
        metric, scale, digits = spec["metric"], spec["scale"], spec["digits"]
        reference = spec["reference"] if spec["reference"] in names else None
        oracles = [*names, *(m + sw.ORACLE_SUFFIX for m in names)]
        md.append(f"## {part.capitalize()}: noise on one modality ({metric} {spec['unit']})\n")
        for m in MODALITIES:
            results = [s[part]["noise"][m] for s in per_seed]
            table, numbers = tables.sweep_table(results, oracles, metric=metric, reference=reference,
                                                scale=scale, digits=digits, robustness_columns=scale == 100)
            payload["tables"][f"{part}/noise/{m}"] = numbers
            name, levels = setting["noise"][m]
            md += [f"### {m}: {name} at levels {levels}\n", table, ""]
            curves = {k: v["mean"] * scale for k, v in numbers.items()}
            reports.plot_curves(levels, curves, out / f"{part}_noise_{m}.png", xlabel=f"{m} {name} level",
                                ylabel=f"{metric} {spec['unit']}", title=f"imro_synth {part}: {m} corrupted",
                                bands={k: v["std"] * scale for k, v in numbers.items()})
        subsets = per_seed[0][part]["missing"].subsets
        missing = tables.seed_table(per_seed, range(len(subsets)), names,
                                    lambda s, j, m: s[part]["missing"].scores[m][metric][0, j],
                                    header=["dropped", *names], labels=["+".join(x) for x in subsets],
                                    scale=scale, digits=digits)
        conflict = tables.seed_table(per_seed, oracles, [metric], lambda s, m, k: s[part]["conflict"][m][k],
                                     header=["method", f"{metric} {spec['unit']}"], scale=scale, digits=digits)
        md += [f"## {part.capitalize()}: missing modalities ({metric} {spec['unit']})\n", missing, "",
               f"## {part.capitalize()}: conflict (one modality from a class-(y+1) sample, every test sample)\n",
               conflict, ""]
    metric = task["metric"]
    kinds = tables.seed_table(per_seed, [*methods, *(m + sw.ORACLE_SUFFIX for m in methods)], protocols.SYNTH_KINDS,
                              lambda s, m, c: s[args.task]["kinds"][c][m][metric], scale=task["scale"],
                              digits=task["digits"])
    md += [f"## {args.task.capitalize()}: harder corruptions, one modality at a time ({metric} {task['unit']})\n",
           "`+oracle`: the corrupted modality masked as missing.\n", kinds, ""]
    if caption_methods:
        md += ["## Captions on the clean test set\n",
               _clean_table(per_seed, caption_methods, ("token_accuracy", "exact_match"), "captions"), ""]

    if imro is not None:
        weights = sw.model_predictor(imro.model, imro.variables)(test)["reliability"]
        reports.plot_reliability_vs_quality(weights, quality_matrix(test), MODALITIES, out / "imro_r_vs_quality.png",
                                            title="IMRO, seed 0")
        payload["reliability_report"] = reports.reliability_report(
            imro.model, subset_rows(test, 64), out / "reliability_report.png", variables=imro.variables,
            corruptions={m: spec for m, spec in setting["noise"].items()}, num_examples=3)
        md += ["## Plots\n", "![R vs quality](imro_r_vs_quality.png)", "![IMRO reliability report](reliability_report.png)",
               *(f"![{p} {m}]({p}_noise_{m}.png)" for p, _, _ in parts for m in MODALITIES), ""]
    md += [f"Command: `{args.command}`"]
    payload["per_seed"] = per_seed  # SweepResults as to_json() writes them
    return payload, "\n".join(md), summary_numbers(per_seed, methods, args.command, args.task)


def summary_numbers(per_seed, methods, command, task_name="classification") -> dict:
    """summary.json: the headline metric (classification: accuracy %; regression: MAE) of every
    README column, mean over seeds."""
    task = TASKS[task_name]
    table = {}
    for m in methods:
        rows = [protocols.modality_headline(s[task_name], m, task["metric"]) for s in per_seed]
        table[m] = {k: task["scale"] * float(np.mean([r[k] for r in rows])) for k in rows[0]}
        table[m]["spearman"] = float(np.mean([s["spearman"][m]["pooled"] for s in per_seed]))
    ceiling = float(np.mean([s["spearman_ceiling"]["pooled"] for s in per_seed]))
    return summary_payload(command, len(per_seed), table, digits=2 if task["scale"] == 100 else 3,
                           metric=task["metric"], spearman_ceiling=round(ceiling, 3))


if __name__ == "__main__":
    main(sys.argv[1:])
