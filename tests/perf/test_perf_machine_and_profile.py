"""The matmul probes (FLOPs and products against numpy) and the op profile's attribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imro_jax import perf
from imro_jax.perf import op_profile


def test_matmul_probe_multiplies_and_counts_2mkn():
    call, flops = perf.matmul_probe((3, 5, 7))
    assert flops == 2 * 3 * 5 * 7 and call().shape == (3, 7)
    square, square_flops = perf.matmul_probe((4, 4, 4), jnp.bfloat16)
    assert square_flops == 128 and square().dtype == jnp.bfloat16
    assert perf.numpy_matmul_probe(6)().shape == (6, 6)
    with pytest.raises(ValueError, match=r"\(m, k, n\), all positive, got \(0, 2, 2\)"):
        perf.matmul_probe((0, 2, 2))


def test_machine_info_names_the_devices():
    info = perf.machine_info()
    assert set(info) == {"cpu", "python", "versions", "devices"}
    assert f"{len(jax.devices())} x " in info["devices"] and f"jax {jax.__version__}" in info["versions"]


@pytest.mark.parametrize("op_name, expected", [
    ("jit(train_step)/jvp(IMROModel)/encoders_audio/trunk/transformer/block_0/mlp/fc1/dot_general", "encoders_audio/mlp"),
    ("jit(train_step)/transpose(jvp(IMROModel))/encoders_text/embed/gather", "encoders_text/embed"),
    ("jit(train_step)/jvp(IMROModel)/token_fusion/reliability_attention/dot_general", "token_fusion"),
    ("jit(train_step)/jvp(imro_loss)/log_softmax", "loss"),
    ("jit(train_step)/adamw/mul", "optimizer"),
])
def test_component_reads_the_flax_module_path(op_name, expected):
    assert op_profile.component(op_name) == expected


def test_op_kind_classifies_by_name_and_label():
    assert op_profile.op_kind("dot.3", "dot") == "matmul"
    assert op_profile.op_kind("fusion.1", "kOutput") == "elementwise"
    assert op_profile.op_kind("transpose.2", "transpose") == "layout"
    assert op_profile.op_kind("reduce-window", "reduce") == "reduce"
    assert op_profile.op_kind("fft.1", "fft") == "fft"


def test_profile_attributes_traced_ops_of_a_compiled_program():
    def step(x, w):
        return jnp.tanh(x @ w).sum()

    x, w = jnp.ones((64, 32)), jnp.ones((32, 16))
    compiled = jax.jit(jax.grad(step, argnums=1)).lower(x, w).compile()
    metadata = perf.instruction_metadata(compiled.as_text())
    assert any(label == "dot" or "dot" in name for name, (label, _) in metadata.items())
    times = perf.trace_op_times(lambda: jax.block_until_ready(compiled(x, w)), steps=2)
    groups = perf.group_op_times(times, metadata)
    assert set(groups) == {"component", "pass", "kind", "op"}
    assert sum(groups["pass"].values()) == pytest.approx(sum(groups["kind"].values()))
    assert sum(groups["pass"].values()) > 0 and groups["pass"]["backward"] > 0
    named = sum(seconds for name, seconds in times.items() if name in metadata)
    assert sum(groups["component"].values()) == pytest.approx(named)
