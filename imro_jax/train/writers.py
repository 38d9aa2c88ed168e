"""Where a run's metrics go: `metrics.jsonl` always, TensorBoard and W&B when configured.

`config.train.writers` names the extra writers: `"tensorboard"` (event files under
`workdir/tensorboard`, written by tensorboardX: no TensorFlow) and `"wandb"` (skipped with a
message when `wandb` is not installed). Every writer takes the same records, `{"step": int,
name: number, ...}`. Only process 0 writes.

All workdir I/O goes through `etils.epath`, so a `gs://` workdir works: object stores have no
append, so `metrics.jsonl` is rewritten whole (write to a temporary name, then rename) at
`flush()` and at most every `flush_every_s` seconds while writing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

from etils import epath

from imro_jax.train.config import ConfigError
from imro_jax.train.reporting import is_primary as _is_primary

EXTRA_WRITERS = ("tensorboard", "wandb")  # the names `config.train.writers` may hold


def _scalars(record: dict) -> dict[str, float]:
    """The numeric entries of a record, without `step` (what TensorBoard and W&B plot)."""
    return {
        k: float(v) for k, v in record.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class JsonlWriter:
    """`metrics.jsonl`: one JSON object per record, one record per line.

    Args:
        path: the file (any `epath` path, e.g. on `gs://`).
        resume_step: records with `step > resume_step` already in the file are dropped, so a
            resumed run does not keep the lines of the steps it re-runs after its checkpoint.
        flush_every_s: rewrite the file from `write` when this long has passed since the last
            rewrite (`flush` and `close` always rewrite).
        clock: time source in seconds (tests pass a fake one).
    """

    def __init__(self, path: epath.PathLike, *, resume_step: int, flush_every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.path = epath.Path(path)
        self._flush_every_s, self._clock = flush_every_s, clock
        self._lines: list[str] = []
        self._flushed_at = -float("inf")
        if _is_primary() and self.path.exists():
            self._lines = [
                line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step
            ]
            self.flush()

    def write(self, record: dict) -> None:
        """Adds `record` (must contain "step")."""
        if not _is_primary():
            return
        self._lines.append(json.dumps(record, sort_keys=True))
        if self._clock() - self._flushed_at >= self._flush_every_s:
            self.flush()

    def flush(self) -> None:
        """Rewrites the file with every record so far (atomically: temporary file + rename)."""
        if not _is_primary():
            return
        partial = self.path.parent / (self.path.name + ".tmp")
        partial.write_text("".join(line + "\n" for line in self._lines))
        partial.replace(self.path)
        self._flushed_at = self._clock()

    def close(self) -> None:
        self.flush()


class TensorBoardWriter:
    """Scalars as TensorBoard event files in `logdir` (tensorboardX: no TensorFlow).

    Args:
        logdir: event file directory (`gs://` needs `google-cloud-storage`, tensorboardX's GCS
            backend).
        resume_step: on resume, TensorBoard drops the earlier events of steps after this one.
    """

    def __init__(self, logdir: epath.PathLike, *, resume_step: int):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(  # a unique file name even for two writers in one second
            str(logdir), purge_step=resume_step + 1 if resume_step else None,
            filename_suffix=f".{time.time_ns()}",
        )

    def write(self, record: dict) -> None:
        for tag, value in _scalars(record).items():
            self._writer.add_scalar(tag, value, global_step=record["step"])

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbWriter:
    """Logs records to a W&B run (project from `$WANDB_PROJECT`, resumed by the workdir's id).

    Args:
        wandb: the imported `wandb` module.
        workdir: the run directory; W&B's files go to `workdir/wandb`.
        config: the resolved config, as a plain dict.
    """

    def __init__(self, wandb, workdir: epath.Path, config: dict):
        run_id = "".join(c if c.isalnum() else "-" for c in str(workdir)).strip("-")[-64:]
        self._run = wandb.init(dir=str(workdir), id=run_id, resume="allow", config=config)

    def write(self, record: dict) -> None:
        self._run.log(_scalars(record), step=record["step"])

    def flush(self) -> None:
        pass  # W&B streams in the background

    def close(self) -> None:
        self._run.finish()


def _import_wandb(message: Callable[[str], None]):
    """The `wandb` module, or None (with a message) when it is not installed."""
    try:
        import wandb
    except ImportError:
        message("wandb is not installed: W&B logging is off (pip install wandb)")
        return None
    return wandb


class Writers:
    """Sends every record to each writer (the `metrics.jsonl` one first)."""

    def __init__(self, writers: Iterable):
        self.writers = list(writers)

    def write(self, record: dict) -> None:
        for writer in self.writers:
            writer.write(record)

    def flush(self) -> None:
        for writer in self.writers:
            writer.flush()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def check_writer_names(names: Iterable[str]) -> tuple[str, ...]:
    """Returns `names` as a tuple; raises `ConfigError` naming any that is not a known writer."""
    names = tuple(names)
    unknown = [n for n in names if n not in EXTRA_WRITERS]
    if unknown:
        raise ConfigError(
            f"train.writers: unknown writer(s) {unknown}; known: {list(EXTRA_WRITERS)} "
            f"(metrics.jsonl is always written)"
        )
    return names


def make_writers(names: Iterable[str], workdir: epath.PathLike, *, resume_step: int,
                 config: dict | None = None, message: Callable[[str], None] = print) -> Writers:
    """The run's writers: `workdir/metrics.jsonl` plus those named in `names`.

    Args:
        names: `config.train.writers`, a subset of `EXTRA_WRITERS`.
        workdir: the run directory.
        resume_step: the step the run (re)starts from (0 for a new run).
        config: the resolved config as a dict (W&B stores it with the run).
        message: prints a line (the progress display's, so it does not break a bar).

    Returns:
        A `Writers`; on processes other than 0 it writes nothing.
    """
    names = check_writer_names(names)
    workdir = epath.Path(workdir)
    writers: list = [JsonlWriter(workdir / "metrics.jsonl", resume_step=resume_step)]
    if not _is_primary():
        return Writers(writers)
    if "tensorboard" in names:
        writers.append(TensorBoardWriter(workdir / "tensorboard", resume_step=resume_step))
    if "wandb" in names and (wandb := _import_wandb(message)) is not None:
        writers.append(WandbWriter(wandb, workdir, config or {}))
    return Writers(writers)
