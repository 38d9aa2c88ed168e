"""The train and eval loops: mesh -> sharded state -> jitted step over prefetched batches.

    mesh, rules        from config.mesh
    state              restored from the newest good checkpoint, else created sharded
    for t in start+1 .. num_steps:
        state, m = train_step(state, batch_t)          (one SPMD program, state donated)
        log m every log_every; evaluate every eval_every; checkpoint every every_steps
        (and at eval steps, with the eval metrics, and at the end)

A run killed at any point resumes from its last committed checkpoint with the data iterator at
the matching position, so the losses it logs are those of an uninterrupted run.
"""

import json
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from imro_jax.train import checkpoint as checkpoint_lib
from imro_jax.train import input as input_lib
from imro_jax.train import mesh as mesh_lib
from imro_jax.train import optim, partitioning, precision, profiling, reporting, writers
from imro_jax.train import state as state_lib
from imro_jax.train import step as step_lib
from imro_jax.train.task import Task

VALID = "__valid__"  # per-example flag added to eval batches (padding rows are False)


class Run:
    """The pieces every loop needs, built once from the config.

    Attributes:
        mesh, rules: device mesh and logical-axis rules.
        optimizer, schedule: the Optax chain and its learning-rate schedule.
        abstract_state, shardings: `TrainState` of sharded `ShapeDtypeStruct`s / `NamedSharding`s.
        checkpointer: the run's `Checkpointer` (under `workdir/checkpoints`).
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir, task: Task):
        self.config, self.task = config, task
        self.workdir = epath.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mesh = mesh_lib.make_mesh(config.mesh.data, config.mesh.model)
        self.rules = partitioning.logical_axis_rules(config.mesh.rules, fsdp=config.mesh.fsdp)
        self.optimizer, self.schedule = optim.make_optimizer(
            config.optimizer, config.train.num_steps
        )
        self.example_batch = task.example_batch()
        self.abstract_state, self.shardings = state_lib.train_state_shardings(
            task.init_fn, self.optimizer, self.example_batch, self.mesh, self.rules
        )
        self.checkpointer = checkpoint_lib.Checkpointer(
            self.workdir / "checkpoints",
            keep_last=config.checkpoint.keep_last,
            best_metric=config.checkpoint.best_metric,
            best_mode=config.checkpoint.best_mode,
        )

    def new_state(self) -> state_lib.TrainState:
        """A freshly initialised, sharded train state for `config.seed`."""
        return state_lib.create_train_state(
            self.task.init_fn, self.optimizer, self.example_batch, self.config.seed, self.shardings
        )

    def eval_step(self):
        """The jitted `task.eval_fn`, passing through the padding flag of `evaluate`."""

        def eval_with_valid(params, batch):
            batch = dict(batch)
            valid = batch.pop(VALID)
            return dict(self.task.eval_fn(params, batch), **{VALID: valid})

        return step_lib.make_eval_step(
            eval_with_valid, params_shardings=self.shardings.params, mesh=self.mesh,
            rules=self.rules,
        )


def _pad_rows(batch: dict, size: int) -> dict:
    """Repeats rows of a local batch (cyclically) until it has `size` rows."""
    return jax.tree.map(lambda x: np.resize(np.asarray(x), (size,) + np.shape(x)[1:]), batch)


def _any_process(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def _to_host(tree) -> Any:
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def evaluate(run: Run, params, split: str, eval_step=None) -> dict[str, float]:
    """Runs `task.eval_fn` over a whole split and summarises it with `task.summarize_eval`.

    Every process steps the same number of times (exhausted ones feed padding rows, flagged
    invalid), so uneven splits across processes and a short last batch are handled exactly.
    """
    eval_step = eval_step or run.eval_step()
    local_size = run.config.data.batch_size // jax.process_count()
    filler = _pad_rows(run.example_batch, local_size)
    batches = iter(run.task.eval_data(split, jax.process_index(), jax.process_count()))
    sharding = partitioning.batch_sharding(run.mesh)
    outputs = []
    while True:
        local = next(batches, None)
        if not _any_process(local is not None):
            break
        rows = 0 if local is None else len(jax.tree.leaves(local)[0])
        if rows > local_size:
            raise ValueError(f"eval batch of {rows} rows exceeds the per-process size {local_size}")
        padded = filler if local is None else _pad_rows(local, local_size)
        padded = dict(padded, **{VALID: np.arange(local_size) < rows})
        outputs.append(_to_host(eval_step(params, input_lib.to_global_batch(padded, sharding))))
    if not outputs:
        raise ValueError(f"eval split {split!r} is empty")
    merged = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    valid = merged.pop(VALID)
    return run.task.summarize_eval({k: v[valid] for k, v in merged.items()})


def _restore_or_init(run: Run, data) -> tuple[state_lib.TrainState, int]:
    """The newest good checkpoint (and the data iterator moved to it), else a fresh state."""
    restored = run.checkpointer.restore_latest(run.abstract_state)
    if restored is None:
        return run.new_state(), 0
    data.set_state(restored.data_state)
    return restored.state, restored.step


class _Throughput:
    """Steps per second between consecutive logging points (eval time excluded)."""

    def __init__(self, step: int):
        self.restart(step)

    def restart(self, step: int) -> None:
        self._step, self._time = step, time.perf_counter()

    def rate(self, step: int) -> float:
        now = time.perf_counter()
        rate = (step - self._step) / max(now - self._time, 1e-9)
        self._step, self._time = step, now
        return rate


def _log_train(writer, progress, step: int, metrics: dict, steps_per_s: float,
               batch_size: int) -> dict[str, float]:
    """Fetches the step's metrics and writes them (metrics writers + progress)."""
    host = {k: float(v) for k, v in jax.device_get(metrics).items()}
    writer.write(dict(host, step=step, steps_per_s=steps_per_s,
                      examples_per_s=steps_per_s * batch_size))
    progress.update(step, host["loss"], steps_per_s)
    return host


def _evaluate_and_log(run: Run, params, eval_step, writer, progress, step: int) -> dict:
    """Evaluates `config.train.eval_split`; returns `{"eval/<metric>": value}`."""
    metrics = evaluate(run, params, run.config.train.eval_split, eval_step)
    metrics = {f"eval/{k}": v for k, v in metrics.items()}
    writer.write(dict(metrics, step=step))
    progress.message(f"step {step}: " + "  ".join(
        f"{k} {v:.4f}" for k, v in sorted(metrics.items())))
    return metrics


def train(config: ml_collections.ConfigDict, workdir, task: Task) -> dict[str, float]:
    """Trains (or resumes) the run in `workdir` up to `config.train.num_steps`.

    Writes `workdir/config.json`, `workdir/metrics.jsonl` and `workdir/checkpoints/`.

    Args:
        config: the resolved config (sections data.batch_size, optimizer, train, mesh, checkpoint).
        workdir: run directory; an existing run there is resumed.
        task: model, loss and data as functions.

    Returns:
        The metrics of the last logged step (train) merged with the last eval, if any.
    """
    run = Run(config, workdir, task)
    reporting.save_config(config, run.workdir)
    data = task.train_data(config.seed, jax.process_index(), jax.process_count())
    state, start = _restore_or_init(run, data)
    progress = reporting.Progress(config.train.num_steps, start)
    writer = writers.make_writers(config.train.writers, run.workdir, resume_step=start,
                                  config=config.to_dict(), message=progress.message)
    if start:
        progress.message(f"resumed from checkpoint step {start} in {run.checkpointer.directory}")
    dtype = precision.compute_dtype(config.train.compute_dtype)
    train_step = step_lib.make_train_step(
        precision.with_compute_dtype(task.loss_fn, dtype),
        run.optimizer,
        run.schedule,
        accumulation_steps=config.optimizer.accumulation_steps,
        state_shardings=run.shardings,
        mesh=run.mesh,
        rules=run.rules,
    )
    train_step = profiling.ProfiledStep(
        train_step, config.train.profile_steps, first_step=start + 1,
        num_steps=config.train.num_steps, log_dir=run.workdir / "profile", message=progress.message,
    )
    step_fn = reporting.announce_compilation(train_step, progress)
    eval_step = run.eval_step() if config.train.eval_every else None
    prefetcher = input_lib.Prefetcher(
        data, partitioning.batch_sharding(run.mesh), config.train.prefetch
    )
    last: dict[str, float] = {}
    throughput = _Throughput(start)
    try:
        for step in range(start + 1, config.train.num_steps + 1):
            try:
                batch, data_state = next(prefetcher)
            except StopIteration:
                raise RuntimeError(f"training data ended before step {step}") from None
            state, metrics = step_fn(state, batch)
            is_last = step == config.train.num_steps
            if step % config.train.log_every == 0 or is_last:
                rate, batch_size = throughput.rate(step), jax.tree.leaves(batch)[0].shape[0]
                last = _log_train(writer, progress, step, metrics, rate, batch_size)
            eval_metrics = None
            if config.train.eval_every and (step % config.train.eval_every == 0 or is_last):
                eval_metrics = _evaluate_and_log(
                    run, state.params, eval_step, writer, progress, step
                )
                last.update(eval_metrics)
                throughput.restart(step)
            if step % config.checkpoint.every_steps == 0 or is_last or eval_metrics:
                run.checkpointer.save(step, state, data_state, metrics=eval_metrics)
                writer.flush()
    finally:
        train_step.stop()
        writer.close()
        prefetcher.close()
        run.checkpointer.close()
        progress.close()
    return last


def _restore_checkpoint(run: Run, step: int | None) -> checkpoint_lib.Restored:
    """The run's checkpoint at `step`; default the best by `checkpoint.best_metric` if tracked,
    else the newest checkpoint that verifies. Raises `CheckpointError` if there is none."""
    step = run.checkpointer.best_step() if step is None else step
    if step is not None:
        return run.checkpointer.restore(step, run.abstract_state)
    restored = run.checkpointer.restore_latest(run.abstract_state)
    if restored is None:
        raise checkpoint_lib.CheckpointError(f"no checkpoint in {run.checkpointer.directory}")
    return restored


def restore_params(
    config: ml_collections.ConfigDict, workdir, task: Task, step: int | None = None
) -> Any:
    """The parameters of a checkpoint of the run in `workdir`, as a host (numpy) pytree.

    Args:
        config, task: those the run was trained with (they fix the parameter structure).
        step: checkpoint step; default the best by `checkpoint.best_metric` if tracked, else the
            newest checkpoint that verifies.

    Returns:
        The params pytree; `{"params": restore_params(...)}` is what `model.apply` takes.

    Raises:
        CheckpointError: no checkpoint, or the one asked for is missing or fails verification.
    """
    run = Run(config, workdir, task)
    try:
        return jax.device_get(_restore_checkpoint(run, step).state.params)
    finally:
        run.checkpointer.close()


def evaluate_checkpoint(
    config: ml_collections.ConfigDict, workdir, task: Task, split: str, step: int | None = None
) -> dict[str, float]:
    """Evaluates a checkpoint of the run in `workdir` on `split`.

    Args:
        step: checkpoint step; default the best by `checkpoint.best_metric` if tracked, else the
            newest checkpoint that verifies.

    Returns:
        The split's metrics plus `step`; also written to `workdir/eval_<split>.json`.
    """
    run = Run(config, workdir, task)
    try:
        restored = _restore_checkpoint(run, step)
        metrics = dict(evaluate(run, restored.state.params, split), step=restored.step)
    finally:
        run.checkpointer.close()
    if reporting.is_primary():
        path = run.workdir / f"eval_{split}.json"
        path.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics
