"""Checkpoints: the one module that talks to Orbax.

A checkpoint at step `t` holds three items, committed together by Orbax's atomic rename:
  state  the `TrainState` (sharded arrays; restorable onto any mesh),
  data   the data iterator state of every process (`process_{i}-of-{n}.json`),
  meta   the step and a fingerprint of every state leaf.

Saves are asynchronous (training continues while the arrays are written). Retention keeps the
last `keep_last` checkpoints plus the best one by `best_metric`. On restore, a checkpoint whose
files are missing, unreadable, or whose values do not reproduce their fingerprints is reported,
moved to `<dir>/../corrupt_checkpoints/` and skipped in favour of the previous one; it is never
loaded silently. Before any array is read, the saved structure (every leaf's path, shape and
dtype, from Orbax's metadata) is compared with the requested one, and the data iterator states
with this job's process count: a checkpoint of another model, or one saved by another number of
processes, is an `IncompatibleCheckpointError` naming the difference, and nothing is moved.
Interrupted saves (Orbax temporary directories) are reported; Orbax removes them. A state with
a non-finite value is never saved.

The fingerprint of an array `x` with `n` elements, viewed as uint32 words `w_i`, is

    F(x) = sum_i  mix(w_i) * (2654435761 * i + 1 | 1)   (mod 2**32),
    mix(w) = (w ^ (w >> 16)) * 0x45d9f3b                 (a bijection mod 2**32),

so any change to a single word changes `F`, and the modular sum is exact whatever the sharding
(restoring onto a different mesh gives the same fingerprint). On the CPU backend it is computed in
numpy, elsewhere in one jitted program: the same values (tests/train/test_checkpoint.py).
"""

import base64
import dataclasses
import hashlib
import json
import logging
import math
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from imro_jax.train.config import ConfigError

log = logging.getLogger(__name__)

ITEMS = ("state", "data", "meta")


class CheckpointError(RuntimeError):
    """No usable checkpoint although some exist, or a checkpoint fails verification."""


class IncompatibleCheckpointError(CheckpointError):
    """A readable checkpoint of another structure (another model config): never quarantined."""


# ---- data iterator state: one JSON file per process -------------------------------------


def _encode_data_state(state: Any) -> dict:
    if isinstance(state, bytes):
        payload = {"encoding": "base64", "value": base64.b64encode(state).decode("ascii")}
    else:
        payload = {"encoding": "json", "value": state}
    text = json.dumps(payload["value"], sort_keys=True)
    payload["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return payload


def _decode_data_state(payload: dict, filename: str) -> Any:
    text = json.dumps(payload["value"], sort_keys=True)
    if hashlib.sha256(text.encode()).hexdigest() != payload["sha256"]:
        raise CheckpointError(f"data iterator state {filename} does not match its checksum")
    if payload["encoding"] == "base64":
        return base64.b64decode(payload["value"])
    return payload["value"]


class DataStateHandler(ocp.CheckpointHandler):
    """Orbax handler writing each process's data iterator state to its own JSON file.

    The file layout is ``grain.checkpoint.CheckpointHandler``'s; this handler is kept instead of
    grain's because it checksums the state (a damaged state is a :class:`CheckpointError`, and the
    checkpoint is skipped as corrupt, rather than silently resuming elsewhere in the stream) and
    because it saves and restores the plain state, not a live iterator.
    """

    @staticmethod
    def _filename(directory: epath.Path) -> epath.Path:
        return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

    @staticmethod
    def saved_process_counts(directory: epath.Path) -> set[int]:
        """The process counts `n` of the `process_{i}-of-{n}.json` files in `directory`."""
        names = (path.name for path in directory.glob("process_*-of-*.json"))
        return {int(match[1]) for name in names
                if (match := re.fullmatch(r"process_\d+-of-(\d+)\.json", name))}

    def save(self, directory: epath.Path, args: "DataStateSave") -> None:
        self._filename(directory).write_text(json.dumps(_encode_data_state(args.state)))

    def restore(self, directory: epath.Path, args: "DataStateRestore" = None) -> Any:
        filename = self._filename(directory)
        if not filename.exists():
            raise CheckpointError(
                f"missing data iterator state {filename} (saved with another process count?)"
            )
        return _decode_data_state(json.loads(filename.read_text()), str(filename))


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
    state: Any


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
    pass


def committed_steps(directory) -> list[int]:
    """The committed (finalized) checkpoint steps in `directory`, ascending, listed without a
    checkpoint manager: nothing is created, moved or removed, so a trainer saving there is not
    disturbed. Interrupted saves (Orbax temporary directories) are not steps; [] without `directory`."""
    return sorted(ocp.path.step.checkpoint_steps(directory))


# ---- fingerprints -----------------------------------------------------------------------


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
    """uint32[] fingerprint of one array (see module docstring)."""
    if x.dtype == jnp.bool_:
        words = x.astype(jnp.uint32)
    elif x.dtype.itemsize == 4:
        words = jax.lax.bitcast_convert_type(x, jnp.uint32)
    elif x.dtype.itemsize == 2:
        words = jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    elif x.dtype.itemsize == 1:
        words = jax.lax.bitcast_convert_type(x, jnp.uint8).astype(jnp.uint32)
    else:  # 8-byte types -> two uint32 words each
        words = jax.lax.bitcast_convert_type(x, jnp.uint32)
    words = words.reshape(-1)
    mixed = (words ^ (words >> 16)) * jnp.uint32(0x45D9F3B)
    index = jnp.arange(words.size, dtype=jnp.uint32)
    weights = (index * jnp.uint32(2654435761) + jnp.uint32(1)) | jnp.uint32(1)
    return jnp.sum(mixed * weights, dtype=jnp.uint32)


def _leaf_finite(x: jax.Array) -> jax.Array:
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.asarray(True)
    return jnp.all(jnp.isfinite(x))


# What a save needs, in one program (one trace and compilation per state structure, not two).
_jit_finite_and_fingerprint = jax.jit(
    lambda tree: (jax.tree.map(_leaf_finite, tree), jax.tree.map(_leaf_fingerprint, tree)))


def _host_words(x: np.ndarray) -> np.ndarray:
    """The uint32 words of `_leaf_fingerprint`, in numpy (dtypes of at most 4 bytes)."""
    x = np.ascontiguousarray(x).reshape(-1)
    if x.dtype == np.bool_:
        return x.astype(np.uint32)
    unsigned = {4: np.uint32, 2: np.uint16, 1: np.uint8}[x.dtype.itemsize]
    return x.view(unsigned).astype(np.uint32)


def _host_fingerprint(x: np.ndarray) -> np.uint32:
    """`_leaf_fingerprint` in numpy: the same formula, uint32 arithmetic wrapping mod 2**32."""
    words = _host_words(x)
    mixed = (words ^ (words >> np.uint32(16))) * np.uint32(0x45D9F3B)
    index = np.arange(words.size, dtype=np.uint32)
    weights = (index * np.uint32(2654435761) + np.uint32(1)) | np.uint32(1)
    return np.sum(mixed * weights, dtype=np.uint32)


def _host_finite(x: np.ndarray) -> bool:
    return not jnp.issubdtype(x.dtype, jnp.inexact) or bool(np.all(np.isfinite(x)))


def _on_host_cpu(tree) -> bool:
    """Whether every leaf is a numpy array or a fully addressable array on CPU devices, of at most
    4 bytes per element: then the host computes the same values as the jitted program, without a
    compilation per state structure (several seconds for a model's state)."""
    def cheap(x):
        if not hasattr(x, "dtype") or np.dtype(x.dtype).itemsize > 4:
            return False
        if isinstance(x, np.ndarray):
            return True
        return isinstance(x, jax.Array) and x.is_fully_addressable and all(
            d.platform == "cpu" for d in x.devices())
    return all(cheap(x) for x in jax.tree.leaves(tree))


def _finite_and_fingerprint(tree) -> tuple[Any, Any]:
    """``(finite, fingerprints)``: per leaf, a bool and a uint32 (host values). On the CPU backend in
    numpy, elsewhere (accelerators, several hosts) one jitted program that reduces on the devices."""
    if _on_host_cpu(tree):
        host = jax.tree.map(np.asarray, tree)
        return jax.tree.map(_host_finite, host), jax.tree.map(_host_fingerprint, host)
    return jax.device_get(_jit_finite_and_fingerprint(tree))


def _by_path(tree) -> dict:
    return {jax.tree_util.keystr(path): value
            for path, value in jax.tree_util.tree_leaves_with_path(tree)}


def fingerprint(tree) -> dict[str, int]:
    """`{key path: uint32 fingerprint}` of every array leaf of `tree` (sharding-independent)."""
    return {k: int(v) for k, v in _by_path(_finite_and_fingerprint(tree)[1]).items()}


def nonfinite_leaves(tree) -> list[str]:
    """Key paths of the floating leaves of `tree` that hold a NaN or an infinity."""
    return [k for k, ok in _by_path(_finite_and_fingerprint(tree)[0]).items() if not ok]


def _structure(tree) -> dict[tuple, tuple]:
    """`{path: (shape, dtype name)}` of an array tree or of Orbax's saved-array metadata."""
    flat = ocp.tree.to_flat_dict(ocp.tree.serialize_tree(tree, keep_empty_nodes=True))
    return {path: (tuple(leaf.shape), jnp.dtype(leaf.dtype).name) for path, leaf in flat.items()}


def structure_differences(saved: dict, requested: dict) -> list[str]:
    """One text per leaf whose presence, shape or dtype differs, e.g. `params.w [4, 8] f32 -> ...`."""

    def describe(entry) -> str:
        return "absent" if entry is None else f"{list(entry[0])} {entry[1]}"

    return [
        f"{'.'.join(path)} saved {describe(saved.get(path))}, requested "
        f"{describe(requested.get(path))}"
        for path in sorted(saved.keys() | requested.keys())
        if saved.get(path) != requested.get(path)
    ]


# ---- the manager ------------------------------------------------------------------------


def _handler_registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    """The three items' handlers, registered up front so that metadata reads need no restore."""
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for name, handler, save, restore in (
        ("state", ocp.StandardCheckpointHandler(), ocp.args.StandardSave, ocp.args.StandardRestore),
        ("data", DataStateHandler(), DataStateSave, DataStateRestore),
        ("meta", ocp.JsonCheckpointHandler(), ocp.args.JsonSave, ocp.args.JsonRestore),
    ):
        registry.add(name, save, handler)
        registry.add(name, restore, handler)
    return registry


@dataclasses.dataclass(frozen=True)
class Restored:
    """A verified checkpoint: its step, the train state and this process's data state."""

    step: int
    state: Any
    data_state: Any


class Checkpointer:
    """Saves and restores `(train state, data iterator state)` under `directory`.

    Args:
        directory: checkpoint root (created if missing).
        keep_last: number of most recent checkpoints kept.
        best_metric: metric name (as passed to `save(metrics=...)`) whose best checkpoint is
            also kept; "" keeps only the last ones.
        best_mode: "max" or "min".
        read_only: for readers (eval) next to a running trainer: no save, no removal of
            temporary directories (they may be the trainer's save in progress), and corrupted
            checkpoints are reported and skipped but not moved.
    """

    def __init__(self, directory, *, keep_last: int, best_metric: str = "", best_mode: str = "max",
                 read_only: bool = False):
        if keep_last < 1:
            raise ConfigError(f"checkpoint.keep_last must be >= 1, got {keep_last}")
        if best_mode not in ("max", "min"):
            raise ConfigError(f"checkpoint.best_mode must be 'max' or 'min', got {best_mode!r}")
        self.directory = epath.Path(directory)
        self._best_metric = best_metric
        self._read_only = read_only
        if not read_only:
            self._report_interrupted_saves()
        policies = [ocp.checkpoint_managers.LatestN(n=keep_last)]
        best_options = {}
        if best_metric:
            # Orbax writes metrics to disk (so retention survives restarts) only with a best_fn.
            # Checkpoints saved without eval metrics rank last.
            worst = -math.inf if best_mode == "max" else math.inf
            best_fn = lambda metrics: metrics.get(best_metric, worst)  # noqa: E731
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=best_fn, reverse=best_mode == "min", n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
            best_options = dict(best_fn=best_fn, best_mode=best_mode)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=True,
            cleanup_tmp_directories=not read_only,
            create=not read_only,
            read_only=read_only,
            **best_options,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, handler_registry=_handler_registry()
        )

    def _report_interrupted_saves(self) -> None:
        """Reports Orbax temporary directories left by an interrupted save (Orbax removes them)."""
        if self.directory.exists() and jax.process_index() == 0:
            for path in ocp.path.step.tmp_checkpoints(self.directory):
                log.warning("ignoring incomplete checkpoint %s (a save was interrupted); "
                            "removing it", self.directory / path)

    def steps(self) -> list[int]:
        """Committed checkpoint steps, ascending (not yet verified)."""
        return sorted(self._manager.all_steps())

    def save(
        self, step: int, state, data_state: Any, metrics: dict[str, float] | None = None
    ) -> None:
        """Starts an asynchronous save of `state` and `data_state` as step `step`.

        Returns once the arrays are copied off the device buffers, so the state may be donated to
        the next train step right away. `metrics` (e.g. eval metrics) rank the best checkpoint.

        Raises:
            CheckpointError: `state` holds a NaN or an infinity (nothing is written).
        """
        finite, prints = _finite_and_fingerprint(state)
        bad = [k for k, ok in _by_path(finite).items() if not ok]
        if bad:
            raise CheckpointError(
                f"refusing to save step {step}: non-finite values in {bad[:5]}"
                f"{' ...' if len(bad) > 5 else ''}"
            )
        meta = {"step": int(step), "fingerprints": {k: int(v) for k, v in _by_path(prints).items()}}
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=DataStateSave(data_state),
                meta=ocp.args.JsonSave(meta),
            ),
            metrics=self._metrics_to_save(metrics),
            force=True,
        )

    def _metrics_to_save(self, metrics: dict[str, float] | None) -> dict[str, float] | None:
        if not self._best_metric:
            return None
        return {k: float(v) for k, v in (metrics or {}).items()}

    def check_structure(self, step: int, abstract_state) -> None:
        """Compares the saved leaves (paths, shapes, dtypes) of `step` with `abstract_state`, and
        the process count of its data iterator states with this job's.

        Reads only Orbax's metadata and file names, no array.

        Raises:
            IncompatibleCheckpointError: naming the first differing leaves, or the process counts.
            Exception: whatever Orbax raises for missing or unreadable metadata.
        """
        counts = DataStateHandler.saved_process_counts(self.directory / str(step) / "data")
        if counts and jax.process_count() not in counts:
            raise IncompatibleCheckpointError(
                f"checkpoint {step} in {self.directory} holds the data iterator states of "
                f"{'/'.join(map(str, sorted(counts)))} processes, this job has "
                f"{jax.process_count()}; resume it with that many processes (mesh.num_processes)"
            )
        metadata = self._manager.item_metadata(int(step))["state"]
        if metadata is None:
            raise CheckpointError(f"checkpoint {step} has no readable state metadata")
        saved = _structure(getattr(metadata, "tree", metadata))
        differences = structure_differences(saved, _structure(abstract_state))
        if differences:
            raise IncompatibleCheckpointError(
                f"checkpoint {step} in {self.directory} holds another model: "
                f"{'; '.join(differences[:3])}"
                f"{f' (and {len(differences) - 3} more)' if len(differences) > 3 else ''}; "
                "restore it with the config it was trained with"
            )

    def restore(self, step: int, abstract_state) -> Restored:
        """Restores step `step` onto the shardings in `abstract_state` and verifies it.

        Args:
            step: a committed step.
            abstract_state: tree of `jax.ShapeDtypeStruct` with `sharding` (any mesh).

        Raises:
            IncompatibleCheckpointError: the saved structure differs (nothing read).
            CheckpointError: values do not match their fingerprints, or the step is inconsistent.
            Exception: whatever Orbax/TensorStore raise for missing or unreadable files.
        """
        self.check_structure(step, abstract_state)
        restored = self._manager.restore(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=DataStateRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        meta = restored["meta"]
        if meta["step"] != step:
            raise CheckpointError(f"checkpoint {step} says it holds step {meta['step']}")
        actual = fingerprint(restored["state"])
        bad = sorted(k for k in meta["fingerprints"] if actual.get(k) != meta["fingerprints"][k])
        if bad or actual.keys() != meta["fingerprints"].keys():
            raise CheckpointError(
                f"checkpoint {step}: values differ from their saved fingerprints at {bad[:5]}"
                f"{' ...' if len(bad) > 5 else ''} (corrupted files)"
            )
        return Restored(step=int(step), state=restored["state"], data_state=restored["data"])

    def restore_latest(self, abstract_state) -> Restored | None:
        """Restores the newest checkpoint that verifies, skipping (and reporting) corrupted ones.

        Returns:
            The restored checkpoint, or None when the directory holds no checkpoint.

        Raises:
            CheckpointError: checkpoints exist but none of them can be restored.
        """
        failures = []
        for step in reversed(self.steps()):
            try:
                return self.restore(step, abstract_state)
            except IncompatibleCheckpointError:
                raise  # a readable checkpoint of another config: not corrupted, never moved
            except Exception as error:  # noqa: BLE001 - any failure means "do not use it"
                reason = " ".join(str(error).split())[:300]
                log.warning(
                    "checkpoint %d in %s is corrupted or incomplete (%s: %s); falling back to the "
                    "previous checkpoint", step, self.directory, type(error).__name__, reason
                )
                failures.append(step)
                if not self._read_only:
                    self._quarantine(step)
        if failures:
            where = "left in place (read-only)" if self._read_only else (
                f"moved to {self._quarantine_dir()}")
            raise CheckpointError(
                f"no restorable checkpoint in {self.directory}: steps {failures} are corrupted "
                f"({where})"
            )
        return None

    def _quarantine_dir(self) -> epath.Path:
        return self.directory.parent / "corrupt_checkpoints"

    def _quarantine(self, step: int) -> None:
        """Moves a corrupted step out of the manager's way (keeps it for inspection)."""
        if jax.process_index() == 0:
            target = self._quarantine_dir() / f"{step}-{int(time.time())}"
            target.parent.mkdir(parents=True, exist_ok=True)
            (self.directory / str(step)).rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"imro_checkpoint_quarantine_{step}")
        self._manager.reload()

    def metrics(self, step: int) -> dict[str, float] | None:
        """Metrics saved with `step` (None if it was saved without)."""
        return self._manager.metrics(step)

    def best_step(self) -> int | None:
        """The step with the best `best_metric` among checkpoints saved with metrics (Orbax's
        `best_fn` ranking); None without a `best_metric` or before any such checkpoint."""
        if not self._best_metric:
            return None
        return self._manager.best_step()

    def wait(self) -> None:
        """Blocks until the pending asynchronous save is committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases Orbax resources."""
        self._manager.close()
