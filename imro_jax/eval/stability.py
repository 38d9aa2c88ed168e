r"""The gradient-variance decomposition of the paper's training-stability claim (Sec. 5.1).

The paper states

.. math:: \mathrm{Var}(\nabla Z) \le \sum_m R_m^2\, \mathrm{Var}(\nabla Z_m)

for the fused attention output :math:`Z_b = \sum_m R_{bm} Z_{bm}`. This module measures both
sides on a trained model, per sample :math:`b` of a fixed batch (eval mode):

* :math:`Z_{bm} = \mathrm{Attention}(Q, K_m, V_m)` is modality m's attention output inside the
  fusion attention (:class:`~imro_jax.models.fusion.ReliabilityAwareAttention`) and
  :math:`R_{bm}` its fusion weight (IMRO: learned; uniform fusion: 1/M).
* :math:`\theta` are the parameters of the modality streams that feed Z: every modality encoder
  and the fusion attention's key/value projections (shared by the modalities). The fusion
  queries and output projection act on all modalities at once and are left out.
* :math:`\nabla Z_b = \partial l_b / \partial \theta` through Z with R held fixed, where
  :math:`l_b` is the sample's task loss; :math:`R_{bm} \nabla Z_{bm}` is the part of it that flows
  through modality m's keys and values. Flax method interceptors stop the gradient of R and of
  the other modalities' keys/values; forward values are unchanged. By linearity
  :math:`\nabla Z_b = \sum_m R_{bm} \nabla Z_{bm}` exactly, provided the prediction depends on
  the streams only through Z (:func:`check_decomposable`).
* :math:`\mathrm{Var}(v)` is the sum over parameters of the variance over the batch samples (the
  trace of the covariance).

``LHS - RHS`` (with :math:`\mathrm{RHS} = \sum_m \mathrm{Var}(R_m \nabla Z_m)`) is the sum of the
cross-modality covariances, so the bound holds exactly when those are <= 0.

Reference: the IMRO paper, Sec. 5.1 (see ``docs/protocols.md``).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from imro_jax.models.fusion import ReliabilityAwareAttention
from imro_jax.models.loss import task_loss_per_sample
from imro_jax.models.registry import get_fusion

FUSION_ATTENTION = ("token_fusion", "reliability_attention", "attention")
STREAM_PARAMS = ("key_kernel", "key_bias", "value_kernel", "value_bias")


def is_upstream(path: tuple[str, ...]) -> bool:
    """Whether a parameter path belongs to a modality stream (an encoder, or a K/V projection of
    the fusion attention)."""
    if path[0].startswith("encoders_"):
        return True
    return path[: len(FUSION_ATTENTION)] == FUSION_ATTENTION and path[-1] in STREAM_PARAMS


def split_params(params: Any) -> tuple[Any, Any]:
    """``(upstream, rest)``: two trees shaped like ``params``, with None where the other holds the
    leaf (:func:`is_upstream` decides)."""
    names = lambda p: tuple(k.key for k in p)  # noqa: E731
    mark = lambda want: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda p, x: x if is_upstream(names(p)) == want else None, params)
    return mark(True), mark(False)


def merge_params(upstream: Any, rest: Any) -> Any:
    """The inverse of :func:`split_params`."""
    return jax.tree.map(lambda a, b: a if a is not None else b, upstream, rest, is_leaf=lambda x: x is None)


def one_path_interceptor(path_weights: jax.Array) -> Callable:
    """A Flax method interceptor: forward values unchanged; R held fixed (stop-gradient) and the
    gradient allowed only through the keys/values of the modalities with ``path_weights [M] > 0``."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, ReliabilityAwareAttention) and context.method_name == "__call__":
            queries, tokens, token_mask, reliability = args
            return next_fun(queries, tokens, token_mask, jax.lax.stop_gradient(reliability), **kwargs)
        if context.method_name == "key_value" and isinstance(module.parent, ReliabilityAwareAttention):
            key, value = next_fun(*args, **kwargs)  # [batch * modality, tokens, heads, head_dim]
            modality = jnp.arange(key.shape[0]) % path_weights.shape[0]
            keep = (path_weights[modality] > 0)[:, None, None, None]
            block = lambda x: jnp.where(keep, x, jax.lax.stop_gradient(x))  # noqa: E731
            return block(key), block(value)
        return next_fun(*args, **kwargs)

    return interceptor


def path_gradients(model: nn.Module, params: Any, batch: dict, path_weights: jax.Array) -> jax.Array:
    """Per-sample gradients of the task loss w.r.t. the stream parameters, through the keys and
    values of the modalities with ``path_weights > 0`` only, R held fixed.

    With one-hot weights this is :math:`R_{bm} \\nabla Z_{bm}`; with all ones, :math:`\\nabla Z_b`.

    Args:
      model: an :class:`~imro_jax.models.model.ImroModel`.
      params: its parameters.
      batch: a batch of ``B`` samples.
      path_weights: ``[M]``, 0/1 per modality (in the model's modality order).

    Returns:
      ``[B, P]`` float32, P the number of stream parameters (flattened in tree order).
    """
    upstream, rest = split_params(params)

    def one(example):
        def loss(up):
            with nn.intercept_methods(one_path_interceptor(path_weights)):
                out = model.apply({"params": merge_params(up, rest)}, example, train=False)
            return task_loss_per_sample(out, example)[0]

        return ravel_pytree(jax.grad(loss)(upstream))[0]

    return jax.vmap(one)(jax.tree.map(lambda x: x[:, None], batch))  # each sample as a batch of one


def check_decomposable(spec: Any) -> None:
    """Raises ValueError when the prediction reaches the modality streams outside the fusion
    attention: with the R-weighted vote (``reliability.decision > 0``) every encoder also feeds
    the loss through its unimodal head, so a gradient "through Z_m only" is not defined (each path
    would carry the whole vote gradient, and LHS / RHS = M by construction)."""
    if spec.reliability.decision > 0 and get_fusion(spec.fusion).reliability_vote:
        raise ValueError(
            f"the Sec. 5.1 decomposition needs a prediction through the fused Z alone; model.reliability.decision = "
            f"{spec.reliability.decision} mixes in the unimodal heads' vote: measure with decision = 0")


def make_variance_measure(model: nn.Module, num_modalities: int) -> Callable[[Any, dict], dict]:
    """A jitted ``(params, batch) -> dict`` of the two sides of the Sec. 5.1 bound.

    The dict holds ``lhs`` = Var(grad Z), ``rhs`` = sum_m Var(R_m grad Z_m) (equal to
    sum_m R_m^2 Var(grad Z_m) when R is constant over samples), ``rhs_literal`` =
    sum_m mean_b(R_bm)^2 Var(grad Z_m) (the paper's literal form), ``per_path`` ``[M]`` (the terms
    of ``rhs``) and ``mean_r`` ``[M]``. Refuses a model that is not decomposable
    (:func:`check_decomposable`).
    """
    check_decomposable(model.spec)

    @jax.jit
    def measure(params, batch):
        reliability = model.apply({"params": params}, batch, train=False).reliability  # [B, M]

        def path(total, m):
            grads = path_gradients(model, params, batch, jax.nn.one_hot(m, num_modalities))  # [B, P]
            unweighted = grads / reliability[:, m, None]  # grad Z_bm
            literal = jnp.mean(reliability[:, m]) ** 2 * jnp.sum(jnp.var(unweighted, axis=0))
            return total + grads, (jnp.sum(jnp.var(grads, axis=0)), literal)

        size = ravel_pytree(split_params(params)[0])[0].size
        start = jnp.zeros((reliability.shape[0], size))
        total, (per_path, literal) = jax.lax.scan(path, start, jnp.arange(num_modalities))
        return {"lhs": jnp.sum(jnp.var(total, axis=0)), "rhs": jnp.sum(per_path), "rhs_literal": jnp.sum(literal),
                "per_path": per_path, "mean_r": jnp.mean(reliability, axis=0)}

    return measure
