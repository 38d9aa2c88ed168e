"""The run directory: one trainer at a time, and no run silently replaced.

    lock        `workdir/.lock`, an exclusive `fcntl.flock` held by process 0 while it trains;
                the kernel releases it when the process exits, however it dies (kill -9 included)
    holds_run   `metrics.jsonl` has a record, or checkpoints (good or quarantined) exist
    compare     the requested config against the run's `config.json`: keys that change what is
                trained are an error; operational keys (`RESUMABLE_KEYS`) may change on resume
    start over  `archive` moves the run's files to `workdir/previous/<time>/` (nothing deleted)
"""

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

LOCK_NAME = ".lock"
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints", "corrupt_checkpoints")
# Keys that may differ between a run's config.json and a resume: where it runs and how often it
# reports, not what it computes.
RESUMABLE_KEYS = (
    "mesh.", "train.log_every", "train.eval_every", "train.eval_split", "train.prefetch",
    "train.writers", "train.profile_steps", "checkpoint.every_steps", "checkpoint.keep_last", "data.data_dir", "data.manual_dir",
    "data.worker_count", "data.read_threads", "data.prefetch_buffer_size",
)


class WorkdirError(RuntimeError):
    """The workdir is in use, or holds a run the request would replace (message is one line)."""


def _process0_says(ok: bool) -> bool:
    """Process 0's `ok` on every process (a broadcast when there are several)."""
    if jax.process_count() == 1:
        return ok
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(ok)))


@contextlib.contextmanager
def lock(workdir: epath.Path) -> Iterator[None]:
    """Holds the workdir's exclusive lock (process 0 only) for the duration of the block.

    Every process learns whether process 0 got it, so all of them stop if it did not.

    Raises:
        WorkdirError: another process holds it (its pid and host are named).
    """
    if jax.process_index() != 0:
        if not _process0_says(True):
            raise WorkdirError(f"workdir {workdir} is in use by another trainer (see process 0)")
        yield
        return
    path = os.path.join(os.fspath(workdir), LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            locked = False
        if not _process0_says(locked):
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            raise WorkdirError(
                f"workdir {workdir} is in use by another trainer ({holder}); wait for it to end "
                "or use another --workdir"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _records(path: epath.Path) -> bool:
    return path.exists() and any(line.strip() for line in path.read_text().splitlines())


def holds_run(workdir: epath.Path) -> bool:
    """True if `workdir` holds a run: logged steps or checkpoints (good or quarantined)."""
    workdir = epath.Path(workdir)
    return _records(workdir / "metrics.jsonl") or any(
        (workdir / name).exists() and any((workdir / name).iterdir())
        for name in ("checkpoints", "corrupt_checkpoints")
    )


def archive(workdir: epath.Path) -> epath.Path | None:
    """Moves the run's files to `workdir/previous/<UTC time>/` (process 0); returns that folder."""
    workdir = epath.Path(workdir)
    present = [name for name in RUN_FILES if (workdir / name).exists()]
    if not present or jax.process_index() != 0:
        return None
    target = workdir / "previous" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target.mkdir(parents=True, exist_ok=False)
    for name in present:
        (workdir / name).rename(target / name)
    return target


def saved_config(workdir: epath.Path) -> dict | None:
    """The run's `config.json` as a dict, or None if there is none."""
    path = epath.Path(workdir) / "config.json"
    return json.loads(path.read_text()) if path.exists() else None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}} -> {"a.b": 1}`; sequences become lists (as in JSON)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = _jsonable(value)
    return flat


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def config_differences(saved: Mapping, requested: Mapping, ignore=RESUMABLE_KEYS) -> list[str]:
    """`key (saved -> requested)` for every key outside `ignore` whose value differs."""
    old, new = flatten(saved), flatten(requested)
    keys = sorted(k for k in old.keys() | new.keys() if not k.startswith(tuple(ignore)))
    missing = object()
    return [
        f"{key} ({old.get(key, 'unset')!r} -> {new.get(key, 'unset')!r})"
        for key in keys if old.get(key, missing) != new.get(key, missing)
    ]


def check_same_run(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
    """Raises if `config` trains something else than the run saved in `workdir/config.json`.

    Raises:
        WorkdirError: naming each differing key with its saved and requested values.
    """
    saved = saved_config(workdir)
    if saved is None:
        return
    requested = json.loads(config.to_json_best_effort())
    differences = config_differences(saved, requested)
    if differences:
        raise WorkdirError(
            f"the config differs from the run in {workdir} (its config.json) at "
            f"{', '.join(differences)}; resume with the run's config, or pass --start_over to "
            "archive the run and train from scratch, or use another --workdir"
        )


def config_from_json(saved: Mapping) -> ml_collections.ConfigDict:
    """A config rebuilt from a run's `config.json` (JSON lists back to tuples)."""

    def rebuild(value):
        if isinstance(value, Mapping):
            return ml_collections.ConfigDict({k: rebuild(v) for k, v in value.items()})
        if isinstance(value, list):
            return tuple(rebuild(v) for v in value)
        return value

    return rebuild(saved)
