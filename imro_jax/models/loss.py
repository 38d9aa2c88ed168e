"""The reliability-regularised objective (paper Sec. 5) and the baselines' own loss pieces.

.. math::

    \\mathcal{L} = \\mathcal{L}_{task} + \\lambda_1 \\sum_m H(X_m) - \\lambda_2 \\sum_m I(X_m; Y)
        + w_{uni} \\sum_m \\mathrm{NLL}(y \\mid x_m) \\;[+\\ \\beta\\, \\mathrm{KL}]

* ``L_task``: cross-entropy (classification), squared or absolute error (regression,
  ``loss.regression_loss``) or token cross-entropy (generation) of the fused prediction over the
  valid samples. ``energy`` (QMF)
  adds the unimodal cross-entropies and the ranking loss; ``evidential`` (TMC) replaces it by
  the Dirichlet loss of every modality and of the combination, with the KL term annealed as
  ``min(1, step / evidential_annealing_steps)``.
* ``H``: the model's per-sample entropy estimate (``output.entropy``).
* ``I``: a training-time lower bound with labels, per modality (``loss.mi_bound``):
  ``"barber_agakov"``: ``H(Y) + E[log q(y | x_m)]`` from the unimodal head
  (:func:`imro_jax.info.barber_agakov_lower_bound`); ``"infonce"``: InfoNCE on the label-critic
  scores (:func:`imro_jax.info.infonce_lower_bound`). Averaged over the samples where the
  modality is present. The pair enters through :func:`imro_jax.info.imro_regularizer`.
* ``NLL``: optional auxiliary unimodal losses (``loss.unimodal_weight``).
* ``joint``: ``loss.joint_weight`` times the task loss of the token fusion head's own prediction
  (``output.joint_logits``), for ``imro`` with the reliability vote (``model.reliability.decision
  > 0``): the vote then trains the unimodal heads and this term the R-scaled token fusion, so that
  the pooled prediction mixes two trained predictors. 0 (the default): the joint head only learns
  through the mixture (not at all with ``decision = 1``). Without a vote the term is absent.
* ``KL``: ``loss.kl_weight * KL(N(mu, sigma^2) || N(0, I))`` of the Gaussian embedding, only
  for ``model.reliability.entropy = "gaussian"`` (it keeps sigma informative, see
  :mod:`imro_jax.models.reliability`).

The ``loss`` config section: ``lambda1``, ``lambda2``, ``mi_bound``, ``unimodal_weight``,
``joint_weight`` (read only when the model has a reliability vote), ``evidential_annealing_steps`` (read only for ``fusion="evidential"``), ``kl_weight`` (read
only for the Gaussian entropy) and ``regression_loss`` (``"squared" | "l1"``, read only for
``model.task="regression"``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from imro_jax.batch import CAPTION, LABEL
from imro_jax.info import (
    barber_agakov_lower_bound,
    imro_regularizer,
    infonce_lower_bound,
)
from imro_jax.models.heads import caption_loss_mask
from imro_jax.models.registry import get_fusion

MI_BOUNDS = ("barber_agakov", "infonce")
REGRESSION_LOSSES = ("squared", "l1")


def _masked_mean(x: jax.Array, weight: jax.Array) -> jax.Array:
    weight = weight.astype(x.dtype)
    return jnp.sum(x * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def _config_value(loss_config: Any, key: str, why: str):
    if key not in loss_config:
        raise ValueError(f"loss.{key} is required {why}; the loss config has {sorted(loss_config)}")
    return loss_config[key]


def unimodal_nll(output, batch: dict) -> jax.Array:
    """``-log q(y | x_m)`` of each unimodal head, ``[batch, modality]`` in nats.

    Classification: cross-entropy; regression: Gaussian NLL with the head's (mean, log-variance);
    generation: cross-entropy against the caption's bag of words (normalised token counts).
    """
    unimodal = output.unimodal_logits
    if output.task == "classification":
        label = jnp.broadcast_to(batch[LABEL][:, None], unimodal.shape[:2])
        return optax.softmax_cross_entropy_with_integer_labels(unimodal, label)
    if output.task == "regression":
        mean, log_var = unimodal[..., 0], unimodal[..., 1]
        y = batch[LABEL].astype(mean.dtype)[:, None]
        return 0.5 * (math.log(2 * math.pi) + log_var + (y - mean) ** 2 * jnp.exp(-log_var))
    caption = batch[CAPTION]
    counts = jnp.sum(jax.nn.one_hot(caption, unimodal.shape[-1]) * (caption != 0)[..., None], axis=1)
    bag = counts / jnp.maximum(jnp.sum(counts, axis=-1, keepdims=True), 1.0)  # [B, V]
    return -jnp.sum(bag[:, None, :] * jax.nn.log_softmax(unimodal, axis=-1), axis=-1)


def task_loss_per_sample(output, batch: dict, *, regression_loss: str = "squared") -> jax.Array:
    """The fused prediction's loss per sample, ``[batch]``.

    Regression: ``regression_loss="squared"``: ``(p - y)^2``; ``"l1"``: ``|p - y|`` (MulT's
    ``L1Loss`` on CMU-MOSI/MOSEI sentiment, Tsai et al. 2019).
    """
    if output.task == "classification":
        return optax.softmax_cross_entropy_with_integer_labels(output.logits, batch[LABEL])
    if output.task == "regression":
        error = output.logits - batch[LABEL].astype(output.logits.dtype)
        if regression_loss == "squared":
            return error**2
        if regression_loss == "l1":
            return jnp.abs(error)
        raise ValueError(f"loss.regression_loss must be one of {REGRESSION_LOSSES}, got {regression_loss!r}")
    caption = batch[CAPTION]
    token_loss = optax.softmax_cross_entropy_with_integer_labels(output.logits, caption)
    weight = caption_loss_mask(caption).astype(token_loss.dtype)
    return jnp.sum(token_loss * weight, axis=-1) / jnp.maximum(jnp.sum(weight, axis=-1), 1.0)


def mi_lower_bounds(output, batch: dict, bound: str) -> jax.Array:
    """Training-time lower bound on I(X_m; Y) per modality, ``[modality]`` in nats.

    Each bound is the mean of per-sample terms; samples where modality m is absent are given a
    term of exactly 0 (Barber-Agakov: ``log q = -H(Y)``; InfoNCE: a constant score row) and the
    mean is rescaled to the present samples, so absent samples neither count nor get gradients.
    """
    use = output.present & output.valid[:, None]  # [B, M]
    count = jnp.maximum(jnp.sum(use, axis=0), 1).astype(jnp.float32)  # [M]
    batch_size = use.shape[0]
    if bound == "barber_agakov":
        log_q = jnp.where(use, -unimodal_nll(output, batch), -output.label_entropy)  # [B, M]
        values = jax.vmap(lambda lq: barber_agakov_lower_bound(lq, output.label_entropy), 1)(log_q)
    elif bound == "infonce":
        if output.critic_scores is None:
            raise ValueError(f"loss.mi_bound='infonce' needs a label critic; task {output.task!r} has none")
        scores = jnp.where(use.T[:, :, None], output.critic_scores, 0.0)  # [M, B, B]
        values = jax.vmap(infonce_lower_bound)(scores)
    else:
        raise ValueError(f"loss.mi_bound must be one of {MI_BOUNDS}, got {bound!r}")
    return values * batch_size / count


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """``KL(N(mean, diag e^log_var) || N(0, I))`` summed over the last axis."""
    return 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)


def imro_loss(output, batch: dict, loss_config: Any, *, step: Any = None) -> tuple[jax.Array, dict]:
    """IMRO objective for one batch (see module docstring).

    Args:
      output: :class:`imro_jax.models.ModelOutput` of the forward pass on ``batch``.
      batch: the batch dict; needs ``label`` (or ``caption`` for generation).
      loss_config: the ``loss`` config section.
      step: training step for TMC's KL annealing (``fusion="evidential"``); None = fully annealed.

    Returns:
      ``(loss, metrics)``: a scalar and a dict of scalars: ``loss``, ``task_loss``,
      ``regularizer``, ``unimodal_loss``, ``valid_fraction``, ``accuracy`` (classification),
      per modality ``reliability/<m>``, ``entropy/<m>``, ``mi/<m>`` (means over the samples
      where m is present) and ``mi_bound/<m>``, plus ``rank_loss`` (energy),
      ``kl_annealing`` (evidential), ``kl`` (Gaussian entropy).
    """
    if LABEL not in batch and output.task != "generation":
        raise ValueError(f"imro_loss needs batch['label'] for task {output.task!r}")
    valid = output.valid
    use = output.present & valid[:, None]
    nll = unimodal_nll(output, batch)  # [B, M]
    unimodal_loss = jnp.mean(jnp.sum(jnp.where(use, nll, 0.0), axis=-1))
    regression_loss = (_config_value(loss_config, "regression_loss", "for model.task='regression'")
                       if output.task == "regression" else "squared")
    fused_loss = _masked_mean(task_loss_per_sample(output, batch, regression_loss=regression_loss), valid)
    own_loss = get_fusion(output.fusion).task_loss  # the baselines' own terms (the registry)
    task_loss, metrics = (fused_loss, {}) if own_loss is None else own_loss(
        output, batch, loss_config, step, nll, use, fused_loss)
    metrics = dict(metrics)

    bounds = mi_lower_bounds(output, batch, loss_config["mi_bound"])  # [M]
    regularizer = imro_regularizer(
        output.entropy, jnp.broadcast_to(bounds, output.entropy.shape),
        lambda1=loss_config["lambda1"], lambda2=loss_config["lambda2"], mask=use,
    )
    loss = task_loss + regularizer + loss_config["unimodal_weight"] * unimodal_loss
    if output.joint_logits is not None:
        joint_weight = _config_value(loss_config, "joint_weight", "for a model with the reliability vote")
        if not joint_weight >= 0:
            raise ValueError(f"loss.joint_weight must be >= 0, got {joint_weight!r}")
        joint_loss = _masked_mean(task_loss_per_sample(output.replace(logits=output.joint_logits), batch,
                                                       regression_loss=regression_loss), valid)
        loss = loss + joint_weight * joint_loss
        metrics["joint_loss"] = joint_loss
    if output.embedding_log_var is not None:
        kl_weight = _config_value(loss_config, "kl_weight", "for model.reliability.entropy='gaussian'")
        kl = jnp.mean(jnp.sum(jnp.where(use, gaussian_kl(output.embedding_mean, output.embedding_log_var), 0.0), -1))
        loss = loss + kl_weight * kl
        metrics["kl"] = kl

    metrics.update(
        loss=loss, task_loss=task_loss, regularizer=regularizer, unimodal_loss=unimodal_loss,
        valid_fraction=jnp.mean(valid.astype(jnp.float32)),
    )
    if output.task == "classification":
        correct = jnp.argmax(output.logits, -1) == batch[LABEL]
        metrics["accuracy"] = _masked_mean(correct.astype(jnp.float32), valid)
    for m, name in enumerate(output.modalities):
        for key, values in (("reliability", output.reliability), ("entropy", output.entropy), ("mi", output.mi)):
            metrics[f"{key}/{name}"] = _masked_mean(values[:, m], use[:, m])
        metrics[f"mi_bound/{name}"] = bounds[m]
    return loss, metrics
