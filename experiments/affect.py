"""Experiment: sentiment on CMU-MOSI / CMU-MOSEI, IMRO and every baseline, beside MulT.

    python experiments/affect.py --dataset cmu_mosei --manual_dir DIR [--quick] [--out DIR] [--seeds N] [--steps N]

``DIR`` holds MulT's aligned pickle (``mosei_senti_data.pkl`` or ``mosi_data.pkl``; where to get
it: ``imro_jax.data.builders.cmu_affect.manual_instructions``). For each seed:

* every method whose fusion supports regression (``common.methods_for("regression")``: IMRO, the
  paper's estimator ``imro_paper``, and the baselines) is trained on the sentiment score with the L1
  loss (``experiments/configs/<dataset>.py``), and every other method (the classification-only
  ``energy`` and ``evidential``) on the 7 rounded classes (``seven_class`` of
  ``experiments/configs/cmu_mosei_class7.py``); ``model.label_variance`` is set to the variance
  of the training scores;
* the test split is scored clean, with each modality missing, and with each modality under
  Gaussian noise, white noise at a target SNR and word-step blanking (``imro_jax.eval.sweep``,
  ``imro_jax.data.corruptions``): MAE, Corr, Acc-2 / F1 (has-0, non-0), Acc-7, Acc-5
  (``imro_jax.eval.affect``) for the regression models, accuracy (= Acc-7) for the 7-class ones,
  and the mean reliability R of the corrupted modality.

Writes ``results.md`` (the standard table with MulT's published numbers beside ours),
``results.json``, ``summary.json`` and ``r_under_noise.png`` (R of each modality as its own noise
grows) to ``--out`` (default ``experiments/results/affect_<dataset>``). Protocol and published
numbers: ``docs/protocols.md``, section 6 ("Affect"). ``--quick``: 1 seed, ``QUICK_STEPS`` steps, a
tiny model, fusions imro (regression) and evidential (7 classes), one or two levels per corruption.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

import common
from configs.cmu_mosei_class7 import seven_class
from imro_jax.data import datasets, load_split
from imro_jax.data.builders import cmu_affect
from imro_jax.eval import affect_report, reports
from imro_jax.eval import sweep as sweep_lib
from imro_jax.eval import tables
from imro_jax.eval.results_files import environment, write_results
from imro_jax.train.config import with_overrides

NAME = "affect"
BUILDERS = {"cmu_mosei": cmu_affect.CmuMosei, "cmu_mosi": cmu_affect.CmuMosi}
# MulT (Tsai et al. 2019), word-aligned; Acc-2/F1 in the non-0 convention. docs/protocols.md.
PUBLISHED = {
    "cmu_mosei": {"acc7": 0.518, "acc2_non0": 0.825, "f1_non0": 0.823, "mae": 0.580, "corr": 0.703},
    "cmu_mosi": {"acc7": 0.400, "acc2_non0": 0.830, "f1_non0": 0.828, "mae": 0.871, "corr": 0.698},
}
PUBLISHED_NOTE = {"cmu_mosei": "read in a comparison table citing MulT (docs/protocols.md)",
                  "cmu_mosi": "read in a comparison table that cites MulT, not in its paper (docs/protocols.md)"}
CORRUPTIONS = ("missing", "gaussian", "snr", "blank")
SETTINGS = {
    "full": dict(seeds=3, regression=None, class7=None, levels={
        "missing": [1.0], "gaussian": [0.0, 0.25, 0.5, 1.0, 2.0, 4.0], "snr": [20.0, 10.0, 0.0, -10.0],
        "blank": [0.0, 0.25, 0.5, 0.75, 1.0]}),
    "quick": dict(seeds=1, regression=("imro",), class7=("evidential",), levels={
        "missing": [1.0], "gaussian": [0.0, 2.0], "snr": [10.0], "blank": [0.5]}),
}
QUICK_MODEL = {"model.dim": 16, "model.mlp_dim": 32, "model.depth": 1, "model.num_heads": 2, "data.batch_size": 8}
TABLE = (("Acc-7", "acc7", 100), ("Acc-2 (non-0)", "acc2_non0", 100), ("F1 (non-0)", "f1_non0", 100),
         ("MAE", "mae", 1), ("Corr", "corr", 1), ("Acc-2 (has-0)", "acc2_has0", 100), ("F1 (has-0)", "f1_has0", 100),
         ("F1 (non-0, MulT's order)", "f1_non0_mult_order", 100), ("Acc-5", "acc5", 100))


def extra_flags(parser) -> None:
    parser.add_argument("--dataset", choices=sorted(BUILDERS), default="cmu_mosei")
    parser.add_argument("--manual_dir", required=True, help="folder holding MulT's aligned pickle")


def require_pickle(dataset: str, manual_dir: str) -> None:
    """Exits with one message saying where to get the file when ``manual_dir`` lacks it."""
    builder = BUILDERS[dataset]
    path = pathlib.Path(manual_dir) / builder.PICKLE_NAME
    if not path.is_file():
        raise SystemExit(f"[{NAME}] {path} not found.\n{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}")


def affect_scorer(outputs: dict, batch: dict) -> dict[str, float]:
    """:func:`imro_jax.eval.affect_report` of the predicted scores, valid fraction and mean R."""
    scores = affect_report(outputs["logits"], batch["label"])
    scores["valid"] = float(np.mean(outputs["valid"]))
    scores.update(sweep_lib.reliability_means(outputs["reliability"], batch))
    return scores


def evaluate(trained: dict, test: dict, scorer, setting: dict, seed: int) -> dict:
    """Clean scores and one sweep per corruption over the single-modality subsets."""
    predictors = {m: sweep_lib.model_predictor(t.model, t.variables) for m, t in trained.items()}
    subsets = [(m,) for m in cmu_affect.MODALITIES]
    sweeps = {name: sweep_lib.sweep(predictors, test, corruption=name, levels=setting["levels"][name],
                                    subsets=subsets, seed=seed, scorer=scorer)
              for name in CORRUPTIONS}
    return {"clean": sweep_lib.score_predictors(predictors, test, scorer=scorer), "sweeps": sweeps}


def main(argv=None) -> dict:
    args, mode, setting = common.start(NAME, __doc__.splitlines()[0], SETTINGS, argv, extra=extra_flags)
    require_pickle(args.dataset, args.manual_dir)
    args.command = args.command.replace(args.manual_dir, "DIR")  # the results name no local path
    if args.out == common.RESULTS / NAME:
        args.out = common.RESULTS / f"{NAME}_{args.dataset}"
    overrides = {**common.train_overrides(args), "data.manual_dir": args.manual_dir,
                 **(QUICK_MODEL if args.quick else {})}
    regression = common.load_config(args.dataset, overrides)
    datasets.prepare_dataset(regression.data)
    train_scores = load_split(regression.data, "train")["label"]
    variance = float(np.var(train_scores.astype(np.float64)))
    regression = with_overrides(regression, {"model.label_variance": variance})
    class7 = seven_class(regression)
    methods = {"regression": list(setting["regression"] or common.methods_for("regression"))}
    methods["class7"] = list(setting["class7"] or [m for m in common.methods_for("classification")
                                                   if m not in methods["regression"]])
    print(f"[{NAME}] {mode} on {args.dataset}: {setting['seeds']} seed(s), regression {methods['regression']}, "
          f"7 classes {methods['class7']}, {regression.train.num_steps} steps", flush=True)

    tests = {"regression": load_split(regression.data, "test"), "class7": load_split(class7.data, "test")}
    scorers = {"regression": affect_scorer, "class7": sweep_lib.classification_scorer}
    per_seed = []
    for seed in range(setting["seeds"]):
        results = {}
        for task, config in (("regression", regression), ("class7", class7)):
            trained = common.train_methods(config, methods[task], args.workdir, seed=seed)
            results[task] = evaluate(trained, tests[task], scorers[task], setting, seed)
        per_seed.append(results)
        clean = {m: round(v["mae"], 3) for m, v in results["regression"]["clean"].items()}
        print(f"[{NAME}] seed {seed}: clean test MAE {clean}", flush=True)

    markdown, summary_methods = summarize(per_seed, methods, args, mode)
    write_results(args.out, payload(per_seed, methods, args, mode, setting), markdown,
                  summary={"command": args.command, "seeds": len(per_seed), "methods": summary_methods})
    print(markdown)
    return summary_methods


def _values(per_seed, task, method, metric):
    return [s[task]["clean"][method][metric] for s in per_seed]


def _column(per_seed, task, corruption, method, metric, subset, level) -> list[float]:
    """``metric`` of ``method`` at one (level, modality) point of a sweep, one value per seed."""
    return [float(s[task]["sweeps"][corruption].scores[method][metric][level, subset]) for s in per_seed]


def summarize(per_seed, methods, args, mode) -> tuple[str, dict]:
    seeds = len(per_seed)
    label = common.run_label(mode, seeds, SETTINGS[mode]["seeds"])
    lines = [f"# {args.dataset}: IMRO and the baselines beside MulT\n",
             f"{label} run: {seeds} seed(s). Test split; accuracies and F1 in %, mean +- std over seeds. "
             "Regression models (L1 on the score) fill every column; the 7-class models only Acc-7. "
             "Acc-2/F1 conventions and sources: `docs/protocols.md` (Affect).\n"]
    header = ["method", *(name for name, _, _ in TABLE)]
    rows, summary = [], {}
    for m in methods["regression"]:
        summary[m] = {key: float(np.mean(_values(per_seed, "regression", m, key))) for _, key, _ in TABLE}
        rows.append([f"{m} (ours)", *(tables.fmt(_values(per_seed, "regression", m, key), scale=scale,
                                                  digits=1 if scale == 100 else 3) for _, key, scale in TABLE)])
    for m in methods["class7"]:
        summary[f"{m} (7 classes)"] = {"acc7": float(np.mean(_values(per_seed, "class7", m, "accuracy")))}
        rows.append([f"{m} (ours, 7 classes)", tables.fmt(_values(per_seed, "class7", m, "accuracy"), digits=1),
                     *[""] * (len(TABLE) - 1)])
    published = PUBLISHED[args.dataset]
    rows.append([f"MulT (published; {PUBLISHED_NOTE[args.dataset]})",
                 *(f"{published[key] * scale:.{1 if scale == 100 else 3}f}" if key in published else ""
                   for _, key, scale in TABLE)])
    lines += ["## Clean test\n", tables.markdown_table(header, rows), ""]

    lines += ["## Each modality missing (regression models): MAE / Acc-2 non-0 %\n"]
    missing_header = ["method", *(f"{m} missing" for m in cmu_affect.MODALITIES)]
    missing_rows = [[m, *(f"{tables.fmt(_column(per_seed, 'regression', 'missing', m, 'mae', s, 0), scale=1, digits=3)}"
                          f" / {tables.fmt(_column(per_seed, 'regression', 'missing', m, 'acc2_non0', s, 0), digits=1)}"
                          for s in range(len(cmu_affect.MODALITIES)))] for m in methods["regression"]]
    lines += [tables.markdown_table(missing_header, missing_rows), ""]

    first = per_seed[0]["regression"]["sweeps"]
    for corruption in CORRUPTIONS[1:]:
        levels = first[corruption].levels
        lines += [f"## {corruption} on one modality (regression models): MAE at each level\n"]
        header = ["method", "modality", *(f"{level:g}" for level in levels)]
        body = [[m, modality, *(tables.fmt(_column(per_seed, "regression", corruption, m, "mae", s, i), scale=1,
                                           digits=3) for i in range(len(levels)))]
                for m in methods["regression"] for s, modality in enumerate(cmu_affect.MODALITIES)]
        lines += [tables.markdown_table(header, body), ""]

    plot_r(per_seed, methods["regression"], args.out)
    lines += ["## Reliability of a modality under its own Gaussian noise\n", "![R under noise](r_under_noise.png)", "",
              "Plainly: these numbers come from the command below on the file the user supplied; no machine of "
              "this project could download CMU-MOSI/MOSEI, so none of our real-data numbers are measured here.", "",
              f"Command: `{args.command}`"]
    return "\n".join(lines), summary


def plot_r(per_seed, methods, out: pathlib.Path) -> None:
    """Mean R of each modality against the std of the Gaussian noise on that modality alone,
    one line per (method with a learned weight, modality); seeds averaged."""
    sweep = per_seed[0]["regression"]["sweeps"]["gaussian"]
    curves = {}
    for m in methods:
        for s, modality in enumerate(cmu_affect.MODALITIES):
            per = np.array([s_["regression"]["sweeps"]["gaussian"].scores[m]["R/" + modality][:, s] for s_ in per_seed])
            if np.ptp(per) > 0 or m == "imro":
                curves[f"{m}: R/{modality}"] = per.mean(0)
    reports.plot_curves(sweep.levels, curves, out / "r_under_noise.png", xlabel="noise std on that modality",
                        ylabel="mean R of the noisy modality", title="R by modality under its own noise")


def payload(per_seed, methods, args, mode, setting) -> dict:
    return {
        "mode": mode, "dataset": args.dataset, "seeds": len(per_seed), "methods": methods,
        "levels": setting["levels"], "published": PUBLISHED[args.dataset], "command": args.command,
        "per_seed": per_seed,  # SweepResults as to_json() writes them
        "environment": environment(),
    }


if __name__ == "__main__":
    main(sys.argv[1:])
