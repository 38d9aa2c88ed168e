"""The reliability-weighted vote of the unimodal heads (``model.reliability.decision``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

from imro_jax.models import build_model, parse_model_config
from imro_jax.models.model import reliability_vote
from models_testlib import make_batch, tiny_config


def test_vote_is_the_log_linear_pool_by_hand():
    rng = np.random.default_rng(0)
    joint, unimodal = rng.normal(size=(4, 5)), rng.normal(size=(4, 3, 5))
    weights = rng.dirichlet(np.ones(3), size=4)
    got = reliability_vote(jnp.asarray(joint), jnp.asarray(unimodal), jnp.asarray(weights), 0.3, "classification")
    want = 0.7 * log_softmax(joint, -1) + 0.3 * np.einsum("bm,bmc->bc", weights, log_softmax(unimodal, -1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("power", [0.5, 2.0])
def test_tempered_vote_uses_renormalised_powers_and_keeps_absent_modalities_out(power):
    rng = np.random.default_rng(3)
    joint, unimodal = rng.normal(size=(3, 4)), rng.normal(size=(3, 3, 4))
    weights = rng.dirichlet(np.ones(3), size=3)
    weights[0] = [0.0, 0.2, 0.8]  # an absent modality (R = 0) keeps weight 0 after tempering
    weights[1] = [0.0, 1.0, 0.0]
    got = reliability_vote(jnp.asarray(joint), jnp.asarray(unimodal), jnp.asarray(weights), 1.0, "classification",
                           power=power)
    w = weights ** power
    w /= w.sum(-1, keepdims=True)
    want = np.einsum("bm,bmc->bc", w, log_softmax(unimodal, -1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(jax.grad(lambda u: jnp.sum(reliability_vote(
        jnp.asarray(joint), u, jnp.asarray(weights), 1.0, "classification", power=power)))(jnp.asarray(unimodal))))
    # a sample with no modality at all (every R = 0) gets no vote, not NaN
    empty = reliability_vote(jnp.asarray(joint[:1]), jnp.asarray(unimodal[:1]), jnp.zeros((1, 3)), 1.0,
                             "classification", power=power)
    np.testing.assert_array_equal(empty, 0.0)


def test_vote_mixes_regression_means_and_ignores_variances():
    joint = np.array([[1.0], [-2.0]])
    unimodal = np.array([[[0.0, 3.0], [4.0, -1.0]], [[2.0, 0.0], [2.0, 5.0]]])
    weights = np.array([[0.25, 0.75], [1.0, 0.0]])
    got = reliability_vote(jnp.asarray(joint), jnp.asarray(unimodal), jnp.asarray(weights), 0.5, "regression")
    np.testing.assert_allclose(got, [[0.5 * 1.0 + 0.5 * 3.0], [0.5 * -2.0 + 0.5 * 2.0]], rtol=1e-6)


def test_vote_passes_no_gradient_to_the_weights():
    rng = np.random.default_rng(1)
    joint, unimodal = jnp.asarray(rng.normal(size=(2, 3))), jnp.asarray(rng.normal(size=(2, 2, 3)))
    grad = jax.grad(lambda w: jnp.sum(reliability_vote(joint, unimodal, w, 0.5, "classification")))(
        jnp.full((2, 2), 0.5))
    np.testing.assert_array_equal(grad, 0.0)


def _init(model, batch):  # jitted: eager init and apply of a whole model take many seconds each
    return jax.jit(lambda b: model.init({"params": jax.random.key(0)}, b, train=False))(batch)


def _apply(model, variables, batch):
    return jax.jit(lambda v, b: model.apply(v, b, train=False))(variables, batch)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_model_output_is_the_vote_of_its_own_heads_and_weights(task):
    cfg = tiny_config(task=task)
    batch = make_batch(cfg, batch_size=6, seed=2)
    batch["mask"] = {name: np.ones(6, bool) for name in cfg.modalities}
    first = sorted(cfg.modalities)[0]
    batch["mask"][first] = np.array([True, False, True, False, True, True])  # some absent: no vote
    plain = build_model(cfg)
    variables = _init(plain, batch)
    cfg.reliability = dict(cfg.reliability, decision=0.4)
    voted = build_model(cfg)
    out0, out1 = (_apply(m, variables, batch) for m in (plain, voted))
    r, u = np.asarray(out0.reliability, np.float64), np.asarray(out0.unimodal_logits, np.float64)
    assert np.all(r[~batch["mask"][first], 0] == 0.0)
    if task == "regression":
        want = 0.6 * np.asarray(out0.logits) + 0.4 * np.einsum("bm,bm->b", r, u[..., 0])
    else:
        want = 0.6 * log_softmax(np.asarray(out0.logits, np.float64), -1) + 0.4 * np.einsum(
            "bm,bmc->bc", r, log_softmax(u, -1))
    np.testing.assert_allclose(out1.logits, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out1.reliability, out0.reliability, rtol=1e-6)
    assert out0.joint_logits is None  # no vote: nothing to separate
    np.testing.assert_allclose(out1.joint_logits, out0.logits, rtol=1e-6)  # the token head before the vote


def test_uniform_fusion_ignores_the_vote():
    cfg = tiny_config(fusion="uniform")
    batch = make_batch(cfg, batch_size=4)
    model = build_model(cfg)
    variables = _init(model, batch)
    cfg.reliability = dict(cfg.reliability, decision=0.5)
    np.testing.assert_array_equal(_apply(build_model(cfg), variables, batch).logits,
                                  _apply(model, variables, batch).logits)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_bad_vote_weight_is_named(value):
    cfg = tiny_config()
    cfg.reliability = dict(entropy="predictive", eps=1e-6, decision=value)
    with pytest.raises(ValueError, match="model.reliability.decision"):
        parse_model_config(cfg)


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_bad_vote_power_is_named(value):
    cfg = tiny_config()
    cfg.reliability = dict(entropy="predictive", eps=1e-6, decision=0.5, vote_power=value)
    with pytest.raises(ValueError, match="model.reliability.vote_power"):
        parse_model_config(cfg)


def test_vote_is_refused_for_generation():
    cfg = tiny_config(task="generation")
    cfg.reliability = dict(entropy="predictive", eps=1e-6, decision=0.5)
    with pytest.raises(ValueError, match="decision.*generation"):
        parse_model_config(cfg)


def test_gated_vote_weight_by_hand():
    from imro_jax.models.model import vote_weight
    entropy = np.array([[0.0, 0.0, 0.0], [0.2, 3.0, 0.0], [0.0, 50.0, 0.1], [1.0, 0.0, 0.0]])
    present = np.array([[True, True, True], [True, True, True], [True, False, True], [True, True, False]])
    got = vote_weight(0.8, 0.5, jnp.asarray(entropy), jnp.asarray(present))
    worst = np.array([0.0, 3.0, 0.1, 1.0])  # the absent modality's H (50 nats) does not count
    np.testing.assert_allclose(got[:, 0], 0.8 * (1 - np.exp(-worst / 0.5)), rtol=1e-6)
    assert vote_weight(0.8, 0.0, jnp.asarray(entropy), jnp.asarray(present)) == 0.8  # gate off: beta itself
    grad = jax.grad(lambda h: jnp.sum(vote_weight(0.8, 0.5, h, jnp.asarray(present))))(jnp.asarray(entropy))
    np.testing.assert_array_equal(grad, 0.0)


def test_model_with_a_gate_mixes_its_joint_head_and_vote_per_sample():
    cfg = tiny_config()
    batch = make_batch(cfg, batch_size=6, seed=4)
    cfg.reliability = dict(cfg.reliability, entropy="predictive", decision=0.0)
    plain = build_model(cfg)
    variables = _init(plain, batch)
    out0 = _apply(plain, variables, batch)
    cfg.reliability = dict(cfg.reliability, decision=1.0, decision_gate=2.0, vote_power=0.5)
    out1 = _apply(build_model(cfg), variables, batch)
    h, r = np.asarray(out0.entropy, np.float64), np.asarray(out0.reliability, np.float64)
    beta = 1 - np.exp(-h.max(-1, keepdims=True) / 2.0)  # every modality present
    w = np.sqrt(r) / np.sqrt(r).sum(-1, keepdims=True)
    want = (1 - beta) * log_softmax(np.asarray(out0.logits, np.float64), -1) + beta * np.einsum(
        "bm,bmc->bc", w, log_softmax(np.asarray(out0.unimodal_logits, np.float64), -1))
    assert 0.05 < beta.min() and beta.max() < 0.95  # a real mixture, not one end
    np.testing.assert_allclose(out1.logits, want, rtol=1e-4, atol=1e-5)


def test_bad_gate_is_named():
    cfg = tiny_config()
    cfg.reliability = dict(entropy="predictive", eps=1e-6, decision=0.5, decision_gate=-1.0)
    with pytest.raises(ValueError, match="model.reliability.decision_gate"):
        parse_model_config(cfg)


def _gradients(cfg, batch, joint_weight):
    from imro_jax.models import imro_loss
    from models_testlib import loss_config
    model = build_model(cfg)
    variables = _init(model, batch)

    def loss(params):
        out = model.apply({**variables, "params": params}, batch, train=False)
        return imro_loss(out, batch, loss_config(joint_weight=joint_weight))

    return jax.grad(loss, has_aux=True)(variables["params"])


def _head_gradient_norm(cfg, batch, joint_weight):
    grads, metrics = _gradients(cfg, batch, joint_weight)
    head = jax.tree_util.tree_leaves(grads["head"])
    return float(np.sqrt(sum(np.sum(np.square(g)) for g in head))), metrics


def test_joint_weight_trains_the_token_head_beside_the_vote():
    cfg = tiny_config()
    cfg.reliability = dict(cfg.reliability, entropy="predictive", decision=1.0)
    batch = make_batch(cfg, batch_size=6, seed=5)
    batch["label"] = np.arange(6) % cfg.num_classes
    alone, _ = _head_gradient_norm(cfg, batch, 0.0)
    assert alone == 0.0  # the vote alone: the joint head gets no task gradient
    trained, metrics = _head_gradient_norm(cfg, batch, 0.7)
    assert trained > 1e-4
    # the term is the joint head's own cross-entropy, computed here from its logits
    out = _apply(build_model(cfg), _init(build_model(cfg), batch), batch)
    log_p = log_softmax(np.asarray(out.joint_logits, np.float64), -1)
    np.testing.assert_allclose(metrics["joint_loss"], -np.mean(log_p[np.arange(6), batch["label"]]), rtol=1e-5)


def test_bad_joint_weight_is_named():
    from imro_jax.models import imro_loss
    from models_testlib import loss_config
    cfg = tiny_config()
    cfg.reliability = dict(cfg.reliability, entropy="predictive", decision=0.5)
    batch = make_batch(cfg, batch_size=4)
    model = build_model(cfg)
    out = _apply(model, _init(model, batch), batch)
    with pytest.raises(ValueError, match="loss.joint_weight"):
        imro_loss(out, batch, loss_config(joint_weight=-1.0))
    with pytest.raises(ValueError, match="loss.joint_weight"):
        config = loss_config()
        del config["joint_weight"]
        imro_loss(out, batch, config)


def test_detached_joint_head_leaves_the_encoders_gradient_as_the_vote_alone_gives_it():
    cfg = tiny_config()
    cfg.reliability = dict(cfg.reliability, entropy="predictive", decision=1.0, joint_detached=True)
    batch = make_batch(cfg, batch_size=6, seed=6)
    batch["label"] = np.arange(6) % cfg.num_classes
    vote_only, _ = _gradients(cfg, batch, 0.0)
    with_joint, _ = _gradients(cfg, batch, 0.7)
    encoders = [k for k in with_joint if k.startswith("encoders")]
    assert encoders
    for name in encoders:  # the joint loss reaches no encoder parameter
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8),
                               with_joint[name], vote_only[name])
    assert float(np.sum(np.abs(jax.tree_util.tree_leaves(with_joint["head"])[0]))) > 0  # the head still learns
    cfg.reliability = dict(cfg.reliability, joint_detached=False)
    shared, _ = _gradients(cfg, batch, 0.7)  # not detached: it does reach them
    assert any(not np.allclose(a, b, rtol=1e-5, atol=1e-8) for name in encoders for a, b in zip(
        jax.tree_util.tree_leaves(shared[name]), jax.tree_util.tree_leaves(vote_only[name])))


def test_bad_joint_detached_is_named():
    cfg = tiny_config()
    cfg.reliability = dict(entropy="predictive", eps=1e-6, decision=0.5, joint_detached=1)
    with pytest.raises(ValueError, match="model.reliability.joint_detached"):
        parse_model_config(cfg)


def test_joint_detached_without_the_vote_is_an_error_and_inert_for_fusions_without_one():
    cfg = tiny_config()
    cfg.reliability = dict(entropy="predictive", eps=1e-6, decision=0.0, joint_detached=True)
    with pytest.raises(ValueError, match="joint_detached=True needs model.reliability.decision > 0"):
        parse_model_config(cfg)
    # uniform fusion has no vote: its token fusion is the prediction, and the flag changes no gradient
    cfg = tiny_config("uniform")
    batch = make_batch(cfg, batch_size=6, seed=7)
    batch["label"] = np.arange(6) % cfg.num_classes
    cfg.reliability = dict(cfg.reliability, decision=1.0, joint_detached=False)
    plain, _ = _gradients(cfg, batch, 0.0)
    cfg.reliability = dict(cfg.reliability, joint_detached=True)
    flagged, _ = _gradients(cfg, batch, 0.0)
    encoders = [k for k in plain if k.startswith("encoders")]
    assert encoders and any(float(np.sum(np.abs(g))) > 0 for k in encoders for g in jax.tree_util.tree_leaves(plain[k]))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), flagged, plain)
