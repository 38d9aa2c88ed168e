"""bfloat16 compute, rematerialisation and activation sharding constraints of the whole model.

Each test jits one function (both variants inside it where it compares two), to keep compiles few.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from models_testlib import (
    TRIMODAL_MODALITIES,
    TRIMODAL_NUM_SAMPLES,
    TWO_MODALITIES,
    loss_config,
    make_batch,
    tiny_config,
)

from imro_jax.models import build_model, imro_loss
from imro_jax.models.transformer import TransformerBlock
from imro_jax.train.precision import cast_floating, with_compute_dtype

# bfloat16 keeps 8 significant bits: unit roundoff u = 2^-8 ~ 3.9e-3 (round-to-nearest: half).
# The tiny model has ~12 sequential rounding stages (input cast, patch/token embedding, per block:
# LN, QKV, attention, output projection, MLP x2; fusion, heads); independent roundings add like a
# random walk, ~ sqrt(12) u ~ 1.4e-2 relative. Loss and metrics (entropies, MI in [0, log 3],
# R in [0, 1]) are O(1), so 3e-2 (about 2x that estimate) bounds a correct bf16 run and is far
# below the O(1) errors of a wrong one (a dropped modality, a missing cast, an f16 overflow).
BF16_TOLERANCE = 3e-2
# Gradients: bf16 perturbs each component by ~1e-2 relative; the direction must be unchanged
# (cosine similarity 1 - O(u^2 * stages) ~ 0.999); 0.99 allows 10x that.
BF16_GRAD_COSINE = 0.99


def key(seed):
    return jax.random.key(seed, impl="unsafe_rbg")


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def test_bfloat16_forward_backward_of_trimodal_model_is_close_to_float32():
    cfg = tiny_config(modalities=TRIMODAL_MODALITIES)
    model = build_model(cfg)
    batch = make_batch(cfg, num_samples=TRIMODAL_NUM_SAMPLES)
    params = nn.meta.unbox(jax.jit(lambda b: model.init({"params": key(0)}, b, train=False))(batch))["params"]

    def loss_fn(p, b):
        out = model.apply({"params": p}, b, train=True, rngs={"dropout": key(1)})
        return imro_loss(cast_floating(out, jnp.float32), b, loss_config(), step=0)

    @jax.jit
    def run(p, b):
        grad = jax.value_and_grad
        f32 = grad(loss_fn, has_aux=True)(p, b)
        bf16 = grad(with_compute_dtype(loss_fn, jnp.bfloat16), has_aux=True)(p, b)
        out = model.apply({"params": cast_floating(p, jnp.bfloat16)},
                          {k: cast_floating(v, jnp.bfloat16) if k in cfg.modalities else v
                           for k, v in b.items()}, train=False)
        return f32, bf16, out

    ((loss32, metrics32), grads32), ((loss16, metrics16), grads16), out16 = run(params, batch)
    # the computation really ran in bfloat16 (no silent upcast to float32) ...
    for field in ("logits", "pooled", "fused", "reliability", "entropy", "mi"):
        assert getattr(out16, field).dtype == jnp.bfloat16, field
    # ... with float32 gradients for the float32 master parameters
    assert {g.dtype for g in jax.tree.leaves(grads16)} == {jnp.dtype(jnp.float32)}
    assert np.isfinite(loss16) and np.all(np.isfinite(_flat(grads16)))
    np.testing.assert_allclose(loss16, loss32, rtol=BF16_TOLERANCE)
    for name in metrics32:
        np.testing.assert_allclose(metrics16[name], metrics32[name], atol=BF16_TOLERANCE, err_msg=name)
    g32, g16 = _flat(grads32), _flat(grads16)
    assert g16 @ g32 / (np.linalg.norm(g16) * np.linalg.norm(g32)) > BF16_GRAD_COSINE


def test_remat_gives_the_same_loss_and_grads_and_really_rematerialises():
    cfg = tiny_config("concat", modalities=TWO_MODALITIES)  # encoder stacks and the joint block
    cfg.dropout = 0.1  # dropout masks must be drawn identically in the recomputation
    remat_cfg = cfg.copy_and_resolve_references()
    remat_cfg.remat = True
    plain, remat = build_model(cfg), build_model(remat_cfg)
    batch = make_batch(cfg)

    def loss_and_grad(model, p, b):
        def loss_fn(q):
            out = model.apply({"params": q}, b, train=True, rngs={"dropout": key(1)})
            return imro_loss(out, b, loss_config(), step=0)[0]
        return jax.value_and_grad(loss_fn)(p)

    @jax.jit
    def run(b):
        p = nn.meta.unbox(plain.init({"params": key(0)}, b, train=False))["params"]
        return loss_and_grad(plain, p, b), loss_and_grad(remat, p, b)

    (loss, grads), (loss_remat, grads_remat) = run(batch)
    assert jax.tree.structure(grads) == jax.tree.structure(grads_remat)
    np.testing.assert_allclose(loss_remat, loss, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_flat(grads_remat), _flat(grads), rtol=1e-6, atol=1e-6)
    params = jax.eval_shape(lambda: nn.meta.unbox(plain.init({"params": key(0)}, batch, train=False))["params"])
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params)

    def checkpoints(model):  # jax.checkpoint equations ("remat2" in jax 0.10, "checkpoint" in newer)
        jaxpr = str(jax.make_jaxpr(lambda p: loss_and_grad(model, p, batch))(zeros))
        return len(re.findall(r"= (?:remat\w*|checkpoint)\[", jaxpr))

    # 1 encoder block per modality + the joint block
    assert checkpoints(remat) >= 3 and checkpoints(plain) == 0


def test_activation_sharding_constraint_is_applied_under_mesh_and_rules():
    """A Transformer block's output carries the rules' sharding, which propagation would not give.

    With replicated parameters and a batch sharded over "data", XLA's propagation alone shards
    the block output ``[batch, length, embed]`` as ``("data", None, None)``; the rule
    ``embed -> model`` makes the constraint ``("data", None, "model")``.
    """
    cfg = tiny_config(modalities=TWO_MODALITIES)
    model = build_model(cfg)
    batch = make_batch(cfg)
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rules = (("batch", "data"), ("embed", "model"))
    variables = nn.meta.unbox(jax.jit(lambda b: model.init({"params": key(0)}, b, train=False))(batch))
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
    sharded_batch = jax.device_put(batch, NamedSharding(mesh, P("data")))

    def block_output_shardings(with_rules):
        seen = []

        def record(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if isinstance(context.module, TransformerBlock) and context.method_name == "__call__":
                jax.debug.inspect_array_sharding(out, callback=seen.append)
            return out

        def forward(v, b):
            with nn.intercept_methods(record):
                return model.apply(v, b, train=False).logits

        with jax.set_mesh(mesh):
            if with_rules:
                with nn.logical_axis_rules(rules):
                    jax.jit(forward).lower(variables, sharded_batch).compile()
            else:
                jax.jit(forward).lower(variables, sharded_batch).compile()
        return seen

    constrained = block_output_shardings(True)
    assert len(constrained) == 2  # one encoder block per modality
    expected = NamedSharding(mesh, P("data", None, "model"))
    for sharding in constrained:
        assert sharding.is_equivalent_to(expected, 3), sharding
    # without rules the constraint is a no-op and the output is not sharded over "model"
    for sharding in block_output_shardings(False):
        assert not sharding.is_equivalent_to(expected, 3), sharding
