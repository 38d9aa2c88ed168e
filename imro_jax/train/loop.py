"""The train and eval loops: mesh -> sharded state -> jitted step over prefetched batches.

    mesh, rules        from config.mesh
    state              restored from the newest good checkpoint, else created sharded
    for t in start+1 .. num_steps:
        state, m = train_step(state, batch_t)          (one SPMD program, state donated)
        log m every log_every; evaluate every eval_every; checkpoint every every_steps
        (and at eval steps, with the eval metrics, and at the end)

A run killed at any point resumes from its last committed checkpoint with the data iterator at
the matching position, so the losses it logs are those of an uninterrupted run. Before anything
compiles the config is validated (`validate`), the workdir locked and compared with the run it
holds (`workdir`); SIGTERM / SIGINT save the current step and stop (`preemption`); invalid data
and too many skipped steps stop the run (`guard`).
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
from imro_jax.train import guard as guard_lib
from imro_jax.train import input as input_lib
from imro_jax.train import partitioning, preemption, profiling, reporting, validate, writers
from imro_jax.train import runtime as runtime_lib
from imro_jax.train import workdir as workdir_lib
from imro_jax.train import state as state_lib
from imro_jax.train.task import Task

VALID = "__valid__"  # per-example flag added to eval batches (padding rows are False)


class Run:
    """The pieces every loop needs, built once from the config.

    Attributes:
        runtime: `imro_jax.train.runtime.build_runtime(config, task)`: the mesh, rules,
            optimizer, shardings and the jitted train step that benchmarks and tests use too.
        mesh, rules, optimizer, schedule, example_batch, abstract_state, shardings: the
            runtime's.
        checkpointer: the run's `Checkpointer` (under `workdir/checkpoints`; `read_only` for
            readers such as eval, which may run next to the trainer).
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir, task: Task, *,
                 read_only: bool = False):
        self.config, self.task = config, task
        self.workdir = epath.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.runtime = runtime_lib.build_runtime(config, task)
        rt = self.runtime
        self.mesh, self.rules = rt.mesh, rt.rules
        self.optimizer, self.schedule = rt.optimizer, rt.schedule
        self.example_batch = rt.example_batch
        self.abstract_state, self.shardings = rt.abstract_state, rt.shardings
        self.checkpointer = checkpoint_lib.Checkpointer(
            self.workdir / "checkpoints",
            keep_last=config.checkpoint.keep_last,
            best_metric=config.checkpoint.best_metric,
            best_mode=config.checkpoint.best_mode,
            read_only=read_only,
        )

    def new_state(self) -> state_lib.TrainState:
        """A freshly initialised, sharded train state for `config.seed`."""
        return self.runtime.new_state(self.config.seed)

    def eval_step(self):
        """The jitted `task.eval_fn`, passing through the padding flag of `evaluate`."""

        def eval_with_valid(variables, batch):
            batch = dict(batch)
            valid = batch.pop(VALID)
            return dict(self.task.eval_fn(variables, batch), **{VALID: valid})

        return self.runtime.eval_step(eval_with_valid)

    def fit_model_state(self, state: state_lib.TrainState) -> state_lib.TrainState:
        """`state` with its model state refitted by `task.fit_model_state` (if the task has one)
        on an ordered pass over the training split."""
        if self.task.fit_model_state is None:
            return state
        fitted = self.task.fit_model_state(state.variables(), lambda: _global_batches(self, "train"))
        return state.replace(model_state=jax.device_put(fitted, self.shardings.model_state))


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


def _global_batches(run: Run, split: str):
    """One ordered pass over `split` as global batches `(batch, valid [B])`.

    Every process steps the same number of times (exhausted ones feed padding rows, flagged
    invalid), so uneven splits across processes and a short last batch are handled exactly.
    """
    local_size = run.config.data.batch_size // jax.process_count()
    filler = _pad_rows(run.example_batch, local_size)
    batches = iter(run.task.eval_data(split, jax.process_index(), jax.process_count()))
    sharding = partitioning.batch_sharding(run.mesh)
    while True:
        local = next(batches, None)
        if not _any_process(local is not None):
            return
        rows = 0 if local is None else len(jax.tree.leaves(local)[0])
        if rows > local_size:
            raise ValueError(f"eval batch of {rows} rows exceeds the per-process size {local_size}")
        padded = filler if local is None else _pad_rows(local, local_size)
        padded = dict(padded, **{VALID: np.arange(local_size) < rows})
        padded = input_lib.to_global_batch(padded, sharding)
        yield {k: v for k, v in padded.items() if k != VALID}, padded[VALID]


def evaluate(run: Run, variables, split: str, eval_step=None) -> dict[str, float]:
    """Runs `task.eval_fn(variables, batch)` over a whole split and summarises it with
    `task.summarize_eval` (`variables = state.variables()`)."""
    eval_step = eval_step or run.eval_step()
    outputs = []
    for batch, valid in _global_batches(run, split):
        outputs.append(_to_host(eval_step(variables, dict(batch, **{VALID: valid}))))
    if not outputs:
        raise ValueError(f"eval split {split!r} is empty")
    merged = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    valid = merged.pop(VALID)
    return run.task.summarize_eval({k: v[valid] for k, v in merged.items()})


def _restore_or_init(run: Run, data, holds_run: bool) -> tuple[state_lib.TrainState, int]:
    """The newest good checkpoint (and the data iterator moved to it), else a fresh state.

    Raises:
        WorkdirError: the workdir holds a run (`holds_run`) but no checkpoint to resume it.
    """
    restored = run.checkpointer.restore_latest(run.abstract_state)
    if restored is None and holds_run:
        raise workdir_lib.WorkdirError(
            f"{run.workdir} holds a run (logged steps or checkpoints) but no usable checkpoint; "
            "pass --start_over to archive it under previous/ and train from scratch, or use "
            "another --workdir"
        )
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
    if invalid := guard_lib.describe_invalid(host):
        progress.message(f"step {step}: {invalid}")
    return host


def _evaluate_and_log(run: Run, params, eval_step, writer, progress, step: int) -> dict:
    """Evaluates `config.train.eval_split`; returns `{"eval/<metric>": value}`."""
    metrics = evaluate(run, params, run.config.train.eval_split, eval_step)
    metrics = {f"eval/{k}": v for k, v in metrics.items()}
    writer.write(dict(metrics, step=step))
    progress.message(f"step {step}: " + "  ".join(
        f"{k} {v:.4f}" for k, v in sorted(metrics.items())))
    return metrics


def _open_workdir(workdir: epath.Path, config: ml_collections.ConfigDict, start_over: bool) -> bool:
    """Archives the run in `workdir` (`start_over`) or checks that `config` continues it.

    Returns:
        Whether `workdir` (still) holds a run.
    """
    if start_over:
        archived = workdir_lib.archive(workdir)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("imro_workdir_archive")
        if archived:
            print(f"--start_over: the previous run is archived in {archived}", flush=True)
        return False
    holds_run = workdir_lib.holds_run(workdir)
    if holds_run:
        workdir_lib.check_same_run(workdir, config)
    return holds_run


def train(config: ml_collections.ConfigDict, workdir, task: Task, *,
          start_over: bool = False) -> dict[str, float]:
    """Trains (or resumes) the run in `workdir` up to `config.train.num_steps`.

    Writes `workdir/config.json`, `workdir/metrics.jsonl` and `workdir/checkpoints/`.

    Args:
        config: the resolved config (sections data.batch_size, optimizer, train, mesh, checkpoint).
        workdir: run directory; an existing run there is resumed (with the same config, up to
            `workdir.RESUMABLE_KEYS`).
        task: model, loss and data as functions.
        start_over: archive a run in `workdir` (to `previous/<time>/`) and train from scratch.

    Returns:
        The metrics of the last logged step (train) merged with the last eval, if any.

    Raises:
        ConfigError: a config value out of range (before anything compiles).
        WorkdirError: another trainer holds the workdir, the config differs from the run's, or
            the run there has no usable checkpoint.
        CheckpointError: checkpoints exist but none restores.
        Preempted: SIGTERM / SIGINT; the current step was saved.
        TrainingError: invalid training data, or too many skipped steps.
    """
    validate.validate_train_config(config)
    validate.validate_layout(config, jax.device_count(), jax.process_count())
    workdir = epath.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with workdir_lib.lock(workdir), preemption.Watch() as watch:
        holds_run = _open_workdir(workdir, config, start_over)
        return _train(config, workdir, task, holds_run, watch)


def _train(config, workdir, task: Task, holds_run: bool, watch: preemption.Watch) -> dict:
    run = Run(config, workdir, task)
    data = task.train_data(config.seed, jax.process_index(), jax.process_count())
    state, start = _restore_or_init(run, data, holds_run)
    reporting.save_config(config, run.workdir)
    progress = reporting.Progress(config.train.num_steps, start)
    writer = writers.make_writers(config.train.writers, run.workdir, resume_step=start,
                                  config=config.to_dict(), message=progress.message)
    if start:
        progress.message(f"resumed from checkpoint step {start} in {run.checkpointer.directory}")
    train_step = profiling.ProfiledStep(
        run.runtime.train_step, config.train.profile_steps, first_step=start + 1,
        num_steps=config.train.num_steps, log_dir=run.workdir / "profile", message=progress.message,
    )
    step_fn = reporting.announce_compilation(train_step, progress)
    eval_step = run.eval_step() if config.train.eval_every else None
    prefetcher = input_lib.Prefetcher(
        data, partitioning.batch_sharding(run.mesh), config.train.prefetch
    )
    last: dict[str, float] = {}
    throughput = _Throughput(start)
    monitor = guard_lib.Monitor(task.fatal_invalid, guard_lib.max_skipped_fraction(config.train),
                                config.train.num_steps)
    try:
        for step in range(start + 1, config.train.num_steps + 1):
            try:
                batch, data_state = next(prefetcher)
            except StopIteration:
                raise RuntimeError(f"training data ended before step {step}") from None
            state, metrics = step_fn(state, batch)
            monitor.add(step, metrics)
            is_last = step == config.train.num_steps
            preempted = watch.reached(step)
            if step % config.train.log_every == 0 or is_last or preempted:
                monitor.check()
                rate, batch_size = throughput.rate(step), jax.tree.leaves(batch)[0].shape[0]
                last = _log_train(writer, progress, step, metrics, rate, batch_size)
            eval_metrics = None
            if run.task.fit_model_state and (is_last or (config.train.eval_every and step % config.train.eval_every == 0)):
                fit_start = time.perf_counter()
                state = run.fit_model_state(state)
                writer.write({"step": step, "model_state_fit_s": time.perf_counter() - fit_start})
                throughput.restart(step)
            if config.train.eval_every and (step % config.train.eval_every == 0 or is_last):
                eval_metrics = _evaluate_and_log(
                    run, state.variables(), eval_step, writer, progress, step
                )
                last.update(eval_metrics)
                throughput.restart(step)
            if step % config.checkpoint.every_steps == 0 or is_last or eval_metrics or preempted:
                monitor.check()
                run.checkpointer.save(step, state, data_state, metrics=eval_metrics)
                writer.flush()
            if preempted and not is_last:
                run.checkpointer.wait()
                raise preemption.Preempted(step, watch.signum)
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


def restore_variables(
    config: ml_collections.ConfigDict, workdir, task: Task, step: int | None = None
) -> dict:
    """`{"params": ..., **model_state}` of a checkpoint (see `restore_params`), on the host:
    what `model.apply` takes, fitted statistics included."""
    run = Run(config, workdir, task, read_only=True)
    try:
        return jax.device_get(_restore_checkpoint(run, step).state.variables())
    finally:
        run.checkpointer.close()


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
    return restore_variables(config, workdir, task, step)["params"]


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
    run = Run(config, workdir, task, read_only=True)
    try:
        restored = _restore_checkpoint(run, step)
        metrics = dict(evaluate(run, restored.state.variables(), split), step=restored.step)
    finally:
        run.checkpointer.close()
    if reporting.is_primary():
        path = run.workdir / f"eval_{split}.json"
        path.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics
