"""The model's implementation options (`attention_impl`, `head_major_qkv`, `absorbed_fusion_kv`).

Each option must compute the same function as the default (outputs to float tolerance) and must
really be applied: the traced program differs from the default's in the way the option claims
(fewer products, fewer matmul FLOPs, padded lengths), so a test passes only if the option reached
the layer it names. The defaults must trace to exactly the program of a config without the keys.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from imro_jax.models import build_model, parse_model_config
from imro_jax.models.transformer import AttentionOptions, MultiHeadAttention, key_padding_mask, padded_attention
from imro_jax.perf import flops

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from models_testlib import TRIMODAL_MODALITIES, TRIMODAL_NUM_SAMPLES, make_batch, tiny_config  # noqa: E402


def _inputs(cross: bool):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 5, 16)), jnp.float32)
    context = jnp.asarray(rng.normal(size=(2, 7, 16)), jnp.float32) if cross else x
    key_mask = np.ones((2, context.shape[1]), bool)
    key_mask[0, -2:] = False
    return x, context, key_padding_mask(jnp.asarray(key_mask))


def _count(fn, *args, primitive="dot_general"):
    return str(jax.make_jaxpr(fn)(*args)).count(f"{primitive}[")


@pytest.mark.parametrize("causal, cross", [(False, False), (True, False), (False, True)])
def test_head_major_layer_is_the_same_function_with_a_fused_qkv(causal, cross):
    x, context, mask = _inputs(cross)
    reference = MultiHeadAttention(num_heads=4, dim=16)
    params = reference.init(jax.random.key(0), x, context, mask, is_causal=causal)
    head_major = MultiHeadAttention(num_heads=4, dim=16, options=AttentionOptions(head_major=True))
    expected = reference.apply(params, x, context, mask, is_causal=causal)
    got = head_major.apply(params, x, context, mask, is_causal=causal)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-6)
    products = [_count(lambda p, m=m: m.apply(p, x, context, mask, is_causal=causal), params)
                for m in (reference, head_major)]
    # QKV, QK^T, AV, out: self-attention's Q, K, V are one product (6 -> 4); cross-attention keeps 3
    assert products == ([6, 6] if cross else [6, 4])


def test_padded_attention_pads_lengths_and_equals_the_unpadded_call():
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.normal(size=(2, n, 2, 4)), jnp.float32) for n in (5, 7, 7))
    key_mask = np.ones((2, 7), bool)
    key_mask[1, 3:] = False
    mask = key_padding_mask(jnp.asarray(key_mask))
    expected = jax.nn.dot_product_attention(q, k, v, mask=mask)
    got = padded_attention(q, k, v, mask, implementation="xla")
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6, atol=1e-6)
    jaxpr = str(jax.make_jaxpr(lambda *a: padded_attention(*a, implementation="xla"))(q, k, v, mask))
    assert "f32[2,8,2,4]" in jaxpr  # both lengths padded to 8
    causal = padded_attention(q[:, :5], k[:, :5], v[:, :5], None, is_causal=True, implementation="xla")
    np.testing.assert_allclose(
        np.asarray(causal),
        np.asarray(jax.nn.dot_product_attention(q[:, :5], k[:, :5], v[:, :5], is_causal=True)),
        rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the error off GPU")
def test_cudnn_attention_refuses_a_non_gpu_backend():
    x = jnp.ones((1, 4, 16), jnp.bfloat16)
    layer = MultiHeadAttention(num_heads=2, dim=16, options=AttentionOptions(impl="cudnn"))
    with pytest.raises(ValueError, match="needs a GPU backend"):
        layer.init(jax.random.key(0), x, x)


@pytest.mark.parametrize("changes, message", [
    (dict(attention_impl="flash"), "attention_impl must be one of"),
    (dict(attention_impl="cudnn", head_major_qkv=True), "cannot be combined"),
    (dict(absorbed_fusion_kv=1), "absorbed_fusion_kv must be a bool"),
])
def test_invalid_options_are_rejected(changes, message):
    config = tiny_config()
    config.update(changes)
    with pytest.raises(ValueError, match=message):
        parse_model_config(config)


def _trimodal(**options):
    config = tiny_config(modalities=TRIMODAL_MODALITIES)
    config.update(options)
    return config


def _loss_and_program(config, batch, params=None):
    model = build_model(config)
    if params is None:
        params = model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)}, batch, train=False)

    def logits(variables):
        return model.apply(variables, batch, train=False).logits

    return params, np.asarray(logits(params)), jax.make_jaxpr(logits)(params), flops.jaxpr_matmul_flops(logits, params)


def test_defaults_trace_to_the_program_of_a_config_without_the_keys():
    batch = make_batch(_trimodal(), 4, num_samples=TRIMODAL_NUM_SAMPLES)
    params, _, plain, _ = _loss_and_program(_trimodal(), batch)
    _, _, explicit, _ = _loss_and_program(
        _trimodal(attention_impl="xla", head_major_qkv=False, absorbed_fusion_kv=False), batch, params)
    assert str(explicit) == str(plain)


@pytest.mark.parametrize("option", ["head_major_qkv", "absorbed_fusion_kv"])
def test_model_option_is_applied_and_keeps_the_function(option):
    """Same parameters, same logits (float tolerance), a different program: fewer products
    (`head_major_qkv`: one QKV product per self-attention) or fewer matmul FLOPs
    (`absorbed_fusion_kv`: no K/V projection of the modality tokens)."""
    batch = make_batch(_trimodal(), 4, num_samples=TRIMODAL_NUM_SAMPLES)
    params, expected, plain, plain_flops = _loss_and_program(_trimodal(), batch)
    _, got, program, option_flops = _loss_and_program(_trimodal(**{option: True}), batch, params)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    if option == "head_major_qkv":  # 3 encoders x 1 block: 2 fewer products each
        assert str(plain).count("dot_general[") - str(program).count("dot_general[") == 3 * 2
    else:
        b, m, n, f, d, h = 4, 3, 7, 2, 16, 2  # batch, modalities, padded tokens (1 + 6), F, dim, heads
        default = 4 * b * m * n * d * d + 4 * b * m * f * n * d  # K, V of every token; QK^T, AV
        absorbed = 2 * b * f * d * d + 4 * b * m * f * n * h * d + 2 * b * m * f * d * d  # q W_K^T; scores, pooling; W_V
        assert plain_flops - option_flops == default - absorbed > 0
