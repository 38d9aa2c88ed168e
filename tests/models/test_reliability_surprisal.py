"""The surprisal H, cross-modal agreement, modality dropout and the statistics pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from scipy import stats as sps
from scipy.special import logsumexp

from imro_jax.models import build_model, parse_model_config
from imro_jax.models.model import IMROModel, drop_modalities
from imro_jax.models.reliability import STATS, consensus_disagreement
from imro_jax.models.statistics import fit_reliability_stats, with_stats
from imro_jax.train import mesh as mesh_lib
from models_testlib import ONE_MODALITY, TINY_MODALITIES, make_batch, tiny_config

TWO_FEATURES = {"a": TINY_MODALITIES["a"], "b": TINY_MODALITIES["b"]}


def test_drop_modalities_keeps_a_nonempty_subset_at_the_rate():
    present = jax.random.uniform(jax.random.key(0), (4000, 3)) < 0.8
    kept = np.asarray(drop_modalities(jax.random.key(1), present, 0.4))
    present = np.asarray(present)
    assert not np.any(kept & ~present)
    has_any = present.any(-1)
    assert np.all(kept[has_any].any(-1)) and not np.any(kept[~has_any])
    # Where >= 2 modalities are present, the survival rate is close to 1 - rate (the forced survivor
    # adds rate^k / k per modality); check against that expectation computed independently.
    rows = present.sum(-1) == 3
    expected = 0.6 + 0.4**3 / 3
    assert abs(kept[rows].mean() - expected) < 0.02
    np.testing.assert_array_equal(drop_modalities(jax.random.key(2), jnp.asarray(present), 0.0), present)


def test_consensus_disagreement_categorical_by_hand():
    p = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.05, 0.05, 0.9]])
    logits = np.log(p)[None]
    w = np.array([[0.5, 0.3, 0.2]])
    present = np.ones((1, 3), bool)
    got = np.asarray(consensus_disagreement(jnp.asarray(logits), jnp.asarray(w), jnp.asarray(present), "classification"))[0]
    for m in range(3):
        others = [j for j in range(3) if j != m]
        c = (w[0, others, None] * p[others]).sum(0) / w[0, others].sum()
        np.testing.assert_allclose(got[m], np.sum(c * np.log(c / p[m])), rtol=1e-5)
    assert got[2] > 5 * max(got[0], got[1])  # the dissenting modality
    alone = consensus_disagreement(jnp.asarray(logits), jnp.asarray(w), jnp.asarray([[True, False, False]]), "classification")
    np.testing.assert_array_equal(alone, 0.0)


def test_consensus_disagreement_regression_is_the_gaussian_kl():
    mean, log_var = np.array([0.0, 2.0]), np.log(np.array([1.0, 0.25]))
    unimodal = jnp.asarray(np.stack([mean, log_var], -1)[None], jnp.float32)
    got = np.asarray(consensus_disagreement(unimodal, jnp.ones((1, 2)), jnp.ones((1, 2), bool), "regression"))[0]
    kl = lambda m0, v0, m1, v1: 0.5 * (np.log(v1 / v0) + (v0 + (m0 - m1) ** 2) / v1 - 1)  # KL(N0 || N1)
    np.testing.assert_allclose(got, [kl(2.0, 0.25, 0.0, 1.0), kl(0.0, 1.0, 2.0, 0.25)], rtol=1e-5)


def _surprisal_model(modalities=TWO_FEATURES, **reliability):
    cfg = tiny_config(modalities=modalities)
    cfg.reliability = dict(entropy="surprisal", eps=1e-6, shrinkage=0.2, **reliability)
    return cfg, build_model(cfg)


def _batches(data, size):
    n = len(data["label"])

    def gen():
        for i in range(0, n, size):
            yield jax.tree.map(lambda x: x[i:i + size], data), np.ones(min(size, n - i), bool)
    return gen


def test_statistics_pass_matches_an_independent_numpy_fit():
    cfg, model = _surprisal_model()
    data = make_batch(cfg, batch_size=96, seed=3, sequence_lengths={})
    variables = model.init({"params": jax.random.key(0)}, make_batch(cfg, 4, sequence_lengths={}), train=False)
    fitted = fit_reliability_stats(model, variables, _batches(data, 32))["estimator"]
    pooled, _ = model.apply(variables, data, method=IMROModel.encodings)
    pooled, label = np.asarray(pooled, np.float64), data["label"]
    fold = np.arange(96) % 32 % 2  # row parity inside each batch of 32

    def numpy_fit(x, y):
        means = np.stack([x[y == c].mean(0) for c in range(3)])
        r = x - means[y]
        cov = r.T @ r / (len(x) - 3)
        cov = 0.8 * cov + 0.2 * np.trace(cov) / x.shape[1] * np.eye(x.shape[1])
        return means, cov, np.bincount(y, minlength=3) / len(y)

    for m in range(2):
        means, cov, prior = numpy_fit(pooled[:, m], label)
        np.testing.assert_allclose(fitted["means"][m], means, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(fitted["log_det_cov"][m], np.linalg.slogdet(cov)[1], rtol=1e-4, atol=1e-4)
        oof = np.empty(96)
        for f in range(2):
            mu, c, pi = numpy_fit(pooled[fold != f, m], label[fold != f])
            rows = fold == f
            oof[rows] = -logsumexp(np.stack([sps.multivariate_normal(mu[k], c).logpdf(pooled[rows, m]) + np.log(pi[k])
                                             for k in range(3)]), axis=0)
        np.testing.assert_allclose(fitted["location"][m], np.median(oof), rtol=1e-4)
        mad = np.median(np.abs(oof - np.median(oof))) * 1.482602218505602
        np.testing.assert_allclose(fitted["scale"][m], mad, rtol=1e-3)


def test_fitted_surprisal_flags_a_corrupted_modality_and_lowers_its_weight():
    cfg, model = _surprisal_model()
    train = make_batch(cfg, batch_size=256, seed=4, sequence_lengths={})
    variables = model.init({"params": jax.random.key(0)}, make_batch(cfg, 4, sequence_lengths={}), train=False)
    apply = jax.jit(lambda v, b: model.apply(v, b, train=False))  # eager applies took most of a minute
    unfitted = apply(variables, train)
    np.testing.assert_array_equal(unfitted.entropy, 0.0)  # nothing fitted: no excess
    variables = with_stats(variables, fit_reliability_stats(model, variables, _batches(train, 64)))
    clean = make_batch(cfg, batch_size=64, seed=5, sequence_lengths={})
    noisy = dict(clean, a=clean["a"] + 30.0 * np.random.default_rng(6).normal(size=clean["a"].shape).astype(np.float32))
    out_clean, out_noisy = (apply(variables, b) for b in (clean, noisy))
    assert float(jnp.median(out_clean.entropy[:, 0])) < 1.0  # typical: almost no excess surprisal
    assert float(jnp.min(out_noisy.entropy[:, 0])) > 10 * float(jnp.median(out_clean.entropy[:, 0])) + 5
    assert float(jnp.mean(out_noisy.reliability[:, 0])) < 0.5 * float(jnp.mean(out_clean.reliability[:, 0]))
    np.testing.assert_allclose(jnp.sum(out_noisy.reliability, -1), 1.0, rtol=1e-5)
    # No gradient flows through the fitted statistics into the encoders via H.
    grad = jax.jit(jax.grad(lambda p: jnp.sum(apply({**variables, "params": p}, noisy).entropy)))(
        variables["params"])
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grad))


def test_statistics_pass_errors():
    cfg = tiny_config(modalities=ONE_MODALITY)
    model = build_model(cfg)  # predictive entropy: nothing to fit
    batch = make_batch(cfg, 4)
    variables = model.init({"params": jax.random.key(0)}, batch, train=False)
    assert STATS not in variables
    with pytest.raises(ValueError, match="no statistics"):
        fit_reliability_stats(model, variables, lambda: iter([(batch, np.ones(4, bool))]))
    cfg, model = _surprisal_model(modalities=ONE_MODALITY)
    batch = make_batch(cfg, 2, sequence_lengths={})
    variables = model.init({"params": jax.random.key(0)}, batch, train=False)
    with pytest.raises(ValueError, match="fewer than 2 usable"):
        fit_reliability_stats(model, variables, lambda: iter([(batch, np.ones(2, bool))]))


@pytest.mark.parametrize("key,value", [("agreement", -1.0), ("quantile", 1.0), ("shrinkage", 2.0), ("rank", -1),
                                       ("fit_examples", 1)])
def test_bad_reliability_values_are_named(key, value):
    cfg = tiny_config()
    cfg.reliability = dict(entropy="surprisal", eps=1e-6, **{key: value})
    with pytest.raises(ValueError, match=f"model.reliability.{key}"):
        parse_model_config(cfg)


def test_bad_modality_dropout_is_named():
    cfg = tiny_config()
    cfg.modality_dropout = 1.0
    with pytest.raises(ValueError, match="modality_dropout"):
        parse_model_config(cfg)


def test_reliability_statistics_are_the_same_sharded_over_8_devices():
    cfg = tiny_config(modalities={"a": TINY_MODALITIES["a"], "b": TINY_MODALITIES["b"]})
    cfg.reliability = dict(entropy="surprisal", eps=1e-6)
    model = build_model(cfg)
    data = make_batch(cfg, batch_size=64, seed=1, sequence_lengths={})
    variables = model.init({"params": jax.random.key(0)}, make_batch(cfg, 4, sequence_lengths={}), train=False)
    valid = np.arange(64) < 60  # the last rows are padding

    def batches(put):
        return lambda: ((put(jax.tree.map(lambda x: x[i:i + 32], data)), put(valid[i:i + 32])) for i in (0, 32))

    single = fit_reliability_stats(model, variables, batches(lambda x: x))
    mesh = mesh_lib.make_mesh(8, 1)
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    sharded = fit_reliability_stats(model, variables, batches(lambda t: jax.device_put(t, sharding)))
    for key, value in single["estimator"].items():
        np.testing.assert_allclose(sharded["estimator"][key], value, rtol=2e-4, atol=1e-4, err_msg=key)
