"""Sharded train step: mesh independence, sharding rules, non-finite guard, determinism, bf16."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P
from toy import ToyIterator

from trainlib import tree_equal

from imro_jax.train import step as step_lib
from imro_jax.train.state import TrainState

NUM_STEPS = 4

# Expected mesh specs of the toy parameters, derived by hand from the rules
# batch->data, heads->model, mlp->model (+ embed->data with FSDP) and the shapes in toy.py.
EXPECTED_SPECS = {
    "['proj_a']['kernel']": (P(None, None), P(None, "data")),  # [6, 16] (patch, embed)
    "['proj_a']['bias']": (P(None), P("data")),  # [16] (embed,)
    "['query']['kernel']": (P(None, "model", None), P("data", "model", None)),  # [16, 4, 4]
    "['out']['kernel']": (P("model", None, None), P("model", None, "data")),  # [4, 4, 16]
    "['LayerNorm_0']['scale']": (P(None), P(None)),  # [16] (norm,)
    "['mlp_in']['kernel']": (P(None, "model"), P("data", "model")),  # [16, 32]
    "['mlp_in']['bias']": (P("model"), P("model")),  # [32] (mlp,)
    "['mlp_out']['kernel']": (P("model", None), P("model", "data")),  # [32, 16]
    "['head']['kernel']": (P(None, None), P("data", None)),  # [16, 4] (embed, classes)
    "['head']['bias']": (P(None), P(None)),  # [4] (classes,)
}


def _specs(tree):
    return {jax.tree_util.keystr(path): x.sharding.spec
            for path, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("fsdp", [False, True])
def test_params_and_adam_moments_are_created_sharded_by_the_rules(setup, fsdp):
    s = setup(data=4, model=2, fsdp=fsdp)
    state = s.new_state()
    specs = _specs(state.params)
    for name, expected in EXPECTED_SPECS.items():
        assert specs[name] == expected[int(fsdp)], name
    # Every leaf lives where the shardings say, as 8 shards of the expected size (never whole).
    kernel = state.params["mlp_in"]["kernel"]  # [16, 32]
    assert kernel.sharding == s.shardings.params["mlp_in"]["kernel"]
    expected_shard = (16 // 4, 32 // 2) if fsdp else (16, 32 // 2)
    assert {shard.data.shape for shard in kernel.addressable_shards} == {expected_shard}
    # Adam's first and second moments are sharded exactly like their parameters.
    adam = state.opt_state[1][0]
    assert _specs(adam.mu) == specs and _specs(adam.nu) == specs
    assert state.step.sharding.spec == P() and state.rng.sharding.spec == P()


def test_losses_match_across_meshes(setup):
    reference, _ = setup(data=1, model=1).run(NUM_STEPS)
    assert reference[-1] < reference[0]  # it trains
    for data, model in [(8, 1), (4, 2)]:
        losses, _ = setup(data=data, model=model).run(NUM_STEPS)
        np.testing.assert_allclose(losses, reference, rtol=0, atol=1e-5, err_msg=f"{data}x{model}")


def test_same_seed_same_losses_other_seed_other_losses(setup):
    s = setup()
    first, state_a = s.run(NUM_STEPS)
    second, state_b = s.run(NUM_STEPS)
    assert first == second and tree_equal(state_a.params, state_b.params)
    other, _ = s.run(NUM_STEPS, seed=1)
    assert other[0] != first[0]


def test_non_finite_batch_skips_update_and_counts_it(setup):
    s = setup()
    state = s.new_state()
    batches = ToyIterator(0, s.config.data.batch_size)
    state, _ = s.step(state, s.global_batch(next(batches)))
    before = jax.device_get(state)
    bad = next(batches)
    bad["a"][3, 2] = np.nan
    state, metrics = s.step(state, s.global_batch(bad))
    assert np.isnan(float(metrics["loss"])) and float(metrics["finite"]) == 0.0
    after = jax.device_get(state)
    assert tree_equal(after.params, before.params)
    assert tree_equal(after.opt_state, before.opt_state)
    assert tree_equal(after.rng, before.rng)
    assert int(after.skipped) == int(before.skipped) + 1 == 1
    assert int(after.step) == int(before.step) + 1  # the bad batch was consumed
    state, metrics = s.step(state, s.global_batch(next(batches)))
    assert np.isfinite(float(metrics["loss"])) and int(state.skipped) == 1


def test_bfloat16_compute_keeps_float32_master_weights(setup):
    f32, bf16 = setup(), setup(compute_dtype="bfloat16")
    losses32, _ = f32.run(2)
    losses16, state = bf16.run(2)
    np.testing.assert_allclose(losses16, losses32, rtol=3e-2)
    assert losses16 != losses32  # the compute really ran in bfloat16
    dtypes = {x.dtype for x in jax.tree.leaves((state.params, state.opt_state)) if
              jnp.issubdtype(x.dtype, jnp.floating)}
    assert dtypes == {jnp.dtype(jnp.float32)}


def _linear_state(optimizer):
    params = {"w": jnp.array([0.5, -1.0, 2.0])}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params),
                      rng=jax.random.key_data(jax.random.key(0)), skipped=jnp.zeros((), jnp.int32),
                      model_state={})


def _linear_loss(params, batch, rng, step):
    del rng, step
    loss = jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)
    return loss, {"valid_fraction": jnp.mean(batch["valid"].astype(jnp.float32))}


def _run_linear(optimizer, schedule, batches):
    step = jax.jit(functools.partial(step_lib.train_step, loss_fn=_linear_loss, optimizer=optimizer,
                                     schedule=schedule, accumulation_steps=1))
    state = _linear_state(optimizer)
    history = [jax.device_get(state)]
    for batch in batches:
        state, metrics = step(state, batch)
        history.append(jax.device_get(state))
    return history, jax.device_get(metrics)


def _linear_batch(valid=True):
    x = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    return {"x": x, "y": np.ones(4, np.float32), "valid": np.full(4, valid)}


def test_a_non_finite_update_is_skipped_although_loss_and_gradient_are_finite():
    # lr = inf: loss and gradient are finite, the update (inf * g) is not.
    optimizer = optax.sgd(jnp.inf)
    history, metrics = _run_linear(optimizer, optax.constant_schedule(jnp.inf), [_linear_batch()])
    before, after = history
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])
    assert not np.isfinite(metrics["update_norm"]) and metrics["finite"] == 0.0
    np.testing.assert_array_equal(after.params["w"], [0.5, -1.0, 2.0])
    assert int(after.skipped) == 1 and int(after.step) == 1


def test_a_batch_without_valid_samples_changes_no_parameter_optimizer_state_or_schedule():
    schedule = optax.linear_schedule(1e-1, 0.0, 10)
    optimizer = optax.adamw(schedule, weight_decay=0.1)
    history, metrics = _run_linear(optimizer, schedule, [_linear_batch(), _linear_batch(False)])
    _, first, second = history
    assert metrics["finite"] == 0.0 and int(second.skipped) == 1 and int(second.step) == 2
    assert tree_equal(second.params, first.params) and tree_equal(second.opt_state, first.opt_state)
    assert int(second.opt_state[0].count) == 1  # AdamW's schedule count did not advance
    assert metrics["lr"] == np.float32(schedule(1))  # the logged lr: that of update 1, not 2
