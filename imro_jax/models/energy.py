"""Energy-based modality confidence and its ranking regulariser (QMF, Zhang et al., ICML 2023).

QMF weights each modality's logits by a confidence derived from the (negative) energy of its
logits, ``w_m = logsumexp(f_m(x)) / T`` with ``T = 10`` (the authors' code), detached from the
graph for the fusion, ``f(x) = sum_m w_m f_m(x)``. The confidence is trained by a margin ranking
loss: a sample whose unimodal loss history is larger should not get a larger confidence.

All functions are pure ``jnp``.

References:
  Zhang et al., "Provable Dynamic Fusion for Low-Quality Multimodal Data", ICML 2023;
  code github.com/QingyangZhang/QMF (``late_fusion.py``, ``train_qmf.py: rank_loss``, ``History``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

ENERGY_TEMPERATURE = 10.0


def energy_confidence(logits: ArrayLike) -> jax.Array:
    """``logsumexp(logits) / ENERGY_TEMPERATURE``: ``[..., classes] -> [...]``."""
    return jax.nn.logsumexp(jnp.asarray(logits), axis=-1) / ENERGY_TEMPERATURE


def energy_fusion(logits: ArrayLike, present: ArrayLike) -> jax.Array:
    """QMF fused logits ``sum_m present_m * stop_gradient(w_m) * logits_m``.

    Args:
      logits: unimodal logits ``[batch, modality, classes]``.
      present: bool ``[batch, modality]``.

    Returns:
      ``[batch, classes]``.
    """
    logits = jnp.asarray(logits)
    weight = jax.lax.stop_gradient(energy_confidence(logits)) * jnp.asarray(present, logits.dtype)
    return jnp.einsum("bm,bmc->bc", weight, logits)


def rank_loss(confidence: ArrayLike, sample_loss: ArrayLike, valid: ArrayLike) -> jax.Array:
    """QMF's margin ranking loss between each sample and the next one in the batch.

    With ``c`` the per-sample loss min-max normalised over the valid samples, pairs
    ``(i, i+1 mod B)`` get target ``t = sign(c_i - c_{i+1})``, margin ``|c_i - c_{i+1}|`` and
    loss ``max(0, t (w_i - w_{i+1}) - margin)`` (0 when ``t = 0``): a sample with the larger loss
    must not be more confident by more than the margin.

    Deviation from QMF: QMF ranks by each sample's loss accumulated over past epochs (a
    ``History`` indexed by dataset position, which needs sample ids and state outside the
    model); this pure version uses the current (stop-gradient) per-sample loss, a one-step
    history.

    Args:
      confidence: ``[batch]`` confidences (with gradient).
      sample_loss: ``[batch]`` per-sample losses (treated as constants).
      valid: bool ``[batch]``; pairs with an invalid member are ignored.

    Returns:
      Scalar mean over valid pairs (0 if none).
    """
    confidence = jnp.asarray(confidence)
    sample_loss = jax.lax.stop_gradient(jnp.asarray(sample_loss, confidence.dtype))
    valid = jnp.asarray(valid, bool)
    low = jnp.min(jnp.where(valid, sample_loss, jnp.inf))
    high = jnp.max(jnp.where(valid, sample_loss, -jnp.inf))
    span = jnp.where(high > low, high - low, 1.0)
    normalised = jnp.where(valid, (sample_loss - low) / span, 0.0)
    other = jnp.roll(normalised, -1)
    target = jnp.sign(normalised - other)
    margin = jnp.abs(normalised - other)
    pair_loss = jnp.maximum(0.0, target * (confidence - jnp.roll(confidence, -1)) - margin)
    pair_valid = (valid & jnp.roll(valid, -1)).astype(confidence.dtype)
    return jnp.sum(pair_loss * pair_valid) / jnp.maximum(jnp.sum(pair_valid), 1.0)


def energy_task_loss(output, batch, loss_config, step, nll, use, fused_loss):
    """QMF's training objective for the registry (``imro_jax.models.registry``): the fused
    cross-entropy ``fused_loss`` plus the unimodal cross-entropies ``nll [B, M]`` over the used
    modalities ``use [B, M]`` plus the ranking loss of each modality's energy confidence.

    Returns:
      ``(task loss, {"rank_loss": ...})``.
    """
    del batch, loss_config, step
    confidence = energy_confidence(output.unimodal_logits)  # [B, M]
    ranks = jnp.sum(jax.vmap(rank_loss, in_axes=(1, 1, 1))(confidence, nll, use))
    unimodal = jnp.mean(jnp.sum(jnp.where(use, nll, 0.0), axis=-1))
    return fused_loss + unimodal + ranks, {"rank_loss": ranks}
