"""What the experiment scripts share that is specific to this repository's experiments: the
paths of ``experiments/configs`` and ``experiments/results``, the compared methods, the common
command-line flags and the config overrides of their runs.

The machinery they run on is the library's: training through the run cache
(``imro_jax.train.run_cache.train_or_reuse``, the project's trainer on the
``imro_jax.train.model_task`` task), whole evaluation splits (``imro_jax.data.load_split``),
evaluation with ``imro_jax.eval.sweep``, tables (``imro_jax.eval.tables``) and result files
(``imro_jax.eval.results_files``).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

from imro_jax.models import registry
from imro_jax.train.config import load_config_file, with_overrides
from imro_jax.train import run_cache
from imro_jax.train.run_cache import cache_dir, enable_compilation_cache

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "configs"
RESULTS = REPO / "experiments" / "results"
# A method is a fusion plus the overrides that define it. "imro" is the experiment config's
# default IMRO; "imro_paper" is the paper's estimator taken literally (R from the unimodal
# head's predictive entropy alone, no agreement term), trained the same way.
# No reliability vote: the prediction is the R-scaled token fusion's, so the fusion must stay attached to
# the encoders (joint_detached needs the vote; Handwritten's config detaches it).
NO_VOTE = {"model.reliability.decision": 0.0, "model.reliability.joint_detached": False}
PAPER_RELIABILITY = {"model.reliability.entropy": "predictive", "model.reliability.agreement": 0.0, **NO_VOTE}
METHODS = {"imro": {}, "imro_paper": PAPER_RELIABILITY,
           **{f: {"model.fusion": f} for f in registry.FUSIONS if f != "imro"}}
TOKEN_METHODS = tuple(m for m, o in METHODS.items() if registry.FUSIONS[o.get("model.fusion", "imro")].kind == "token")


def methods_for(task: str) -> tuple[str, ...]:
    """The methods whose fusion supports ``task`` (``registry.Fusion.tasks``), in METHODS order."""
    return tuple(m for m, o in METHODS.items() if task in registry.FUSIONS[o.get("model.fusion", "imro")].tasks)


def method_overrides(method: str) -> dict[str, Any]:
    """The config overrides of ``method`` (a key of :data:`METHODS`)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {sorted(METHODS)}")
    return dict(METHODS[method])


def train_methods(config: ml_collections.ConfigDict, methods: Sequence[str], workdir: pathlib.Path,
                  **changes: Any) -> dict[str, run_cache.Trained]:
    """``{method: its run of config}``, trained or reused (``run_cache.train_or_reuse``): the
    method's overrides (:func:`method_overrides`) and ``changes`` (e.g. ``seed=1``, as
    ``{"seed": 1}``) applied on top of ``config``."""
    return {m: run_cache.train_or_reuse(with_overrides(config, {**method_overrides(m), **changes}), workdir)
            for m in methods}


# ----------------------------------------------------------------------------- command line


def parse_args(name: str, description: str, argv: Sequence[str] | None = None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The common flags: ``--quick``, ``--out DIR``, ``--seeds N``, ``--steps N``, ``--data_dir DIR``,
    ``--workdir DIR``, plus those ``extra(parser)`` adds."""
    parser = argparse.ArgumentParser(prog=f"experiments/{name}.py", description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument("--quick", action="store_true", help="tiny CI setting: 1 seed, few steps, one Transformer block")
    parser.add_argument("--out", default=str(RESULTS / name), help="results directory")
    parser.add_argument("--seeds", type=int, default=None, help="override the number of seeds")
    parser.add_argument("--steps", type=int, default=None, help="override the train steps per run")
    parser.add_argument("--data_dir", default=os.environ.get("TFDS_DATA_DIR", ""),
                        help="TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--workdir", default=str(cache_dir() / "runs"),
                        help="root of the run cache, shared by the experiments: one run per config "
                             "and code version, a finished run is reused (default %(default)s; "
                             "$IMRO_CACHE_DIR moves the cache)")
    args = parser.parse_args(argv)
    args.command = command_line(name, sys.argv[1:] if argv is None else argv)
    args.out = pathlib.Path(args.out)
    args.workdir = pathlib.Path(args.workdir)
    return args


PATH_FLAGS = ("--out", "--data_dir", "--workdir")  # where files go: not part of what a run computes


def command_line(name: str, argv: Sequence[str]) -> str:
    """The command that reproduces a run, as written into its results: the script and its flags,
    without the flags that only say where files go (``PATH_FLAGS``)."""
    kept, skip_value = [], False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg in PATH_FLAGS:
            skip_value = True
        elif not arg.startswith(tuple(f + "=" for f in PATH_FLAGS)):
            kept.append(arg)
    return shlex.join(["python", f"experiments/{name}.py", *kept])


def start(name: str, description: str,
          settings: Mapping[str, dict] | Callable[[argparse.Namespace], Mapping[str, dict]],
          argv: Sequence[str] | None, extra: Callable[[argparse.ArgumentParser], None] | None = None):
    """Parses the flags, picks ``settings["quick" | "full"]`` (``--seeds`` overrides its seeds;
    ``settings`` may be a function of the parsed flags, when a flag selects them) and turns on
    the compilation cache. Returns ``(args, mode, setting)``."""
    args = parse_args(name, description, argv, extra)
    mode = "quick" if args.quick else "full"
    setting = dict((settings(args) if callable(settings) else settings)[mode])
    setting["seeds"] = args.seeds or setting["seeds"]
    enable_compilation_cache()
    return args, mode, setting


def run_label(mode: str, seeds: int, default_seeds: int) -> str:
    """How a result file names its setting: QUICK (not a result), REDUCED (fewer seeds than the
    experiment's default) or full."""
    if mode == "quick":
        return "QUICK (CI smoke setting, not a result)"
    if seeds < default_seeds:
        return f"REDUCED ({seeds} of the default {default_seeds} seeds)"
    return "full"


QUICK_STEPS = 40  # one value for every --quick run, so the experiments share compiled programs


def train_overrides(args: argparse.Namespace, *, full_steps: int | None = None) -> dict[str, Any]:
    """Config overrides common to the experiments' runs: the data dir, no evaluation during
    training (the experiments evaluate afterwards), and the number of steps (``--steps``,
    ``QUICK_STEPS`` with ``--quick``, else ``full_steps`` or the config's own).

    Identical configs share one run directory (``imro_jax.train.run_cache.run_name``), so an
    experiment reuses the runs another one trained with the same overrides."""
    overrides = {"data.data_dir": args.data_dir, "train.eval_every": 0, "checkpoint.best_metric": ""}
    steps = args.steps or (QUICK_STEPS if args.quick else full_steps)
    if steps:
        overrides["train.num_steps"] = steps
        overrides["optimizer.warmup_steps"] = max(1, min(20, steps // 8))
    if args.quick:  # every quick run logs each step and keeps a mid-run checkpoint (the stability
        # experiment needs both), so all experiments' quick runs of one config are the same run
        overrides.update({"train.log_every": 1, "checkpoint.every_steps": QUICK_STEPS // 2,
                          "checkpoint.keep_last": 3,
                          "model.depth": 1})  # one block per encoder: compiling dominates these runs
    return overrides


# ----------------------------------------------------------------------------- configs


def load_config(name: str, overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
    """``experiments/configs/<name>.py`` with ``{"section.key": value}`` overrides, locked
    (``imro_jax.train.config.with_overrides``: keys must exist, values keep their types)."""
    return with_overrides(load_config_file(CONFIGS / f"{name}.py"), overrides or {})
