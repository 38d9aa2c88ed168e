"""estimate_mi: accuracy against analytic MI, no spurious MI on independent data, errors."""

import math

import numpy as np
import pytest

from imro_jax.info import SeparableCritic, estimate_mi


def correlated_gaussian(mi, dim, n, seed):
    """x ~ N(0, I_d), y = rho x + sqrt(1 - rho^2) eps with I(X; Y) = mi nats."""
    rng = np.random.default_rng(seed)
    rho = math.sqrt(1 - math.exp(-2 * mi / dim))
    x = rng.normal(size=(n, dim))
    return x, rho * x + math.sqrt(1 - rho**2) * rng.normal(size=(n, dim))


def test_default_call_is_accurate_on_gaussian():
    # Default call, no tuning. The test part has 900 samples, so even the true critic's
    # InfoNCE has sd ~0.03 nats here; the critic adds ~0.03 nats of bias (measured).
    x, y = correlated_gaussian(mi=1.0, dim=2, n=3000, seed=0)
    assert abs(estimate_mi(x, y) - 1.0) < 0.15


def test_large_critic_on_few_independent_samples_reports_no_mi():
    # A 2 x 256 critic on 120 training pairs memorises them within a few steps; early stopping
    # on held-out pairs must keep the reported figure near 0 (the last, memorising critic
    # scores far below 0 on held-out pairs, and a random one scores noise).
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
    estimate = estimate_mi(x, y, critic=SeparableCritic(), steps=500)
    assert abs(estimate) < 0.1


def test_warns_near_the_infonce_cap():
    # y ~ x: MI ~ 14 nats, far above log K = log 30 of the 30-sample test part.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 3))
    y = x + 0.01 * rng.normal(size=(100, 3))
    with pytest.warns(UserWarning, match="cap log K"):
        estimate = estimate_mi(x, y, steps=200)
    assert estimate <= math.log(30) + 1e-5


def test_input_errors():
    x = np.zeros((100, 2))
    with pytest.raises(ValueError, match="paired samples"):
        estimate_mi(x, np.zeros((99, 2)))
    bad = np.random.default_rng(3).normal(size=(100, 2))
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        estimate_mi(bad, x)
    with pytest.raises(ValueError, match="at least 10 samples"):
        estimate_mi(np.zeros(20), np.zeros(20))
    with pytest.raises(ValueError, match="unknown bound"):
        estimate_mi(x, x, bound="kl")
    with pytest.raises(ValueError, match="unknown critic"):
        estimate_mi(x, x, critic="quadratic")
    with pytest.raises(ValueError, match=r"\[n\] or \[n, d\]"):
        estimate_mi(np.zeros((100, 2, 2)), x)


@pytest.mark.parametrize("scale", [1e20, 1e-20])
def test_estimate_is_invariant_to_rescaling_x_and_y(scale):
    # MI is invariant to rescaling each variable; unscaled float32 statistics of x * 1e20
    # overflow (the estimate was -1e-5 nats for a true MI of 1.6).
    x, y = correlated_gaussian(mi=1.6, dim=2, n=1000, seed=4)
    reference = estimate_mi(x, y, steps=300)
    assert abs(reference - 1.6) < 0.4  # a short run on 600 training pairs
    assert abs(estimate_mi(x * scale, y * scale, steps=300) - reference) < 0.02
