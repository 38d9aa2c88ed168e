"""imro_jax.info.staircase against the analytic Gaussian MI and hand-computed statistics."""

import math

import jax
import numpy as np
import pytest

from imro_jax.info import staircase


@pytest.mark.parametrize("mi, dim", [(0.0, 20), (2.0, 20), (10.0, 20), (0.5, 1)])
def test_rho_gives_the_requested_mi(mi, dim):
    rho = staircase.mi_to_rho(mi, dim)
    assert -(dim / 2) * math.log(1 - rho**2) == pytest.approx(mi, abs=1e-12)


def test_bad_levels_are_refused():
    with pytest.raises(ValueError, match="mi_nats >= 0"):
        staircase.mi_to_rho(-1.0, 20)
    with pytest.raises(ValueError, match="dim >= 1"):
        staircase.mi_to_rho(1.0, 0)


def test_samples_have_the_gaussian_mi_of_their_level():
    # The MI of jointly Gaussian (x, y) from their sample covariance: 0.5 log(det Sxx det Syy / det S).
    dim, mi = 4, 2.0
    x, y = staircase.sample_correlated_gaussian(jax.random.key(0), staircase.mi_to_rho(mi, dim), 200_000, dim)
    joint = np.cov(np.concatenate([np.asarray(x), np.asarray(y)], axis=1), rowvar=False)
    logdet = lambda a: np.linalg.slogdet(a)[1]  # noqa: E731
    estimate = 0.5 * (logdet(joint[:dim, :dim]) + logdet(joint[dim:, dim:]) - logdet(joint))
    assert estimate == pytest.approx(mi, abs=0.02)


def test_stage_statistics_by_hand():
    # 2 levels x 4 steps, 2 bounds; tail 0.5 -> the last 2 steps of each level.
    estimates = np.array([[9, 0], [9, 0], [1.0, 2], [3.0, np.nan],
                          [9, 0], [9, 0], [4.0, -np.inf], [6.0, np.nan]])
    stats = staircase.stage_statistics(estimates, ("a", "b"), (2.0, 5.0), steps_per_stage=4, tail_fraction=0.5)
    assert stats["a"][0] == {"mi": 2.0, "bias": 0.0, "variance": 1.0, "mse": 1.0, "non_finite": 0}
    assert stats["a"][1] == {"mi": 5.0, "bias": 0.0, "variance": 1.0, "mse": 1.0, "non_finite": 0}
    assert stats["b"][0]["bias"] == 0.0 and stats["b"][0]["non_finite"] == 1  # only 2.0 is finite
    assert math.isnan(stats["b"][1]["bias"]) and stats["b"][1]["non_finite"] == 2
    with pytest.raises(ValueError, match="shape"):
        staircase.stage_statistics(estimates[:-1], ("a", "b"), (2.0, 5.0), steps_per_stage=4, tail_fraction=0.5)
    with pytest.raises(ValueError, match="tail_fraction"):
        staircase.stage_statistics(estimates, ("a", "b"), (2.0, 5.0), steps_per_stage=4, tail_fraction=0.0)
