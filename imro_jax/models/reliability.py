"""The reliability estimator: per-sample, per-modality H, I and R (paper Sec. 3, 4.2).

For each sample b and modality m the estimator reads the modality's pooled embedding
``e[b, m]`` (its encoder's class-token state, before any cross-modal mixing) and a small
unimodal prediction head ``q(y | x_m)`` (LayerNorm -> per-modality MLP) and returns

* ``mi[b, m]`` = H(Y) - H(q(y | x_m)), clipped to ``[0, H(Y)]``: a per-sample, label-free
  Barber-Agakov-style estimate of I(X_m; Y) usable at test time, with H(Y) = log C
  (classification), log V (generation, bag-of-words over the caption vocabulary) or
  ``0.5 log(2 pi e Var(Y))`` (regression, ``model.label_variance``). Its training-time
  counterparts with labels (the Barber-Agakov bound, or InfoNCE with :class:`LabelCritic`) enter
  the loss (:func:`imro_jax.models.loss.imro_loss`).

* ``entropy[b, m]``, the H of R, chosen by ``model.reliability.entropy``:

  - ``"surprisal"`` (default): the paper's H(X_m) = -sum p(x) log p(x) taken per sample, as
    the surprisal ``s = -log p(r[b, m])`` of the encoding ``r`` (the mean residual stream of
    the modality's input tokens before its encoder's final LayerNorm, which, unlike ``e``, keeps the
    input's magnitude) under a Gaussian density of clean
    training encodings (class means, shared shrunk covariance: :mod:`imro_jax.info.density`),
    reported as the *excess* over the clean ``quantile`` in nats
    (:func:`imro_jax.info.excess_surprisal`): about 0 for a sample as typical as clean data,
    large for noise, a dead sensor or anything never seen. The statistics are the variable
    collection ``"reliability_stats"`` (:data:`STATS`), fitted by
    :func:`imro_jax.models.statistics.fit_reliability_stats` after training and saved with the
    checkpoint; before they are fitted (and in training) the excess is 0. It is a fitted
    statistic, not a trained one, so no gradient flows through it.
  - ``"predictive"``: H(q(y | x_m)), the unimodal head's predictive entropy: the paper taken
    literally (both factors of R from one head; reported as "IMRO (paper)").
  - ``"gaussian"``: the differential entropy of a learned diagonal-Gaussian embedding
    (variational information bottleneck, Alemi et al. 2017), with a KL term in the loss.
  - ``"embedding"``: the entropy of ``softmax(e[b, m])`` over the embedding dimensions.

  With ``model.reliability.agreement = a > 0``, H also holds ``a`` times the disagreement of
  modality m with the others: ``KL(c_{-m} || q(y | x_m))`` in nats, where ``c_{-m}`` is the
  reliability-weighted consensus of the other present modalities' unimodal predictions
  (:func:`consensus_disagreement`). A clean-looking modality that contradicts the others (a
  conflicting or misaligned stream) is then down-weighted, which surprisal alone cannot do.

* ``reliability[b, m]`` = :func:`imro_jax.info.reliability_scores` (mi, entropy) on the simplex
  over the modalities present for sample b (absent ones get exactly 0): ``(relu(I) + eps) /
  (softplus(H) + eps)``; with I bounded by H(Y) and softplus(H) >= log 2, no weight can run away.

Entropies, the MI estimate and R are computed in float32 whatever the compute dtype, then cast.
Measured comparisons of these choices live in ``experiments/results/ablations``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from imro_jax.info import (
    Calibration,
    GaussianDensity,
    categorical_entropy,
    excess_surprisal,
    gaussian_entropy,
    gaussian_surprisal,
    reliability_scores,
)
from imro_jax.models.layers import EMBEDDING_INIT, ModalityDense, annotated, dense, layer_norm
from imro_jax.models.spec import ModelSpec

LOG_VAR_BOUND = 10.0
STATS = "reliability_stats"  # variable collection of the fitted embedding statistics


def bounded_log_variance(raw: jax.Array) -> jax.Array:
    """Soft bound ``B tanh(raw / B)`` with ``B = LOG_VAR_BOUND``: identity near 0, in ``(-B, B)``."""
    return LOG_VAR_BOUND * jnp.tanh(raw / LOG_VAR_BOUND)


def label_entropy(spec: ModelSpec) -> float:
    """H(Y) in nats used by the label-free MI estimate (see the module docstring)."""
    if spec.task == "regression":
        return 0.5 * math.log(2.0 * math.pi * math.e * spec.label_variance)
    return math.log(spec.num_outputs)


def predictive_entropy(unimodal: jax.Array, task: str) -> jax.Array:
    """Entropy of the unimodal predictive distribution, ``[batch, modality]`` in nats.

    Args:
      unimodal: head outputs ``[batch, modality, outputs]``: class/vocabulary logits, or
        ``(mean, log_variance)`` for regression.
      task: the model task.
    """
    if task == "regression":
        return gaussian_entropy(unimodal[..., 1:2])
    return categorical_entropy(unimodal)


class ReliabilityEstimate(NamedTuple):
    """Outputs of :class:`ReliabilityEstimator` (all ``[batch, modality, ...]``)."""

    unimodal: jax.Array  # [B, M, outputs]
    entropy: jax.Array  # [B, M]
    mi: jax.Array  # [B, M]
    reliability: jax.Array  # [B, M]
    embedding_mean: jax.Array | None  # [B, M, dim] ("gaussian" only)
    embedding_log_var: jax.Array | None  # [B, M, dim] ("gaussian" only)


class ReliabilityEstimator(nn.Module):
    """Per-modality unimodal heads plus the chosen entropy, the MI estimate and R.

    Attributes:
      spec: the model spec (task, sizes, ``reliability`` choices).
    """

    spec: ModelSpec

    @nn.compact
    def __call__(self, pooled: jax.Array, present: jax.Array, *, train: bool,
                 encoding: jax.Array | None = None) -> ReliabilityEstimate:
        """Estimates reliability.

        Args:
          pooled: per-modality pooled embeddings ``[batch, modality, dim]``.
          present: bool ``[batch, modality]``, the modalities present for each sample.
          train: training mode (enables the Gaussian embedding's sampling).
          encoding: ``[batch, modality, dim]`` what the surprisal scores (the model passes the
            mean input-token residuals before the encoders' final LayerNorm, which keep the inputs'
            magnitude); default ``pooled``.

        Returns:
          :class:`ReliabilityEstimate`.
        """
        spec = self.spec
        source = spec.reliability.entropy
        h = layer_norm(name="ln")(pooled)
        mean = log_var = None
        if source == "gaussian":
            mean = ModalityDense(spec.dim, ("embed", "mlp"), name="embedding_mean")(h)
            log_var = bounded_log_variance(
                ModalityDense(spec.dim, ("embed", "mlp"), name="embedding_log_var")(h)
            )
            h = mean
            if train:
                noise = jax.random.normal(self.make_rng("dropout"), mean.shape, mean.dtype)
                h = mean + jnp.exp(0.5 * log_var) * noise
        out_axis = "vocab" if spec.task == "generation" else "classes"
        hidden = nn.gelu(ModalityDense(spec.mlp_dim, ("embed", "mlp"), name="head_hidden")(h))
        unimodal = ModalityDense(spec.num_outputs, ("mlp", out_axis), name="head_out")(hidden)
        if spec.task == "regression":
            unimodal = unimodal.at[..., 1].set(bounded_log_variance(unimodal[..., 1]))

        pred_entropy = predictive_entropy(unimodal.astype(jnp.float32), spec.task)
        h_y = label_entropy(spec)
        if source == "surprisal":
            entropy = jax.lax.stop_gradient(self._excess_surprisal(pooled if encoding is None else encoding))
        elif source == "predictive":
            entropy = pred_entropy
        elif source == "gaussian":
            entropy = gaussian_entropy(log_var.astype(jnp.float32))
        else:  # "embedding"
            entropy = categorical_entropy(pooled.astype(jnp.float32))
        mi = jnp.clip(h_y - pred_entropy, 0.0, max(h_y, 0.0))
        rel = spec.reliability
        if rel.agreement > 0:
            first = reliability_scores(mi, entropy, eps=rel.eps, mask=present)
            entropy = entropy + rel.agreement * jax.lax.stop_gradient(
                consensus_disagreement(unimodal.astype(jnp.float32), first, present, spec.task)
            )
        reliability = reliability_scores(mi, entropy, eps=rel.eps, mask=present, normalize=rel.normalize)
        entropy, mi, reliability = (x.astype(unimodal.dtype) for x in (entropy, mi, reliability))
        return ReliabilityEstimate(unimodal, entropy, mi, reliability, mean, log_var)


    def _excess_surprisal(self, pooled: jax.Array) -> jax.Array:
        """Excess surprisal ``[batch, modality]`` in nats under the fitted statistics (0 if none)."""
        if not (self.is_initializing() or self.has_variable(STATS, "means")):
            return jnp.zeros(pooled.shape[:2], jnp.float32)
        stats = {name: self.variable(STATS, name, init).value for name, init in
                 initial_stats(self.spec, pooled.shape[1], pooled.shape[2]).items()}
        return embedding_excess_surprisal(pooled.astype(jnp.float32), stats)


def stats_classes(spec: ModelSpec) -> int:
    """K of the embedding density: the classes for classification, else one Gaussian."""
    return spec.num_classes if spec.task == "classification" else 1


def initial_stats(spec: ModelSpec, num_modalities: int, dim: int) -> dict:
    """Unfitted ``reliability_stats``: ``{name: () -> array}`` (a standard Gaussian, the largest
    finite threshold, so the excess surprisal is 0 until :func:`fit_reliability_stats` runs)."""
    k = stats_classes(spec)
    m = num_modalities
    return {
        "means": lambda: jnp.zeros((m, k, dim), jnp.float32),
        "log_prior": lambda: jnp.full((m, k), -math.log(k), jnp.float32),
        "precision": lambda: jnp.broadcast_to(jnp.eye(dim, dtype=jnp.float32), (m, dim, dim)),
        "log_det_cov": lambda: jnp.zeros((m,), jnp.float32),
        "location": lambda: jnp.zeros((m,), jnp.float32),
        "scale": lambda: jnp.ones((m,), jnp.float32),
        # the largest finite float: nothing is in excess (a checkpoint never holds a non-finite value)
        "threshold": lambda: jnp.full((m,), jnp.finfo(jnp.float32).max, jnp.float32),
    }


def density_of(stats: dict) -> GaussianDensity:
    """The per-modality densities (leading modality axis) held in a ``reliability_stats`` dict."""
    return GaussianDensity(stats["means"], stats["log_prior"], stats["precision"], stats["log_det_cov"])


def embedding_surprisal(pooled: jax.Array, stats: dict) -> jax.Array:
    """``-log p(e[b, m])`` in nats, ``[batch, modality]``, each modality under its own density."""
    per_modality = jax.vmap(gaussian_surprisal, in_axes=(1, 0), out_axes=1)
    return per_modality(pooled, density_of(stats))


def embedding_excess_surprisal(pooled: jax.Array, stats: dict) -> jax.Array:
    """Excess surprisal over the clean quantile, ``[batch, modality]`` nats (see module doc)."""
    calibration = Calibration(stats["location"], stats["scale"], stats["threshold"])
    return excess_surprisal(embedding_surprisal(pooled, stats), calibration)


def consensus_disagreement(unimodal: jax.Array, weights: jax.Array, present: jax.Array, task: str) -> jax.Array:
    r"""``KL(c_{-m} || q_m)`` in nats, ``[batch, modality]``: modality m against the others.

    .. math::

        c_{-m} = \frac{\sum_{m' \ne m} w_{m'} q_{m'}}{\sum_{m' \ne m} w_{m'}}, \qquad
        D_m = \mathrm{KL}(c_{-m} \,\|\, q_m),

    with ``q_m`` the unimodal predictive distribution (softmax of the logits; for regression a
    Gaussian, and ``c_{-m}`` the moment-matched Gaussian of the mixture) and ``w`` the weights
    of the present modalities. A modality with no other present modality gets 0.

    Args:
      unimodal: ``[batch, modality, outputs]`` head outputs (logits; regression: mean, log-var).
      weights: ``[batch, modality]`` non-negative weights of the others' votes.
      present: bool ``[batch, modality]``.
      task: the model task.
    """
    num = unimodal.shape[1]
    w = jnp.where(present, weights, 0.0)
    others = w[:, None, :] * (1.0 - jnp.eye(num, dtype=w.dtype))  # [B, m, m']
    total = jnp.sum(others, axis=-1, keepdims=True)
    others = others / jnp.where(total > 0, total, 1.0)
    if task == "regression":
        mean, var = unimodal[..., 0], jnp.exp(unimodal[..., 1])
        c_mean = jnp.einsum("bmn,bn->bm", others, mean)
        c_var = jnp.maximum(jnp.einsum("bmn,bn->bm", others, var + mean**2) - c_mean**2, 1e-12)
        kl = 0.5 * (jnp.log(var / c_var) + (c_var + (c_mean - mean) ** 2) / var - 1.0)
    else:
        log_q = jax.nn.log_softmax(unimodal, axis=-1)  # [B, M, C]
        consensus = jnp.einsum("bmn,bnc->bmc", others, jnp.exp(log_q))
        log_c = jnp.log(jnp.maximum(consensus, 1e-30))
        kl = jnp.sum(jnp.where(consensus > 0, consensus * (log_c - log_q), 0.0), axis=-1)
    return jnp.where(present & (total[..., 0] > 0), jnp.maximum(kl, 0.0), 0.0)


class LabelCritic(nn.Module):
    """Separable critic between each modality's embedding and a label embedding.

    ``scores[m, i, j] = <g_m(e[i, m]), h(y_j)> / sqrt(k)``: row i holds modality m of sample i
    against every label in the batch, positives on the diagonal (the convention of
    :func:`imro_jax.info.infonce_lower_bound`). ``g_m`` is a per-modality linear map, ``h`` a
    class embedding (classification) or a one-hidden-layer MLP of the scalar label (regression).

    Attributes:
      spec: the model spec.
      features: critic embedding width ``k``.
    """

    spec: ModelSpec
    features: int

    @nn.compact
    def __call__(self, pooled: jax.Array, label: jax.Array) -> jax.Array:
        """Args: pooled ``[batch, modality, dim]``; label ``[batch]``. Returns ``[modality, batch, batch]``."""
        g = ModalityDense(self.features, ("embed", "mlp"), name="modality_proj")(pooled)  # [B, M, k]
        if self.spec.task == "classification":
            table = self.param(
                "label_embedding", annotated(EMBEDDING_INIT, ("classes", "mlp")),
                (self.spec.num_classes, self.features),
            )
            h = jnp.asarray(table)[label]  # host (numpy) params too, e.g. restored ones, under jit
        else:
            y = label.astype(pooled.dtype)[:, None]
            h = dense(self.features, ("embed", "mlp"), name="label_proj")(
                nn.gelu(dense(self.features, ("classes", "mlp"), name="label_hidden")(y))
            )
        return jnp.einsum("imk,jk->mij", g, h) / math.sqrt(self.features)
