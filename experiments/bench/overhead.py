"""Benchmark 1: the cost of IMRO against the same model with uniform fusion, side by side.

    python experiments/bench/overhead.py [--config trimodal] [--rounds 60] [--warmup 5]

Variants, identical encoders and batch, each with its own state, in one process:

* `imro`: the config as is (R from the reliability estimator weights the fusion attention);
* `uniform`: `model.fusion = "uniform"` (R = 1/M), same loss (the estimator's heads, entropy
  and MI terms are still trained, so the difference is the R-weighting alone);
* `plain`: uniform fusion trained on the task cross-entropy only, so XLA drops the estimator,
  the regulariser and the unimodal losses: the transformer "without reliability weighting" of
  the paper's overhead claim (train and forward modes only; its inference equals `uniform`'s).

Modes: `train` (the jitted train step: forward, backward, AdamW, donated state), `forward`
(train-mode forward and loss, no gradient) and `inference` (eval-mode logits). Every round calls
every (variant, mode) once in a shuffled order; ratios are paired per round and summarised by
median and IQR. Target: imro / uniform <= 1.05 for the train step.

The statistics pass (`imro_jax.models.statistics`, after training, where H is the surprisal) is
timed in the same process: the task's `fit_model_state` over `ceil(fit_examples / batch)`
batches (the whole pass it makes on a dataset at least that large), the first call (with its
compilations) and the median of `--fit_rounds` more; its share of training is that time over
`--train_steps` (default: the config's `train.num_steps`) imro train steps at the median step
time above. Target: at most 5%.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

import benchlib
from imro_jax import perf
from imro_jax.eval import tables
from imro_jax.train import model_fns

VARIANTS = ("imro", "uniform", "plain")
MODES = ("train", "forward", "inference")


def task_only_loss(config):
    """`(params, batch, rng, step) -> (cross-entropy, metrics)` of the fused logits only."""
    model = model_fns.model_functions(config).model

    def loss_fn(params, batch, rng, step):
        output = model.apply({"params": params}, batch, train=True, rngs={"dropout": rng})
        logits = output.logits.astype(jnp.float32)
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))
        return loss, {}

    return loss_fn


def build_variants(config, batch, variants, devices):
    """`{name: StepBench}` for the requested variants (see module docstring)."""
    benches = {}
    for name in variants:
        fusion = config.model.fusion if name == "imro" else "uniform"
        cfg = benchlib.variant(config, fusion=fusion)
        loss = task_only_loss(cfg) if name == "plain" else None
        benches[name] = perf.build_step_bench(name, cfg, batch, devices=devices, loss_fn=loss)
    return benches


def calls_for(benches, modes):
    """`{(variant, mode): call}`; `plain` gets no inference call (it equals `uniform`'s)."""
    methods = {"train": "train", "forward": "forward_loss", "inference": "inference"}
    return {
        (name, mode): getattr(bench, methods[mode])
        for name, bench in benches.items()
        for mode in modes
        if not (name == "plain" and mode == "inference")
    }


def main(argv=None) -> None:
    parser = benchlib.base_parser(__doc__, rounds=60, warmup=5)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--fit_rounds", type=int, default=3, help="timed statistics passes after the first")
    parser.add_argument("--fit_examples", type=int, default=0,
                        help="examples the statistics pass reads (default: model.reliability.fit_examples)")
    parser.add_argument("--train_steps", type=int, default=0,
                        help="training length the statistics pass is compared with (default: train.num_steps)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.rounds, args.warmup, args.variants, args.fit_rounds = min(args.rounds, 5), 1, "imro,uniform", 1
        args.fit_examples = args.fit_examples or 64
    report = perf.Report("Benchmark 1: IMRO overhead", args.results, benchlib.REPO)
    config = benchlib.resolve_config(args)
    if config.model.fusion != "imro":
        raise SystemExit(f"--config must have model.fusion='imro', got {config.model.fusion!r}")
    variants = [v for v in args.variants.split(",") if v]
    modes = [m for m in args.modes.split(",") if m]
    unknown = (set(variants) - set(VARIANTS)) | (set(modes) - set(MODES))
    if unknown or "imro" not in variants or "uniform" not in variants:
        raise SystemExit(f"variants must include imro and uniform, from {VARIANTS}; modes from "
                         f"{MODES}; unknown: {sorted(unknown)}")
    batch = perf.synthetic_batch(config.model, config.data.batch_size)
    benches = build_variants(config, batch, variants, jax.devices()[:1])
    calls = calls_for(benches, modes)
    for call in calls.values():  # compile everything before timing
        call()
    times = perf.interleaved_timings(calls, rounds=args.rounds, warmup=args.warmup)

    rows = []
    for mode in modes:
        base = times[("uniform", mode)]
        for name in variants:
            if (name, mode) not in times:
                continue
            t = times[(name, mode)]
            ratio = "1 (reference)" if name == "uniform" else perf.paired_ratio(t, base).fmt()
            rows.append((mode, name, perf.Summary.of(t).fmt(1e3, 2), ratio))
    headline = perf.paired_ratio(times[("imro", "train")], times[("uniform", "train")]) \
        if "train" in modes else None
    notes = [
        f"{benchlib.config_note(args, config)}, {args.rounds} interleaved rounds after {args.warmup} warm-up rounds",
        "times: median [IQR] ms per call; ratio: median [IQR] of per-round paired ratios to uniform",
    ]
    if headline is not None:
        verdict = "meets" if headline.median <= 1.05 else "misses"
        notes.append(f"train-step imro/uniform = {headline.median:.3f} "
                     f"(IQR {headline.q1:.3f}-{headline.q3:.3f}): {verdict} the <= 1.05 target")
    fit_examples = args.fit_examples or config.model.reliability.fit_examples
    fit = benches["imro"].statistics_pass(fit_examples)
    if fit is None:
        notes.append("statistics pass: none (model.reliability.entropy is not the surprisal)")
    elif "train" in modes:
        first, later = perf.wall_seconds(fit), np.array([perf.wall_seconds(fit) for _ in range(args.fit_rounds)])
        examples = math.ceil(fit_examples / config.data.batch_size) * config.data.batch_size
        steps = args.train_steps or config.train.num_steps
        training = steps * float(np.median(times[("imro", "train")]))
        share = float(np.median(later)) / training
        notes.append(
            f"statistics pass over {examples} examples: first call {first:.2f} s (with its compilations), then "
            f"{perf.Summary.of(later).fmt(1, 2)} s = {100 * share:.1f}% of {steps} imro train steps "
            f"({training:.1f} s at the median step; first call: {100 * first / training:.1f}%): "
            f"{'meets' if share <= 0.05 else 'misses'} the <= 5% target")
    report.finish(tables.markdown_table(["mode", "variant", "time ms", "ratio to uniform"], rows),
                  notes)


if __name__ == "__main__":
    main()
