"""Modality reliability scores and the IMRO regulariser (paper Secs. 4.2 and 5).

All functions are pure ``jnp``: jit-, vmap- and grad-safe, no hidden state, nats throughout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def reliability_scores(
    mi: ArrayLike,
    entropy: ArrayLike,
    *,
    eps: float = 1e-6,
    mask: ArrayLike | None = None,
    axis: int = -1,
    normalize: bool = True,
) -> jax.Array:
    r"""Reliability of each modality, on the simplex over the modalities present.

    The paper (Sec. 4.2) defines :math:`R_m = I(X_m; Y) / (H(X_m) + \epsilon)` with
    :math:`\sum_m R_m = 1,\ R_m \ge 0`. Taken literally this is undefined for negative
    differential entropies and for all-zero MI, so we compute

    .. math::

        \tilde R_m = \frac{\mathrm{relu}(I_m) + \epsilon}{\mathrm{softplus}(H_m) + \epsilon},
        \qquad
        R_m = \frac{\mathrm{mask}_m \, \tilde R_m}{\sum_{m'} \mathrm{mask}_{m'} \tilde R_{m'}}.

    * ``softplus(H) = log(1 + e^H)`` maps any entropy (differential entropies may be negative)
      to a positive, strictly increasing denominator; for large H it equals H.
    * ``relu(I)`` clips negative MI estimates (a lower bound can dip below zero); the ``+ eps``
      in the numerator keeps the score strictly positive, so that when every present modality
      has zero estimated MI the weights fall back to ``1 / softplus(H)`` (the least uncertain
      modality wins) instead of 0/0. It changes scores by O(eps) otherwise.
    * More MI -> larger R_m; more H -> smaller R_m (monotone in both, up to renormalisation).
    * An infinite MI takes all the weight (shared by the modalities whose MI is infinite).
    * Absent modalities (``mask`` False) get exactly 0. A row with no modality present is all
      zeros (never NaN).
    * A NaN MI or entropy of a present modality makes its whole slice NaN (the weights of the
      other modalities depend on it), never a number.
    * ``normalize=False`` returns :math:`\mathrm{mask}_m \tilde R_m` itself (nats / nats, not on the
      simplex): the "R unnormalised" ablation, not the paper's method.

    Args:
      mi: mutual-information estimates I_m in nats, e.g. ``[batch, modality]``.
      entropy: entropy estimates H_m in nats, broadcastable to ``mi``.
      eps: the paper's epsilon (> 0).
      mask: optional boolean presence mask broadcastable to ``mi``; None means all present.
      axis: the modality axis to normalise over.
      normalize: put the scores on the simplex (the paper); False keeps the raw ratios.

    Returns:
      Reliability scores with the broadcast shape of ``mi`` and ``entropy``; each slice along
      ``axis`` sums to 1 over present modalities (or is all zero if none is present).

    References:
      Alugolu & Peddi, "Information-Theoretic Modality Reliability Optimization for Robust
      Multimodal Transformer Models", 2024, Sec. 4.2.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    mi = jnp.asarray(mi)
    entropy = jnp.asarray(entropy)
    dtype = jnp.result_type(mi.dtype, entropy.dtype, jnp.float32)
    mi, entropy = jnp.broadcast_arrays(mi.astype(dtype), entropy.astype(dtype))
    if mask is None:
        present = jnp.ones(mi.shape, dtype=bool)
    else:
        present = jnp.broadcast_to(jnp.asarray(mask, dtype=bool), mi.shape)
    raw = (jax.nn.relu(mi) + eps) / (jax.nn.softplus(entropy) + eps)
    raw = jnp.where(present, raw, 0.0)
    infinite = jnp.isposinf(raw)  # infinite MI: such modalities share all the weight
    raw = jnp.where(jnp.any(infinite, axis=axis, keepdims=True), infinite.astype(dtype), raw)
    if not normalize:
        return raw
    total = jnp.sum(raw, axis=axis, keepdims=True)
    safe_total = jnp.where(total == 0, 1.0, total)  # a NaN total keeps the whole slice NaN
    return raw / safe_total


def imro_regularizer(
    entropy: ArrayLike,
    mi: ArrayLike,
    *,
    lambda1: float,
    lambda2: float,
    mask: ArrayLike | None = None,
) -> jax.Array:
    r"""The paper's reliability regulariser (Sec. 5), averaged over the batch.

    .. math::

        \Omega = \frac{1}{B} \sum_b \Big( \lambda_1 \sum_m \mathrm{mask}_{bm} H_{bm}
                 - \lambda_2 \sum_m \mathrm{mask}_{bm} I_{bm} \Big)

    so that the full IMRO objective is ``task_loss + imro_regularizer(...)``.

    Args:
      entropy: entropy estimates H in nats, ``[batch, modality]``.
      mi: mutual-information estimates I in nats, ``[batch, modality]``.
      lambda1: weight of the entropy penalty.
      lambda2: weight of the MI reward.
      mask: optional boolean ``[batch, modality]``; masked-out modalities contribute nothing.

    Returns:
      A scalar (float32 or wider).
    """
    entropy = jnp.asarray(entropy)
    mi = jnp.asarray(mi)
    if entropy.ndim != 2 or mi.shape != entropy.shape:
        raise ValueError(
            "imro_regularizer expects entropy and mi of equal shape [batch, modality]; "
            f"got {entropy.shape} and {mi.shape}"
        )
    if entropy.shape[0] == 0:
        raise ValueError("imro_regularizer got an empty batch (entropy and mi of shape [0, M])")
    dtype = jnp.result_type(mi.dtype, entropy.dtype, jnp.float32)
    weight = (
        jnp.ones(mi.shape, dtype) if mask is None
        else jnp.broadcast_to(jnp.asarray(mask, dtype=bool), mi.shape).astype(dtype)
    )
    per_sample = jnp.sum(weight * (lambda1 * entropy - lambda2 * mi), axis=-1)
    return jnp.mean(per_sample)
