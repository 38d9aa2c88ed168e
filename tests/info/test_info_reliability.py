"""Reliability scores and the IMRO regulariser (imro_jax/info/reliability.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imro_jax.info import imro_regularizer, reliability_scores


def softplus(value):
    return math.log1p(math.exp(value))


def test_hand_computed_example():
    mi, entropy, eps = [1.0, 2.0, -0.5], [1.0, 3.0, -2.0], 1e-6
    raw = [(max(i, 0.0) + eps) / (softplus(h) + eps) for i, h in zip(mi, entropy)]
    expected = [r / sum(raw) for r in raw]
    np.testing.assert_allclose(reliability_scores(mi, entropy, eps=eps), expected, rtol=1e-5)
    # With the last modality absent: renormalised over the first two, exact zero for the third.
    masked = reliability_scores(mi, entropy, eps=eps, mask=[True, True, False])
    np.testing.assert_allclose(masked, [raw[0] / sum(raw[:2]), raw[1] / sum(raw[:2]), 0.0], 1e-5)
    assert float(masked[2]) == 0.0


def test_unnormalised_scores_are_the_raw_masked_ratios():
    mi, entropy, eps = [1.0, 2.0, -0.5], [1.0, 3.0, -2.0], 1e-6
    raw = [(max(i, 0.0) + eps) / (softplus(h) + eps) for i, h in zip(mi, entropy)]
    got = reliability_scores(mi, entropy, eps=eps, mask=[True, False, True], normalize=False)
    np.testing.assert_allclose(got, [raw[0], 0.0, raw[2]], rtol=1e-5)
    assert abs(float(jnp.sum(got)) - 1.0) > 0.1  # not on the simplex


def test_simplex_masking_and_all_absent_rows():
    rng = np.random.default_rng(0)
    mi = rng.normal(size=(6, 4))
    entropy = rng.normal(scale=3.0, size=(6, 4))
    mask = rng.random((6, 4)) < 0.6
    mask[0] = False  # no modality present
    mask[1] = True
    scores = np.asarray(reliability_scores(mi, entropy, mask=mask))
    assert np.all(np.isfinite(scores)) and np.all(scores >= 0)
    np.testing.assert_array_equal(scores[~mask], 0.0)
    np.testing.assert_array_equal(scores[0], 0.0)
    present_rows = mask.any(axis=1)
    np.testing.assert_allclose(scores[present_rows].sum(axis=1), 1.0, rtol=1e-6)
    # axis: modalities on axis 0.
    np.testing.assert_allclose(
        reliability_scores(mi.T, entropy.T, mask=mask.T, axis=0), scores.T, rtol=1e-6
    )


def test_monotone_in_mi_and_entropy():
    mi = jnp.array([0.5, 1.0, 2.0])
    entropy = jnp.array([1.0, 2.0, 0.5])
    base = reliability_scores(mi, entropy)
    assert float(reliability_scores(mi.at[0].add(0.3), entropy)[0]) > float(base[0])
    assert float(reliability_scores(mi, entropy.at[0].add(0.3))[0]) < float(base[0])
    # Also across negative differential entropies.
    negative = jnp.array([-3.0, -1.0, -2.0])
    neg_base = reliability_scores(mi, negative)
    assert float(reliability_scores(mi, negative.at[1].add(0.5))[1]) < float(neg_base[1])


def test_finite_for_very_negative_entropy_and_zero_mi():
    scores = reliability_scores(jnp.array([0.0, 0.0]), jnp.array([-50.0, 10.0]))
    assert np.all(np.isfinite(scores))
    np.testing.assert_allclose(float(jnp.sum(scores)), 1.0, rtol=1e-6)
    assert float(scores[0]) > float(scores[1])  # with no MI anywhere the less uncertain wins
    np.testing.assert_allclose(
        reliability_scores(jnp.array([-1.0, -2.0]), jnp.array([1.0, 1.0])), [0.5, 0.5], 1e-6
    )


def test_gradients_finite_including_masked_rows():
    rng = np.random.default_rng(1)
    mi = jnp.asarray(rng.normal(size=(3, 3)))
    entropy = jnp.asarray(rng.normal(scale=10.0, size=(3, 3)))
    mask = jnp.array([[True, False, True], [False, False, False], [True, True, True]])
    weights = jnp.asarray(rng.normal(size=(3, 3)))

    def objective(mi, entropy):
        return jnp.sum(weights * reliability_scores(mi, entropy, mask=mask))

    grad_mi, grad_h = jax.grad(objective, argnums=(0, 1))(mi, entropy)
    assert np.all(np.isfinite(grad_mi)) and np.all(np.isfinite(grad_h))
    np.testing.assert_array_equal(grad_mi[1], 0.0)  # all-absent row: no gradient
    np.testing.assert_array_equal(grad_h[~np.asarray(mask)], 0.0)


def test_regularizer_matches_numpy_loop():
    rng = np.random.default_rng(2)
    entropy = rng.normal(size=(5, 3))
    mi = rng.normal(size=(5, 3))
    mask = rng.random((5, 3)) < 0.5
    lambda1, lambda2 = 0.3, 0.7
    total = 0.0
    for b in range(5):
        for m in range(3):
            if mask[b, m]:
                total += lambda1 * entropy[b, m] - lambda2 * mi[b, m]
    np.testing.assert_allclose(
        imro_regularizer(entropy, mi, lambda1=lambda1, lambda2=lambda2, mask=mask), total / 5,
        rtol=1e-5,
    )
    unmasked = np.mean(np.sum(lambda1 * entropy - lambda2 * mi, axis=1))
    np.testing.assert_allclose(
        imro_regularizer(entropy, mi, lambda1=lambda1, lambda2=lambda2), unmasked, rtol=1e-5
    )


def test_input_errors():
    with pytest.raises(ValueError, match="eps"):
        reliability_scores([1.0], [1.0], eps=0.0)
    with pytest.raises(ValueError, match=r"\[batch, modality\]"):
        imro_regularizer(np.zeros((2, 3)), np.zeros((2, 4)), lambda1=1.0, lambda2=1.0)


def test_jit_and_vmap():
    rng = np.random.default_rng(3)
    mi = jnp.asarray(rng.normal(size=(4, 3)))
    entropy = jnp.asarray(rng.normal(size=(4, 3)))
    eager = reliability_scores(mi, entropy)
    np.testing.assert_allclose(jax.jit(reliability_scores)(mi, entropy), eager, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(reliability_scores)(mi, entropy), eager, rtol=1e-6)


def test_infinite_mi_takes_all_the_weight_never_nan():
    scores = np.asarray(reliability_scores(jnp.array([[np.inf, 1.0, 0.5], [np.inf, np.inf, 2.0]]),
                                           jnp.array([[1.0, 1.0, 1.0], [1.0, 3.0, 1.0]])))
    np.testing.assert_array_equal(scores, [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    masked = reliability_scores(jnp.array([np.inf, 1.0]), jnp.zeros(2), mask=jnp.array([False, True]))
    np.testing.assert_array_equal(np.asarray(masked), [0.0, 1.0])  # an absent modality stays 0


def test_regularizer_rejects_an_empty_batch():
    with pytest.raises(ValueError, match="empty batch"):
        imro_regularizer(jnp.zeros((0, 3)), jnp.zeros((0, 3)), lambda1=0.1, lambda2=0.1)


def test_a_nan_of_a_present_modality_makes_its_row_nan_never_a_number():
    mi = jnp.array([[np.nan, 1.0], [1.0, 2.0], [np.nan, 1.0]])
    entropy = jnp.array([[1.0, 1.0], [np.nan, 1.0], [1.0, 1.0]])
    mask = jnp.array([[True, True], [True, True], [False, True]])
    for scores in (reliability_scores(mi, entropy, mask=mask),
                   jax.jit(reliability_scores)(mi, entropy, mask=mask)):
        assert np.isnan(np.asarray(scores[:2])).all()  # NaN MI, NaN entropy
        np.testing.assert_array_equal(np.asarray(scores[2]), [0.0, 1.0])  # absent: ignored
