"""The Sec. 5.1 gradient decomposition (imro_jax.eval.stability), checked on a tiny model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from imro_jax.eval import stability
from imro_jax.models import build_model
from imro_jax.models.loss import task_loss_per_sample

DIMS = {"a": 5, "b": 4, "c": 3}
B = 6


def tiny(fusion, decision=0.0):
    config = ml_collections.ConfigDict(dict(
        task="classification", fusion=fusion, dim=8, num_heads=2, mlp_dim=16, depth=1, dropout=0.0,
        fusion_tokens=1, nonfinite="error", reliability=dict(entropy="predictive", eps=1e-6, decision=decision),
        num_classes=3,
        modalities={m: dict(encoder="feature", input_dim=d) for m, d in DIMS.items()}))
    rng = np.random.default_rng(0)
    batch = {m: rng.normal(size=(B, d)).astype(np.float32) for m, d in DIMS.items()}
    batch["mask"] = {m: np.ones(B, bool) for m in DIMS}
    batch["label"] = rng.integers(0, 3, B).astype(np.int32)
    model = build_model(config)
    params = nn.unbox(model.init({"params": jax.random.key(1)}, batch, train=False)["params"])
    return model, jax.tree.map(jnp.asarray, params), batch


path_gradients = jax.jit(stability.path_gradients, static_argnums=0)


def test_paths_sum_to_the_gradient_and_stay_in_their_modality():
    model, params, batch = tiny("imro")
    paths = [np.asarray(path_gradients(model, params, batch, jax.nn.one_hot(m, 3))) for m in range(3)]
    everything = np.asarray(path_gradients(model, params, batch, jnp.ones(3)))
    np.testing.assert_allclose(sum(paths), everything, rtol=1e-4, atol=1e-5)  # grad Z = sum_m R_m grad Z_m
    _, unravel = ravel_pytree(stability.split_params(params)[0])
    for m, name in enumerate(sorted(DIMS)):
        for b in range(B):
            tree = unravel(paths[m][b])
            for other in sorted(DIMS):
                norm = sum(float(np.abs(x).sum()) for x in jax.tree.leaves(tree[f"encoders_{other}"]))
                assert (norm > 0) == (other == name), (m, other)  # only modality m's encoder moves


def test_uniform_full_path_is_the_plain_gradient_and_variances_match():
    # Uniform weights do not depend on the parameters, so "R held fixed" changes nothing.
    model, params, batch = tiny("uniform")
    upstream, rest = stability.split_params(params)
    everything = np.asarray(path_gradients(model, params, batch, jnp.ones(3)))

    @jax.jit
    def plain(example):
        loss = lambda up: task_loss_per_sample(  # noqa: E731
            model.apply({"params": stability.merge_params(up, rest)}, example, train=False), example)[0]
        return ravel_pytree(jax.grad(loss)(upstream))[0]

    for b in range(B):
        np.testing.assert_allclose(plain(jax.tree.map(lambda x: x[b : b + 1], batch)), everything[b],
                                   rtol=1e-4, atol=1e-4)  # float32, different op order
    paths = np.stack([path_gradients(model, params, batch, jax.nn.one_hot(m, 3)) for m in range(3)]).astype(np.float64)
    measured = jax.device_get(stability.make_variance_measure(model, 3)(params, batch))
    assert measured["lhs"] == pytest.approx(np.sum(np.var(paths.sum(0), axis=0)), rel=1e-4)
    assert measured["rhs"] == pytest.approx(np.sum(np.var(paths, axis=1)), rel=1e-4)
    assert measured["rhs_literal"] == pytest.approx(measured["rhs"], rel=1e-4)  # constant R = 1/3


def test_a_model_that_votes_outside_z_is_refused():
    """With the R-weighted vote every encoder reaches the loss through its unimodal head as well:
    each "path" then carries the whole vote gradient (LHS / RHS = M by construction), so the
    measurement refuses such a model instead of reporting that ratio."""
    model, params, batch = tiny("imro", decision=1.0)
    paths = [np.asarray(path_gradients(model, params, batch, jax.nn.one_hot(m, 3))) for m in range(3)]
    blocked = np.asarray(path_gradients(model, params, batch, jnp.zeros(3)))  # no path through Z at all
    assert np.abs(blocked).max() > 0  # the gradient reaches the streams outside the fusion attention
    np.testing.assert_allclose(paths[0], paths[1], rtol=1e-5, atol=1e-7)  # the vote's gradient, in every path
    with pytest.raises(ValueError, match="decision = 1.0"):
        stability.make_variance_measure(model, 3)
    tiny_token, _, _ = tiny("imro", decision=0.0)
    stability.make_variance_measure(tiny_token, 3)  # the token fusion alone is measurable
