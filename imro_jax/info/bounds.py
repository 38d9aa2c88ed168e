r"""Variational lower bounds on mutual information from a critic score matrix, in nats.

Every bound takes ``scores[i, j] = f(x_i, y_j)`` of shape ``[K, K]`` computed on a batch of K
joint samples ``(x_i, y_i) ~ p(x, y)``: the diagonal holds the K positive (joint) pairs, the
K(K - 1) off-diagonal entries are treated as samples from the product of marginals
``p(x) p(y)``. Definitions follow Poole et al. (2019) and their reference code. For a leading
batch axis use ``jax.vmap``.

The estimators are pure ``jnp`` and jit-/vmap-/grad-safe. Finite inputs give finite values
(huge scores included; NWJ/TUBA, whose value contains ``exp(f)``, may return ``-inf`` when
``exp`` overflows). ``-inf`` entries are allowed, e.g. to mask negative pairs; a ``-inf``
positive pair gives a ``-inf`` estimate, never NaN.

Bias/variance at a glance (Poole et al. 2019, Song & Ermon 2020; d = 20 Gaussians, K = 64):

========  ===================================  ======================================
bound     bias                                 variance
========  ===================================  ======================================
InfoNCE   large once I nears log K (capped)    low
NWJ/TUBA  none for a fixed critic              grows like e^I
DV/MINE   upward, from the log of a mean       grows like e^I
JS        NWJ value; -1/e at the JS optimum    as NWJ; stable critic training
SMILE     downward, grows with I (clip tau)    bounded by the clip
========  ===================================  ======================================
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from imro_jax.info._checks import as_float_array, check_score_matrix


def _off_diagonal(size: int) -> jax.Array:
    """Boolean ``[K, K]`` mask of the off-diagonal (negative) pairs."""
    return ~jnp.eye(size, dtype=bool)


def _mean_diagonal(scores: jax.Array) -> jax.Array:
    """Mean of the positive-pair scores, ``mean_i scores[i, i]``."""
    return jnp.mean(jnp.diagonal(scores))


def _logmeanexp_off_diagonal(scores: jax.Array) -> jax.Array:
    """``log( 1/(K(K-1)) sum_{i != j} exp(scores[i, j]) )``, computed stably."""
    size = scores.shape[0]
    masked = jnp.where(_off_diagonal(size), scores, -jnp.inf)
    return jax.nn.logsumexp(masked) - math.log(size * (size - 1))


def _mean_off_diagonal(values: jax.Array) -> jax.Array:
    """Mean over the K(K - 1) off-diagonal entries."""
    size = values.shape[0]
    return jnp.sum(jnp.where(_off_diagonal(size), values, 0.0)) / (size * (size - 1))


def _subtract(minuend: jax.Array, subtrahend: jax.Array) -> jax.Array:
    """``minuend - subtrahend`` with ``-inf - (-inf) = -inf`` (a -inf positive term wins)."""
    return jnp.where(jnp.isneginf(minuend), -jnp.inf, minuend - subtrahend)


def _log_or_neginf(value: float) -> float:
    """``log(value)`` for value > 0, ``-inf`` for value == 0."""
    return math.log(value) if value > 0 else -math.inf


def _value_with_gradient_of(value: jax.Array, surrogate: jax.Array) -> jax.Array:
    """Returns ``value`` in the forward pass and the gradient of ``surrogate`` in the backward pass.

    ``surrogate - stop_gradient(surrogate)`` is exactly 0 for finite values; a non-finite
    surrogate is zeroed first so that an infinite value never turns into NaN.
    """
    finite_surrogate = jnp.where(jnp.isfinite(surrogate), surrogate, 0.0)
    return finite_surrogate - jax.lax.stop_gradient(finite_surrogate) + jax.lax.stop_gradient(value)


def infonce_lower_bound(scores: ArrayLike) -> jax.Array:
    r"""InfoNCE (contrastive predictive coding) lower bound.

    .. math::

        I_{\mathrm{NCE}} = \log K + \frac1K \sum_i \Big( f(x_i, y_i)
            - \log \sum_j e^{f(x_i, y_j)} \Big) \;\le\; \log K.

    Each summand is a log-softmax, so the estimate never exceeds ``log K``: it saturates when
    the true MI approaches ``log K`` (large bias there) but has low variance. Invariant to
    adding any function of ``x_i`` to row i. Optimal critic: ``log p(y|x) + c(x)``.

    Args:
      scores: ``[K, K]`` critic scores, positives on the diagonal.

    Returns:
      Scalar estimate in nats, ``<= log K``.

    References:
      van den Oord, Li & Vinyals, "Representation learning with contrastive predictive
      coding", 2018; Poole et al., "On variational bounds of mutual information", ICML 2019.
    """
    scores = check_score_matrix(scores, "infonce_lower_bound")
    size = scores.shape[0]
    per_row = _subtract(jnp.diagonal(scores), jax.nn.logsumexp(scores, axis=1))
    return math.log(size) + jnp.mean(per_row)


def tuba_lower_bound(scores: ArrayLike, log_baseline: ArrayLike = 0.0) -> jax.Array:
    r"""Tractable unnormalised Barber-Agakov (TUBA) lower bound.

    .. math::

        I_{\mathrm{TUBA}} = 1 + \frac1K \sum_i \big(f(x_i, y_i) - \log a(y_i)\big)
            - \frac{1}{K(K-1)} \sum_{i \ne j} e^{f(x_i, y_j) - \log a(y_j)}.

    Unbiased for a fixed critic (linear in ``e^f``), but its variance grows like ``e^I``.
    Tight for ``f = log a(y) + log p(y|x)/p(y)``.

    Args:
      scores: ``[K, K]`` critic scores, positives on the diagonal.
      log_baseline: ``log a(y_j)``: a scalar or ``[K]`` (one per column, i.e. per ``y_j``).

    Returns:
      Scalar estimate in nats.

    Raises:
      ValueError: if ``log_baseline`` is neither a scalar nor ``[K]``.

    References:
      Poole et al., "On variational bounds of mutual information", ICML 2019, Eq. (7).
    """
    scores = check_score_matrix(scores, "tuba_lower_bound")
    log_baseline = as_float_array(log_baseline)
    if log_baseline.shape not in ((), (scores.shape[0],)):
        raise ValueError(
            "tuba_lower_bound expects log_baseline of shape [] or [K] (one per y_j) with "
            f"K={scores.shape[0]}; got shape {log_baseline.shape}"
        )
    shifted = scores - log_baseline  # broadcasts a [K] baseline along the y (column) axis
    joint_term = _mean_diagonal(shifted)
    # exp(-inf) = 0 on the masked diagonal, so neither the value nor the gradient sees it.
    marginal_term = _mean_off_diagonal(
        jnp.exp(jnp.where(_off_diagonal(scores.shape[0]), shifted, -jnp.inf))
    )
    return 1.0 + joint_term - marginal_term


def nwj_lower_bound(scores: ArrayLike) -> jax.Array:
    r"""Nguyen-Wainwright-Jordan (f-GAN KL, MINE-f) lower bound, ``TUBA(f - 1, a = 1)``.

    .. math::

        I_{\mathrm{NWJ}} = \frac1K \sum_i f(x_i, y_i)
            - \frac{1}{e\,K(K-1)} \sum_{i \ne j} e^{f(x_i, y_j)}.

    Unbiased for a fixed critic; variance grows like ``e^I``. Tight for the optimal critic
    ``f = 1 + log p(y|x)/p(y)``.

    Args:
      scores: ``[K, K]`` critic scores, positives on the diagonal.

    Returns:
      Scalar estimate in nats.

    References:
      Nguyen, Wainwright & Jordan, "Estimating divergence functionals and the likelihood ratio
      by convex risk minimization", IEEE Trans. Inf. Theory 2010; Poole et al. 2019.
    """
    scores = check_score_matrix(scores, "nwj_lower_bound")
    return tuba_lower_bound(scores - 1.0, 0.0)


def dv_lower_bound(scores: ArrayLike) -> jax.Array:
    r"""Donsker-Varadhan lower bound (as in MINE, without the moving average).

    .. math::

        I_{\mathrm{DV}} = \frac1K \sum_i f(x_i, y_i)
            - \log \frac{1}{K(K-1)} \sum_{i \ne j} e^{f(x_i, y_j)}.

    Invariant to adding a constant to ``f``; tight for ``f = log p(y|x)/p(y) + c``. The log of
    a sample mean makes it slightly biased upward for a fixed critic (Jensen), so strictly it
    is not a lower bound on a finite batch; variance grows like ``e^I``.

    Args:
      scores: ``[K, K]`` critic scores, positives on the diagonal.

    Returns:
      Scalar estimate in nats.

    References:
      Donsker & Varadhan, 1983; Belghazi et al., "Mutual information neural estimation",
      ICML 2018; Poole et al. 2019.
    """
    scores = check_score_matrix(scores, "dv_lower_bound")
    return _subtract(_mean_diagonal(scores), _logmeanexp_off_diagonal(scores))


def _js_fgan_objective(scores: jax.Array) -> jax.Array:
    r"""Jensen-Shannon f-GAN objective ``E_p[-softplus(-f)] - E_{p(x)p(y)}[softplus(f)]``.

    A lower bound on ``2 JS - log 4``; maximised by ``f = log p(y|x)/p(y)`` (a logistic
    classifier of joint vs. marginal pairs).
    """
    positive_term = jnp.mean(-jax.nn.softplus(-jnp.diagonal(scores)))
    negative_term = _mean_off_diagonal(jax.nn.softplus(scores))
    return positive_term - negative_term


def js_lower_bound(scores: ArrayLike) -> jax.Array:
    r"""NWJ estimate from a critic trained with the Jensen-Shannon f-GAN objective.

    Value: :func:`nwj_lower_bound` of ``scores``. Gradient: that of the JS f-GAN objective

    .. math::

        J_{\mathrm{JS}} = -\frac1K \sum_i \mathrm{softplus}(-f(x_i, y_i))
            - \frac{1}{K(K-1)} \sum_{i \ne j} \mathrm{softplus}(f(x_i, y_j)),

    (``value + stop_gradient`` trick, as in Poole et al.'s code). Training the critic as a
    joint-vs-marginal classifier is stable and low-variance; the reported value keeps the
    NWJ variance (``e^I``). Note: the JS objective is maximised by ``f = log p(y|x)/p(y)``,
    for which the NWJ value is ``I - 1/e`` (NWJ's own optimum is that critic plus 1), so a
    well-trained JS critic reports about 0.37 nats below the true MI.

    Args:
      scores: ``[K, K]`` critic scores, positives on the diagonal.

    Returns:
      Scalar estimate in nats (the NWJ value).

    References:
      Nowozin, Cseke & Tomioka, "f-GAN", NeurIPS 2016; Hjelm et al., "Deep InfoMax",
      ICLR 2019; Poole et al. 2019.
    """
    scores = check_score_matrix(scores, "js_lower_bound")
    return _value_with_gradient_of(nwj_lower_bound(scores), _js_fgan_objective(scores))


def smile_lower_bound(scores: ArrayLike, clip: float = 5.0) -> jax.Array:
    r"""SMILE: DV with clipped negative scores as the value, JS f-GAN objective as the gradient.

    .. math::

        I_{\mathrm{SMILE}} = \frac1K \sum_i f(x_i, y_i)
            - \log \frac{1}{K(K-1)} \sum_{i \ne j} e^{\mathrm{clip}(f(x_i, y_j), -\tau, \tau)}.

    Clipping bounds the variance of the partition-function term (it can no longer explode like
    ``e^I``) at the price of a bias that grows with the MI; ``tau -> inf`` recovers DV. The
    gradient is that of the JS f-GAN objective on the unclipped scores (see
    :func:`js_lower_bound`).

    Args:
      scores: ``[K, K]`` critic scores, positives on the diagonal.
      clip: tau > 0, the clipping threshold for the negative-pair scores.

    Returns:
      Scalar estimate in nats.

    References:
      Song & Ermon, "Understanding the limitations of variational mutual information
      estimators", ICLR 2020.
    """
    scores = check_score_matrix(scores, "smile_lower_bound")
    clipped = jnp.clip(scores, -clip, clip)
    value = _subtract(_mean_diagonal(scores), _logmeanexp_off_diagonal(clipped))
    return _value_with_gradient_of(value, _js_fgan_objective(scores))


def mine_lower_bound(
    scores: ArrayLike, ema: ArrayLike, decay: float = 0.99
) -> tuple[jax.Array, jax.Array]:
    r"""MINE: the DV value with the bias-corrected, moving-average gradient.

    The DV gradient :math:`\nabla \bar f_{\mathrm{pos}} - \nabla \hat Z / \hat Z` with
    :math:`\hat Z = \frac{1}{K(K-1)} \sum_{i \ne j} e^{f(x_i, y_j)}` is biased because
    :math:`\hat Z` is a minibatch estimate in a denominator. MINE replaces that denominator by
    an exponential moving average over minibatches,

    .. math::

        \bar Z_t = \beta\, \bar Z_{t-1} + (1 - \beta)\, \hat Z_t, \qquad
        \nabla I_{\mathrm{MINE}} = \nabla \bar f_{\mathrm{pos}} - \nabla \hat Z_t / \bar Z_t,

    while the returned value is the DV estimate (:func:`dv_lower_bound`). Pass ``ema = 0`` at
    the first step: a non-positive ``ema`` means "no history" and the average starts at
    :math:`\hat Z_1`. Computed in log space; for astronomically large scores the average
    overflows to ``inf`` and the correction term then vanishes (never NaN).

    Args:
      scores: ``[K, K]`` critic scores, positives on the diagonal.
      ema: scalar running average :math:`\bar Z_{t-1}` of the off-diagonal ``mean(exp f)``.
      decay: beta in [0, 1); 0 gives the plain DV gradient.

    Returns:
      ``(estimate, new_ema)``: the DV value (with the MINE gradient) and :math:`\bar Z_t`
      (no gradient flows into it).

    Raises:
      ValueError: if ``ema`` is not a scalar or ``decay`` is outside [0, 1).

    References:
      Belghazi et al., "Mutual information neural estimation", ICML 2018, Sec. 3.2.
    """
    scores = check_score_matrix(scores, "mine_lower_bound")
    ema = jax.lax.stop_gradient(as_float_array(ema))
    if ema.shape != ():
        raise ValueError(f"mine_lower_bound expects a scalar ema; got shape {ema.shape}")
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"mine_lower_bound expects 0 <= decay < 1; got {decay}")
    log_batch_z = _logmeanexp_off_diagonal(scores)
    log_ema = jnp.log(jnp.maximum(ema, 0.0))  # -inf when there is no history
    log_new_ema = jnp.where(
        ema > 0,
        jnp.logaddexp(_log_or_neginf(decay) + log_ema, math.log1p(-decay) + log_batch_z),
        log_batch_z,
    )
    log_new_ema = jax.lax.stop_gradient(log_new_ema)
    # d(hat Z)/hat Z_bar = exp(log hat Z - log bar Z) * d(log hat Z).
    weight = jax.lax.stop_gradient(jnp.exp(log_batch_z - log_new_ema))
    surrogate = _mean_diagonal(scores) - weight * log_batch_z
    value = _subtract(_mean_diagonal(scores), log_batch_z)
    return _value_with_gradient_of(value, surrogate), jnp.exp(log_new_ema)


def barber_agakov_lower_bound(
    log_q_y_given_x: ArrayLike, label_entropy: ArrayLike
) -> jax.Array:
    r"""Barber-Agakov lower bound from a classifier head: ``H(Y) - E[-log q(y|x)]``.

    .. math::

        I(X; Y) \ge H(Y) + \mathbb{E}_{p(x, y)}[\log q(y \mid x)],

    tight when ``q(y|x) = p(y|x)``; the gap is ``E_x KL(p(y|x) || q(y|x))``. Needs the (known
    or estimated) label entropy; the cross-entropy term is a plain sample mean, so its variance
    is that of the per-sample log-likelihood (low).

    Args:
      log_q_y_given_x: log-probabilities of the true labels under the classifier, ``[batch]``
        (``<= 0``; e.g. ``-optax.softmax_cross_entropy_with_integer_labels(logits, y)``).
      label_entropy: H(Y) in nats, a scalar (e.g. ``log C`` for balanced classes).

    Returns:
      Scalar estimate in nats; NaN under ``jit`` if a log-probability is positive.

    Raises:
      ValueError: if ``label_entropy`` is not a scalar, ``log_q_y_given_x`` is empty, or
        (outside ``jit``) a log-probability is positive (not a probability; the bound would
        exceed H(Y)).

    References:
      Barber & Agakov, "The IM algorithm: a variational approach to information
      maximization", NeurIPS 2003; Poole et al. 2019, Eq. (2).
    """
    log_q = as_float_array(log_q_y_given_x)
    label_entropy = as_float_array(label_entropy)
    if label_entropy.shape != ():
        raise ValueError(
            f"barber_agakov_lower_bound expects a scalar label_entropy; got shape "
            f"{label_entropy.shape}"
        )
    if log_q.size == 0:
        raise ValueError("barber_agakov_lower_bound got an empty log_q_y_given_x")
    is_log_prob = jnp.all(~(log_q > 0))  # NaN passes here and comes out as NaN
    if not isinstance(is_log_prob, jax.core.Tracer) and not bool(is_log_prob):
        raise ValueError(
            "barber_agakov_lower_bound expects log-probabilities <= 0 in log_q_y_given_x; got "
            f"a maximum of {float(jnp.nanmax(log_q))}"
        )
    return jnp.where(is_log_prob, label_entropy + jnp.mean(log_q), jnp.nan)
