"""Chooses the default IMRO variant on a validation split (never on test data).

    python experiments/select_reliability.py [--quick] [--seeds N] [--variants A,B,...] [--out DIR]

UCI Handwritten: every variant is trained on ``train[:80%]`` of the fixed split (1280 samples)
and scored on the held-out ``train[80%:]`` (320 samples); the test split is never read. The
conditions (each a mean over seeds):

* clean; Gaussian noise sigma in {0.1, 1, 10} on 3 of the 6 views (7 of the 20 triples);
* conflict (one view of 40% of the samples from a class-(y+1) donor);
* 3 views missing (the same triples).

The selection score is the mean accuracy over these conditions; the variant with the highest
score becomes ``imro_jax/configs/trimodal.py``'s default (``model.reliability`` and
``model.modality_dropout``, shared by every fusion). Writes ``results.md``, ``results.json``
and ``summary.json`` to ``--out`` (default ``experiments/results/select_reliability``).
"""

from __future__ import annotations

import sys

import jax
import numpy as np

import common
from imro_jax.data import load_split
from imro_jax.data.builders.handwritten import NUM_CLASSES, VIEWS
from imro_jax.eval import sweep as sweep_lib
from imro_jax.eval import tables
from imro_jax.eval.results_files import environment, summary_payload, write_results
from imro_jax.train import run_cache

NAME = "select_reliability"
TRAIN, VALIDATION = "train[:80%]", "train[80%:]"
SURPRISAL = {"model.reliability.entropy": "surprisal", "model.reliability.decision": 0.0}
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
SETTINGS = {"full": dict(seeds=2, sigmas=[0.1, 1.0, 10.0], subset_stride=3, variants=tuple(VARIANTS)),
            "quick": dict(seeds=1, sigmas=[1.0], subset_stride=10,
                          variants=("paper", "surprisal+agreement+dropout0.3+vote1.0"))}


def conditions(predictors, validation, setting, seed) -> dict[str, dict[str, float]]:
    """Validation accuracy of each predictor under each condition."""
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
        out[name] = row
    return out


def variants_flag(parser) -> None:
    parser.add_argument("--variants", default="", help="comma-separated subset of the variants (default: the "
                                                       f"setting's); known: {', '.join(VARIANTS)}")


def chosen_variants(flag: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """The ``--variants`` subset, in the given order; an unknown name is an error naming it."""
    if not flag:
        return default
    names = tuple(n.strip() for n in flag.split(",") if n.strip())
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise SystemExit(f"--variants: unknown variant(s) {unknown or flag!r}; known: {', '.join(VARIANTS)}")
    return names


def main(argv=None) -> dict:
    args, mode, setting = common.start(NAME, __doc__.splitlines()[0], SETTINGS, argv, extra=variants_flag)
    setting["variants"] = chosen_variants(args.variants, setting["variants"])
    overrides = {**common.train_overrides(args), "data.train_split": TRAIN}
    base = common.load_config("handwritten", overrides)
    validation = load_split(base.data, VALIDATION)
    per_seed, variants = [], setting["variants"]
    for seed in range(setting["seeds"]):
        trained = {v: run_cache.train_or_reuse(
                       common.load_config("handwritten", {**overrides, **VARIANTS[v], "seed": seed}), args.workdir)
                   for v in variants}
        predictors = {v: sweep_lib.model_predictor(t.model, t.variables) for v, t in trained.items()}
        per_seed.append(conditions(predictors, validation, setting, seed))
        print(f"[{NAME}] seed {seed}: " + ", ".join(
            f"{v} {100 * np.mean(list(r.values())):.2f}" for v, r in per_seed[-1].items()), flush=True)
    metrics = list(per_seed[0][variants[0]])
    table = {v: {k: 100 * float(np.mean([s[v][k] for s in per_seed])) for k in metrics} for v in variants}
    for v in table:
        table[v]["score"] = float(np.mean([table[v][k] for k in metrics]))
    best = max(table, key=lambda v: table[v]["score"])
    label = common.run_label(mode, len(per_seed), SETTINGS[mode]["seeds"])
    rows = [[f"**{v}**" if v == best else v, *(f"{table[v][k]:.2f}" for k in [*metrics, "score"])] for v in variants]
    markdown = "\n".join([
        "# Choosing the IMRO default on a validation split (Handwritten)\n",
        f"{label} run: {len(per_seed)} seed(s), trained on `{TRAIN}`, scored on `{VALIDATION}` (the test split is "
        "never read). Accuracy %, mean over seeds; score = mean over the conditions.\n",
        tables.markdown_table(["variant", *metrics, "score"], rows), "",
        f"Selected: **{best}** ({' '.join(f'{k}={v}' for k, v in VARIANTS[best].items())}).", "",
        f"Command: `{args.command}`",
    ])
    payload = {"mode": mode, "variants": VARIANTS, "per_seed": per_seed, "table": table, "selected": best,
               "environment": environment()}
    write_results(args.out, payload, markdown,
                  summary_payload(args.command, len(per_seed), table, selected=best))
    print(markdown)
    return payload


if __name__ == "__main__":
    main(sys.argv[1:])
