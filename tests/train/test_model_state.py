"""Model state (fitted statistics) through the loop: fitted at the end, checkpointed, restored."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from toy import MODALITIES, ToyEvalData, toy_config, toy_task

from imro_jax.train import loop


def _task_with_a_fitted_mean(config):
    """The toy task plus model state {"stats": {"mean": [features]}}: the mean of modality "a"
    over the valid rows of the fitting pass (a stand-in for fitted reliability statistics)."""
    task = toy_task(config)

    def init_fn(rng, batch):
        return {**task.init_fn(rng, batch), "stats": {"mean": jnp.zeros(batch[MODALITIES[0]].shape[-1])}}

    def fit(variables, batches):
        total, count = 0.0, 0.0
        for batch, valid in batches():
            w = jnp.asarray(valid, jnp.float32)[:, None]
            total, count = total + jnp.sum(batch[MODALITIES[0]] * w, 0), count + jnp.sum(w)
        return {"stats": {"mean": total / count}}

    return dataclasses.replace(task, init_fn=init_fn, fit_model_state=fit)


def test_model_state_is_fitted_at_the_end_saved_and_restored(tmp_path):
    config = toy_config()
    config.train.num_steps = 4
    task = _task_with_a_fitted_mean(config)
    loop.train(config, tmp_path, task)
    variables = loop.restore_variables(config, tmp_path, task)
    # Independent reference: the mean of the whole fitting split (the toy eval data), in numpy.
    source = ToyEvalData(config.data.eval_examples, config.data.batch_size, 0, 1).source
    np.testing.assert_allclose(variables["stats"]["mean"], source[MODALITIES[0]].mean(0), rtol=1e-5, atol=1e-6)
    assert set(variables) == {"params", "stats"}
    records = [r for r in (tmp_path / "metrics.jsonl").read_text().splitlines() if "model_state_fit_s" in r]
    assert len(records) == 1  # fitted once: at the end (no eval during this run)
