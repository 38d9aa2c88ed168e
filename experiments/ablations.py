"""Experiment 3: ablations of IMRO on Handwritten and `imro_synth`.

    python experiments/ablations.py [--quick] [--out DIR] [--seeds N] [--steps N] [--datasets ...]

``--datasets`` reruns some datasets only: the others' tables are kept from ``DIR/results.json`` when it
holds a run of the same mode, each with the command that made it (``commands`` in the results).

Each variant changes one thing of the IMRO config (``experiments/configs/handwritten.py`` and
``trimodal.py``) and is trained with ``imro_jax.train``: lambda1 = 0, lambda2 = 0, both 0, R fixed
uniform (the same model and loss with ``model.fusion = "uniform"``), the paper's estimator,
no R-weighted vote (the token fusion alone), on Handwritten no gate (the vote alone, without the
token fusion head trained beside it: its default before the gate), no cross-modal agreement, no modality dropout, a low-rank density, each entropy estimator
(``model.reliability.entropy``), each MI bound for the training-time I term (``loss.mi_bound``),
and R unnormalised (``model.reliability.normalize = False``: the raw ratio I / (H + eps)).

Metrics (test split): Handwritten: clean accuracy, RCML conflictive accuracy, accuracy under
Gaussian noise on 3 of 6 views (mean over the 20 triples) averaged over sigma and at the largest
sigma, and the mean weight of a noisy view at sigma = 1; imro_synth: clean accuracy, accuracy
with one modality at its largest noise level (mean over modalities), with one or two modalities
missing (mean over the 6 patterns), under conflict, and Spearman(R, q).

``--quick``: Handwritten only, 1 seed, 40 steps, the full IMRO and "R fixed uniform".
"""

from __future__ import annotations

import json
import sys

import numpy as np

import common
from imro_jax.data import load_split, subset_rows
from imro_jax.data.synth import MODALITIES, quality_matrix
from imro_jax.eval import protocols
from imro_jax.eval import reports
from imro_jax.eval import sweep as sw
from imro_jax.eval import tables
from imro_jax.eval.results_files import environment, summary_payload, write_results
from imro_jax.train import run_cache
from imro_jax.train.config import with_overrides

NAME = "ablations"


# Each variant: its config overrides.
DEFAULT = "IMRO (surprisal H, agreement, modality dropout, R-weighted vote)"
NO_GATE = "no gate: the vote alone, no joint head (Handwritten's default before the gate)"
ONLY_ON = {NO_GATE: "handwritten"}  # variants that would change nothing on the other config
VARIANTS = {
    DEFAULT: {},
    "paper estimator: predictive H, no agreement": common.PAPER_RELIABILITY,
    "no vote: the R-scaled token fusion alone": common.NO_VOTE,
    NO_GATE: {"model.reliability.decision_gate": 0.0, "model.reliability.joint_detached": False,
              "loss.joint_weight": 0.0},
    "vote weights R itself (vote_power 1, not R^0.5)": {"model.reliability.vote_power": 1.0},
    "no agreement": {"model.reliability.agreement": 0.0},
    "no modality dropout": {"model.modality_dropout": 0.0},
    "H: low-rank (PPCA, rank 16) density": {"model.reliability.rank": 16},
    "lambda1 = 0": {"loss.lambda1": 0.0},
    "lambda2 = 0": {"loss.lambda2": 0.0},
    "lambda1 = lambda2 = 0": {"loss.lambda1": 0.0, "loss.lambda2": 0.0},
    "R fixed uniform": {"model.fusion": "uniform"},
    "H: Gaussian embedding entropy": {"model.reliability.entropy": "gaussian"},
    "H: entropy of softmax(embedding)": {"model.reliability.entropy": "embedding"},
    "I bound: InfoNCE": {"loss.mi_bound": "infonce"},
    "R unnormalised": {"model.reliability.normalize": False},  # the raw ratio I / (H + eps)
}
SETTINGS = {
    "full": dict(seeds=3, datasets=("handwritten", "synth"), variants=tuple(VARIANTS),
                 handwritten=dict(sigmas=[0.0, 0.1, 0.3, 1.0, 3.0, 10.0], subset_stride=1),
                 synth=dict(builder="default", eval_examples=1000, noise=protocols.SYNTH_NOISE)),
    "quick": dict(seeds=1, datasets=("handwritten",), variants=(DEFAULT, "R fixed uniform"),
                  handwritten=dict(sigmas=[0.0, 1.0], subset_stride=7),
                  synth=dict(builder="small", eval_examples=128, noise=protocols.SYNTH_NOISE_QUICK)),
}
CONFIGS = {"handwritten": "handwritten", "synth": "trimodal"}
COLUMNS = {
    "handwritten": ("clean acc", "conflictive acc", "noise acc (mean over sigma)", "noise acc (largest sigma)",
                    "weight of a noisy view (sigma 1)"),
    "synth": ("clean acc", "one modality noisy (max level)", "modalities missing", "conflict acc", "Spearman(R, q)"),
}


def handwritten_numbers(trained: run_cache.Trained, data: dict, seed: int, setting: dict) -> dict[str, float]:
    predictors = {"m": sw.model_predictor(trained.model, trained.variables)}
    result = protocols.handwritten_protocol(predictors, data["test"], data["train"], seed=seed,
                                            sigmas=setting["sigmas"], subset_stride=setting["subset_stride"])
    noise = result["noise"]
    curve = noise.curve("m", "accuracy")
    weights = noise.curve("m", "R_corrupted")
    at_one = int(np.argmin(np.abs(noise.levels - 1.0)))
    return dict(zip(COLUMNS["handwritten"], (
        result["clean"]["m"]["accuracy"], result["conflictive"]["m"]["accuracy"], float(curve.mean()),
        float(curve[-1]), float(weights[at_one]),
    )))


def synth_numbers(trained: run_cache.Trained, data: dict, seed: int, setting: dict) -> dict[str, float]:
    predictors = {"m": sw.model_predictor(trained.model, trained.variables)}
    test = data["test"]
    result = protocols.modality_protocol(predictors, test, noise=setting["noise"], seed=seed,
                                         num_classes=trained.config.data.num_classes)
    noisy = np.mean([r.curve("m", "accuracy")[-1] for r in result["noise"].values()])
    rho = reports.reliability_quality_correlation(predictors["m"](test)["reliability"], quality_matrix(test),
                                                  MODALITIES)
    return dict(zip(COLUMNS["synth"], (
        result["clean"]["m"]["accuracy"], float(noisy), float(result["missing"].curve("m", "accuracy")[0]),
        result["conflict"]["m"]["accuracy"], rho["pooled"],
    )))


NUMBERS = {"handwritten": handwritten_numbers, "synth": synth_numbers}


def load_data(dataset: str, config, setting: dict) -> dict:
    if dataset == "handwritten":
        return {"test": load_split(config.data, "test"), "train": load_split(config.data, "train")}
    return {"test": subset_rows(load_split(config.data, "test"), setting["eval_examples"])}


def main(argv=None) -> dict:
    args, mode, setting = common.start(NAME, __doc__.splitlines()[0], SETTINGS, argv, extra=lambda parser: (
        parser.add_argument("--datasets", nargs="+", choices=tuple(CONFIGS), default=None,
                            help="datasets to run (default: both; --quick: handwritten)")))
    setting["datasets"] = tuple(args.datasets or setting["datasets"])
    numbers, steps = {}, {}  # dataset -> variant -> list over seeds of {column: value}; dataset -> train steps
    kept = kept_datasets(args.out, mode, setting["datasets"])
    for dataset in setting["datasets"]:
        overrides = common.train_overrides(args, full_steps=protocols.SYNTH_TRAIN_STEPS if dataset == "synth" else None)
        if dataset == "synth":
            overrides["data.builder_config"] = setting["synth"]["builder"]
        steps[dataset] = common.load_config(CONFIGS[dataset], overrides).train.num_steps
        data = None
        variants = [v for v in setting["variants"] if ONLY_ON.get(v, dataset) == dataset]
        numbers[dataset] = {v: [] for v in variants}
        for seed in range(setting["seeds"]):
            for variant in variants:
                config = common.load_config(CONFIGS[dataset], {**overrides, "seed": seed})
                config = with_overrides(config, VARIANTS[variant])
                trained = run_cache.train_or_reuse(config, args.workdir)
                data = data or load_data(dataset, config, setting[dataset])
                numbers[dataset][variant].append(NUMBERS[dataset](trained, data, seed, setting[dataset]))
                print(f"[{NAME}] {dataset} seed {seed} {variant}: {numbers[dataset][variant][-1]}", flush=True)
            payload, markdown = write(numbers, steps, mode, args, kept)  # after every seed: a killed run keeps its seeds
    print(markdown)
    return payload


def kept_datasets(out, mode: str, running) -> dict:
    """The datasets of ``out/results.json`` (a run of the same mode) that this run does not redo:
    ``{"numbers", "steps", "commands", "environments"}``, each keyed by dataset (empty if none)."""
    path = out / "results.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    if old.get("mode") != mode:
        return {"numbers": {}, "steps": {}, "commands": {}, "environments": {}}
    other = [d for d in old["numbers"] if d not in running]
    legacy = json.loads((out / "summary.json").read_text())["command"] if "commands" not in old else None
    commands = old.get("commands") or {d: legacy for d in old["numbers"]}  # before per-dataset commands
    environments = old.get("environments") or {d: old["environment"] for d in old["numbers"]}
    in_order = lambda table: {v: table[v] for v in sorted(table, key=lambda v: (v not in VARIANTS, list(VARIANTS).index(v)
                                                                               if v in VARIANTS else 0))}
    return {"numbers": {d: in_order(old["numbers"][d]) for d in other}, "steps": {d: old["steps"][d] for d in other},
            "commands": {d: commands[d] for d in other}, "environments": {d: environments[d] for d in other}}


def write(numbers, steps, mode, args, kept) -> tuple[dict, str]:
    """Writes the results of the seeds done so far (a dataset in progress counts its finished seeds),
    after the ``kept`` datasets of an earlier run (:func:`kept_datasets`)."""
    done = {d: {v: seeds[:min(map(len, by_variant.values()))] for v, seeds in by_variant.items()}
            for d, by_variant in numbers.items()}
    done = {**kept["numbers"], **{d: by_variant for d, by_variant in done.items() if min(map(len, by_variant.values()))}}
    done = {d: done[d] for d in CONFIGS if d in done}
    seeds = {d: len(next(iter(by_variant.values()))) for d, by_variant in done.items()}
    steps = {**kept["steps"], **steps}
    steps = {d: steps[d] for d in done}
    commands = {d: kept["commands"].get(d, args.command) for d in done}
    environments = {d: kept["environments"].get(d, environment()) for d in done}
    in_run_order = sorted(done, key=lambda d: (environments[d].get("date", ""), d not in kept["numbers"]))
    command = " && ".join(dict.fromkeys(commands[d] for d in in_run_order))  # the chain that remakes the file
    markdown = render(done, seeds, mode, steps, commands)
    payload = {"mode": mode, "seeds": seeds, "steps": steps, "variants": VARIANTS, "numbers": done,
               "command": command, "commands": commands, "environments": environments}
    write_results(args.out, payload, markdown, summary=summary(done, seeds, command))
    return payload, markdown


def _unitless(column: str) -> bool:
    """Columns reported as they are (a correlation, a weight); the others are accuracies, in %."""
    return column.startswith(("Spearman", "weight"))


def summary(numbers, seeds: dict[str, int], command: str) -> dict:
    """summary.json: ``methods[variant]["<dataset> <column>"]``, the mean over seeds (accuracies in %)."""
    methods = {}
    for dataset, by_variant in numbers.items():
        for variant, per_seed in by_variant.items():
            for column in COLUMNS[dataset]:
                scale = 1 if _unitless(column) else 100
                methods.setdefault(variant, {})[f"{dataset} {column}"] = scale * tables.mean_std(
                    [s[column] for s in per_seed])[0]
    return summary_payload(command, min(seeds.values(), default=0), methods, digits=3,
                           seeds_per_dataset=seeds)


def render(numbers, seeds: dict[str, int], mode, steps, commands: dict[str, str]) -> str:
    label = common.run_label(mode, min(seeds.values(), default=0), SETTINGS[mode]["seeds"])
    skipped = [d for d in SETTINGS[mode]["datasets"] if d not in numbers]
    if mode == "full" and skipped:
        label = f"REDUCED (not run: {', '.join(skipped)})"
    md = [f"# Ablations of IMRO\n\n{label} run: seeds {seeds}; train steps "
          f"{steps}. Accuracies in %, mean +- std over seeds; each variant changes one thing of the IMRO config.\n"]
    for dataset, by_variant in numbers.items():
        columns = COLUMNS[dataset]
        rows = []
        for variant, seeds in by_variant.items():
            rows.append([variant, *(tables.fmt([s[c] for s in seeds], scale=1 if _unitless(c) else 100,
                                               digits=3 if _unitless(c) else 1) for c in columns)])
        md += [f"## {dataset}\n", tables.markdown_table(["variant", *columns], rows), "",
               f"Command: `{commands[dataset]}`", ""]
    return "\n".join(md)


if __name__ == "__main__":
    main(sys.argv[1:])
