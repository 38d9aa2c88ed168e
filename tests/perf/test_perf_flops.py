"""FLOP accounting three ways: the hand count from the config, the jaxpr's dot_generals and XLA.

The hand count is written from the model's formulas, the jaxpr count is read mechanically off
the traced program, and XLA's cost analysis comes from the compiler: three derivations of
(bounds on) the same number.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from perflib import load, trimodal_small

from imro_jax import perf
from imro_jax.models.spec import parse_model_config
from imro_jax.train import model_fns


@pytest.mark.parametrize("config_name, fusion", [
    ("trimodal", "imro"), ("bench_tiny", "uniform"), ("bench_tiny", "concat"), ("bench_tiny", "late"),
    ("handwritten", "imro"),  # the vote with the detached joint head: K/V and R get no gradient from it
])
def test_hand_flop_count_equals_jaxpr_count(config_name, fusion):
    """Hand-counted matmul FLOPs = dot_general FLOPs of the traced forward and gradient."""
    if config_name == "trimodal":
        config = trimodal_small(fusion)
        batch = perf.synthetic_batch(config.model, 3, audio_samples=2048)
    else:
        config = load(config_name, fusion=fusion)
        batch = perf.synthetic_batch(config.model, 3, feature_length=5)
    if config_name == "handwritten":
        assert config.model.reliability.joint_detached and config.model.reliability.decision > 0
    fns = model_fns.model_functions(config)
    params = nn.unbox(jax.eval_shape(lambda: fns.init_fn(jax.random.key(0), batch)))["params"]

    def loss(p):
        return fns.loss_fn(p, batch, jax.random.key(1), 0)[0]

    terms = perf.train_step_terms(config, batch)
    assert perf.forward_flops(terms) == perf.jaxpr_matmul_flops(loss, params)
    assert perf.train_flops(terms) == perf.jaxpr_matmul_flops(jax.grad(loss), params)
    assert sum(perf.flop_groups(terms).values()) == perf.train_flops(terms)


def test_hand_count_equals_the_production_train_step_jaxpr():
    """The whole jitted step of `build_runtime` (loss, gradient, optimizer), traced abstractly."""
    config = load("bench_tiny")
    batch = perf.synthetic_batch(config.model, 4)
    runtime = perf.runtime_for(config, batch, devices=jax.devices()[:1])
    with runtime.tracing_context():
        counted = perf.jaxpr_matmul_flops(runtime.jitted, runtime.abstract_state, perf.abstract_batch(runtime, batch))
    assert counted == perf.train_flops(perf.train_step_terms(config, batch))


def test_jaxpr_count_of_known_products():
    """2 m n k per product, batch dims multiplied, nested jits and scans counted."""
    a, b = jnp.ones((4, 5)), jnp.ones((5, 6))
    batched = jnp.ones((3, 4, 5)), jnp.ones((3, 5, 2))

    def fn(a, b, x, y):
        inner = jax.jit(lambda u, v: u @ v)(a, b)  # 2*4*5*6
        scanned = jax.lax.scan(lambda c, _: (c @ jnp.ones((6, 6)), None), inner, None, length=3)[0]
        return scanned.sum() + jnp.einsum("bij,bjk->bik", x, y).sum()  # 3 * 2*4*6*6 + 2*3*4*5*2

    expected = 2 * 4 * 5 * 6 + 3 * 2 * 4 * 6 * 6 + 2 * 3 * 4 * 5 * 2
    assert perf.jaxpr_matmul_flops(fn, a, b, *batched) == expected
    with pytest.raises(NotImplementedError, match="while"):
        perf.jaxpr_matmul_flops(lambda x: jax.lax.while_loop(lambda c: c.sum() < 9, lambda c: c @ c, x), a[:, :4])


def test_xla_cost_analysis_of_a_matmul_and_of_the_train_step():
    """XLA counts 2 m k n for a lone product, and at least the matmul FLOPs for the step."""
    a, b = jnp.ones((32, 48)), jnp.ones((48, 16))
    compiled = jax.jit(jnp.dot).lower(a, b).compile()
    assert perf.xla_flops(compiled) == pytest.approx(2 * 32 * 48 * 16, rel=0.01)

    config = load("bench_tiny")
    batch = perf.synthetic_batch(config.model, 4)
    bench = perf.build_step_bench("tiny", config, batch, devices=jax.devices()[:1])
    compiled = bench.compile_train()
    hand = perf.train_flops(perf.train_step_terms(config, batch))
    assert hand <= perf.xla_flops(compiled) < 10 * hand
    assert perf.memory_bytes(compiled) > sum(np.asarray(x).nbytes for x in jax.tree.leaves(batch))
    # the same program compiled from shapes alone: the same analyses
    abstract = perf.compile_train_abstract(config, batch, devices=jax.devices()[:1])
    assert perf.memory_bytes(abstract) == perf.memory_bytes(compiled)
    assert perf.xla_flops(abstract) == perf.xla_flops(compiled)


def test_model_shaped_product_is_the_largest_encoder_mlp_input():
    config = trimodal_small()
    batch = perf.synthetic_batch(config.model, 3, audio_samples=2048)
    terms = perf.train_step_terms(config, batch)
    audio = dict(parse_model_config(config.model).modalities)["audio"]
    frames = 1 + (2048 - audio.n_fft) // audio.hop_length
    tokens = {"text": batch["text"].shape[1], "vision": (8 // 4) ** 2,
              "audio": (frames // audio.patch_frames) * (audio.num_mels // audio.patch_mels)}
    # [batch x (tokens + class token), dim] @ [dim, mlp_dim] of the longest encoder
    assert perf.model_shaped_product(terms, config.model) == (3 * (max(tokens.values()) + 1), 16, 32)


def test_hand_count_names_what_it_cannot_count():
    config = load("bench_tiny")
    with pytest.raises(ValueError, match="missing"):
        perf.hand_count(config.model, {})
    caption = load("synth_caption")
    with pytest.raises(NotImplementedError, match="classification and regression"):
        perf.train_step_terms(caption, perf.synthetic_batch(caption.model, 2))
