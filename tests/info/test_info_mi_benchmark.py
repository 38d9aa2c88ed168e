"""Smoke test of experiments/mi_benchmark.py --quick: outputs exist and InfoNCE <= log K."""

import importlib.util
import json
import math
import pathlib
import sys

import numpy as np

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "mi_benchmark.py"
sys.path.insert(0, str(SCRIPT.parent))  # the script imports experiments/common.py, as when run


def load_script():
    spec = importlib.util.spec_from_file_location("mi_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_writes_outputs(tmp_path):
    # In-process (the script's main(argv)) to spare a second interpreter and JAX start-up.
    load_script().main(["--quick", "--out", str(tmp_path), "--concat-width", "8"])
    for name in ("staircase.png", "results.md", "results.json", "summary.json", "raw.npz"):
        assert (tmp_path / name).stat().st_size > 0, name
    raw = np.load(tmp_path / "raw.npz")
    bounds = list(raw["bounds"])
    steps = raw["true_mi"].size
    for critic in ("separable", "concat"):
        estimates = raw[critic]
        assert estimates.shape == (steps, len(bounds))
        assert np.all(estimates[:, bounds.index("infonce")] <= math.log(64) + 1e-4)
        assert not np.any(np.isnan(estimates))
    report = (tmp_path / "results.md").read_text()
    assert "| InfoNCE |" in report and "## concat critic" in report
    assert "Command: `python experiments/mi_benchmark.py --quick --concat-width 8`" in report  # no --out path
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["statistics"]["separable"]["smile"]) == 5
    assert results["config"]["critics"]["concat"]["hidden_dim"] == 8
    summary = json.loads((tmp_path / "summary.json").read_text())  # the table's numbers, as the README quotes them
    bias = results["statistics"]["concat"]["infonce"][1]["bias"]
    assert summary["methods"]["concat infonce"]["bias@4"] == round(bias, 3) and summary["seeds"] == 1
