"""The whole model: shapes for every encoder/head/fusion, mask properties under jit, training,
sharded execution on an 8-device mesh, logical axes, and the experiment configs.

Compilations are the cost here, so each test jits one function per model config and reuses it.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from models_testlib import (
    ONE_MODALITY,
    TWO_MODALITIES,
    load_experiment_config,
    loss_config,
    make_batch,
    tiny_config,
)

from imro_jax.models import PARAM_AXES, build_model, generate, imro_loss


def key(seed):
    """A PRNG key whose generator compiles fast on CPU (threefry init graphs take ~3x longer)."""
    return jax.random.key(seed, impl="unsafe_rbg")


def init_params(model, batch):
    return jax.jit(lambda k, b: model.init({"params": k}, b, train=False))(key(0), batch)


@functools.lru_cache(maxsize=None)
def tiny_model(fusion="imro", nonfinite="error"):
    cfg = tiny_config(fusion, nonfinite=nonfinite)
    model = build_model(cfg)
    batch = make_batch(cfg)
    variables = init_params(model, batch)
    apply = jax.jit(lambda v, b: model.apply(v, b, train=False))
    return cfg, model, variables, apply


def assert_same_rows(out_a, out_b, rows):
    for field in ("logits", "reliability", "entropy", "mi", "unimodal_logits"):
        np.testing.assert_allclose(getattr(out_a, field)[rows], getattr(out_b, field)[rows], rtol=1e-5, atol=1e-6,
                                   err_msg=field)


# ---- parameters carry logical axis names ----

def assert_logical_axes(variables):
    """Every parameter is boxed with one logical name (or None) per axis, from PARAM_AXES."""
    leaves = jax.tree_util.tree_leaves_with_path(variables, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert len(leaves) > 20
    for path, leaf in leaves:
        where = jax.tree_util.keystr(path)
        assert isinstance(leaf, nn.LogicallyPartitioned), f"{where} has no logical axis names"
        assert len(leaf.names) == leaf.value.ndim, where
        assert set(leaf.names) <= set(PARAM_AXES) | {None}, (where, leaf.names)
        assert any(n is not None for n in leaf.names), where
        named = [n for n in leaf.names if n is not None]
        assert len(named) == len(set(named)), f"{where} repeats a name: {leaf.names}"


def test_every_parameter_has_logical_axis_names():
    assert_logical_axes(tiny_model("imro")[2])  # more models are checked where they are built


def test_unnormalised_reliability_is_the_raw_ratio_and_changes_the_fusion():
    cfg, _, variables, apply = tiny_model("imro")
    batch = make_batch(cfg, seed=2)
    batch["mask"]["a"][0] = False
    base = apply(variables, batch)
    raw_cfg = tiny_config("imro")
    raw_cfg.reliability.normalize = False
    raw_model = build_model(raw_cfg)
    raw = jax.jit(lambda v, b: raw_model.apply(v, b, train=False))(variables, batch)  # same parameters: R only changes scale
    np.testing.assert_allclose(raw.entropy, base.entropy, rtol=1e-6)
    present = np.asarray(raw.present)
    eps = cfg.reliability.eps
    expected = np.where(present, (np.maximum(raw.mi, 0) + eps) / (np.log1p(np.exp(raw.entropy)) + eps), 0.0)
    np.testing.assert_allclose(raw.reliability, expected, rtol=1e-4)
    np.testing.assert_allclose(raw.reliability / raw.reliability.sum(-1, keepdims=True), base.reliability, rtol=1e-4)
    assert not np.allclose(raw.logits, base.logits)


# ---- missing modalities, padding, invalid samples (under jit) ----

def test_missing_modality_cannot_change_the_sample():
    cfg, _, variables, apply = tiny_model("imro")
    batch = make_batch(cfg, seed=1)
    batch["mask"]["a"][0] = False
    base = apply(variables, batch)
    assert base.reliability[0, 0] == 0.0
    np.testing.assert_allclose(base.reliability.sum(-1), 1.0, rtol=1e-6)
    perturbed = {**batch, "a": batch["a"].copy()}
    perturbed["a"][0] = np.nan  # even NaN in an absent modality is harmless
    out = apply(variables, perturbed)
    assert_same_rows(out, base, slice(None))
    moved = {**batch, "a": batch["a"].copy()}
    moved["a"][1] += 1.0  # a present modality does change its sample (the test can fail)
    assert not np.allclose(apply(variables, moved).logits[1], base.logits[1])


def test_no_modality_present_under_jit_is_flagged_invalid():
    cfg, model, variables, apply = tiny_model("imro")
    batch = make_batch(cfg, seed=2)
    for name in batch["mask"]:
        batch["mask"][name][3] = False
    out = apply(variables, batch)
    assert not bool(out.valid[3]) and bool(out.valid[np.arange(8) != 3].all())
    np.testing.assert_array_equal(out.logits[3], 0.0)
    np.testing.assert_array_equal(out.reliability[3], 0.0)
    loss, metrics = jax.jit(lambda o, b: imro_loss(o, b, loss_config()))(out, batch)
    assert np.isfinite(loss) and metrics["valid_fraction"] == pytest.approx(7 / 8)
    with pytest.raises(ValueError, match=r"samples \[3\] have no modality present"):
        model.apply(variables, batch, train=False)  # eager: a clear error


def test_nonfinite_error_mode_flags_sample_and_as_missing_drops_modality():
    cfg, _, variables, apply = tiny_model("imro")
    batch = make_batch(cfg, seed=3)
    nan_batch = {**batch, "b": batch["b"].copy()}
    nan_batch["b"][2, 1, 0] = np.inf
    out = apply(variables, nan_batch)
    assert not bool(out.valid[2]) and not bool(out.present[2, 1]) and np.isfinite(out.logits).all()
    as_missing = build_model(tiny_config("imro", nonfinite="as_missing"))  # same parameters
    apply = jax.jit(lambda v, b: as_missing.apply(v, b, train=False))
    out = apply(variables, nan_batch)
    masked = {**batch, "mask": {**batch["mask"], "b": batch["mask"]["b"].copy()}}
    masked["mask"]["b"][2] = False
    assert bool(out.valid[2])
    assert_same_rows(out, apply(variables, masked), slice(None))


def test_host_numpy_variables_apply_under_jit_with_a_label():
    """Variables read back from a checkpoint are numpy arrays, and a predictor closes over them:
    the jitted forward with a label (the critic looks the label up in its embedding table) must
    work on such constants and equal the run with the variables as arguments."""
    cfg, model, variables, apply = tiny_model("imro")
    batch = make_batch(cfg, seed=4)
    assert "label" in batch
    host = jax.tree.map(np.asarray, nn.unbox(variables))
    closed = jax.jit(lambda b: model.apply(host, b, train=False))
    on_host, on_device = closed(batch), apply(variables, batch)
    np.testing.assert_allclose(on_host.critic_scores, on_device.critic_scores, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(on_host.logits, on_device.logits, rtol=1e-4, atol=1e-5)  # constants fold


def test_text_padding_cannot_change_outputs():
    from imro_jax.models.encoders import TextEncoder, TrunkSpec
    from imro_jax.models.spec import TextSpec

    encoder = TextEncoder(TextSpec(vocab_size=20, max_len=8), TrunkSpec(16, 2, 32, 1, 0.0))
    ids = np.array([[3, 4, 5, 0, 0, 0], [7, 0, 0, 0, 0, 0]], np.int32)

    @jax.jit
    def both_lengths(ids):
        params = encoder.init(key(0), ids, train=False)
        return encoder.apply(params, ids, train=False), encoder.apply(params, ids[:, :3], train=False)

    long_out, short_out = both_lengths(ids)
    np.testing.assert_allclose(long_out.pooled, short_out.pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(long_out.tokens[0, :4], short_out.tokens[0, :4], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(long_out.mask[1], [1, 1, 0, 0, 0, 0, 0])


def test_feature_sequence_zero_steps_are_padding():
    """MulT's front-padded all-zero steps: the pooled output equals the trunk run on the real
    steps alone (same positions), so the padding is invisible; a zero step mid-sequence counts too."""
    from imro_jax.models.encoders import EncoderTrunk, FeatureEncoder, TrunkSpec
    from imro_jax.models.layers import sinusoidal_positions
    from imro_jax.models.spec import FeatureSpec

    trunk = TrunkSpec(16, 2, 32, 1, 0.0)
    encoder = FeatureEncoder(FeatureSpec(input_dim=4), trunk)
    features = np.random.default_rng(0).normal(size=(2, 6, 4)).astype(np.float32)
    features[0, :3] = 0.0  # front padding
    features[1, 2] = 0.0  # an all-zero step inside the sequence
    real = [np.arange(3, 6), np.array([0, 1, 3, 4, 5])]

    @jax.jit
    def masked_and_reference(features):
        params = nn.meta.unbox(encoder.init(key(0), features, train=False))["params"]
        out = encoder.apply({"params": params}, features, train=False)
        project = params["project"]
        x = features @ project["kernel"] + project["bias"] + sinusoidal_positions(6, 16)[None]
        refs = [EncoderTrunk(trunk).apply({"params": params["trunk"]}, x[b, idx][None],
                                          jnp.ones((1, len(idx)), bool), train=False).pooled[0]
                for b, idx in enumerate(real)]
        return out, jnp.stack(refs)

    out, reference = masked_and_reference(features)
    np.testing.assert_array_equal(out.mask, [[1, 0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 1, 1, 1]])
    np.testing.assert_allclose(out.pooled, reference, rtol=1e-5, atol=1e-6)


# ---- every fusion: shapes and a few training steps that reduce the loss ----

# Every fusion once; the estimator's entropy choices and the InfoNCE bound ride along.
TRAINED = [("imro", "predictive", "barber_agakov"), ("uniform", "gaussian", "barber_agakov"),
           ("concat", "embedding", "infonce"), ("late", "predictive", "barber_agakov"),
           ("energy", "predictive", "barber_agakov"), ("evidential", "predictive", "barber_agakov")]


@pytest.mark.parametrize("fusion,entropy,mi_bound", TRAINED)
def test_fusion_shapes_and_training_reduces_loss(fusion, entropy, mi_bound):
    cfg = tiny_config(fusion, entropy=entropy, modalities=TWO_MODALITIES)
    model = build_model(cfg)
    batch = make_batch(cfg, seed=4)
    batch["mask"]["c"][:3] = False  # some missing text
    variables = init_params(model, batch)
    assert_logical_axes(variables)
    params = nn.meta.unbox(variables)
    lcfg = loss_config(mi_bound=mi_bound)
    optimizer = optax.adam(3e-3)

    def loss_fn(p, key, step):
        out = model.apply(p, batch, train=True, rngs={"dropout": key})
        loss, metrics = imro_loss(out, batch, lcfg, step=step)
        return loss, (out, metrics)

    @jax.jit
    def train_step(p, opt_state, key, step):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, key, step)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss, aux

    opt_state = optimizer.init(params)
    losses = []
    for step in range(8):
        params, opt_state, loss, (out, metrics) = train_step(params, opt_state, key(step), step)
        losses.append(float(loss))
        if step == 0:
            assert out.logits.shape == (8, 3) and out.unimodal_logits.shape == (8, 2, 3)
            for field in ("reliability", "entropy", "mi", "present"):
                assert getattr(out, field).shape == (8, 2), field
            assert (out.fused is None) == (fusion in ("late", "energy", "evidential"))
            assert out.fused is None or out.fused.shape == (8, 2, 16)
            assert (out.embedding_log_var is None) == (entropy != "gaussian")
            np.testing.assert_array_equal(out.reliability[:3, 1], 0.0)  # missing text
            np.testing.assert_allclose(out.reliability.sum(-1), 1.0, rtol=1e-5)
            assert {"reliability/a", "entropy/c", "mi/c", "mi_bound/a", "accuracy"} <= set(metrics)
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0] - 0.05, losses


# ---- regression (feature sequences + precomputed spectrogram) and generation heads ----

def test_regression_head_with_sequence_features_and_precomputed_spectrogram():
    modalities = {
        "audio": dict(encoder="spectrogram", input="spectrogram", sample_rate=8000, n_fft=64, hop_length=32,
                      num_mels=8, fmin=0.0, fmax=4000.0, patch_frames=2, patch_mels=4),
        "text": dict(encoder="feature", input_dim=6),
        "vision": dict(encoder="feature", input_dim=5),
    }
    cfg = tiny_config("imro", task="regression", modalities=modalities)
    model = build_model(cfg)
    batch = make_batch(cfg, sequence_lengths={"text": 7, "vision": 7})

    @jax.jit
    def init_loss_and_grad(b):  # one compilation for init, forward and backward
        def f(p):
            out = model.apply(p, b, train=False)
            return imro_loss(out, b, loss_config())[0], out
        variables = model.init({"params": key(0)}, b, train=False)
        return jax.value_and_grad(f, has_aux=True)(nn.meta.unbox(variables)), variables

    ((loss, out), grads), variables = init_loss_and_grad(batch)
    assert_logical_axes(variables)
    assert out.logits.shape == (8,) and out.unimodal_logits.shape == (8, 3, 2)
    assert out.pooled.shape == (8, 3, 16)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("fusion", ["uniform", "concat", "late"])
def test_every_regression_fusion_on_front_padded_sequences(fusion):
    """The affect setting: feature sequences with all-zero front padding, L1 regression; the
    fusions other than imro (tested above) give finite losses and gradients."""
    modalities = {"text": dict(encoder="feature", input_dim=6), "vision": dict(encoder="feature", input_dim=5)}
    cfg = tiny_config(fusion, task="regression", modalities=modalities)
    model = build_model(cfg)
    batch = make_batch(cfg, sequence_lengths={"text": 7, "vision": 7})
    for name in modalities:
        batch[name][:, :3] = 0.0  # MulT's front padding

    @jax.jit
    def loss_and_grad(b):
        def f(p):
            out = model.apply(p, b, train=False)
            return imro_loss(out, b, loss_config(regression_loss="l1"))[0], out
        return jax.value_and_grad(f, has_aux=True)(nn.meta.unbox(model.init({"params": key(0)}, b, train=False)))

    (loss, out), grads = loss_and_grad(batch)
    assert out.logits.shape == (8,) and np.isfinite(loss)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_generation_teacher_forcing_and_greedy_decoding():
    cfg = tiny_config("imro", task="generation", modalities=ONE_MODALITY)
    model = build_model(cfg)
    batch = make_batch(cfg)
    variables = init_params(model, batch)
    assert_logical_axes(variables)
    out, loss = jax.jit(lambda v, b: (lambda o: (o, imro_loss(o, b, loss_config())[0]))(
        model.apply(v, b, train=False)))(variables, batch)
    assert out.logits.shape == (8, 5, 12) and out.unimodal_logits.shape == (8, 1, 12)
    assert np.isfinite(loss)

    no_caption = {k: v for k, v in batch.items() if k != "caption"}
    tokens = np.asarray(jax.jit(functools.partial(generate, model))(variables, no_caption))
    assert tokens.shape == (8, 5) and tokens.dtype == np.int32
    # Second implementation: a Python loop over positions feeding back the argmax.
    context = jax.jit(lambda v, b: model.apply(v, b, method=type(model).fuse))(variables, no_caption)
    decode = jax.jit(lambda c, p: model.apply(variables, c, p, method=type(model).decode))
    prefix = np.zeros((8, 5), np.int32)
    ended = np.zeros(8, bool)
    for t in range(5):
        nxt = np.where(ended, 0, np.asarray(decode(context, prefix))[:, t].argmax(-1))
        prefix[:, t] = nxt
        ended |= nxt == 0
    np.testing.assert_array_equal(tokens, prefix)


# ---- sharding: (data=4, model=2) mesh equals one device ----

def test_sharded_forward_on_8_device_mesh_matches_single_device():
    cfg, model, variables, apply = tiny_model("imro")
    batch = make_batch(cfg, seed=5)
    expected = apply(variables, batch)
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rules = (("batch", "data"), ("mlp", "model"), ("heads", "model"), ("vocab", "model"))
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(variables), mesh, rules)
    sharded_params = jax.device_put(nn.meta.unbox(variables), shardings)
    data_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    sharded_batch = jax.device_put(batch, data_sharding)
    mlp_kernel = sharded_params["params"]["token_fusion"]["mlp"]["fc1"]["kernel"]
    assert mlp_kernel.sharding.spec == jax.sharding.PartitionSpec(None, "model")

    @jax.jit
    def forward(p, b):
        with nn.logical_axis_rules(rules):
            return model.apply(p, b, train=False)

    with jax.set_mesh(mesh):
        out = forward(sharded_params, sharded_batch)
    assert len(out.logits.sharding.device_set) == 8
    for field in ("logits", "reliability", "entropy", "mi", "fused"):
        np.testing.assert_allclose(getattr(out, field), getattr(expected, field), rtol=1e-4, atol=1e-4, err_msg=field)


# ---- the experiment configs build and run forward + backward ----

@pytest.mark.parametrize("name", ["trimodal", "handwritten"])
def test_experiment_config_forward_and_backward(name):
    config = load_experiment_config(name)
    model = build_model(config.model)
    batch = make_batch(config.model, batch_size=2, sequence_lengths={})
    batch["mask"][sorted(batch["mask"])[0]][1] = False

    @jax.jit
    def init_loss_and_grad(b):  # one compilation for init, forward and backward
        def f(p):
            out = model.apply(p, b, train=True, rngs={"dropout": key(1)})
            return imro_loss(out, b, config.loss, step=0)
        return jax.value_and_grad(f, has_aux=True)(nn.meta.unbox(model.init({"params": key(0)}, b, train=False)))

    (loss, metrics), grads = init_loss_and_grad(batch)
    assert np.isfinite(loss)
    grad_norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(grad_norms)) and sum(grad_norms) > 0
    names = sorted(config.model.modalities)
    assert set(f"reliability/{n}" for n in names) <= set(metrics)
    assert metrics[f"reliability/{names[0]}"] == pytest.approx(1 / len(names), abs=0.5)
