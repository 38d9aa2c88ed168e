"""Surprisal estimators against scipy / numpy references and analytic values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import stats as sps
from scipy.special import logsumexp

from imro_jax import info


def _mixture(rng, n=600, d=4, k=3):
    means = rng.normal(size=(k, d)) * 3
    a = rng.normal(size=(d, d))
    cov = a @ a.T / d + np.eye(d) * 0.5
    label = rng.integers(0, k, n)
    x = means[label] + rng.multivariate_normal(np.zeros(d), cov, n)
    return x, label


def _numpy_fit(x, label, k, shrinkage, rank=None):
    means = np.stack([x[label == c].mean(0) for c in range(k)])
    resid = x - means[label]
    cov = resid.T @ resid / (len(x) - k)
    d = x.shape[1]
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / d * np.eye(d)
    if rank is not None:
        w, v = np.linalg.eigh(cov)
        w[: d - rank] = w[: d - rank].mean()
        cov = (v * w) @ v.T
    prior = np.bincount(label, minlength=k) / len(x)
    return means, cov, prior


@pytest.mark.parametrize("shrinkage,rank", [(0.0, None), (0.3, None), (0.0, 2)])
def test_gaussian_log_density_matches_scipy_mixture(shrinkage, rank):
    rng = np.random.default_rng(0)
    x, label = _mixture(rng)
    stats = info.gaussian_sufficient_stats(x, label, num_classes=3)
    density = info.fit_gaussian_density(stats, shrinkage=shrinkage, rank=rank)
    means, cov, prior = _numpy_fit(x, label, 3, shrinkage, rank)
    queries = rng.normal(size=(50, 4)) * 4
    expected = logsumexp(
        np.stack([sps.multivariate_normal(means[c], cov).logpdf(queries) + np.log(prior[c]) for c in range(3)]), axis=0
    )
    np.testing.assert_allclose(info.gaussian_log_density(queries, density), expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(info.gaussian_surprisal(queries, density), -expected, rtol=1e-4, atol=1e-3)
    diff = queries[:, None] - means
    maha = np.einsum("nkd,de,nke->nk", diff, np.linalg.inv(cov), diff)
    np.testing.assert_allclose(info.mahalanobis_sq(queries, density), maha, rtol=1e-4, atol=1e-3)


def test_sufficient_stats_are_additive_and_weights_drop_samples():
    rng = np.random.default_rng(1)
    x, label = _mixture(rng, n=200)
    whole = info.gaussian_sufficient_stats(x, label, num_classes=3)
    parts = [info.gaussian_sufficient_stats(x[i::2], label[i::2], num_classes=3) for i in range(2)]
    summed = jax.tree.map(lambda a, b: a + b, *parts)
    for a, b in zip(whole, summed):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    keep = np.arange(200) < 120
    weighted = info.gaussian_sufficient_stats(x, label, num_classes=3, weight=keep)
    direct = info.gaussian_sufficient_stats(x[:120], label[:120], num_classes=3)
    for a, b in zip(weighted, direct):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_single_gaussian_mean_surprisal_is_its_entropy():
    rng = np.random.default_rng(2)
    cov = np.diag([1.0, 4.0, 0.25])
    x = rng.multivariate_normal(np.zeros(3), cov, 20000)
    density = info.fit_gaussian_density(info.gaussian_sufficient_stats(x), shrinkage=0.0)
    analytic = sps.multivariate_normal(np.zeros(3), cov).entropy()
    assert abs(float(jnp.mean(info.gaussian_surprisal(x, density))) - analytic) < 0.03


def test_unseen_class_is_ignored_not_nan():
    x = np.random.default_rng(3).normal(size=(40, 2))
    density = info.fit_gaussian_density(info.gaussian_sufficient_stats(x, np.zeros(40, int), num_classes=2))
    assert np.isneginf(density.log_prior[1])
    assert np.all(np.isfinite(info.gaussian_surprisal(x, density)))


def test_gaussian_surprisal_is_jit_vmap_and_grad_safe():
    rng = np.random.default_rng(4)
    x, label = _mixture(rng, n=100)
    density = info.fit_gaussian_density(info.gaussian_sufficient_stats(x, label, num_classes=3))
    q = jnp.asarray(x[:5], jnp.float32)
    np.testing.assert_allclose(jax.jit(info.gaussian_surprisal)(q, density), info.gaussian_surprisal(q, density), rtol=1e-5)
    per_row = jax.vmap(lambda r: info.gaussian_surprisal(r[None], density)[0])(q)
    np.testing.assert_allclose(per_row, info.gaussian_surprisal(q, density), rtol=1e-5)
    check_grads(lambda v: jnp.sum(info.gaussian_surprisal(v, density)), (q.astype(jnp.float64) if jax.config.jax_enable_x64 else q,), order=1, atol=5e-2, rtol=5e-2)


def test_fit_rejects_bad_arguments():
    stats = info.gaussian_sufficient_stats(np.ones((4, 3)))
    with pytest.raises(ValueError, match="shrinkage"):
        info.fit_gaussian_density(stats, shrinkage=1.5)
    with pytest.raises(ValueError, match="rank"):
        info.fit_gaussian_density(stats, rank=4)
    with pytest.raises(ValueError, match="shape"):
        info.gaussian_sufficient_stats(np.ones((2, 3, 4)))


def test_knn_surprisal_mean_over_the_sample_is_knn_entropy():
    x = np.random.default_rng(5).normal(size=(300, 3))
    pointwise = info.knn_surprisal(x, x, k=3, exclude_self=True)
    np.testing.assert_allclose(float(jnp.mean(pointwise)), float(info.knn_entropy(x, k=3)), rtol=1e-5, atol=1e-5)


def test_knn_surprisal_of_new_samples_estimates_the_entropy():
    rng = np.random.default_rng(6)
    reference, queries = rng.normal(size=(3000, 2)), rng.normal(size=(2000, 2))
    analytic = sps.multivariate_normal(np.zeros(2), np.eye(2)).entropy()
    assert abs(float(jnp.mean(info.knn_surprisal(queries, reference, k=5))) - analytic) < 0.08
    # Pointwise it tracks -log p: far points are more surprising.
    far = info.knn_surprisal(np.array([[0.0, 0.0], [4.0, 0.0]]), reference, k=5)
    assert float(far[1]) > float(far[0]) + 4


def test_knn_surprisal_is_scale_safe():
    rng = np.random.default_rng(7)
    ref, q = rng.normal(size=(200, 3)), rng.normal(size=(20, 3))
    base = info.knn_surprisal(q, ref, k=3)
    for c in (1e-20, 1e20):
        np.testing.assert_allclose(info.knn_surprisal(q * c, ref * c, k=3), base + 3 * np.log(c), rtol=1e-4)


def test_knn_surprisal_errors_and_nan():
    ref = np.random.default_rng(8).normal(size=(10, 2))
    with pytest.raises(ValueError, match="dimension"):
        info.knn_surprisal(np.ones((2, 3)), ref)
    with pytest.raises(ValueError, match="neighbours"):
        info.knn_surprisal(ref, ref, k=10, exclude_self=True)
    with pytest.raises(ValueError, match="non-finite"):
        info.knn_surprisal(ref, np.full((10, 2), np.nan))
    out = info.knn_surprisal(np.array([[np.nan, 0.0], [0.0, 0.0]]), ref)
    assert np.isnan(out[0]) and np.isfinite(out[1])


def test_calibration_matches_numpy_and_excess_is_zero_for_typical():
    rng = np.random.default_rng(9)
    scores = rng.normal(10.0, 2.0, size=(5000, 2))
    mask = np.ones_like(scores, bool)
    mask[:1000, 1] = False
    cal = info.fit_calibration(scores, quantile=0.99, weight=mask)
    col = scores[1000:, 1]
    med = np.median(col)
    mad = np.median(np.abs(col - med)) * 1.4826
    np.testing.assert_allclose(cal.location[1], med, rtol=1e-5)
    np.testing.assert_allclose(cal.scale[1], mad, rtol=1e-4)
    np.testing.assert_allclose(cal.threshold[1], np.quantile((col - med) / mad, 0.99), rtol=1e-4)
    assert abs(float(cal.scale[0]) - 2.0) < 0.1  # the MAD estimates the std of Gaussian scores
    z = info.robust_z(scores, cal)
    np.testing.assert_allclose(z[:, 0], (scores[:, 0] - cal.location[0]) / cal.scale[0], rtol=1e-5)
    excess = info.excess_surprisal(np.array([[10.0, 10.0], [60.0, 60.0]]), cal)
    cut = np.asarray(cal.location + cal.threshold * cal.scale)
    scale = np.asarray(cal.scale)
    np.testing.assert_allclose(excess[0], scale * np.log1p(np.exp((10.0 - cut) / scale)), rtol=1e-4)
    assert float(jnp.max(excess[0])) < 0.15 * float(jnp.min(cal.scale))
    np.testing.assert_allclose(excess[1], 60.0 - cut, rtol=1e-3)


def test_uncalibrated_excess_is_zero_and_bad_quantile_raises():
    cal = info.Calibration(jnp.zeros(()), jnp.ones(()), jnp.asarray(jnp.inf))
    assert float(info.excess_surprisal(1e6, cal)) == 0.0
    with pytest.raises(ValueError, match="quantile"):
        info.fit_calibration(np.ones(4), quantile=1.0)
