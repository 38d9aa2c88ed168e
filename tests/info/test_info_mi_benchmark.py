"""Smoke test of experiments/mi_benchmark.py --quick: outputs exist and InfoNCE <= log K."""

import importlib.util
import json
import math
import pathlib

import numpy as np

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "mi_benchmark.py"


def load_script():
    spec = importlib.util.spec_from_file_location("mi_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_writes_outputs(tmp_path):
    # In-process (the script's main(argv)) to spare a second interpreter and JAX start-up.
    load_script().main(["--quick", "--out", str(tmp_path), "--concat-width", "8"])
    for name in ("mi_benchmark.png", "mi_benchmark.md", "mi_benchmark.json",
                 "mi_benchmark_raw.npz"):
        assert (tmp_path / name).stat().st_size > 0, name
    raw = np.load(tmp_path / "mi_benchmark_raw.npz")
    bounds = list(raw["bounds"])
    steps = raw["true_mi"].size
    for critic in ("separable", "concat"):
        estimates = raw[critic]
        assert estimates.shape == (steps, len(bounds))
        assert np.all(estimates[:, bounds.index("infonce")] <= math.log(64) + 1e-4)
        assert not np.any(np.isnan(estimates))
    report = (tmp_path / "mi_benchmark.md").read_text()
    assert "| InfoNCE |" in report and "## concat critic" in report
    summary = json.loads((tmp_path / "mi_benchmark.json").read_text())
    assert len(summary["statistics"]["separable"]["smile"]) == 5
    assert summary["config"]["critics"]["concat"]["hidden_dim"] == 8
