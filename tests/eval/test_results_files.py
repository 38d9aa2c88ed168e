"""Result files (`imro_jax.eval.results_files`): JSON without NaN, one log section per title."""

import json

import ml_collections
import numpy as np
import pytest

from imro_jax.eval import results_files
from imro_jax.eval.sweep import SweepResult


def test_jsonable_maps_numpy_and_non_finite_values_to_json():
    value = {1: (np.float32(0.5), np.int64(3)), "a": np.array([1.0, np.nan]), "b": float("inf"),
             "c": ml_collections.ConfigDict({"x": 2}), "d": "text"}
    assert results_files.jsonable(value) == {"1": [0.5, 3], "a": [1.0, None], "b": None, "c": {"x": 2}, "d": "text"}
    assert json.dumps(results_files.jsonable({"x": float("nan")})) == '{"x": null}'
    result = SweepResult("noise", np.array([0.0, 1.0]), [("a",)], 1.0, {"m": {"accuracy": np.array([[0.5], [np.nan]])}})
    assert results_files.jsonable({"sweep": [result]}) == {"sweep": [{
        "corruption": "noise", "levels": [0.0, 1.0], "subsets": [["a"]], "fraction": 1.0,
        "scores": {"m": {"accuracy": [[0.5], [None]]}}}]}


def test_write_results_writes_the_three_files(tmp_path):
    out = tmp_path / "deep" / "out"
    summary = results_files.summary_payload("python x.py", 2, {"imro": {"acc": 91.23456, "nll": float("nan")}})
    assert summary == {"command": "python x.py", "seeds": 2, "methods": {"imro": {"acc": 91.23, "nll": None}}}
    results_files.write_results(out, {"score": np.float64(np.nan), "n": np.int32(4)}, "# title\n\n", summary)
    assert json.loads((out / "results.json").read_text()) == {"n": 4, "score": None}
    assert "NaN" not in (out / "results.json").read_text()
    assert (out / "results.md").read_text() == "# title\n"
    assert json.loads((out / "summary.json").read_text())["methods"] == {"imro": {"acc": 91.23, "nll": None}}
    with pytest.raises(ValueError, match="missing"):
        results_files.write_results(out, {}, "", {"command": "c"})


def test_summary_payload_rounds_and_keeps_the_extras():
    payload = results_files.summary_payload("c", 1, {"m": {"x": 0.12345, "y": None}}, digits=3, selected="m")
    assert payload == {"command": "c", "seeds": 1, "methods": {"m": {"x": 0.123, "y": None}}, "selected": "m"}


def test_environment_names_jax_and_the_devices():
    import jax

    env = results_files.environment()
    assert env["jax"] == jax.__version__ and len(env["devices"]) == jax.device_count()
    assert set(env) == {"jax", "devices", "python", "machine", "cpu_count", "date"}


def test_repo_relative_paths(tmp_path):
    (tmp_path / "repo" / "sub").mkdir(parents=True)
    assert results_files.repo_relative(tmp_path / "repo" / "sub" / "f.md", tmp_path / "repo") == "sub/f.md"
    assert results_files.repo_relative(tmp_path / "other.md", tmp_path / "repo") == str(tmp_path / "other.md")


def test_replace_section_keeps_one_section_per_title(tmp_path):
    log = tmp_path / "RESULTS.md"
    results_files.replace_section(log, "Bench A", "## Bench A (day 1)\n\nold A\n")
    assert log.read_text() == "\n\n## Bench A (day 1)\n\nold A\n"  # a missing file: created, empty preamble
    log.write_text("# Results\n\npreamble\n" + log.read_text())
    results_files.replace_section(log, "Bench B", "## Bench B (day 1)\n\nB\n")
    results_files.replace_section(log, "Bench A", "## Bench A (day 2)\n\nnew A")
    text = log.read_text()
    assert text == "# Results\n\npreamble\n\n## Bench A (day 2)\n\nnew A\n\n## Bench B (day 1)\n\nB\n"
    assert text.count("## Bench A (") == 1 and "old A" not in text
    results_files.replace_section(log, "Bench", "## Bench (day 3)\n\nC\n")  # a prefix of a title is another title
    assert log.read_text().count("## Bench") == 3
