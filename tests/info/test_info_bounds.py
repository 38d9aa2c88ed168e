"""MI lower bounds: analytic optimal critics on correlated Gaussians, identities, gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from imro_jax import info
from imro_jax.info import barber_agakov_lower_bound, infonce_lower_bound, mine_lower_bound

dv_lower_bound, js_lower_bound = info.dv_lower_bound, info.js_lower_bound
nwj_lower_bound, tuba_lower_bound = info.nwj_lower_bound, info.tuba_lower_bound
smile_lower_bound = info.smile_lower_bound

DIM, K, NUM_BATCHES = 20, 64, 500


def jit_grad(fun):
    """jit(grad(fun)): one compilation instead of many eager op-by-op dispatches."""
    return jax.jit(jax.grad(fun))


def log_density_ratio_batches(mi, num_batches=NUM_BATCHES, seed=0):
    """``[num_batches, K, K]`` true log p(y_j|x_i)/p(y_j), x ~ N(0, I_20), y = rho x + noise.

    Written in numpy, independently of the library: log N(y; rho x, 1 - rho^2) - log N(y; 0, 1).
    """
    rng = np.random.default_rng(seed)
    rho = math.sqrt(1 - math.exp(-2 * mi / DIM))
    x = rng.normal(size=(num_batches, K, DIM))
    y = rho * x + math.sqrt(1 - rho**2) * rng.normal(size=(num_batches, K, DIM))
    s2 = 1 - rho**2
    cond = -0.5 * DIM * math.log(s2) - ((y[:, None] - rho * x[:, :, None]) ** 2).sum(-1) / (2 * s2)
    return (cond + 0.5 * (y**2).sum(-1)[:, None, :]).astype(np.float32)


def batch_values(bound, scores):
    return np.asarray(jax.jit(jax.vmap(bound))(jnp.asarray(scores)), dtype=np.float64)


@pytest.fixture(scope="module")
def ratios():
    return {mi: log_density_ratio_batches(mi, seed=int(mi)) for mi in (2.0, 6.0, 10.0)}


def assert_mean_close(values, target, num_se=4.0, extra=0.0):
    """Mean within num_se standard errors (sd over batches / sqrt(batches)) of target."""
    se = values.std() / math.sqrt(values.size)
    assert abs(values.mean() - target) < num_se * se + extra, (values.mean(), target, se)


def test_infonce_never_above_log_k_and_matches_anchors(ratios):
    # docs/protocols.md sec. 5 (d = 20, K = 64, 500 batches): InfoNCE 1.82 (MI 2), 3.74 (6), 4.12 (10).
    for mi, anchor in ((2.0, 1.82), (6.0, 3.74), (10.0, 4.12)):
        values = batch_values(infonce_lower_bound, ratios[mi])
        assert np.all(values <= math.log(K) + 1e-5)
        # Both figures are means over 500 batches; allow 4 s.e. of each.
        assert_mean_close(values, anchor, num_se=4 * math.sqrt(2))
        assert values.mean() < mi


def test_nwj_tuba_dv_unbiased_with_optimal_critic(ratios):
    for mi in (2.0, 6.0):
        log_r = ratios[mi]
        nwj = batch_values(nwj_lower_bound, 1.0 + log_r)  # NWJ's optimal critic is 1 + log r
        assert_mean_close(nwj, mi)
        if mi == 2.0:  # anchors: sd 0.25 (at MI 6 the sample sd is too heavy-tailed to test)
            assert 0.2 < nwj.std() < 0.3
        tuba = batch_values(lambda s: tuba_lower_bound(s, 0.0), log_r)
        assert_mean_close(tuba, mi)
        # DV is shift invariant. The log of a sample mean biases it upward (Jensen), by about
        # Var(r)/(2 K(K-1)): negligible at MI 2, visible at MI 6 where Var(r) ~ e^I explodes.
        dv = batch_values(dv_lower_bound, log_r + 3.0)
        np.testing.assert_allclose(batch_values(dv_lower_bound, log_r), dv, atol=1e-4)
        if mi == 2.0:
            assert_mean_close(dv, mi, extra=0.02)
        else:
            assert dv.mean() > mi


def test_tuba_baseline_relations():
    rng = np.random.default_rng(1)
    scores = jnp.asarray(rng.normal(size=(8, 8)))
    baseline = jnp.asarray(rng.normal(size=8))
    # NWJ = TUBA(f - 1, a = 1) (docs/protocols.md sec. 5).
    np.testing.assert_allclose(nwj_lower_bound(scores), tuba_lower_bound(scores - 1.0, 0.0), 1e-6)
    # A [K] baseline is per y_j, i.e. per column.
    np.testing.assert_allclose(
        tuba_lower_bound(scores, baseline), tuba_lower_bound(scores - baseline[None, :], 0.0), 1e-6
    )
    # Explicit formula in numpy.
    f = np.asarray(scores, np.float64) - np.asarray(baseline)[None, :]
    off = ~np.eye(8, dtype=bool)
    expected = 1 + np.mean(np.diag(f)) - np.mean(np.exp(f[off]))
    np.testing.assert_allclose(tuba_lower_bound(scores, baseline), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="log_baseline"):
        tuba_lower_bound(scores, jnp.zeros(9))


def test_tuba_with_baseline_is_unbiased(ratios):
    # With f = log a(y) + log r, TUBA is tight for any baseline a(y): here a(y) = exp(0.3 y_1).
    rng = np.random.default_rng(2)
    log_a = 0.3 * rng.normal(size=(NUM_BATCHES, K)).astype(np.float32)
    scores = ratios[2.0] + log_a[:, None, :]
    values = np.asarray(jax.vmap(tuba_lower_bound)(jnp.asarray(scores), jnp.asarray(log_a)))
    assert_mean_close(values.astype(np.float64), 2.0)


def js_fgan_reference(scores):
    """Poole et al.'s js_fgan_lower_bound, written with their subtraction form."""
    diag = jnp.diagonal(scores)
    n = scores.shape[0]
    first = jnp.mean(-jax.nn.softplus(-diag))
    second = (jnp.sum(jax.nn.softplus(scores)) - jnp.sum(jax.nn.softplus(diag))) / (n * (n - 1))
    return first - second


def test_js_value_is_nwj_and_gradient_is_js_fgan():
    scores = jnp.asarray(np.random.default_rng(3).normal(size=(8, 8)))
    np.testing.assert_allclose(js_lower_bound(scores), nwj_lower_bound(scores), rtol=1e-6)
    np.testing.assert_allclose(
        jit_grad(js_lower_bound)(scores), jit_grad(js_fgan_reference)(scores), rtol=1e-5, atol=1e-7
    )
    # ... and not the NWJ gradient.
    assert not np.allclose(jit_grad(js_lower_bound)(scores), jit_grad(nwj_lower_bound)(scores))


def test_js_at_its_optimum_reads_mi_minus_one_over_e(ratios):
    # The JS objective is maximised by f = log r, where the NWJ value is I - 1/e.
    values = batch_values(js_lower_bound, ratios[2.0])
    assert_mean_close(values, 2.0 - 1 / math.e)


def test_smile_value_and_gradient():
    rng = np.random.default_rng(4)
    scores = jnp.asarray(rng.normal(scale=4.0, size=(8, 8)))
    f = np.asarray(scores, np.float64)
    off = ~np.eye(8, dtype=bool)
    for tau in (1.0, 5.0):
        expected = np.mean(np.diag(f)) - np.log(np.mean(np.exp(np.clip(f[off], -tau, tau))))
        np.testing.assert_allclose(smile_lower_bound(scores, clip=tau), expected, rtol=1e-5)
    # tau -> inf recovers DV; the gradient is the JS f-GAN gradient.
    np.testing.assert_allclose(smile_lower_bound(scores, 1e6), dv_lower_bound(scores), 1e-6)
    np.testing.assert_allclose(
        jit_grad(smile_lower_bound)(scores), jit_grad(js_fgan_reference)(scores), 1e-5, 1e-7
    )


def test_smile_with_optimal_critic(ratios):
    # At MI 2 the clip (tau = 5) is rarely active: SMILE ~ DV ~ MI.
    values = batch_values(smile_lower_bound, ratios[2.0])
    assert_mean_close(values, 2.0, extra=0.05)


def test_mine_value_gradient_and_moving_average():
    rng = np.random.default_rng(5)
    scores = jnp.asarray(rng.normal(size=(8, 8)))
    f = np.asarray(scores, np.float64)
    off = ~np.eye(8, dtype=bool)
    batch_z = np.mean(np.exp(f[off]))
    decay, ema = 0.9, 1.7
    estimate, new_ema = mine_lower_bound(scores, ema, decay)
    np.testing.assert_allclose(estimate, dv_lower_bound(scores), rtol=1e-6)
    np.testing.assert_allclose(new_ema, decay * ema + (1 - decay) * batch_z, rtol=1e-5)
    # Gradient: d mean(diag f) - d mean_offdiag(exp f) / new_ema (Belghazi et al. 2018).
    def surrogate(s):
        positive = jnp.mean(jnp.diagonal(s))
        negative = jnp.sum(jnp.where(jnp.asarray(off), jnp.exp(s), 0.0)) / 56
        return positive - negative / (decay * ema + (1 - decay) * batch_z)

    grad = jit_grad(lambda s: mine_lower_bound(s, ema, decay)[0])(scores)
    np.testing.assert_allclose(grad, jit_grad(surrogate)(scores), rtol=1e-5, atol=1e-7)
    # ema <= 0 means no history: the average starts at the batch value and the gradient is DV's.
    _, first_ema = mine_lower_bound(scores, 0.0, decay)
    np.testing.assert_allclose(first_ema, batch_z, rtol=1e-5)
    grad0 = jit_grad(lambda s: mine_lower_bound(s, 0.0, decay)[0])(scores)
    np.testing.assert_allclose(grad0, jit_grad(dv_lower_bound)(scores), rtol=1e-5, atol=1e-7)
    # No gradient flows into the returned average.
    assert float(jit_grad(lambda e: mine_lower_bound(scores, e, decay)[1])(1.0)) == 0.0
    with pytest.raises(ValueError, match="decay"):
        mine_lower_bound(scores, 1.0, decay=1.0)
    with pytest.raises(ValueError, match="scalar ema"):
        mine_lower_bound(scores, jnp.ones(2))


def test_mine_moving_average_over_steps():
    # Running the update over a sequence equals the textbook recursion in numpy.
    rng = np.random.default_rng(6)
    batches = rng.normal(size=(5, 8, 8)).astype(np.float32)
    off = ~np.eye(8, dtype=bool)
    ema, reference = 0.0, None
    for batch in batches:
        _, ema = mine_lower_bound(jnp.asarray(batch), ema, 0.5)
        batch_z = np.mean(np.exp(batch.astype(np.float64)[off]))
        reference = batch_z if reference is None else 0.5 * reference + 0.5 * batch_z
        np.testing.assert_allclose(ema, reference, rtol=1e-5)


def test_barber_agakov_binary_symmetric_channel():
    # Y ~ Bernoulli(1/2), X = Y flipped with probability 0.1, q(y|x) the true posterior:
    # the bound is tight, I = log 2 - H_b(0.1). Exact population: 90 agreeing, 10 flipped.
    log_q = np.concatenate([np.full(90, math.log(0.9)), np.full(10, math.log(0.1))])
    h_b = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    np.testing.assert_allclose(
        barber_agakov_lower_bound(log_q, math.log(2)), math.log(2) - h_b, rtol=1e-6
    )
    with pytest.raises(ValueError, match="scalar label_entropy"):
        barber_agakov_lower_bound(log_q, np.ones(2))


ALL_BOUNDS = {
    "infonce": infonce_lower_bound,
    "nwj": nwj_lower_bound,
    "tuba": tuba_lower_bound,
    "dv": dv_lower_bound,
    "js": js_lower_bound,
    "smile": smile_lower_bound,
    "mine": lambda s: mine_lower_bound(s, 1.0)[0],
}


@pytest.mark.parametrize("name", sorted(ALL_BOUNDS))
def test_shape_validation(name):
    bound = ALL_BOUNDS[name]
    for bad in (np.zeros(4), np.zeros((3, 4)), np.zeros((2, 3, 3)), np.zeros((1, 1))):
        with pytest.raises(ValueError, match=r"\[K, K\]|K >= 2"):
            bound(bad)


def test_no_nan_for_masked_and_huge_scores():
    rng = np.random.default_rng(7)
    masked = rng.normal(size=(8, 8)).astype(np.float32)
    masked[0, 1:5] = -np.inf  # masked negatives
    masked[3, 0] = -np.inf
    huge = (1e30 * rng.choice([-1.0, 1.0], size=(8, 8))).astype(np.float32)
    large = (1e4 * rng.normal(size=(8, 8))).astype(np.float32)
    for name, bound in ALL_BOUNDS.items():
        value, grad = jax.value_and_grad(bound)(jnp.asarray(masked))
        assert np.isfinite(value), name
        assert np.all(np.isfinite(grad)), name
        for scores in (huge, large):
            value, grad = jax.value_and_grad(bound)(jnp.asarray(scores))
            assert not np.isnan(value), name
            assert not np.any(np.isnan(grad)), name
            if name not in ("nwj", "tuba", "js"):  # their value contains exp(f): may be -inf
                assert np.isfinite(value), name
    # A -inf positive pair gives -inf, not NaN (even when its whole row is -inf).
    bad_positive = rng.normal(size=(8, 8)).astype(np.float32)
    bad_positive[1, :] = -np.inf
    for name in ("infonce", "nwj", "dv", "js"):
        assert float(ALL_BOUNDS[name](jnp.asarray(bad_positive))) == -np.inf, name


@pytest.mark.parametrize("name", ["infonce", "nwj", "tuba", "dv"])
def test_check_grads(name):
    scores = np.random.default_rng(8).normal(size=(5, 5))
    with jax.enable_x64(True):
        check_grads(jax.jit(ALL_BOUNDS[name]), (jnp.asarray(scores),), order=1)


def test_check_grads_of_js_fgan_objective():
    # JS/SMILE/MINE deliberately differentiate another objective than their value; check the
    # objective they differentiate (the library's private one) numerically.
    from imro_jax.info.bounds import _js_fgan_objective

    scores = np.random.default_rng(9).normal(size=(5, 5))
    with jax.enable_x64(True):
        check_grads(jax.jit(_js_fgan_objective), (jnp.asarray(scores),), order=1)
        np.testing.assert_allclose(
            _js_fgan_objective(jnp.asarray(scores)), js_fgan_reference(jnp.asarray(scores))
        )


def test_check_grads_of_barber_agakov():
    log_q = -np.random.default_rng(11).random(6)
    with jax.enable_x64(True):
        check_grads(jax.jit(barber_agakov_lower_bound), (jnp.asarray(log_q), 1.5), order=1)


def test_jit_and_vmap_match_eager():
    scores = jnp.asarray(np.random.default_rng(10).normal(size=(2, 8, 8)))
    for name, bound in ALL_BOUNDS.items():
        looped = np.array([bound(s) for s in scores])
        np.testing.assert_allclose(
            jax.jit(jax.vmap(bound))(scores), looped, rtol=1e-5, err_msg=name
        )
        np.testing.assert_allclose(jax.jit(bound)(scores[0]), looped[0], rtol=1e-5, err_msg=name)


def test_barber_agakov_rejects_positive_log_probabilities():
    log_q = jnp.array([-0.1, 0.3, -2.0])  # 0.3 is no log-probability: the bound would exceed H(Y)
    with pytest.raises(ValueError, match=r"log-probabilities <= 0 .* maximum of 0.3"):
        barber_agakov_lower_bound(log_q, math.log(2))
    assert np.isnan(float(jax.jit(barber_agakov_lower_bound)(log_q, math.log(2))))
    assert np.isnan(float(barber_agakov_lower_bound(jnp.array([-0.1, np.nan]), math.log(2))))
    exact = float(barber_agakov_lower_bound(jnp.array([0.0, -1.0]), math.log(2)))
    np.testing.assert_allclose(exact, math.log(2) - 0.5, rtol=1e-6)  # 0 is a valid log-probability
