"""A smoke run of every benchmark script, end to end, as a user runs it (`--tiny`).

The scripts run in subprocesses on the smallest config (`experiments/configs/bench_tiny.py`).
They share one persistent compilation cache, so the tiny train step compiles once for all of
them, run two at a time, and run at XLA optimisation level 0 (they check that the scripts work,
not how fast the code is: speed is what the benchmarks themselves measure). What they measure
with is library code, tested in `tests/perf`.
"""

import concurrent.futures
import importlib.util
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BENCH = REPO / "experiments" / "bench"
sys.path.insert(0, str(BENCH))

import benchlib  # noqa: E402
from testenv import cpu_subprocess_env  # noqa: E402

SMOKE_RUNS = {  # script: (section title, extra arguments)
    "overhead.py": ("Benchmark 1", []),
    "efficiency.py": ("Benchmark 2", ["--widths", "16,32"]),
    "scaling.py": ("Benchmark 3", ["--plot", "{root}/scaling.png"]),
    "input_pipeline.py": ("Benchmark 4", ["--data_dir", "{root}/tfds"]),
    "compile_time.py": ("Benchmark 5", []),
    "multidevice.py": ("Benchmark 6", []),
    "profile_step.py": ("Profile", []),
    "options.py": ("Model implementation options", []),
    "peer_torch.py": ("Benchmark 7: PyTorch peer", []),  # needs the optional torch (skipped without)
}
HAS_TORCH = importlib.util.find_spec("torch") is not None


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
        _, args = SMOKE_RUNS[script]
        args = [a.format(root=root) for a in args]
        args = ["--tiny", "--results", str(results), *args]
        proc = subprocess.run(
            [sys.executable, str(BENCH / script), *args],
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
    if script == "peer_torch.py":
        pytest.importorskip("torch", reason="torch is the optional `bench` extra")
    proc, results, root = smoke_runs[script]
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = results.read_text()
    if script == "input_pipeline.py":  # --tiny: handwritten alone with 0 workers, then against the step
        assert "\n| handwritten/" in text and "Against the train step" in text and "on input in the loop" in text
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
    if script == "efficiency.py":  # widths 16 and 32; the hand count equals the jaxpr's at both
        assert "\n| 16 | 2 x 8 |" in text and "\n| 32 | 2 x 16 |" in text and "MFU target (against the best" in text
        assert text.count("| equal |") == 2 and "numpy" in text


def test_width_variant_keeps_heads_and_mlp_ratio():
    import efficiency

    base = benchlib.load_config("trimodal")
    wide = efficiency.width_variant(base, 256)
    assert (wide.model.dim, wide.model.mlp_dim, wide.model.num_heads) == (256, 512, base.model.num_heads)
    assert base.model.dim == 64  # the base config is not modified
    with pytest.raises(ValueError, match="not divisible by num_heads=4"):
        efficiency.width_variant(base, 66)
