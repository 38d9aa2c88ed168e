"""Sharded train step: mesh independence, sharding rules, non-finite guard, determinism, bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from toy import ToyIterator

from trainlib import tree_equal

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
