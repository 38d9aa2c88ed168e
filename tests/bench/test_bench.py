"""The benchmarks: FLOP accounting, compilation counting, and a smoke run of each one (`--tiny`).

The smoke runs execute every benchmark script end to end in a subprocess, as a user would, on
the smallest config (`experiments/configs/bench_tiny.py`). They share one persistent compilation
cache, so the tiny train step compiles once for all of them, run two at a time, and run at XLA
optimisation level 0 (they check that the scripts work, not how fast the code is: speed is what
the benchmarks themselves measure).
"""

import concurrent.futures
import importlib.util
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

REPO = pathlib.Path(__file__).resolve().parents[2]
BENCH = REPO / "experiments" / "bench"
sys.path.insert(0, str(BENCH))

import benchlib  # noqa: E402
from testenv import cpu_subprocess_env  # noqa: E402
import flops  # noqa: E402
from imro_jax.train import model_fns  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None
TRIMODAL_SMALL = dict(dim=16, num_heads=2, mlp_dim=32, depth=1, fusion_tokens=2)


def _trimodal_small(fusion):
    """The tri-modal encoders (text, ViT, waveform log-mel) at width 16, one block."""
    config = benchlib.variant(benchlib.load_config("trimodal"), fusion=fusion, **TRIMODAL_SMALL)
    config.model.modalities.vision = dict(encoder="vit", image_size=8, patch_size=4, channels=3)
    return config


def _abstract_params(config, batch):
    fns = model_fns.model_functions(config)
    params = nn.unbox(jax.eval_shape(lambda: fns.init_fn(jax.random.key(0), batch)))["params"]
    return params, fns.loss_fn


@pytest.mark.parametrize("config_name, fusion", [
    ("trimodal", "imro"), ("bench_tiny", "uniform"), ("bench_tiny", "concat"), ("bench_tiny", "late"),
])
def test_hand_flop_count_equals_jaxpr_count(config_name, fusion):
    """Hand-counted matmul FLOPs (formulas of the config) = dot_general FLOPs of the traced
    forward and gradient: two independent derivations of the same number."""
    if config_name == "trimodal":
        config = _trimodal_small(fusion)
        batch = benchlib.synthetic_batch(config.model, 3, audio_samples=2048)
    else:
        config = benchlib.variant(benchlib.load_config(config_name), fusion=fusion)
        batch = benchlib.synthetic_batch(config.model, 3, feature_length=5)
    params, loss_fn = _abstract_params(config, batch)
    rng = jax.random.key(1)

    def loss(p):
        return loss_fn(p, batch, rng, 0)[0]

    shapes = {k: np.shape(v) for k, v in batch.items() if k not in ("mask", "label")}
    terms = flops.hand_count(config.model, shapes, mi_bound=config.loss.mi_bound)
    assert flops.forward_flops(terms) == flops.jaxpr_matmul_flops(loss, params)
    assert flops.train_flops(terms) == flops.jaxpr_matmul_flops(jax.grad(loss), params)


def test_jaxpr_count_of_known_products():
    """2 m n k per product, batch dims multiplied, nested jits and scans counted."""
    a, b = jnp.ones((4, 5)), jnp.ones((5, 6))
    batched = jnp.ones((3, 4, 5)), jnp.ones((3, 5, 2))

    def fn(a, b, x, y):
        inner = jax.jit(lambda u, v: u @ v)(a, b)  # 2*4*5*6
        scanned = jax.lax.scan(lambda c, _: (c @ jnp.ones((6, 6)), None), inner, None, length=3)[0]
        return scanned.sum() + jnp.einsum("bij,bjk->bik", x, y).sum()  # 3 * 2*4*6*6 + 2*3*4*5*2

    expected = 2 * 4 * 5 * 6 + 3 * 2 * 4 * 6 * 6 + 2 * 3 * 4 * 5 * 2
    assert flops.jaxpr_matmul_flops(fn, a, b, *batched) == expected


def test_compile_counter_counts_only_cache_misses():
    f = jax.jit(lambda x: jnp.sin(x) * 3.0)
    with benchlib.CompileCounter() as counter:
        f(jnp.ones(3))
        f(jnp.ones(3) * 2)  # same shape: cached
        f(jnp.ones(4))  # new shape: recompiles
    assert counter.count("<lambda>") == 2
    assert counter.seconds("compile", "<lambda>") > 0


def test_host_initial_state_matches_abstract_state():
    config = benchlib.load_config("bench_tiny")
    batch = benchlib.synthetic_batch(config.model, 8)
    runtime = benchlib.runtime_for(config, batch, devices=jax.devices()[:1])
    state = benchlib.host_initial_state(runtime.abstract_state, seed=3)
    for leaf, spec in zip(jax.tree.leaves(state), jax.tree.leaves(runtime.abstract_state)):
        assert leaf.shape == spec.shape and leaf.dtype == spec.dtype
        assert leaf.sharding.is_equivalent_to(spec.sharding, leaf.ndim)
    flat = {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_leaves_with_path(state.params)}
    biases = [v for k, v in flat.items() if k.endswith("bias']")]
    scales = [v for k, v in flat.items() if k.endswith("'scale']")]
    assert biases and all(np.all(v == 0) for v in biases)
    assert scales and all(np.all(v == 1) for v in scales)
    others = np.concatenate([v.ravel() for k, v in flat.items() if not k.endswith(("bias']", "'scale']"))])
    assert abs(np.std(others) - 0.02) < 0.002


def test_synthetic_batch_validates_against_the_model_spec():
    from imro_jax.models import validate_batch

    for name in ("trimodal", "bench_tiny", "handwritten", "synth_caption", "bench_vitb"):
        config = benchlib.load_config(name)
        validate_batch(benchlib.synthetic_batch(config.model, 2), config.model)


SMOKE_RUNS = {  # script: (section title, extra arguments)
    "overhead.py": ("Benchmark 1", []),
    "efficiency.py": ("Benchmark 2", []),
    "scaling.py": ("Benchmark 3", ["--plot", "{root}/scaling.png"]),
    "input_vs_step.py": ("Benchmark 4", ["--data_dir", "{root}/tfds"]),
    "compile_time.py": ("Benchmark 5", []),
    "multidevice.py": ("Benchmark 6", []),
    "profile_step.py": ("Profile", []),
    "efficiency_width.py": ("Benchmark 2: MFU against model width", []),
    "options.py": ("Model implementation options", []),
    "peer_torch.py": ("Benchmark 7: PyTorch peer", []),  # needs the optional torch (skipped without)
}


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Runs every script with `--tiny`: `overhead.py` first (it compiles the tiny IMRO and uniform
    steps into the shared cache), then the others two at a time (compiling is single-threaded).

    Returns:
        `{script: (CompletedProcess, results markdown path, temp root)}`.
    """
    root = tmp_path_factory.mktemp("bench_smoke")
    env = cpu_subprocess_env(root / "jax_cache")

    def run(script):
        results = root / f"{script}.md"
        args = [a.format(root=root) for a in SMOKE_RUNS[script][1]]
        proc = subprocess.run(
            [sys.executable, str(BENCH / script), "--tiny", "--results", str(results), *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
        )
        return script, (proc, results, root)

    first, *rest = [script for script in SMOKE_RUNS if HAS_TORCH or script != "peer_torch.py"]
    runs = dict([run(first)])
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        runs.update(pool.map(run, rest))
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("script", list(SMOKE_RUNS))
def test_benchmark_runs_tiny(smoke_runs, script):
    if script == "peer_torch.py" and not HAS_TORCH:
        pytest.skip("torch is not installed (the optional `bench` extra)")
    proc, results, root = smoke_runs[script]
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = results.read_text()
    assert f"## {SMOKE_RUNS[script][0]}" in text and "load average" in text and "\n| " in text
    if script == "overhead.py":
        assert "| train | imro |" in text and "| train | uniform |" in text
        assert "statistics pass over 64 examples: first call" in text and "target" in text
    if script == "compile_time.py":
        assert "none after the first call" in text
    if script == "multidevice.py":
        assert "(OK the" in text
    if script == "scaling.py":
        assert (root / "scaling.png").stat().st_size > 0
    if script == "peer_torch.py":  # the checks ran: same parameters, same loss, same FLOPs
        assert "names and shapes equal" in text and "| torch eager |" in text and "(equal)" in text
    if script == "options.py":  # the same function: same first-step loss to float rounding
        assert "| absorbed_fusion_kv=True |" in text
    if script == "efficiency_width.py":  # --tiny sweeps widths 16 and 32
        assert "\n| 16 | 2 x 8 |" in text and "\n| 32 | 2 x 16 |" in text and "MFU target on cpu" in text


def test_width_variant_keeps_heads_and_mlp_ratio():
    import efficiency_width

    base = benchlib.load_config("trimodal")
    wide = efficiency_width.width_variant(base, 256)
    assert (wide.model.dim, wide.model.mlp_dim, wide.model.num_heads) == (256, 512, base.model.num_heads)
    assert base.model.dim == 64  # the base config is not modified
    with pytest.raises(ValueError, match="not divisible by num_heads=4"):
        efficiency_width.width_variant(base, 66)
