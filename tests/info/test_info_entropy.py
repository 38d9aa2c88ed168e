"""Entropy estimators against scipy and analytic Gaussian entropies."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from jax.test_util import check_grads

from imro_jax.info import categorical_entropy, gaussian_entropy, knn_entropy


def test_categorical_matches_scipy():
    logits = np.random.default_rng(0).normal(scale=3.0, size=(6, 7))
    probs = scipy.special.softmax(logits, axis=-1)
    np.testing.assert_allclose(
        categorical_entropy(logits), scipy.stats.entropy(probs, axis=-1), rtol=1e-5, atol=1e-6
    )
    # axis: classes along axis 0.
    np.testing.assert_allclose(
        categorical_entropy(logits.T, axis=0), scipy.stats.entropy(probs, axis=-1), rtol=1e-5
    )


def test_categorical_masked_logits_and_gradient():
    logits = np.array([[0.3, -np.inf, 1.2, -np.inf], [-np.inf, -np.inf, 5.0, -np.inf]])
    expected = [scipy.stats.entropy(scipy.special.softmax([0.3, 1.2])), 0.0]
    np.testing.assert_allclose(categorical_entropy(logits), expected, rtol=1e-5, atol=1e-7)
    grad = jax.jit(jax.grad(lambda z: jnp.sum(categorical_entropy(z))))(jnp.asarray(logits))
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[np.isinf(logits)], 0.0)


def test_categorical_extreme_logits_no_nan():
    logits = jnp.array(
        [
            [1e30, 0.0, 0.0],  # one-hot
            [1e4, 1e4, -1e4],  # two equal huge logits: log 2
            [-np.inf, -np.inf, -np.inf],  # empty distribution: defined as 0
            [-1e30, -1e30, -1e30],  # uniform: log 3
        ]
    )
    np.testing.assert_allclose(
        categorical_entropy(logits), [0.0, math.log(2), 0.0, math.log(3)], atol=1e-6
    )
    grad = jax.jit(jax.grad(lambda z: jnp.sum(categorical_entropy(z))))(logits)
    assert np.all(np.isfinite(grad))


def test_gaussian_entropy_matches_scipy():
    log_var = np.random.default_rng(1).normal(size=(4, 3))
    expected = [
        scipy.stats.multivariate_normal(cov=np.diag(np.exp(row))).entropy() for row in log_var
    ]
    np.testing.assert_allclose(gaussian_entropy(log_var), expected, rtol=1e-5)
    np.testing.assert_allclose(gaussian_entropy(log_var.T, axis=0), expected, rtol=1e-5)
    assert float(gaussian_entropy(jnp.array([-10.0]))) < 0  # densities can have H < 0


@pytest.mark.parametrize(
    "cov", [np.array([[1.0]]), np.array([[2.0, 0.8], [0.8, 1.0]])], ids=["d1", "d2"]
)
def test_knn_entropy_matches_gaussian(cov):
    # Kozachenko-Leonenko with k = 3, n = 2000, d <= 2: over 20 seeds the error had mean
    # -0.006 and sd 0.021 nats (max |error| 0.049); 0.08 is about 4 sd.
    d = cov.shape[0]
    x = np.random.default_rng(7).multivariate_normal(np.zeros(d), cov, size=2000)
    true = 0.5 * d * (1 + math.log(2 * math.pi)) + 0.5 * np.linalg.slogdet(cov)[1]
    assert abs(float(knn_entropy(x, k=3)) - true) < 0.08


def test_knn_entropy_duplicates_are_finite():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 2))
    with_duplicates = np.concatenate([x, x[:50]])
    value = float(knn_entropy(with_duplicates))
    assert np.isfinite(value)
    # Duplicates are merged, so the estimate stays close to that of the distinct points.
    assert abs(value - float(knn_entropy(x))) < 0.3
    constant = np.ones((20, 3))
    assert np.isfinite(float(knn_entropy(constant)))
    assert float(knn_entropy(constant)) < -100  # a point mass: very negative, not -inf


def test_knn_entropy_brute_force_formula():
    # Independent brute force: scipy.spatial distances + scipy special functions.
    x = np.random.default_rng(4).normal(size=(50, 3))
    dist = scipy.spatial.distance.cdist(x, x)
    np.fill_diagonal(dist, np.inf)
    eps = np.sort(dist, axis=1)[:, 1]  # k = 2
    n, d = x.shape
    log_vd = 0.5 * d * math.log(math.pi) - scipy.special.gammaln(d / 2 + 1)
    expected = scipy.special.digamma(n) - scipy.special.digamma(2) + log_vd + d * np.mean(
        np.log(eps)
    )
    np.testing.assert_allclose(float(knn_entropy(x, k=2)), expected, rtol=1e-5)


def test_knn_entropy_input_errors():
    with pytest.raises(ValueError, match="more samples than k"):
        knn_entropy(np.zeros((3, 2)), k=3)
    with pytest.raises(ValueError, match=r"\[n\] or \[n, d\]"):
        knn_entropy(np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="k >= 1"):
        knn_entropy(np.zeros((10, 2)), k=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_knn_entropy_rejects_non_finite_samples(bad):
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    x[7, 1] = bad
    with pytest.raises(ValueError, match="non-finite"):
        knn_entropy(x)
    # Under jit the value check cannot raise: the estimate is NaN, not a finite number.
    assert np.isnan(jax.jit(knn_entropy)(x))
    assert np.isfinite(jax.jit(knn_entropy)(np.nan_to_num(x, nan=0.0, posinf=0.0)))


def test_entropy_gradients_numerically():
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        check_grads(jax.jit(categorical_entropy), (jnp.asarray(rng.normal(size=(3, 5))),), 1)
        check_grads(jax.jit(gaussian_entropy), (jnp.asarray(rng.normal(size=(3, 4))),), 1)
        x = jnp.asarray(rng.normal(size=(20, 2)))
        check_grads(jax.jit(knn_entropy), (x,), order=1, modes=["rev"], eps=1e-6)


def test_entropy_jit_and_vmap():
    rng = np.random.default_rng(6)
    logits = jnp.asarray(rng.normal(size=(4, 5)))
    np.testing.assert_allclose(
        jax.jit(categorical_entropy)(logits), categorical_entropy(logits), rtol=1e-6
    )
    samples = jnp.asarray(rng.normal(size=(3, 40, 2)))
    batched = jax.vmap(knn_entropy)(samples)
    looped = [knn_entropy(s) for s in samples]
    np.testing.assert_allclose(batched, looped, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(knn_entropy)(samples[0]), looped[0], rtol=1e-5)


@pytest.mark.parametrize("scale", [1e20, 1e-20])
def test_knn_entropy_is_scale_safe(scale):
    # H(sX) = H(X) + d log s: for a standard normal in d = 2, H = log(2 pi e) + 2 log s
    # (94.9 nats at s = 1e20); float32 squared distances would overflow / underflow unscaled.
    x = np.random.default_rng(0).normal(size=(2000, 2)).astype(np.float32)
    truth = math.log(2 * math.pi * math.e) + 2 * math.log(scale)
    assert abs(float(knn_entropy(x * scale)) - truth) < 0.08
    assert abs(float(jax.jit(knn_entropy)(x * scale)) - float(knn_entropy(x)) - 2 * math.log(scale)) < 1e-3


def test_categorical_entropy_of_nan_logits_is_nan_not_zero():
    logits = jnp.array([[np.nan, np.nan, np.nan], [0.0, np.nan, 1.0], [0.0, 0.0, -np.inf]])
    for entropy in (categorical_entropy, jax.jit(categorical_entropy)):
        values = np.asarray(entropy(logits))
        assert np.isnan(values[0]) and np.isnan(values[1])
        np.testing.assert_allclose(values[2], math.log(2), rtol=1e-6)
