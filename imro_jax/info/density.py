"""Per-sample surprisal -log p(x) and its calibration: the paper's H(X_m) for one sample.

The paper defines a modality's entropy as H(X_m) = -sum_x p(x) log p(x), the entropy of its
*input* distribution. Its per-sample form is the surprisal ``-log p(x_m)`` of the sample under
the distribution of clean data: large for a sample that looks like nothing seen in training
(noise, a dead sensor), about the entropy for a typical one (E[-log p(X)] = H(X)). This module
holds pure functions to fit such densities and score samples with them:

* a Gaussian density: class-conditional means with one shared covariance (the model behind
  linear discriminant analysis and the Mahalanobis OOD score of Lee et al. 2018), shrunk
  towards a multiple of the identity, optionally with a low-rank (probabilistic PCA) structure;
  its statistics are additive (:class:`GaussianStats`), so a fit over shards or hosts is a sum;
* the pointwise Kozachenko-Leonenko kNN surprisal (its mean over the samples is
  :func:`imro_jax.info.knn_entropy`);
* a robust calibration of scores against held-out clean scores, and the *excess surprisal*
  over a clean quantile, in nats.

All functions are pure ``jnp`` (jit-, vmap- and grad-safe), the fitted statistics are
explicit pytrees (NamedTuples), and everything is in nats.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln
from jax.typing import ArrayLike

from imro_jax.info._checks import as_float_array, check_finite, check_samples

MAD_TO_STD = 1.482602218505602  # 1 / Phi^{-1}(3/4): MAD of a Gaussian times this is its std


class GaussianStats(NamedTuple):
    """Additive sufficient statistics of a class-conditional Gaussian with shared covariance.

    Sums over samples, so the statistics of a dataset are the sum of those of its parts (shards,
    hosts, batches). Shapes: K classes (1 for a single Gaussian), D dimensions.

    Attributes:
      count: ``[K]`` number (or total weight) of samples per class.
      total: ``[K, D]`` sum of the samples of each class.
      scatter: ``[D, D]`` sum over all samples of ``x x^T``.
    """

    count: jax.Array
    total: jax.Array
    scatter: jax.Array


class GaussianDensity(NamedTuple):
    """A fitted Gaussian mixture ``p(x) = sum_k pi_k N(x; mu_k, Sigma)`` (shared Sigma).

    Attributes:
      means: ``[K, D]`` class means mu_k.
      log_prior: ``[K]`` log pi_k (classes never seen get ``-inf``).
      precision: ``[D, D]`` Sigma^{-1}.
      log_det_cov: ``[]`` log det Sigma.
    """

    means: jax.Array
    log_prior: jax.Array
    precision: jax.Array
    log_det_cov: jax.Array


class Calibration(NamedTuple):
    """A robust reference for scores: ``z = (s - location) / scale``, flagged beyond ``threshold``.

    Attributes:
      location: median of the reference (clean, held-out) scores.
      scale: their MAD times 1.4826 (the std for Gaussian scores), floored to stay positive.
      threshold: the reference quantile of z (e.g. the 99th percentile).
    """

    location: jax.Array
    scale: jax.Array
    threshold: jax.Array


def gaussian_sufficient_stats(
    x: ArrayLike, label: ArrayLike | None = None, *, num_classes: int = 1, weight: ArrayLike | None = None
) -> GaussianStats:
    """Sufficient statistics of samples for :func:`fit_gaussian_density`.

    Args:
      x: samples ``[n, d]``.
      label: int ``[n]`` class of each sample in ``[0, num_classes)``; None: one class.
      num_classes: K.
      weight: optional ``[n]`` sample weights (0 leaves a sample out, e.g. an absent modality).

    Returns:
      :class:`GaussianStats` (float32 or wider).
    """
    x = check_samples(x, "gaussian_sufficient_stats")
    n = x.shape[0]
    w = jnp.ones(n, x.dtype) if weight is None else jnp.asarray(weight, x.dtype).reshape(n)
    label = jnp.zeros(n, jnp.int32) if label is None else jnp.asarray(label).reshape(n)
    onehot = jax.nn.one_hot(label, num_classes, dtype=x.dtype) * w[:, None]  # [n, K]
    xw = x * w[:, None]
    return GaussianStats(count=onehot.sum(0), total=onehot.T @ x, scatter=xw.T @ x)


def fit_gaussian_density(stats: GaussianStats, *, shrinkage: float = 0.1, rank: int | None = None) -> GaussianDensity:
    r"""Fits class means and one shared, shrunk covariance from :class:`GaussianStats`.

    .. math::

        \mu_k = \frac{t_k}{n_k}, \quad
        S = \frac{\sum_i x_i x_i^\top - \sum_k n_k \mu_k \mu_k^\top}{\max(N - K_{seen}, 1)}, \quad
        \Sigma = (1 - \alpha) S + \alpha \frac{\mathrm{tr}\,S}{D} I.

    With ``rank = r`` the eigenvalues of Sigma beyond the r largest are replaced by their mean:
    the maximum-likelihood probabilistic PCA covariance ``W W^T + s^2 I`` (Tipping & Bishop
    1999), i.e. a Mahalanobis distance in the top-r subspace plus an isotropic residual term.

    Args:
      stats: summed statistics (K classes, D dims).
      shrinkage: alpha in [0, 1]; > 0 keeps Sigma invertible when N is small against D.
      rank: None (full covariance) or r in [1, D].

    Returns:
      :class:`GaussianDensity`.
    """
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    count, total, scatter = (jnp.asarray(s) for s in stats)
    dim = scatter.shape[-1]
    if rank is not None and not (isinstance(rank, int) and 1 <= rank <= dim):
        raise ValueError(f"rank must be None or an int in [1, {dim}], got {rank!r}")
    seen = count > 0
    means = total / jnp.where(seen, count, 1.0)[:, None]
    n = jnp.sum(count)
    between = (means * count[:, None]).T @ means
    cov = (scatter - between) / jnp.maximum(n - jnp.sum(seen), 1.0)
    cov = 0.5 * (cov + cov.T)
    cov = (1.0 - shrinkage) * cov + shrinkage * jnp.trace(cov) / dim * jnp.eye(dim, dtype=cov.dtype)
    eigval, eigvec = jnp.linalg.eigh(cov)  # ascending
    floor = jnp.finfo(cov.dtype).eps * jnp.maximum(jnp.max(eigval), jnp.finfo(cov.dtype).tiny) * dim
    eigval = jnp.maximum(eigval, floor)
    if rank is not None and rank < dim:
        tail = jnp.arange(dim) < dim - rank
        residual = jnp.sum(jnp.where(tail, eigval, 0.0)) / (dim - rank)
        eigval = jnp.where(tail, residual, eigval)
    precision = (eigvec / eigval) @ eigvec.T
    log_prior = jnp.where(seen, jnp.log(jnp.where(seen, count, 1.0) / jnp.maximum(n, 1e-30)), -jnp.inf)
    return GaussianDensity(means, log_prior, 0.5 * (precision + precision.T), jnp.sum(jnp.log(eigval)))


def mahalanobis_sq(x: ArrayLike, density: GaussianDensity) -> jax.Array:
    r"""Squared Mahalanobis distance of each sample to each class mean, ``[n, K]``.

    :math:`d_k(x)^2 = (x - \mu_k)^\top \Sigma^{-1} (x - \mu_k)`, from exact differences (no
    ``|x|^2 - 2 x mu`` expansion, which loses precision at large scale).
    """
    x = as_float_array(x)
    diff = x[..., None, :] - density.means  # [..., K, D]
    return jnp.einsum("...kd,de,...ke->...k", diff, density.precision, diff)


def gaussian_log_density(x: ArrayLike, density: GaussianDensity) -> jax.Array:
    r"""``log p(x)`` under the fitted mixture, in nats, ``[n]``.

    .. math::

        \log p(x) = \log \sum_k \pi_k \exp\!\Big(-\tfrac12\big(D \log 2\pi + \log\det\Sigma
            + d_k(x)^2\big)\Big).
    """
    dim = density.means.shape[-1]
    log_normal = -0.5 * (dim * math.log(2.0 * math.pi) + density.log_det_cov + mahalanobis_sq(x, density))
    return jax.nn.logsumexp(log_normal + density.log_prior, axis=-1)


def gaussian_surprisal(x: ArrayLike, density: GaussianDensity) -> jax.Array:
    """Surprisal ``-log p(x)`` in nats, ``[n]``: the per-sample form of H(X) (its mean over
    samples of p estimates the differential entropy; for one Gaussian it is exactly
    ``0.5 (D log 2 pi e + log det Sigma)`` in expectation)."""
    return -gaussian_log_density(x, density)


def knn_surprisal(x: ArrayLike, reference: ArrayLike, k: int = 3, *, exclude_self: bool = False) -> jax.Array:
    r"""Pointwise Kozachenko-Leonenko surprisal of queries against a reference sample.

    .. math::

        -\log \hat p(x) = \psi(n) - \psi(k) + \log V_d + d \log \varepsilon_k(x),
        \qquad V_d = \frac{\pi^{d/2}}{\Gamma(d/2 + 1)},

    with :math:`\varepsilon_k(x)` the distance from x to its k-th nearest reference point and n
    the number of reference points. With ``exclude_self=True`` and
    ``x = reference`` (each point's own zero distance skipped, n - 1 neighbours) the mean of the
    result is :func:`imro_jax.info.knn_entropy` exactly.

    Args:
      x: queries ``[q, d]``.
      reference: clean reference samples ``[n, d]``.
      k: neighbour order (>= 1).
      exclude_self: skip zero distances (use when the queries are the reference points).

    Returns:
      ``[q]`` surprisal in nats.

    References:
      Kozachenko & Leonenko 1987; Kraskov, Stoegbauer & Grassberger, PRE 2004, Eq. (20).
    """
    x = check_samples(x, "knn_surprisal")
    reference = check_samples(reference, "knn_surprisal", "reference")
    n, d = reference.shape
    if x.shape[1] != d:
        raise ValueError(f"knn_surprisal: x has dimension {x.shape[1]}, reference {d}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"knn_surprisal needs an integer k >= 1; got {k!r}")
    available = n - 1 if exclude_self else n  # neighbours a query can have
    if available < k:
        raise ValueError(f"knn_surprisal needs at least k={k} reference neighbours; got {available}")
    check_finite(reference, "knn_surprisal", "reference")
    # Scale-safe: distances in units of the reference's overall spread, restored in the log.
    scale = jnp.maximum(jnp.max(jnp.abs(reference)), jnp.finfo(reference.dtype).tiny)

    def kth(row):
        sq = jnp.sum(((reference - row) / scale) ** 2, axis=-1)
        if exclude_self:
            sq = jnp.where(sq > 0, sq, jnp.inf)
        return -jax.lax.top_k(-sq, k)[0][k - 1]

    sq_eps = jax.lax.map(kth, x, batch_size=min(256, x.shape[0]))
    sq_eps = jnp.maximum(sq_eps, jnp.finfo(x.dtype).tiny)
    log_unit_ball = 0.5 * d * math.log(math.pi) - gammaln(0.5 * d + 1.0)
    out = digamma(float(n)) - digamma(float(k)) + log_unit_ball + d * (0.5 * jnp.log(sq_eps) + jnp.log(scale))
    return jnp.where(jnp.all(jnp.isfinite(x), axis=-1), out, jnp.nan)


def fit_calibration(reference_scores: ArrayLike, *, quantile: float = 0.99, axis: int = 0,
                    weight: ArrayLike | None = None) -> Calibration:
    """Robust location, scale and a flagging threshold from clean held-out scores.

    ``location`` is the median, ``scale`` the MAD x 1.4826 (floored at 1e-6 of the median
    magnitude, and at 1e-12), ``threshold`` the ``quantile`` of the robust z-scores.

    Args:
      reference_scores: e.g. ``[n]`` or ``[n, modality]`` surprisals of clean samples that were
        *not* used to fit the density (out-of-fold), so that they are as typical as test data.
      quantile: in (0, 1).
      axis: the sample axis.
      weight: optional boolean ``[n, ...]`` like ``reference_scores``: which entries to use
        (e.g. the modality was present). Entries with weight False are ignored.

    Returns:
      :class:`Calibration` with ``axis`` removed.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    s = as_float_array(reference_scores)
    if s.shape[axis] == 0:
        raise ValueError("fit_calibration needs at least one reference score")
    if weight is not None:
        s = jnp.where(jnp.asarray(weight, bool), s, jnp.nan)
    location = jnp.nanmedian(s, axis=axis)
    spread = jnp.nanmedian(jnp.abs(s - jnp.expand_dims(location, axis)), axis=axis) * MAD_TO_STD
    scale = jnp.maximum(spread, jnp.maximum(1e-6 * jnp.abs(location), 1e-12))
    z = (s - jnp.expand_dims(location, axis)) / jnp.expand_dims(scale, axis)
    threshold = jnp.nanquantile(z, quantile, axis=axis)
    fallback = lambda v, default: jnp.where(jnp.isfinite(v), v, default)  # noqa: E731 (no reference rows)
    return Calibration(fallback(location, 0.0), fallback(scale, 1.0),
                       fallback(threshold, jnp.finfo(threshold.dtype).max))


def robust_z(scores: ArrayLike, calibration: Calibration) -> jax.Array:
    """``(s - location) / scale``: how many robust standard deviations above typical."""
    return (as_float_array(scores) - calibration.location) / calibration.scale


def excess_surprisal(scores: ArrayLike, calibration: Calibration) -> jax.Array:
    r"""Surprisal beyond the clean threshold, in nats, smoothly clipped at 0.

    .. math::

        e(s) = \sigma_s \,\mathrm{softplus}\!\Big(\frac{s - s_q}{\sigma_s}\Big),
        \qquad s_q = \mathrm{location} + \mathrm{threshold}\cdot\sigma_s,

    about 0 for a sample as typical as the clean reference and about ``s - s_q`` nats (the
    log-likelihood ratio against the least typical clean samples) for an atypical one. An
    infinite threshold (nothing fitted) gives 0.
    """
    s = as_float_array(scores)
    cut = calibration.location + calibration.threshold * calibration.scale
    excess = calibration.scale * jax.nn.softplus((s - cut) / calibration.scale)
    return jnp.where(jnp.isinf(cut) & (cut > 0), jnp.zeros_like(excess), excess)
