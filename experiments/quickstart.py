"""The main job: IMRO vs the uniform-fusion baseline on `imro_synth`, in a few minutes on a CPU.

    python experiments/quickstart.py [--steps N] [--out DIR] [--data_dir DIR] [--workdir DIR]

Outputs go to `runs/quickstart/` (git-ignored) unless `--out DIR` is given; the committed run is
`--out experiments/results/quickstart`.

1. builds the `imro_synth/small` TFDS dataset (text + vision + audio, 4 classes, ground-truth
   per-sample quality) if it is not there yet;
2. trains IMRO and the paper's conventional fusion (`uniform`, R = 1/M) with `imro_jax.train`
   (same encoders, same data order; only the fusion differs), with a progress bar;
3. evaluates both on the test split: clean, each modality corrupted (text: token blanking;
   vision and audio: Gaussian noise), and each modality missing;
4. prints the comparison table and writes `results.md`, `results.json` and `quickstart.png` (IMRO's
   mean reliability of each modality as the noise on it grows) under ``--out``.
"""

from __future__ import annotations

import sys

import jax

import common
from imro_jax.data import load_split, prepare_dataset
from imro_jax.eval import reports
from imro_jax.eval import sweep as sw
from imro_jax.eval import tables
from imro_jax.eval.results_files import environment, write_results
from imro_jax.train import run_cache

NAME = "quickstart"
OUT = common.REPO / "runs" / NAME  # default --out: git-ignored, so a run never rewrites tracked files
METHODS = ("imro", "uniform")
NOISE = {"text": ("blank", 0.75), "vision": ("gaussian", 1.0), "audio": ("gaussian", 0.3)}


def with_default_out(argv: list[str]) -> list[str]:
    """`argv` with `--out OUT` first unless it names an `--out` itself."""
    if any(arg == "--out" or arg.startswith("--out=") for arg in argv):
        return argv
    return ["--out", str(OUT), *argv]


def main(argv=None) -> dict:
    argv = with_default_out(list(sys.argv[1:] if argv is None else argv))
    args = common.parse_args(NAME, __doc__.splitlines()[0], argv)
    run_cache.enable_compilation_cache()
    overrides = {**common.train_overrides(args, full_steps=300), "data.builder_config": "small"}
    steps = overrides["train.num_steps"]
    if not args.quick:  # --quick keeps the shared quick overrides, so it reuses synth.py's quick run
        overrides["train.log_every"] = max(1, steps // 10)
    base = common.load_config("trimodal", overrides)
    print("[1/3] dataset imro_synth/small (built on the first run)", flush=True)
    print(f"      in {prepare_dataset(base.data).data_dir}", flush=True)
    test = load_split(base.data, "test")
    modalities = sorted(NOISE)

    print(f"[2/3] training {', '.join(METHODS)} for {steps} steps each", flush=True)
    trained = common.train_methods(base, METHODS, args.workdir)
    predictors = {m: sw.model_predictor(t.model, t.variables) for m, t in trained.items()}

    print("[3/3] evaluating clean, noisy and missing modalities", flush=True)
    rows, numbers = [], {}
    clean = sw.score_predictors(predictors, test)
    numbers["clean"] = clean
    rows.append(["clean", *(f"{100 * clean[m]['accuracy']:.1f}" for m in METHODS)])
    for i, m in enumerate(modalities):
        name, level = NOISE[m]
        noisy = sw.score_predictors(predictors, sw.corrupt(test, name, level, (m,), key=jax.random.key(i), fraction=1.0))
        missing = sw.score_predictors(predictors, sw.corrupt(test, "missing", 1.0, (m,), key=jax.random.key(100 + i),
                                                            fraction=1.0))
        numbers[f"{m} {name} {level}"], numbers[f"{m} missing"] = noisy, missing
        rows.append([f"{m}: {name} {level}", *(f"{100 * noisy[k]['accuracy']:.1f}" for k in METHODS)])
        rows.append([f"{m}: missing", *(f"{100 * missing[k]['accuracy']:.1f}" for k in METHODS)])
    table = tables.markdown_table(["test condition", *(f"{m} accuracy %" for m in METHODS)], rows)

    args.out.mkdir(parents=True, exist_ok=True)
    steps_grid = {"gaussian": [0.0, 0.1, 0.3, 1.0, 3.0], "blank": [0.0, 0.25, 0.5, 0.75, 1.0]}
    by_level = reports.reliability_by_level(
        predictors["imro"], test, {m: (NOISE[m][0], steps_grid[NOISE[m][0]]) for m in modalities})
    reports.plot_reliability_by_level(
        by_level, args.out / "quickstart.png", title="IMRO reliability as one modality degrades",
        xlabels={"gaussian": "Gaussian noise std\n(vision pixels in [0, 1], audio in [-1, 1])",
                 "blank": "fraction of text tokens blanked"})
    numbers["reliability_by_level"] = {m: {k: v for k, v in d.items() if k != "reliability"}
                                       for m, d in by_level.items()}
    markdown = (f"# Quickstart: IMRO vs uniform fusion on imro_synth/small\n\n{steps} train steps per method, "
                f"{len(test['label'])} test samples.\n\n{table}\n\n![R vs corruption](quickstart.png)\n\n"
                f"Command: `{args.command}`\n")
    write_results(args.out, {"steps": steps, "scores": numbers, "environment": environment()}, markdown)
    print("\n" + table + f"\n\nwrote {args.out}/results.md and quickstart.png", flush=True)
    return numbers


if __name__ == "__main__":
    main(sys.argv[1:])
