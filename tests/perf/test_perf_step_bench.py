"""The step bench: synthetic batches the model accepts, a host-drawn state in the runtime's
shardings, and the production step of `build_runtime` behind it."""

import jax
import numpy as np
import pytest
from perflib import load

from imro_jax import perf
from imro_jax.models import validate_batch
from imro_jax.train import config as config_lib


def test_synthetic_batch_validates_against_the_model_spec():
    for name in ("trimodal", "bench_tiny", "handwritten", "synth_caption", "synth_regression", "bench_vitb"):
        config = load(name)
        batch = perf.synthetic_batch(config.model, 2)
        validate_batch(batch, config.model)
        assert all(np.all(mask) for mask in batch["mask"].values())
    config = load("bench_tiny")
    np.testing.assert_array_equal(perf.synthetic_batch(config.model, 2, seed=5)["label"],
                                  perf.synthetic_batch(config.model, 2, seed=5)["label"])
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        perf.synthetic_batch(config.model, 0)


def test_host_initial_state_matches_abstract_state():
    config = load("bench_tiny")
    batch = perf.synthetic_batch(config.model, 8)
    runtime = perf.runtime_for(config, batch, devices=jax.devices()[:2])
    state = perf.host_initial_state(runtime.abstract_state, seed=3)
    for leaf, spec in zip(jax.tree.leaves(state), jax.tree.leaves(runtime.abstract_state)):
        assert leaf.shape == spec.shape and leaf.dtype == spec.dtype
        assert leaf.sharding.is_equivalent_to(spec.sharding, leaf.ndim)
    flat = {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_leaves_with_path(state.params)}
    biases = [v for k, v in flat.items() if k.endswith("bias']")]
    scales = [v for k, v in flat.items() if k.endswith("'scale']")]
    assert biases and all(np.all(v == 0) for v in biases)
    assert scales and all(np.all(v == 1) for v in scales)
    others = np.concatenate([v.ravel() for k, v in flat.items() if not k.endswith(("bias']", "'scale']"))])
    assert abs(np.std(others) - 0.02) < 0.002
    again = perf.host_initial_state(runtime.abstract_state, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(again.params)))


def test_build_step_bench_runs_the_runtime_train_step():
    config = load("bench_tiny")
    bench = perf.build_step_bench("tiny", config, perf.synthetic_batch(config.model, 4), devices=jax.devices()[:1])
    assert bench.train_step is bench.runtime.train_step  # the production step, not a copy
    assert np.isfinite(float(bench.forward_loss()))
    assert np.isfinite(float(bench.train()["loss"])) and int(bench.state.step) == 1


def test_statistics_pass_fits_the_surprisal_statistics_or_is_none():
    config = load("bench_tiny")
    bench = perf.build_step_bench("tiny", config, perf.synthetic_batch(config.model, 4), devices=jax.devices()[:1])
    fitted = bench.statistics_pass(examples=10)()  # ceil(10 / batch 4) = 3 copies of the batch
    # the model state's structure, fitted: no longer the host-drawn zeros
    assert jax.tree.structure(fitted) == jax.tree.structure(bench.state.model_state)
    assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(fitted))
    predictive = config_lib.with_overrides(config, {"model.reliability.entropy": "predictive"})
    other = perf.build_step_bench("p", predictive, perf.synthetic_batch(config.model, 4), devices=jax.devices()[:1])
    assert other.statistics_pass(examples=10) is None
