"""imro_loss pieces against hand computations on a fabricated ModelOutput (no model needed)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models_testlib import loss_config
from scipy import special

from imro_jax.models import ModelOutput, imro_loss
from imro_jax.models.loss import mi_lower_bounds

B, M, C = 6, 2, 3


def fabricated_output(fusion="imro", seed=0):
    rng = np.random.default_rng(seed)
    present = np.ones((B, M), bool)
    present[[1, 4], 1] = False
    valid = np.ones(B, bool)
    valid[5] = False
    f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
    return ModelOutput(
        logits=f(B, C), reliability=jax.nn.softmax(f(B, M)), entropy=jnp.abs(f(B, M)), mi=f(B, M),
        unimodal_logits=f(B, M, C), present=jnp.asarray(present), valid=jnp.asarray(valid),
        pooled=f(B, M, 4), fused=None, joint_logits=None, critic_scores=f(M, B, B), embedding_mean=None,
        embedding_log_var=None, modalities=("a", "b"), task="classification", fusion=fusion,
        label_entropy=math.log(C),
    ), {"label": jnp.asarray(rng.integers(0, C, B), jnp.int32)}


def test_mi_bounds_use_only_present_valid_samples():
    out, batch = fabricated_output()
    use = np.asarray(out.present) & np.asarray(out.valid)[:, None]
    label = np.asarray(batch["label"])
    log_q = np.asarray(jax.nn.log_softmax(out.unimodal_logits))  # [B, M, C]
    ba = mi_lower_bounds(out, batch, "barber_agakov")
    nce = mi_lower_bounds(out, batch, "infonce")
    scores = np.asarray(out.critic_scores)
    for m in range(M):
        rows = np.nonzero(use[:, m])[0]
        np.testing.assert_allclose(ba[m], math.log(C) + np.mean(log_q[rows, m, label[rows]]), rtol=1e-5)
        per_row = [scores[m, i, i] - special.logsumexp(scores[m, i]) for i in rows]
        np.testing.assert_allclose(nce[m], math.log(B) + np.mean(per_row), rtol=1e-5)


def test_imro_loss_is_task_plus_regularizer_plus_unimodal():
    out, batch = fabricated_output()
    cfg = loss_config(lambda1=0.3, lambda2=0.2, unimodal_weight=0.5)
    loss, metrics = imro_loss(out, batch, cfg)
    label = np.asarray(batch["label"])
    valid = np.asarray(out.valid)
    use = np.asarray(out.present) & valid[:, None]
    ce = -np.asarray(jax.nn.log_softmax(out.logits))[np.arange(B), label]
    task = ce[valid].mean()
    uni_nll = -np.asarray(jax.nn.log_softmax(out.unimodal_logits))[np.arange(B), :, label]  # [B, M]
    bounds = math.log(C) - np.array([uni_nll[use[:, m], m].mean() for m in range(M)])
    regularizer = np.mean(np.sum(use * (0.3 * np.asarray(out.entropy) - 0.2 * bounds[None]), -1))
    unimodal = np.mean(np.sum(np.where(use, uni_nll, 0.0), -1))
    np.testing.assert_allclose(metrics["task_loss"], task, rtol=1e-5)
    np.testing.assert_allclose(metrics["regularizer"], regularizer, rtol=1e-5)
    np.testing.assert_allclose(loss, task + regularizer + 0.5 * unimodal, rtol=1e-5)
    np.testing.assert_allclose(metrics["reliability/b"], np.asarray(out.reliability)[use[:, 1], 1].mean(), rtol=1e-5)
    assert metrics["valid_fraction"] == pytest.approx(5 / 6)


def test_evidential_loss_anneals_with_step():
    out, batch = fabricated_output("evidential")
    cfg = loss_config(lambda1=0.0, lambda2=0.0, unimodal_weight=0.0, evidential_annealing_steps=10)
    early, m_early = imro_loss(out, batch, cfg, step=0)
    late, m_late = imro_loss(out, batch, cfg, step=20)
    assert float(m_early["kl_annealing"]) == 0.0 and float(m_late["kl_annealing"]) == 1.0
    assert late > early  # the KL term is non-negative and now switched on
    with pytest.raises(ValueError, match="needs batch\\['label'\\]"):
        imro_loss(out, {}, cfg)


def regression_output(seed=1):
    """The classification fabrication turned into a regression output: [B] predictions,
    [B, M, 2] unimodal (mean, log-variance), float labels."""
    out, _ = fabricated_output(seed=seed)
    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
    out = out.replace(logits=f(B), unimodal_logits=f(B, M, 2), task="regression",
                      label_entropy=0.5 * math.log(2 * math.pi * math.e))
    return out, {"label": f(B)}


@pytest.mark.parametrize("kind,per_sample", [("l1", np.abs), ("squared", np.square)])
def test_regression_task_loss_is_l1_or_squared_error(kind, per_sample):
    out, batch = regression_output()
    _, metrics = imro_loss(out, batch, loss_config(regression_loss=kind))
    error = np.asarray(out.logits, np.float64) - np.asarray(batch["label"], np.float64)
    valid = np.asarray(out.valid)
    np.testing.assert_allclose(metrics["task_loss"], per_sample(error)[valid].mean(), rtol=1e-5)


def test_regression_loss_key_is_required_and_checked():
    out, batch = regression_output()
    missing = loss_config()
    del missing["regression_loss"]
    with pytest.raises(ValueError, match=r"loss.regression_loss is required for model.task='regression'"):
        imro_loss(out, batch, missing)
    with pytest.raises(ValueError, match=r"loss.regression_loss must be one of \('squared', 'l1'\), got 'huber'"):
        imro_loss(out, batch, loss_config(regression_loss="huber"))
    imro_loss(fabricated_output()[0], fabricated_output()[1], missing)  # classification does not read it


def test_joint_term_is_its_weight_times_the_joint_heads_cross_entropy():
    out, batch = fabricated_output()
    joint = jax.random.normal(jax.random.key(3), out.logits.shape)
    with_joint = out.replace(joint_logits=joint)
    base, _ = imro_loss(with_joint, batch, loss_config(joint_weight=0.0))
    total, metrics = imro_loss(with_joint, batch, loss_config(joint_weight=0.4))
    label, valid = np.asarray(batch["label"]), np.asarray(out.valid)
    ce = special.logsumexp(np.asarray(joint), axis=-1) - np.asarray(joint)[np.arange(B), label]
    want = np.mean(ce[valid])  # the invalid sample is left out
    np.testing.assert_allclose(metrics["joint_loss"], want, rtol=1e-5)
    np.testing.assert_allclose(total - base, 0.4 * want, rtol=1e-5)
    no_joint, _ = imro_loss(out, batch, loss_config(joint_weight=5.0))  # no vote, no term
    np.testing.assert_allclose(no_joint, imro_loss(out, batch, loss_config())[0], rtol=1e-6)
