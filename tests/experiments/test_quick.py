"""Every experiment runs end to end in --quick mode, as the one command a user types.

The scripts run as subprocesses on one CPU device (not the 8 simulated devices of the unit
tests), sharing one data dir, one run root and one persistent XLA cache, so that identical
programs compile once (the Handwritten IMRO/uniform runs of the first test are reused by the
ablations, and the uniform one by the stability experiment, which trains IMRO's token fusion alone). XLA's backend optimisation is lowered: these runs are
about code paths, not speed. Compilation dominates (about 11 minutes cold for the four on two
busy cores); the XLA cache is the session's `shared_xla_cache` (tests/conftest.py), which the
notebooks' runs share; ``IMRO_TEST_XLA_CACHE=DIR`` keeps the compiled programs between sessions.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from testenv import cpu_subprocess_env

pytestmark = pytest.mark.slow
REPO = pathlib.Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def shared(tmp_path_factory, shared_xla_cache):
    root = tmp_path_factory.mktemp("experiments")
    env = cpu_subprocess_env(shared_xla_cache, IMRO_XLA_CACHE=shared_xla_cache)
    return {"root": root, "env": env}


def run_quick(shared, name: str, *flags: str) -> tuple[dict, str, pathlib.Path]:
    out = shared["root"] / "-".join((name, *flags))
    command = [sys.executable, str(REPO / "experiments" / f"{name}.py"), "--quick", *flags, "--out", str(out),
               "--data_dir", str(shared["root"] / "tfds"), "--workdir", str(shared["root"] / "runs")]
    done = subprocess.run(command, env=shared["env"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    markdown = (out / "results.md").read_text()
    assert "QUICK" in markdown and " ".join([f"python experiments/{name}.py --quick", *flags]) in markdown
    return json.loads((out / "results.json").read_text()), markdown, out


def assert_pngs(out: pathlib.Path, names):
    for name in names:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name


def test_handwritten_quick(shared):
    payload, markdown, out = run_quick(shared, "handwritten")
    assert payload["mode"] == "quick" and payload["methods"] == ["imro", "uniform"]
    seed = payload["per_seed"][0]
    noise = seed["noise"]
    assert noise["levels"] == [0.0, 0.1, 1.0, 10.0] and len(noise["subsets"]) == 3
    assert set(noise["scores"]) == {"imro", "uniform", "imro+oracle", "uniform+oracle"}
    for method, scores in seed["clean"].items():
        assert 0.1 < scores["accuracy"] <= 1.0, method
    # At sigma 0 the oracle masks nothing: it is the clean model.
    for method in payload["methods"]:
        assert noise["scores"][method + "+oracle"]["accuracy"][0] == noise["scores"][method]["accuracy"][0]
    assert "RCML (published)" in markdown and "99.40" in markdown
    assert_pngs(out, ["noise_accuracy.png", "noise_weight_of_noisy_views.png", "reliability_report.png"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == 1 and set(summary["methods"]) == {"imro", "uniform"}
    row = summary["methods"]["imro"]
    assert {"clean", "conflictive", "noise@10", "noise@10+oracle", "misaligned", "shuffle+oracle"} <= set(row)
    assert row["clean"] == pytest.approx(100 * seed["clean"]["imro"]["accuracy"], abs=0.006)
    # scores[method][metric] is [levels, view triples]; the summary holds the mean over triples
    assert row["noise@10"] == pytest.approx(100 * float(np.mean(noise["scores"]["imro"]["accuracy"][-1])), abs=0.006)


def test_ablations_quick(shared):
    payload, markdown, out = run_quick(shared, "ablations")
    variants = payload["numbers"]["handwritten"]
    assert set(variants) == {"IMRO (surprisal H, agreement, modality dropout, R-weighted vote)", "R fixed uniform"}
    assert "not run" not in markdown
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds_per_dataset"] == {"handwritten": 1}
    row = summary["methods"]["R fixed uniform"]
    assert row["handwritten clean acc"] == pytest.approx(100 * variants["R fixed uniform"][0]["clean acc"], abs=1e-3)


def test_stability_quick(shared):
    payload, markdown, out = run_quick(shared, "stability")
    for method in ("imro", "uniform"):
        points = payload["runs"][method][0]["points"]
        assert [p["step"] for p in points] == [20, 40]
        for p in points:
            assert p["lhs"] > 0 and p["rhs"] > 0 and len(p["per_path"]) == 6
            assert abs(sum(p["mean_r"]) - 1.0) < 1e-5
    uniform = payload["runs"]["uniform"][0]["points"][0]
    assert uniform["mean_r"] == pytest.approx([1 / 6] * 6)
    assert uniform["rhs_literal"] == pytest.approx(uniform["rhs"], rel=1e-3)  # constant R
    assert_pngs(out, ["loss.png", "grad_norm.png", "bound_ratio.png"])


def test_synth_quick(shared):
    payload, markdown, out = run_quick(shared, "synth")
    seed = payload["per_seed"][0]
    assert set(seed["classification"]["noise"]) == {"audio", "text", "vision"}
    assert len(seed["classification"]["missing"]["subsets"]) == 6
    assert 0.0 <= seed["captions"]["clean"]["imro"]["token_accuracy"] <= 1.0
    assert -1.0 <= seed["spearman"]["imro"]["pooled"] <= 1.0
    kinds = seed["classification"]["kinds"]
    assert set(kinds) == {"vision blur@2", "vision occlusion@0.5", "audio clipping@0.1", "audio babble@0",
                          "text word_dropout@0.5", "text token_shuffle@1"}
    assert set(kinds["audio babble@0"]) == {"imro", "imro+oracle"}
    summary = json.loads((out / "summary.json").read_text())
    row = summary["methods"]["imro"]
    assert {"clean", "missing", "conflict", "spearman", "noise:vision@1", "noise:vision@1+oracle",
            "vision blur@2", "vision blur@2+oracle"} <= set(row)
    assert row["vision blur@2"] == pytest.approx(100 * kinds["vision blur@2"]["imro"]["accuracy"], abs=0.006)
    assert_pngs(out, ["imro_r_vs_quality.png", "reliability_report.png", "classification_noise_audio.png",
                      "captions_noise_text.png"])


def test_synth_regression_quick(shared):
    payload, markdown, out = run_quick(shared, "synth", "--task", "regression")
    assert payload["task"] == "regression" and payload["caption_methods"] == []
    seed = payload["per_seed"][0]
    assert set(seed) == {"regression", "spearman", "spearman_ceiling", "steps_per_s"}  # no captions
    clean = seed["regression"]["clean"]["imro"]
    assert clean["mae"] > 0 and -1.0 <= clean["corr"] <= 1.0 and clean["rmse"] >= clean["mae"]
    assert "mae" in seed["regression"]["conflict"]["imro+oracle"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "mae" and 0.5 < summary["spearman_ceiling"] < 1.0
    row = summary["methods"]["imro"]
    assert row["clean"] == pytest.approx(clean["mae"], abs=0.006)  # MAE in target units, not %
    assert {"missing", "conflict", "noise:audio@1", "audio babble@0+oracle"} <= set(row)
    assert "rel. rob." not in markdown  # the MultiBench columns assume accuracy
    assert_pngs(out, ["imro_r_vs_quality.png", "regression_noise_vision.png"])


def test_select_reliability_quick(shared):
    payload, markdown, out = run_quick(shared, "select_reliability")
    table = payload["table"]
    assert set(table) == {"paper", "surprisal+agreement+dropout0.3+vote1.0"}
    for row in table.values():  # the score is the mean of the condition columns
        conditions = [v for k, v in row.items() if k != "score"]
        assert row["score"] == pytest.approx(sum(conditions) / len(conditions))
    assert payload["selected"] == max(table, key=lambda v: table[v]["score"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"] == "python experiments/select_reliability.py --quick" and summary["seeds"] == 1


def test_select_reliability_synth_regression_quick(shared):
    # the imro_synth path of the script (its conditions, the scorer chosen by the task, lower-is-better
    # selection); the classification scorer of the same protocol runs in test_synth_quick
    payload, markdown, out = run_quick(shared, "select_reliability", "--dataset", "synth_regression")
    assert payload["dataset"] == "synth_regression"
    table = payload["table"]
    assert set(table) == {"vote0", "vote1"}
    for row in table.values():  # 12 conditions: clean, missing, conflict, 3 noise columns, 6 kinds
        conditions = [v for k, v in row.items() if k != "score"]
        assert len(conditions) == 12 and all(v > 0 for v in conditions)
        assert not any(k.endswith("+oracle") for k in row)
        assert row["score"] == pytest.approx(sum(conditions) / len(conditions))
    assert payload["selected"] == min(table, key=lambda v: table[v]["score"])  # MAE: lower wins
    assert "MAE (lower is better)" in markdown
    assert json.loads((out / "summary.json").read_text())["selected"] == payload["selected"]


def test_select_reliability_names_an_unknown_variant(shared, tmp_path):
    command = [sys.executable, str(REPO / "experiments" / "select_reliability.py"), "--quick",
               "--variants", "paper,no-such-variant", "--out", str(tmp_path / "out")]
    done = subprocess.run(command, env=shared["env"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "no-such-variant" in done.stderr and "surprisal+agreement+dropout0.3+vote1.0+power0.5" in done.stderr
    assert not (tmp_path / "out").exists()


def test_select_reliability_refuses_references_alone(shared, tmp_path):
    # a reference (a baseline fusion, scored beside the candidates, never selected) alone is refused before anything trains
    command = [sys.executable, str(REPO / "experiments" / "select_reliability.py"), "--quick",
               "--variants", "reference: uniform fusion", "--out", str(tmp_path / "out")]
    done = subprocess.run(command, env=shared["env"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "only references" in done.stderr and not (tmp_path / "out").exists()
    sys.path.insert(0, str(REPO / "experiments"))
    import select_reliability

    assert set(select_reliability.REFERENCES) <= set(select_reliability.VARIANTS)
    assert not set(select_reliability.REFERENCES) & set(select_reliability.SETTINGS["full"]["variants"])
