"""Run-level guards on the toy task: invalid data stops the run naming the step and the
modality; a run that keeps skipping steps stops; neither leaves a checkpoint of bad steps."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from toy import ToyIterator, toy_config, toy_task

from imro_jax.train import guard, loop
from imro_jax.train.checkpoint import Checkpointer

BAD_STEP = 6  # the batch of this step holds a NaN in modality "a"


class _NanAtBadStep(ToyIterator):
    def __next__(self):
        batch = super().__next__()
        if self.index == BAD_STEP:
            batch["a"][2, 1] = np.nan
        return batch


def _counting(loss_fn):
    """The toy loss, dropping (and counting) samples with a non-finite modality "a"."""

    def loss(params, batch, rng, step):
        ok = jnp.all(jnp.isfinite(batch["a"]), axis=-1)
        batch = dict(batch, a=jnp.where(ok[:, None], batch["a"], 0.0))
        value, metrics = loss_fn(params, batch, rng, step)
        return value, dict(metrics, **{"invalid/a": jnp.sum(~ok, dtype=jnp.int32)})

    return loss


def _task(config, fatal, loss_wrapper=_counting):
    task = toy_task(config)
    return dataclasses.replace(
        task, loss_fn=loss_wrapper(task.loss_fn), fatal_invalid=fatal,
        train_data=lambda seed, i, n: _NanAtBadStep(seed, config.data.batch_size, i, n))


def _config(**train):
    config = toy_config()
    config.train.update(dict(num_steps=12, log_every=4), **train)
    config.checkpoint.every_steps = 4
    return config


def _steps(workdir):
    ckpt = Checkpointer(workdir / "checkpoints", keep_last=2)
    try:
        return ckpt.steps()
    finally:
        ckpt.close()


def test_invalid_data_under_the_error_policy_stops_naming_step_and_modality(tmp_path):
    config = _config()
    with pytest.raises(guard.InvalidDataError) as error:
        loop.train(config, tmp_path, _task(config, fatal=("a",)))
    assert str(error.value).startswith(
        f"training batch of step {BAD_STEP}: 1 samples with modality 'a' non-finite")
    assert _steps(tmp_path) == [4]  # the checkpoint of step 8 (after the bad batch) is not written


def test_tolerated_invalid_samples_are_counted_in_the_metrics_and_shown(tmp_path, capsys):
    config = _config(log_every=1)
    loop.train(config, tmp_path, _task(config, fatal=()))
    assert f"step {BAD_STEP}: invalid samples: a 1\n" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"]: r["invalid/a"] for r in records}[BAD_STEP] == 1
    assert sum(r["invalid/a"] for r in records) == 1


def _always_nan(loss_fn):
    def loss(params, batch, rng, step):
        value, metrics = loss_fn(params, batch, rng, step)
        return value * jnp.nan, metrics

    return loss


def test_a_run_that_keeps_skipping_steps_stops_with_a_clear_message(tmp_path):
    config = _config(max_skipped_fraction=0.25)
    with pytest.raises(guard.TrainingError, match=(
            r"^12 of the first 12 steps were skipped .* more than train.max_skipped_fraction=0.25")):
        loop.train(config, tmp_path, _task(config, fatal=(), loss_wrapper=_always_nan))
    assert _steps(tmp_path) == [4, 8]  # unchanged (never non-finite) states; not step 12
