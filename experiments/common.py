"""Shared plumbing of the experiment scripts: configs, training through `imro_jax.train`,
whole evaluation splits in memory, result files and tables.

Every experiment trains with the project's trainer (`imro_jax.train.loop.train` on the
`imro_jax.train.model_task` task) and reads the trained parameters back from the run's last
checkpoint (`loop.Run(...).checkpointer.restore_latest`), then evaluates with
`imro_jax.eval.sweep`. Nothing here is a second training loop.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

import imro_jax
from imro_jax.data import make_pipeline
from imro_jax.models import build_model
from imro_jax.models import registry
from imro_jax.train import checkpoint as checkpoint_lib
from imro_jax.train import loop
from imro_jax.train import workdir as workdir_lib
from imro_jax.train.config import load_config_file, with_overrides
from imro_jax.train.model_task import model_task
from results_io import markdown_table  # noqa: F401 (the experiments call common.markdown_table)

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "configs"
RESULTS = REPO / "experiments" / "results"
# A method is a fusion plus the overrides that define it. "imro" is the experiment config's
# default IMRO; "imro_paper" is the paper's estimator taken literally (R from the unimodal
# head's predictive entropy alone, no agreement term), trained the same way.
PAPER_RELIABILITY = {"model.reliability.entropy": "predictive", "model.reliability.agreement": 0.0,
                     "model.reliability.decision": 0.0}
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


def start(name: str, description: str, settings: Mapping[str, dict], argv: Sequence[str] | None,
          extra: Callable[[argparse.ArgumentParser], None] | None = None):
    """Parses the flags, picks ``settings["quick" | "full"]`` (``--seeds`` overrides its seeds)
    and turns on the compilation cache. Returns ``(args, mode, setting)``."""
    args = parse_args(name, description, argv, extra)
    mode = "quick" if args.quick else "full"
    setting = dict(settings[mode])
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

    Identical configs share one run directory (:func:`run_name`), so an experiment reuses the
    runs another one trained with the same overrides."""
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


def enable_compilation_cache(directory: pathlib.Path | None = None) -> None:
    """Persistent XLA cache (default ``$IMRO_XLA_CACHE`` or ``cache_dir() / "xla_cache"``, shared by
    the experiments): runs that differ only in seed reuse one compiled train step."""
    directory = pathlib.Path(directory or os.environ.get("IMRO_XLA_CACHE", cache_dir() / "xla_cache"))
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


# ----------------------------------------------------------------------------- configs


def load_config(name: str, overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
    """``experiments/configs/<name>.py`` with ``{"section.key": value}`` overrides, locked
    (``imro_jax.train.config.with_overrides``: keys must exist, values keep their types)."""
    return with_overrides(load_config_file(CONFIGS / f"{name}.py"), overrides or {})


# ----------------------------------------------------------------------------- training


@dataclasses.dataclass
class Trained:
    """A trained run: the model, its variables and what training reported."""

    model: Any
    variables: dict
    config: ml_collections.ConfigDict
    workdir: pathlib.Path

    def history(self) -> list[dict]:
        """The run's ``metrics.jsonl`` records (train logs and evals)."""
        path = self.workdir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def steps_per_second(self) -> float:
        """Median train steps/s over the logged intervals after the first (which holds the
        compilation): the run's speed on this machine, whether or not it was resumed."""
        rates = [r["steps_per_s"] for r in self.history() if "steps_per_s" in r][1:]
        return float(np.median(rates)) if rates else float("nan")


def checkpoint_steps(config: ml_collections.ConfigDict, workdir: pathlib.Path, task) -> list[int]:
    """Steps of the checkpoints kept in ``workdir``."""
    run = loop.Run(config, workdir, task)
    try:
        return list(run.checkpointer.steps())
    finally:
        run.checkpointer.close()


def run_name(config: ml_collections.ConfigDict) -> str:
    """A directory name that identifies everything that changes a run: readable fields plus a
    hash of the whole config except ``data.data_dir`` (identical configs share one run)."""
    fields = config.to_dict()
    fields["data"] = {k: v for k, v in fields["data"].items() if k != "data_dir"}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return (f"{config.data.name}-{config.model.task}-{config.model.fusion}-seed{config.seed}"
            f"-steps{config.train.num_steps}-{digest}")


def cache_dir() -> pathlib.Path:
    """The experiments' cache (runs and compiled programs): ``$IMRO_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/imro-jax``, else ``~/.cache/imro-jax``; one per user, never a shared /tmp path."""
    if os.environ.get("IMRO_CACHE_DIR"):
        return pathlib.Path(os.environ["IMRO_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(xdg).expanduser() / "imro-jax"


CODE_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")  # their versions can change a run's numbers
# Experiment files that decide how a run is trained besides its config: this module (it calls the
# trainer). The experiment scripts themselves are left out: what they decide reaches a run only
# through its config, which run_name hashes whole, and leaving them out lets experiments share runs.
EXPERIMENT_SOURCES = (pathlib.Path(__file__).resolve(),)


@functools.cache
def code_fingerprint() -> str:
    """A hash of the code that trains a run: every ``*.py`` file of the imported ``imro_jax``
    package (path and bytes), :data:`EXPERIMENT_SOURCES` and the versions of ``CODE_PACKAGES``.

    It reads the files Python actually imports, so it works the same from a checkout, a dirty
    tree or an installed wheel without git (a git HEAD would miss uncommitted edits, need git
    and a checkout, and change with every commit that only touches tests or docs)."""
    digest = hashlib.sha256()
    package = pathlib.Path(imro_jax.__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for path in EXPERIMENT_SOURCES:
        digest.update(b"experiments/" + path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for name in CODE_PACKAGES:
        digest.update(f"{name}=={importlib.metadata.version(name)}\0".encode())
    return digest.hexdigest()[:12]


def run_dir(config: ml_collections.ConfigDict, root: pathlib.Path) -> pathlib.Path:
    """``root / code-<code_fingerprint()> / run_name(config)``: a changed checkout never reuses
    runs that older code trained (delete the other ``code-*`` folders to free their space)."""
    return pathlib.Path(root) / f"code-{code_fingerprint()}" / run_name(config)


def train(config: ml_collections.ConfigDict, root: pathlib.Path, *, log=print) -> Trained:
    """Trains ``config`` with ``imro_jax.train.loop.train`` in ``run_dir(config, root)``; a run
    there is reused (finished) or resumed from its last checkpoint. A run killed before its first
    checkpoint (logged steps, no committed checkpoint) is archived under its ``previous/`` and
    trained again, since the trainer would refuse it."""
    workdir = run_dir(config, root)
    task = model_task(config)
    start = time.perf_counter()
    start_over = _no_checkpoint_left(workdir)
    if start_over:
        log(f"  {workdir} holds an unfinished run without a checkpoint (killed?); training it again")
    loop.train(config, workdir, task, start_over=start_over)
    seconds = time.perf_counter() - start
    variables = loop.restore_variables(config, workdir, task)
    log(f"  trained {config.model.fusion} seed {config.seed}: {config.train.num_steps} steps in {seconds:.0f}s")
    return Trained(build_model(config.model), variables, config, workdir)


def _no_checkpoint_left(workdir: pathlib.Path) -> bool:
    """Whether ``workdir`` holds a run (``workdir_lib.holds_run``) without a committed checkpoint
    (read only: a trainer still running there keeps its lock, and ``loop.train`` refuses)."""
    return workdir_lib.holds_run(workdir) and not checkpoint_lib.committed_steps(workdir / "checkpoints")


# ----------------------------------------------------------------------------- data


def load_split(data_config: ml_collections.ConfigDict, split: str) -> dict:
    """A whole split as one numpy batch dict (one ordered pass of the grain pipeline)."""
    batches = list(make_pipeline(data_config, split=split, train=False, seed=0))
    if not batches:
        raise ValueError(f"split {split!r} of {data_config.name} is empty")
    return jax.tree.map(lambda *xs: np.concatenate(xs), *batches)


def subset_rows(batch: dict, count: int) -> dict:
    """The first ``count`` rows of every leaf."""
    return jax.tree.map(lambda x: np.asarray(x)[:count], batch)


# ----------------------------------------------------------------------------- results


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for a single value), NaNs ignored."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
    if values.size == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def fmt(values: Sequence[float] | float, *, scale: float = 100.0, digits: int = 2) -> str:
    """``"mean +- std"`` of ``values * scale`` (one value: just the value); NaN as "n/a"."""
    values = [values] if np.isscalar(values) else list(values)
    mean, std = mean_std(values)
    if not math.isfinite(mean):
        return "n/a"
    if len(values) == 1:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} +- {std * scale:.{digits}f}"


def curve_stats(results: Sequence[Any], method: str, metric: str) -> dict[str, np.ndarray]:
    """Per-seed curves of a method (``SweepResult.curve``) and their mean and std over seeds.

    Returns ``{"per_seed": [S, L], "mean": [L], "std": [L]}`` (std with ddof=1; 0 for one seed).
    """
    per_seed = np.array([r.curve(method, metric) for r in results])
    std = per_seed.std(0, ddof=1) if len(per_seed) > 1 else np.zeros(per_seed.shape[1])
    return {"per_seed": per_seed, "mean": per_seed.mean(0), "std": std}


def robustness(results: Sequence[Any], method: str, reference: str | None, metric: str = "accuracy") -> dict:
    """Per-seed MultiBench relative (and, with a reference method, effective) robustness."""
    summaries = [r.summary(metric, reference=reference) for r in results]
    return {
        "relative": [s[method]["relative_robustness"] for s in summaries],
        "effective": [s[method].get("effective_robustness", float("nan")) for s in summaries],
    }


def sweep_table(results: Sequence[Any], methods: Sequence[str], *, metric: str = "accuracy",
                reference: str | None = None, scale: float = 100.0, digits: int = 1,
                robustness_columns: bool = True) -> tuple[str, dict]:
    """Markdown table of a sweep over seeds: one row per method, the mean +- std of ``metric`` at
    each level, then relative and effective robustness; and the numbers behind it.

    Args:
      results: one ``SweepResult`` per seed (same levels and subsets).
      methods: rows (plain or ``+oracle`` names).
      metric: the scored metric.
      reference: effective-robustness reference method (MultiBench: late fusion) or None.
      robustness_columns: the MultiBench robustness columns (they assume a higher-is-better
        metric such as accuracy; off for an error such as MAE).
    """
    levels = results[0].levels
    header = ["method", *(f"{level:.3g}" for level in levels)]
    if robustness_columns:
        header += ["rel. rob.", f"eff. rob. (vs {reference})" if reference else "eff. rob."]
    rows, numbers = [], {}
    for m in methods:
        stats = curve_stats(results, m, metric)
        row = [m, *(fmt(stats["per_seed"][:, i], scale=scale, digits=digits) for i in range(len(levels)))]
        numbers[m] = stats
        if robustness_columns:
            rob = robustness(results, m, reference, metric) if len(levels) >= 2 else {"relative": [], "effective": []}
            numbers[m] = {**stats, "robustness": rob}
            row += [fmt(rob["relative"], scale=scale, digits=digits) if rob["relative"] else "",
                    fmt(rob["effective"], scale=scale, digits=digits) if reference else ""]
        rows.append(row)
    return markdown_table(header, rows), numbers


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, ml_collections.ConfigDict):
        return _jsonable(value.to_dict())
    return value


def environment() -> dict:
    """Where and with what the results were produced."""
    return {
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_results(out: pathlib.Path, payload: dict, markdown: str, summary: dict | None = None) -> None:
    """Writes ``out/results.json`` (NaN as null), ``out/results.md`` and, given ``summary``
    (:func:`summary_payload`), the small committed ``out/summary.json``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(_jsonable(payload), indent=1, sort_keys=True))
    (out / "results.md").write_text(markdown.rstrip() + "\n")
    if summary is not None:
        missing = {"command", "seeds", "methods"} - set(summary)
        if missing:
            raise ValueError(f"summary.json needs keys command, seeds, methods; missing {sorted(missing)}")
        (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=1, sort_keys=True) + "\n")


def summary_payload(command: str, seeds: int, methods: Mapping[str, Mapping[str, float]], *, digits: int = 2,
                    **extra) -> dict:
    """``{"command", "seeds", "methods": {method: {metric: value}}}``: every number a README
    quotes, accuracies in %, rounded to ``digits`` decimals (the README's precision or finer)."""
    rounded = {m: {k: (None if v is None or not math.isfinite(v) else round(float(v), digits)) for k, v in metrics.items()}
               for m, metrics in methods.items()}
    return {"command": command, "seeds": seeds, "methods": rounded, **extra}
