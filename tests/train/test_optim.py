"""The Optax chain from the config: schedule, masked weight decay, clipping, accumulation."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from imro_jax.train import optim


def _config(**overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(dict(
        learning_rate=0.1, warmup_steps=4, end_learning_rate_ratio=0.1, b1=0.9, b2=0.99, eps=1e-8,
        weight_decay=0.5, grad_clip_norm=1.0, accumulation_steps=1,
    ))
    config.update(overrides)
    return config


PARAMS = {
    "dense": {"kernel": jnp.full((3, 2), 2.0), "bias": jnp.full((2,), 2.0)},
    "norm": {"scale": jnp.full((3,), 2.0)},
    "heads": {"bias": jnp.full((2, 2), 2.0)},  # 2-D but a bias: no decay
}


def test_warmup_then_cosine_schedule_matches_formula():
    _, schedule = optim.make_optimizer(_config(), num_steps=20)
    peak, end, warmup, total = 0.1, 0.01, 4, 20
    for t in [0, 1, 3, 4, 9, 15, 20]:
        if t < warmup:
            expected = peak * t / warmup
        else:
            expected = end + (peak - end) * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))
        np.testing.assert_allclose(float(schedule(t)), expected, rtol=1e-6, err_msg=f"t={t}")


def test_weight_decay_is_masked_off_norms_and_biases():
    assert optim.decay_mask(PARAMS) == {
        "dense": {"kernel": True, "bias": False}, "norm": {"scale": False}, "heads": {"bias": False}}
    # Zero gradients: Adam's step is 0, so only decoupled weight decay moves the parameters,
    # p <- p - lr * wd * p, and only where the mask is True.
    optimizer, schedule = optim.make_optimizer(_config(warmup_steps=0), num_steps=10)
    state = optimizer.init(PARAMS)
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = jax.jit(optimizer.update)(zeros, state, PARAMS)
    lr = float(schedule(0))
    np.testing.assert_allclose(updates["dense"]["kernel"], -lr * 0.5 * 2.0, rtol=1e-6)
    for leaf in (updates["dense"]["bias"], updates["norm"]["scale"], updates["heads"]["bias"]):
        np.testing.assert_array_equal(leaf, 0.0)


def test_gradients_are_clipped_to_global_norm_before_adam():
    # With eps = 1 Adam's first update g / (|g| + 1) depends on the gradient's scale, so the
    # update for G (global norm 100) equals the one for G / 100 iff the chain clips to norm 1.
    grads = jax.tree.map(lambda p: jnp.linspace(1.0, 2.0, p.size).reshape(p.shape), PARAMS)
    norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))))
    big = jax.tree.map(lambda g: g * 100.0 / norm, grads)
    unit = jax.tree.map(lambda g: g / norm, grads)

    def first_update(grad_clip_norm, g):
        optimizer, _ = optim.make_optimizer(
            _config(warmup_steps=0, eps=1.0, weight_decay=0.0, grad_clip_norm=grad_clip_norm), 10)
        return jax.jit(optimizer.update)(g, optimizer.init(PARAMS), PARAMS)[0]

    for a, b in zip(jax.tree.leaves(first_update(1.0, big)), jax.tree.leaves(first_update(1.0, unit))):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    unclipped = first_update(1e9, big)
    assert not np.allclose(unclipped["dense"]["kernel"], first_update(1e9, unit)["dense"]["kernel"])


def test_gradient_accumulation_averages_micro_batches():
    # Two micro-steps with gradients g1, g2 must equal one step with (g1 + g2) / 2.
    single, _ = optim.make_optimizer(_config(), num_steps=8)
    accumulating, _ = optim.make_optimizer(_config(accumulation_steps=2), num_steps=16)
    g1 = jax.tree.map(lambda p: jnp.linspace(-1.0, 1.0, p.size).reshape(p.shape), PARAMS)
    g2 = jax.tree.map(lambda p: jnp.linspace(0.5, -0.3, p.size).reshape(p.shape), PARAMS)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)

    def apply(optimizer, grads_sequence):
        params, state = PARAMS, optimizer.init(PARAMS)
        update = jax.jit(optimizer.update)
        for grads in grads_sequence:
            updates, state = update(grads, state, params)
            params = jax.tree.map(jnp.add, params, updates)
        return params

    # Warm up one update first so the learning rate is not 0 (linear warmup starts at 0).
    expected = apply(single, [g1, mean])
    got = apply(accumulating, [g1, g1, g1, g2])
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    halfway = apply(accumulating, [g1, g1, g1])  # an odd micro-step leaves params unchanged
    for a, b in zip(jax.tree.leaves(halfway), jax.tree.leaves(apply(single, [g1]))):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_warmup_longer_than_run_is_rejected():
    with pytest.raises(ValueError, match="warmup_steps=4 must be in"):
        optim.make_optimizer(_config(), num_steps=4)
