"""Entropy estimators, in nats: categorical from logits, diagonal Gaussian, and kNN (samples).

All functions are pure ``jnp``: jit-, vmap- and grad-safe, no hidden state.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln
from jax.typing import ArrayLike

from imro_jax.info._checks import as_float_array, check_finite, check_samples


def categorical_entropy(logits: ArrayLike, axis: int = -1) -> jax.Array:
    r"""Shannon entropy of the categorical distribution ``softmax(logits)``.

    .. math::

        H(p) = -\sum_c p_c \log p_c, \qquad p = \mathrm{softmax}(\mathrm{logits}),

    computed from ``log_softmax`` with the convention ``0 log 0 = 0``: classes masked with
    ``-inf`` logits (or whose probability underflows to 0) contribute exactly 0 and get a zero,
    not NaN, gradient. Huge finite logits are fine (one-hot limit, H = 0). A slice whose
    logits are all ``-inf`` is an empty distribution; its entropy is defined as 0. A NaN logit
    makes its slice's entropy NaN (never a number).

    Args:
      logits: unnormalised log-probabilities, e.g. ``[batch, classes]``; ``-inf`` masks a class.
      axis: the class axis.

    Returns:
      Entropy in nats with ``axis`` removed, e.g. ``[batch]``; in ``[0, log C]``.

    Example:
      >>> float(categorical_entropy(jnp.zeros(4)))  # log 4
      1.386...
    """
    logits = as_float_array(logits)
    has_mass = jnp.any(~jnp.isneginf(logits), axis=axis, keepdims=True)  # NaN counts: NaN out
    # An all -inf slice would give NaN in log_softmax; give it placeholder logits and zero below.
    safe_logits = jnp.where(has_mass, logits, 0.0)
    log_p = jax.nn.log_softmax(safe_logits, axis=axis)
    p = jnp.exp(log_p)
    # p * log p with 0 log 0 = 0; the inner where keeps -inf out of the product (and its grad).
    plogp = p * jnp.where(p > 0, log_p, 0.0)
    entropy = -jnp.sum(plogp, axis=axis)
    return jnp.where(jnp.squeeze(has_mass, axis=axis), entropy, 0.0)


def gaussian_entropy(log_var: ArrayLike, axis: int = -1) -> jax.Array:
    r"""Differential entropy of a diagonal Gaussian, summed over ``axis``.

    .. math::

        H(\mathcal{N}(\mu, \mathrm{diag}\,\sigma^2))
            = \sum_i \tfrac12 \big(\log(2\pi e) + \log\sigma_i^2\big).

    It does not depend on the mean and is negative for small variances (a density, not a
    probability mass).

    Args:
      log_var: log-variances ``log sigma_i^2``, e.g. ``[batch, dim]``.
      axis: the dimension axis to sum over.

    Returns:
      Entropy in nats with ``axis`` removed, e.g. ``[batch]``.

    Example:
      >>> float(gaussian_entropy(jnp.zeros(1)))  # 0.5 * log(2 pi e)
      1.4189...
    """
    log_var = as_float_array(log_var)
    return 0.5 * jnp.sum(math.log(2.0 * math.pi * math.e) + log_var, axis=axis)


def _kth_neighbour_sq_distance(x: jax.Array, k: int, block_size: int = 256) -> jax.Array:
    """Squared Euclidean distance from each point to its k-th nearest distinct neighbour.

    Exact differences (not the |a|^2 + |b|^2 - 2ab expansion) so that duplicates give exactly 0,
    computed in row blocks with O(block_size * n * d) memory. Zero distances (the point itself
    and exact duplicates) are excluded; if fewer than k distinct neighbours exist the result is
    +inf.

    Args:
      x: samples ``[n, d]``.
      k: neighbour order.
      block_size: rows processed at once.

    Returns:
      ``[n]`` squared distances.
    """

    def kth_for_row(row: jax.Array) -> jax.Array:
        sq_dist = jnp.sum((x - row) ** 2, axis=-1)  # [n]
        sq_dist = jnp.where(sq_dist > 0, sq_dist, jnp.inf)
        smallest = -jax.lax.top_k(-sq_dist, k)[0]  # [k], ascending
        return smallest[k - 1]

    return jax.lax.map(kth_for_row, x, batch_size=min(block_size, x.shape[0]))


def _log2_scale(x: jax.Array) -> jax.Array:
    """``round(log2(max |x|))`` as a float (0 for all-zero or non-finite samples)."""
    largest = jnp.max(jnp.abs(x))
    usable = jnp.isfinite(largest) & (largest > 0)
    return jnp.where(usable, jnp.round(jnp.log2(jnp.where(usable, largest, 1.0))), 0.0)


def knn_entropy(x: ArrayLike, k: int = 3) -> jax.Array:
    r"""Kozachenko-Leonenko k-nearest-neighbour estimate of differential entropy.

    .. math::

        \hat H = \psi(n) - \psi(k) + \log V_d + \frac{d}{n}\sum_{i=1}^n \log \varepsilon_i,
        \qquad V_d = \frac{\pi^{d/2}}{\Gamma(d/2 + 1)},

    where :math:`\varepsilon_i` is the Euclidean distance from :math:`x_i` to its k-th nearest
    neighbour, :math:`\psi` the digamma function and :math:`V_d` the volume of the unit
    d-ball. The estimator is consistent; in low dimension its bias is small (Gaussians, d <= 2,
    k = 3, n = 2000: mean error -0.006, standard deviation 0.02 nats over 20 samples). In high
    dimension it is biased upward (d = 20, n = 5000: 29.2 vs 28.4 for a standard Gaussian).
    Cost O(n^2 d) time, O(n d) memory.

    Scale-safe: the samples are divided by a power of two ``s`` near their largest magnitude
    (exact in floating point) and ``d log s`` is added back, using
    :math:`H(sX) = H(X) + d \log s`; squared distances of samples near 1e20 (or 1e-20) would
    otherwise overflow (or underflow) float32.

    Duplicate points: a differential entropy of data with repeated values (atoms) is -inf, which
    is useless in practice. We treat exact duplicates as one point: zero distances are ignored,
    so :math:`\varepsilon_i` is the distance to the k-th nearest *distinct* neighbour. If a
    point has fewer than k distinct neighbours (e.g. all samples equal), its distance is
    replaced by the smallest positive float, so the estimate is very negative but finite.

    Args:
      x: samples ``[n, d]`` (or ``[n]`` for d = 1), with n > k.
      k: neighbour order (k >= 1); k = 3 is a common bias/variance compromise.

    Returns:
      Scalar entropy estimate in nats.

    Raises:
      ValueError: if ``x`` is not ``[n]``/``[n, d]``, ``k < 1`` or ``n <= k``, or (outside
        ``jit``) holds NaN or inf; under ``jit`` such samples give NaN.

    References:
      Kozachenko & Leonenko, "Sample estimate of the entropy of a random vector", 1987;
      Kraskov, Stoegbauer & Grassberger, "Estimating mutual information", PRE 2004, Eq. (20).
    """
    x = check_samples(x, "knn_entropy")
    n, d = x.shape
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"knn_entropy needs an integer k >= 1; got {k!r}")
    if n <= k:
        raise ValueError(f"knn_entropy needs more samples than k: got n={n}, k={k}")
    check_finite(x, "knn_entropy")
    log2_scale = _log2_scale(x)
    x_unit = x * jnp.exp2(-log2_scale).astype(x.dtype)
    sq_eps = _kth_neighbour_sq_distance(x_unit, k)
    tiny = jnp.finfo(x.dtype).tiny
    sq_eps = jnp.where(jnp.isfinite(sq_eps), jnp.maximum(sq_eps, tiny), tiny)
    log_unit_ball = 0.5 * d * math.log(math.pi) - gammaln(0.5 * d + 1.0)
    mean_log_eps = 0.5 * jnp.mean(jnp.log(sq_eps))
    log_scale = log2_scale * math.log(2.0)
    estimate = (digamma(float(n)) - digamma(float(k)) + log_unit_ball
                + d * (mean_log_eps + log_scale))
    # Under jit the check above cannot run: non-finite samples give NaN, never a finite number
    # (the duplicate-point rule below would otherwise turn their NaN distances into `tiny`).
    return jnp.where(jnp.all(jnp.isfinite(x)), estimate, jnp.nan)
