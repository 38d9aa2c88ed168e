"""Experiment 2: the tri-modal `imro_synth` benchmark (text, vision, audio with known quality).

    python experiments/synth.py [--quick] [--out DIR] [--seeds N] [--steps N]

Classification models of every fusion (``experiments/configs/trimodal.py``) and caption models
of the token fusions (``experiments/configs/synth_caption.py``) are trained with
``imro_jax.train``, then evaluated on the test split:

* noise injected into each modality alone at increasing levels (text: token blanking; vision
  and audio: additive Gaussian noise), with each method's oracle (the noisy modality masked);
* every missing-modality pattern (each non-empty proper subset of the three dropped);
* conflict: every test sample gets one modality (uniformly drawn) from a sample of class y + 1;
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
from imro_jax.data.synth import MODALITIES, quality_matrix
from imro_jax.eval import protocols
from imro_jax.eval import reports
from imro_jax.eval import sweep as sw

NAME = "synth"
SETTINGS = {
    "full": dict(seeds=3, builder="default", eval_examples=2000, methods=tuple(common.METHODS),
                 caption_methods=common.TOKEN_METHODS, noise=protocols.SYNTH_NOISE),
    "quick": dict(seeds=1, builder="small", eval_examples=128, methods=("imro",),
                  caption_methods=("imro",),
                  noise=protocols.SYNTH_NOISE_QUICK),
}


def train_group(config_name, methods, overrides, seed, args) -> dict[str, common.Trained]:
    return {
        m: common.train(common.load_config(config_name, {**overrides, **common.method_overrides(m), "seed": seed}), args.workdir)
        for m in methods
    }


def main(argv=None) -> dict:
    args, mode, setting = common.start(NAME, __doc__.splitlines()[0], SETTINGS, argv)
    overrides = {**common.train_overrides(args, full_steps=protocols.SYNTH_TRAIN_STEPS), "data.builder_config": setting["builder"]}
    steps = overrides["train.num_steps"]
    methods, caption_methods = list(setting["methods"]), list(setting["caption_methods"])
    print(f"[{NAME}] {mode}: {setting['seeds']} seeds, classifiers {methods}, captioners {caption_methods}, "
          f"{steps} steps", flush=True)
    per_seed, test, imro = [], None, None
    for seed in range(setting["seeds"]):
        classifiers = train_group("trimodal", methods, overrides, seed, args)
        captioners = train_group("synth_caption", caption_methods, overrides, seed, args)
        if test is None:
            test = common.subset_rows(common.load_split(classifiers[methods[0]].config.data, "test"),
                                      setting["eval_examples"])
        predictors = {m: sw.model_predictor(t.model, t.variables) for m, t in classifiers.items()}
        caption_predictors = {m: sw.caption_predictor(t.model, t.variables) for m, t in captioners.items()}
        quality, num_classes = quality_matrix(test), classifiers[methods[0]].config.data.num_classes
        weights = {m: p(test)["reliability"] for m, p in predictors.items()}
        per_seed.append({
            "classification": protocols.modality_protocol(
                predictors, test, noise=setting["noise"], seed=seed, scorer=sw.classification_scorer,
                oracle=methods, num_classes=num_classes),
            "captions": protocols.modality_protocol(
                caption_predictors, test, noise=setting["noise"], seed=seed, scorer=sw.caption_scorer,
                oracle=caption_methods, num_classes=num_classes, kinds=False),
            "spearman": {m: reports.reliability_quality_correlation(w, quality, MODALITIES) for m, w in weights.items()},
            "steps_per_s": {m: t.steps_per_second() for m, t in
                            {**classifiers, **{f"caption/{k}": v for k, v in captioners.items()}}.items()},
        })
        imro = imro or classifiers.get("imro")
        print(f"[{NAME}] seed {seed}: clean accuracy " + str({m: round(100 * v["accuracy"], 1) for m, v in
                                                              per_seed[-1]["classification"]["clean"].items()}))
        # Written after every seed, so that a long run that is stopped leaves the seeds it finished.
        payload, markdown, summary = summarize(per_seed, setting, mode, steps, methods, caption_methods, test, imro,
                                               args)
        if len(per_seed) < setting["seeds"]:
            markdown = (f"**Interim**: {len(per_seed)} of the {setting['seeds']} seeds this command asked for were "
                        f"finished when this file was written.\n\n{markdown}")
        common.write_results(args.out, payload, markdown, summary)
    print(markdown)
    return payload


def _clean_table(per_seed, methods, metrics, part):
    header = ["method", *metrics]
    rows = [[m, *(common.fmt([s[part]["clean"][m][k] for s in per_seed], scale=100 if k in
                             ("accuracy", "token_accuracy", "exact_match") else 1,
                             digits=1 if k in ("accuracy", "token_accuracy", "exact_match") else 3)
                  for k in metrics)] for m in methods]
    return common.markdown_table(header, rows)


def _scores_table(per_seed, part, key, names, metric):
    rows = [[m, common.fmt([s[part][key][m][metric] for s in per_seed], digits=1)] for m in names]
    return common.markdown_table(["method", f"{metric} %"], rows)


def summarize(per_seed, setting, mode, steps, methods, caption_methods, test, imro, args):
    seeds, out = len(per_seed), args.out
    reference = "late" if "late" in methods else None
    label = (f"{common.run_label(mode, seeds, SETTINGS[mode]['seeds'])} run: {seeds} seed(s), "
             f"{steps} train steps (batch 32), builder `{setting['builder']}`, first {len(test['label'])} test samples")
    md = [f"# imro_synth: tri-modal robustness, interpretability and captioning\n\n{label}. "
          "Mean +- std over seeds.\n"]
    md += ["## Clean test\n", _clean_table(per_seed, methods, ("accuracy", "nll", "ece", "auroc"), "classification"), ""]

    rho_rows = []
    for m in methods:
        rho_rows.append([m, *(common.fmt([s["spearman"][m][k] for s in per_seed], scale=1, digits=3)
                              for k in ("pooled", "within_sample", *MODALITIES))])
    md += ["## Interpretability: Spearman(R[b, m], ground-truth q[b, m]) on the clean test set\n",
           "`pooled`: over all (sample, modality) pairs; `within_sample`: mean over samples of the rank "
           "correlation across the 3 modalities; n/a: the weights are constant (uniform, concat, late).\n",
           common.markdown_table(["method", "pooled", "within_sample", *MODALITIES], rho_rows), ""]

    payload = {"mode": mode, "seeds": seeds, "steps": steps, "methods": methods, "caption_methods": caption_methods,
               "setting": {k: v for k, v in setting.items()}, "environment": common.environment(), "tables": {}}
    for part, names, metric, ref in (("classification", methods, "accuracy", reference),
                                     ("captions", caption_methods, "token_accuracy", None)):
        oracles = [*names, *(m + sw.ORACLE_SUFFIX for m in names)]
        md.append(f"## {part.capitalize()}: noise on one modality ({metric} %)\n")
        for m in MODALITIES:
            results = [s[part]["noise"][m] for s in per_seed]
            table, numbers = common.sweep_table(results, oracles, metric=metric, reference=ref)
            payload["tables"][f"{part}/noise/{m}"] = numbers
            name, levels = setting["noise"][m]
            md += [f"### {m}: {name} at levels {levels}\n", table, ""]
            curves = {k: v["mean"] * 100 for k, v in numbers.items()}
            reports.plot_curves(levels, curves, out / f"{part}_noise_{m}.png", xlabel=f"{m} {name} level",
                                ylabel=f"{metric} %", title=f"imro_synth {part}: {m} corrupted",
                                bands={k: v["std"] * 100 for k, v in numbers.items()})
        missing = [s[part]["missing"] for s in per_seed]
        rows = []
        for j, subset in enumerate(missing[0].subsets):
            rows.append(["+".join(subset), *(common.fmt([r.scores[m][metric][0, j] for r in missing], digits=1)
                                             for m in names)])
        md += [f"## {part.capitalize()}: missing modalities ({metric} %)\n",
               common.markdown_table(["dropped", *names], rows), ""]
        md += [f"## {part.capitalize()}: conflict (one modality from a class-(y+1) sample, every test sample)\n",
               _scores_table(per_seed, part, "conflict", oracles, metric), ""]
    kind_rows = [[m, *(common.fmt([s["classification"]["kinds"][c][m]["accuracy"] for s in per_seed], digits=1)
                       for c in protocols.SYNTH_KINDS)] for m in [*methods, *(m + sw.ORACLE_SUFFIX for m in methods)]]
    md += ["## Classification: harder corruptions, one modality at a time (accuracy %)\n",
           "`+oracle`: the corrupted modality masked as missing.\n",
           common.markdown_table(["method", *protocols.SYNTH_KINDS], kind_rows), ""]
    md += ["## Captions on the clean test set\n",
           _clean_table(per_seed, caption_methods, ("token_accuracy", "exact_match"), "captions"), ""]

    if imro is not None:
        weights = sw.model_predictor(imro.model, imro.variables)(test)["reliability"]
        reports.plot_reliability_vs_quality(weights, quality_matrix(test), MODALITIES, out / "imro_r_vs_quality.png",
                                            title="IMRO, seed 0")
        payload["reliability_report"] = reports.reliability_report(
            imro.model, common.subset_rows(test, 64), out / "reliability_report.png", variables=imro.variables,
            corruptions={m: spec for m, spec in setting["noise"].items()}, num_examples=3)
        md += ["## Plots\n", "![R vs quality](imro_r_vs_quality.png)", "![IMRO reliability report](reliability_report.png)",
               *(f"![{p} {m}]({p}_noise_{m}.png)" for p in ("classification", "captions") for m in MODALITIES), ""]
    md += [f"Command: `{args.command}`"]
    payload["per_seed"] = [
        {part: ({k: ({m: r.to_json() for m, r in v.items()} if k == "noise" else
                     v.to_json() if k == "missing" else v) for k, v in s[part].items()}
                if part in ("classification", "captions") else s[part]) for part in s}
        for s in per_seed
    ]
    return payload, "\n".join(md), summary_numbers(per_seed, setting, methods, args.command)


def summary_numbers(per_seed, setting, methods, command) -> dict:
    """summary.json: classification accuracy % (mean over seeds) in every README column."""
    scores = [s["classification"] for s in per_seed]
    mean = lambda xs: 100 * float(np.mean(xs))
    table = {}
    for m in methods:
        row = {"clean": mean([c["clean"][m]["accuracy"] for c in scores]),
               "missing": mean([np.mean(c["missing"].scores[m]["accuracy"]) for c in scores]),
               "spearman": float(np.mean([s["spearman"][m]["pooled"] for s in per_seed]))}
        for suffix in ("", sw.ORACLE_SUFFIX):  # the method, then its oracle
            name = m + suffix
            row["conflict" + suffix] = mean([c["conflict"][name]["accuracy"] for c in scores])
            for modality, (_, levels) in setting["noise"].items():
                row[f"noise:{modality}@{levels[-1]:g}{suffix}"] = mean(
                    [c["noise"][modality].curve(name, "accuracy")[-1] for c in scores])
            for column in protocols.SYNTH_KINDS:
                row[column + suffix] = mean([c["kinds"][column][name]["accuracy"] for c in scores])
        table[m] = row
    return common.summary_payload(command, len(per_seed), table)


if __name__ == "__main__":
    main(sys.argv[1:])
