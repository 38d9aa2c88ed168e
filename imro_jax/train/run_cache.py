"""A run cache on top of the trainer: one run directory per config and code version, reused.

    trained = train_or_reuse(config, cache_dir() / "runs")   # trains, resumes or reuses
    trained.model.apply(trained.variables, batch)

A run lives in ``root / code-<code_fingerprint()> / run_name(config)``: identical configs share
one run (whoever asks for it first trains it, later callers reuse the finished run or resume an
unfinished one from its last checkpoint), and a change to the code that trains a run starts a new
``code-*`` folder instead of reusing runs that older code trained. Training is
``imro_jax.train.loop.train`` on the ``imro_jax.train.model_task`` task, the trained variables
are read back from the run's last checkpoint (``loop.restore_variables``); nothing here is a
second training loop.

Like ``imro_jax.train.model_task`` this module imports the model and the data layer, so it is
imported by its module path, not from ``imro_jax.train``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

import imro_jax
from imro_jax.models import build_model
from imro_jax.train import checkpoint as checkpoint_lib
from imro_jax.train import loop
from imro_jax.train import workdir as workdir_lib
from imro_jax.train.model_task import model_task
from imro_jax.train.task import Task

CODE_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")  # their versions can change a run's numbers


def cache_dir() -> pathlib.Path:
    """The per-user cache of runs and compiled programs.

    Returns:
      ``$IMRO_CACHE_DIR``, else ``$XDG_CACHE_HOME/imro-jax``, else ``~/.cache/imro-jax``; one per
      user, never a shared /tmp path.
    """
    if os.environ.get("IMRO_CACHE_DIR"):
        return pathlib.Path(os.environ["IMRO_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(xdg).expanduser() / "imro-jax"


def enable_compilation_cache(directory: pathlib.Path | None = None) -> None:
    """Turns on JAX's persistent XLA cache, so runs that differ only in seed share one compiled step.

    Args:
      directory: where compiled programs go (default ``$IMRO_XLA_CACHE``, else
        ``cache_dir() / "xla_cache"``); created if missing.
    """
    directory = pathlib.Path(directory or os.environ.get("IMRO_XLA_CACHE", cache_dir() / "xla_cache"))
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@functools.cache
def code_fingerprint() -> str:
    """A hash of the code that trains a run (12 hex digits).

    It covers every ``*.py`` file of the imported ``imro_jax`` package (path and bytes; this
    module, which calls the trainer, among them) and the versions of :data:`CODE_PACKAGES`. Code
    outside the package that decides a run reaches it only through its config, which
    :func:`run_name` hashes whole.

    It reads the files Python actually imports, so it works the same from a checkout, a dirty
    tree or an installed wheel without git (a git HEAD would miss uncommitted edits, need git
    and a checkout, and change with every commit that only touches tests or docs).
    """
    digest = hashlib.sha256()
    package = pathlib.Path(imro_jax.__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for name in CODE_PACKAGES:
        digest.update(f"{name}=={importlib.metadata.version(name)}\0".encode())
    return digest.hexdigest()[:12]


def run_name(config: ml_collections.ConfigDict) -> str:
    """A directory name that identifies everything that changes a run.

    Args:
      config: a full config (reads ``data.name``, ``model.task``, ``model.fusion``, ``seed``,
        ``train.num_steps``).

    Returns:
      Readable fields plus a hash of the whole config except ``data.data_dir`` (where the data
      lies does not change the run), e.g. ``imro_synth-classification-imro-seed0-steps40-<hash>``.
    """
    fields = config.to_dict()
    fields["data"] = {k: v for k, v in fields["data"].items() if k != "data_dir"}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return (f"{config.data.name}-{config.model.task}-{config.model.fusion}-seed{config.seed}"
            f"-steps{config.train.num_steps}-{digest}")


def run_dir(config: ml_collections.ConfigDict, root: pathlib.Path) -> pathlib.Path:
    """``root / code-<code_fingerprint()> / run_name(config)``.

    A changed checkout never reuses runs that older code trained (delete the other ``code-*``
    folders to free their space).
    """
    return pathlib.Path(root) / f"code-{code_fingerprint()}" / run_name(config)


@dataclasses.dataclass
class Trained:
    """A trained run: the model, its variables (``{"params": ..., **model_state}``), its config
    and its run directory."""

    model: Any
    variables: dict
    config: ml_collections.ConfigDict
    workdir: pathlib.Path

    def history(self) -> list[dict]:
        """The run's ``metrics.jsonl`` records (train logs and evals), in order."""
        path = self.workdir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def steps_per_second(self) -> float:
        """Median train steps/s over the logged intervals after the first (which holds the
        compilation): the run's speed on this machine, whether or not it was resumed; NaN
        without two logged intervals."""
        rates = [r["steps_per_s"] for r in self.history() if "steps_per_s" in r][1:]
        return float(np.median(rates)) if rates else float("nan")


def train_or_reuse(config: ml_collections.ConfigDict, root: pathlib.Path, *,
                   log: Callable[[str], Any] = print) -> Trained:
    """Trains ``config`` with ``loop.train`` in ``run_dir(config, root)``, or reuses the run there.

    A finished run is reused as it is, an unfinished one resumed from its last checkpoint. A run
    killed before its first checkpoint (logged steps, no committed checkpoint) is archived under
    its ``previous/`` and trained again, since the trainer would refuse it.

    Args:
      config: a full config of the IMRO model (``model_task(config)`` trains it).
      root: the cache root (e.g. ``cache_dir() / "runs"``).
      log: where the progress lines go.

    Returns:
      The run's model, variables (restored from its last checkpoint), config and directory.
    """
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


def checkpoint_steps(config: ml_collections.ConfigDict, workdir: pathlib.Path, task: Task) -> list[int]:
    """The steps of the checkpoints kept in ``workdir`` (a run of ``config`` and ``task``), ascending."""
    run = loop.Run(config, workdir, task)
    try:
        return list(run.checkpointer.steps())
    finally:
        run.checkpointer.close()


def _no_checkpoint_left(workdir: pathlib.Path) -> bool:
    """Whether ``workdir`` holds a run (``workdir_lib.holds_run``) without a committed checkpoint
    (read only: a trainer still running there keeps its lock, and ``loop.train`` refuses)."""
    return workdir_lib.holds_run(workdir) and not checkpoint_lib.committed_steps(workdir / "checkpoints")
