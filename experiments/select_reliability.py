"""Chooses the default IMRO variant on a validation split (never on test data).

    python experiments/select_reliability.py [--dataset handwritten|synth_regression] [--quick] [--seeds N]
        [--variants A,B,...] [--out DIR]

``--dataset handwritten`` (default), UCI Handwritten: every variant is trained on ``train[:80%]`` of the fixed split (1280 samples)
and scored on the held-out ``train[80%:]`` (320 samples); the test split is never read. The
conditions (each a mean over seeds):

* clean; Gaussian noise sigma in {0.1, 1, 10} on 3 of the 6 views (7 of the 20 triples);
* conflict (one view of 40% of the samples from a class-(y+1) donor);
* 3 views missing (the same triples).

The selection score is the mean accuracy over these conditions; the variant with the highest
score becomes ``imro_jax/configs/trimodal.py``'s default (``model.reliability`` and
``model.modality_dropout``, shared by every fusion).

``--dataset synth_regression``, the regression task of ``imro_synth``: the weight of the
reliability vote (``model.reliability.decision``, the one option that acts differently on a
Gaussian-mean prediction than on class logits) is chosen for
``experiments/configs/synth_regression.py``. Each variant is trained on the train split, as the
experiment trains it, and scored on the first 2000 samples of the builder's own validation split
under the conditions of ``experiments/synth.py`` (``imro_jax.eval.protocols.modality_protocol``):
clean, each modality's largest noise level, the missing patterns (mean), conflict and the six
harder corruption kinds. The score is the mean MAE over these 12 conditions; the lowest wins.

Writes ``results.md``, ``results.json`` and ``summary.json`` to ``--out`` (default
``experiments/results/select_reliability``, or ``.../select_reliability_<dataset>``).
"""

from __future__ import annotations

import sys

import jax
import numpy as np

import common
from imro_jax.data import load_split, prepare_dataset
from imro_jax.data.builders.handwritten import NUM_CLASSES, VIEWS
from imro_jax.eval import protocols
from imro_jax.eval import sweep as sweep_lib
from imro_jax.eval import tables
from imro_jax.eval.results_files import environment, summary_payload, write_results
from imro_jax.train import run_cache

NAME = "select_reliability"
TRAIN, VALIDATION = "train[:80%]", "train[80%:]"
SURPRISAL = {"model.reliability.entropy": "surprisal", "model.reliability.decision": 0.0}  # (on ROUND_BASE)
VARIANTS = {  # name -> overrides on the handwritten config (modality dropout applies to all fusions)
    "paper": {**common.PAPER_RELIABILITY, "model.modality_dropout": 0.0},
    "paper+dropout": {**common.PAPER_RELIABILITY, "model.modality_dropout": 0.3},
    "surprisal": {**SURPRISAL, "model.reliability.agreement": 0.0, "model.modality_dropout": 0.0},
    "surprisal+dropout": {**SURPRISAL, "model.reliability.agreement": 0.0, "model.modality_dropout": 0.3},
    "surprisal+agreement": {**SURPRISAL, "model.reliability.agreement": 1.0, "model.modality_dropout": 0.0},
    "surprisal+agreement+dropout": {**SURPRISAL, "model.reliability.agreement": 1.0, "model.modality_dropout": 0.3},
    **{f"surprisal+agreement+dropout{p}+vote{b}": {
        **SURPRISAL, "model.reliability.agreement": 1.0, "model.modality_dropout": p, "model.reliability.decision": b}
       for p, b in ((0.3, 0.5), (0.5, 0.5), (0.3, 1.0))},
    # the vote with tempered weights R^p / sum R^p (model.reliability.vote_power), and a later
    # excess-surprisal threshold (quantile): the leads of the vote1.0 run's post-hoc probe
    **{f"surprisal+agreement+dropout0.3+vote{b}+power{p}" + (f"+q{q}" if q != 0.99 else ""): {
        **SURPRISAL, "model.reliability.agreement": 1.0, "model.modality_dropout": 0.3,
        "model.reliability.decision": b, "model.reliability.vote_power": p, "model.reliability.quantile": q}
       for b, p, q in ((1.0, 0.5, 0.99), (0.75, 0.5, 0.99), (1.0, 0.5, 0.999))},
    # the vote gated per sample by its worst modality's H (model.reliability.decision_gate, nats):
    # the joint head where every modality looks clean, the vote where one is flagged
    **{f"surprisal+agreement+dropout0.3+vote1.0+power0.5+gate{tau}": {
        **SURPRISAL, "model.reliability.agreement": 1.0, "model.modality_dropout": 0.3,
        "model.reliability.decision": 1.0, "model.reliability.vote_power": 0.5, "model.reliability.decision_gate": tau}
       for tau in (1.0, 0.25)},
}
# the first round (the default of the full Handwritten run, experiments/results/select_reliability);
# the later rounds run with --variants, their commands in the README
FIRST_ROUND = tuple(VARIANTS)[:9]
DEFAULT = "surprisal+agreement+dropout0.3+vote1.0+power0.5"  # the default chosen by the runs above
# the token fusion head trained on its own loss beside the vote (loss.joint_weight), its prediction
# pooled with the vote's (beta = decision < 1) or taking over where every modality looks clean (gate)
JOINT = {f"surprisal+agreement+dropout0.3+vote{b}+power0.5+joint1" + (f"+gate{tau}" if tau else ""): {
    **VARIANTS[DEFAULT], "model.reliability.decision": b, "model.reliability.decision_gate": tau, "loss.joint_weight": 1.0}
    for b, tau in ((0.5, 0.0), (0.75, 0.0), (1.0, 1.0))}
SHARED_JOINT = tuple(JOINT)  # the synth run's default (experiments/results/select_reliability_synth)
# the same with the joint head on stop-gradient tokens and R (model.reliability.joint_detached):
# its loss cannot reach the encoders, so it adds an expert without retraining the vote's
JOINT.update({f"surprisal+agreement+dropout0.3+vote{b}+power0.5+joint1" + (f"+gate{tau}" if tau else "") + "+detached": {
    **VARIANTS[DEFAULT], "model.reliability.decision": b, "model.reliability.decision_gate": tau, "loss.joint_weight": 1.0,
    "model.reliability.joint_detached": True}
    for b, tau in ((0.75, 0.0), (0.9, 0.0), (1.0, 1.0), (1.0, 0.25), (1.0, 4.0))})
VARIANTS.update(JOINT)
# not candidates: the baselines' fusions on the same split, for reference (is a clean gap on test also
# one on validation?)
REFERENCES = {"reference: uniform fusion": {"model.fusion": "uniform"}, "reference: late fusion": {"model.fusion": "late"}}
VARIANTS.update(REFERENCES)
SETTINGS = {"full": dict(seeds=2, sigmas=[0.1, 1.0, 10.0], subset_stride=3, variants=FIRST_ROUND),
            "quick": dict(seeds=1, sigmas=[1.0], subset_stride=10,
                          variants=("paper", "surprisal+agreement+dropout0.3+vote1.0"))}
SYNTH_FULL = dict(seeds=2, builder="default", eval_examples=2000, noise=protocols.SYNTH_NOISE)
SYNTH_QUICK = dict(seeds=1, builder="small", eval_examples=128, noise=protocols.SYNTH_NOISE_QUICK)
# synth (classification): the default against the joint-head variants, on the experiment's own config
SYNTH_VARIANTS = {v: VARIANTS[v] for v in (DEFAULT, *JOINT)}
SYNTH_SETTINGS = {"full": dict(SYNTH_FULL, config="trimodal", builder_suffix="", variants=(DEFAULT, *SHARED_JOINT)),
                  "quick": dict(SYNTH_QUICK, config="trimodal", builder_suffix="", variants=(DEFAULT, tuple(JOINT)[0]))}
# synth_regression: the vote's weight beta (model.reliability.decision) on the experiment's config
REGRESSION_VARIANTS = {f"vote{b:g}": {"model.reliability.decision": b} for b in (0.0, 0.5, 1.0)}
REGRESSION_SETTINGS = {"full": dict(SYNTH_FULL, config="synth_regression", builder_suffix="_regression",
                                    variants=tuple(REGRESSION_VARIANTS)),
                       "quick": dict(SYNTH_QUICK, config="synth_regression", builder_suffix="_regression",
                                     variants=("vote0", "vote1"))}


# the variants are changes to the Handwritten config as the rounds above found it (no joint head, no
# gate), so that their committed results reproduce after the config took the last round's choice
ROUND_BASE = {"model.reliability.decision_gate": 0.0, "model.reliability.joint_detached": False, "loss.joint_weight": 0.0}


def handwritten_overrides(args, setting) -> dict:
    return {**common.train_overrides(args), "data.train_split": TRAIN, **ROUND_BASE}


def handwritten_validation(args, setting):
    data = common.load_config("handwritten", handwritten_overrides(args, setting)).data
    prepare_dataset(data)
    return load_split(data, VALIDATION)


def handwritten_conditions(predictors, validation, setting, seed) -> dict[str, dict[str, float]]:
    """Validation accuracy (%) of each predictor under each condition."""
    subsets = sweep_lib.modality_subsets(VIEWS, 3)[:: setting["subset_stride"]]
    noise = sweep_lib.sweep(predictors, validation, corruption="gaussian", levels=setting["sigmas"], subsets=subsets,
                            seed=seed)
    missing = sweep_lib.sweep(predictors, validation, corruption="missing", levels=[1.0], subsets=subsets, seed=seed)
    conflict = sweep_lib.corrupt(validation, "conflict", 1.0, VIEWS, key=jax.random.key(20_000 + seed),
                                 fraction=0.4, num_classes=NUM_CLASSES)
    clean, conflicted = (sweep_lib.score_predictors(predictors, b) for b in (validation, conflict))
    out = {}
    for name in predictors:
        row = {"clean": clean[name]["accuracy"], "conflict": conflicted[name]["accuracy"],
               "missing3": missing.curve(name, "accuracy")[0]}
        row.update({f"noise@{s:.3g}": a for s, a in zip(setting["sigmas"], noise.curve(name, "accuracy"))})
        out[name] = {k: 100 * float(v) for k, v in row.items()}
    return out


def synth_overrides(args, setting) -> dict:
    return {**common.train_overrides(args, full_steps=protocols.SYNTH_TRAIN_STEPS),
            "data.builder_config": setting["builder"] + setting["builder_suffix"]}


def synth_validation(args, setting):
    """The validation samples and their classes (the conflict donors' key)."""
    data = common.load_config(setting["config"], synth_overrides(args, setting)).data
    class_data = None
    if setting["builder_suffix"]:  # regression: the classes come from the classification builder config
        class_data = common.load_config("trimodal", {**common.train_overrides(args),
                                                     "data.builder_config": setting["builder"]}).data
    return protocols.synth_eval_split(data, "validation", setting["eval_examples"], class_data)


def synth_conditions(predictors, validation, setting, seed) -> dict[str, dict[str, float]]:
    """Validation accuracy (%) or MAE of each predictor under each condition (the summary columns of
    ``experiments/synth.py`` without the oracles)."""
    batch, classes = validation
    regression = bool(setting["builder_suffix"])
    result = protocols.modality_protocol(
        predictors, batch, noise=setting["noise"], seed=seed, num_classes=int(np.max(classes)) + 1, classes=classes,
        scorer=sweep_lib.regression_scorer if regression else sweep_lib.classification_scorer)
    scale = 1.0 if regression else 100.0
    return {name: {k: scale * v for k, v in protocols.modality_headline(
        result, name, "mae" if regression else "accuracy").items()} for name in predictors}


# dataset -> what differs: variants, settings, the config and its overrides (a variant's go on top), the
# validation data, the conditions, and whether the score is better high (accuracy) or low (MAE)
DATASETS = {
    "handwritten": dict(variants=VARIANTS, settings=SETTINGS, config="handwritten", overrides=handwritten_overrides,
                        validation=handwritten_validation, conditions=handwritten_conditions, higher_is_better=True,
                        title="Choosing the IMRO default on a validation split (Handwritten)",
                        split=f"trained on `{TRAIN}`, scored on `{VALIDATION}`", unit="Accuracy %",
                        target="`imro_jax/configs/trimodal.py`"),
    "synth": dict(variants=SYNTH_VARIANTS, settings=SYNTH_SETTINGS, config="trimodal", overrides=synth_overrides,
                  validation=synth_validation, conditions=synth_conditions, higher_is_better=True,
                  title="Choosing the IMRO prediction on a validation split (imro_synth classification)",
                  split="trained on `train`, scored on the first samples of `validation`", unit="Accuracy %",
                  target="`imro_jax/configs/trimodal.py` where it also wins on Handwritten"),
    "synth_regression": dict(variants=REGRESSION_VARIANTS, settings=REGRESSION_SETTINGS, config="synth_regression",
                             overrides=synth_overrides, validation=synth_validation,
                             conditions=synth_conditions, higher_is_better=False,
                             title="Choosing the vote weight of IMRO on a validation split (imro_synth regression)",
                             split="trained on `train`, scored on the first samples of `validation`",
                             unit="MAE (lower is better)", target="`experiments/configs/synth_regression.py`"),
}


def extra_flags(parser) -> None:
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="handwritten",
                        help="whose default is chosen (default %(default)s)")
    parser.add_argument("--variants", default="", help="comma-separated subset of the dataset's variants (default: "
                        f"the setting's); handwritten: {', '.join(VARIANTS)}; synth: {', '.join(SYNTH_VARIANTS)}; "
                        f"synth_regression: {', '.join(REGRESSION_VARIANTS)}")


def chosen_variants(flag: str, default: tuple[str, ...], known: dict) -> tuple[str, ...]:
    """The ``--variants`` subset, in the given order; an unknown name is an error naming it."""
    if not flag:
        return default
    names = tuple(n.strip() for n in flag.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SystemExit(f"--variants: unknown variant(s) {unknown or flag!r}; known: {', '.join(known)}")
    return names


def main(argv=None) -> dict:
    args, mode, setting = common.start(NAME, __doc__.splitlines()[0], lambda a: DATASETS[a.dataset]["settings"],
                                       argv, extra=extra_flags)
    dataset = DATASETS[args.dataset]
    if args.dataset != "handwritten" and args.out == common.RESULTS / NAME:
        args.out = common.RESULTS / f"{NAME}_{args.dataset}"
    variants = chosen_variants(args.variants, setting["variants"], dataset["variants"])
    if all(v in REFERENCES for v in variants):
        raise SystemExit(f"--variants names only references ({', '.join(variants)}): give a candidate too")
    validation = dataset["validation"](args, setting)
    per_seed = []
    for seed in range(setting["seeds"]):
        overrides = dataset["overrides"](args, setting)
        trained = {v: run_cache.train_or_reuse(common.load_config(
            dataset["config"], {**overrides, **dataset["variants"][v], "seed": seed}), args.workdir) for v in variants}
        predictors = {v: sweep_lib.model_predictor(t.model, t.variables) for v, t in trained.items()}
        per_seed.append(dataset["conditions"](predictors, validation, setting, seed))
        print(f"[{NAME}] {args.dataset} seed {seed}: " + ", ".join(
            f"{v} {np.mean(list(r.values())):.3f}" for v, r in per_seed[-1].items()), flush=True)
    metrics = list(per_seed[0][variants[0]])
    table = {v: {k: float(np.mean([s[v][k] for s in per_seed])) for k in metrics} for v in variants}
    for v in table:
        table[v]["score"] = float(np.mean([table[v][k] for k in metrics]))
    best = (max if dataset["higher_is_better"] else min)((v for v in table if v not in REFERENCES),
                                                         key=lambda v: table[v]["score"])  # never a reference
    label = common.run_label(mode, len(per_seed), dataset["settings"][mode]["seeds"])
    digits = 2 if dataset["higher_is_better"] else 3
    rows = [[f"**{v}**" if v == best else v, *(f"{table[v][k]:.{digits}f}" for k in [*metrics, "score"])]
            for v in variants]
    markdown = "\n".join([
        f"# {dataset['title']}\n",
        f"{label} run: {len(per_seed)} seed(s), {dataset['split']} (the test split is never read). "
        f"{dataset['unit']}, mean over seeds; score = mean over the conditions; the selected variant goes into "
        f"{dataset['target']}.\n",
        tables.markdown_table(["variant", *metrics, "score"], rows), "",
        f"Selected: **{best}** ({' '.join(f'{k}={v}' for k, v in dataset['variants'][best].items())}).", "",
        f"Command: `{args.command}`",
    ])
    payload = {"mode": mode, "dataset": args.dataset, "variants": {v: dataset["variants"][v] for v in variants},
               "per_seed": per_seed, "table": table, "selected": best, "environment": environment()}
    write_results(args.out, payload, markdown,
                  summary_payload(args.command, len(per_seed), table, selected=best, digits=digits))
    print(markdown)
    return payload


if __name__ == "__main__":
    main(sys.argv[1:])
