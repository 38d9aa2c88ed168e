"""Result tables (`imro_jax.eval.tables`): numbers checked against numpy and by hand."""

import numpy as np
import pytest

from imro_jax.eval import robustness as robustness_lib
from imro_jax.eval import tables
from imro_jax.eval.sweep import SweepResult


def test_markdown_table_is_a_github_table():
    assert tables.markdown_table(["a", 1], [[2, "x"], [None, 3.5]]) == (
        "| a | 1 |\n|---|---|\n| 2 | x |\n| None | 3.5 |")


def test_mean_std_is_numpy_mean_and_sample_std_of_the_finite_values():
    values = [0.2, 0.5, float("nan"), 0.9, None, float("inf")]
    finite = np.array([0.2, 0.5, 0.9])
    mean, std = tables.mean_std(values)
    assert mean == pytest.approx(finite.mean()) and std == pytest.approx(finite.std(ddof=1))
    assert std == pytest.approx(np.sqrt(((finite - finite.mean()) ** 2).sum() / 2))
    assert tables.mean_std([0.25]) == (0.25, 0.0)
    assert all(np.isnan(tables.mean_std([float("nan"), None])))


def test_fmt_writes_mean_and_std_scaled():
    # mean 0.5, sample std sqrt(((0.1)^2 + 0 + (0.1)^2) / 2) = 0.1 -> "50.00 +- 10.00" in %
    assert tables.fmt([0.4, 0.5, 0.6]) == "50.00 +- 10.00"
    assert tables.fmt([0.4, 0.5, 0.6], scale=1, digits=3) == "0.500 +- 0.100"
    assert tables.fmt(0.123456) == "12.35" and tables.fmt([0.123456], digits=1) == "12.3"
    assert tables.fmt([float("nan")]) == "n/a" and tables.fmt([]) == "n/a"


def test_seed_table_formats_each_cell_over_the_seeds():
    per_seed = [{"a": {"x": 0.4, "y": 2.0}, "b": {"x": 0.1, "y": 4.0}},
                {"a": {"x": 0.6, "y": 4.0}, "b": {"x": 0.3, "y": 6.0}}]
    table = tables.seed_table(per_seed, ["a", "b"], ["x", "y"], lambda s, row, column: s[row][column],
                              scale=lambda c: 100 if c == "x" else 1, digits=1)
    # a/x: mean 0.5, sample std sqrt(2 * 0.1^2 / 1) = 0.1414 -> 50.0 +- 14.1 (in %); a/y: 3 +- 1.414
    assert table == ("| method | x | y |\n|---|---|---|\n| a | 50.0 +- 14.1 | 3.0 +- 1.4 |\n"
                     "| b | 20.0 +- 14.1 | 5.0 +- 1.4 |")
    one = tables.seed_table(per_seed[:1], ["b"], ["y"], lambda s, row, column: s[row][column],
                            header=["variant", "y"], labels=["**b**"], scale=1, digits=3)
    assert one == "| variant | y |\n|---|---|\n| **b** | 4.000 |"


def _result(seed_offset: float) -> SweepResult:
    """Two methods at 3 levels, 2 subsets; `late` is the reference."""
    levels = np.array([0.0, 0.5, 1.0])
    imro = np.array([[0.9, 0.9], [0.8, 0.6], [0.6, 0.4]]) + seed_offset
    late = np.array([[0.8, 0.8], [0.6, 0.6], [0.4, 0.4]])
    return SweepResult("noise", levels, [("a",), ("b",)], 1.0,
                       {"imro": {"accuracy": imro}, "late": {"accuracy": late}})


def test_curve_stats_stacks_the_seeds():
    stats = tables.curve_stats([_result(0.0), _result(0.1)], "imro", "accuracy")
    np.testing.assert_allclose(stats["per_seed"], [[0.9, 0.7, 0.5], [1.0, 0.8, 0.6]])
    np.testing.assert_allclose(stats["mean"], [0.95, 0.75, 0.55])
    np.testing.assert_allclose(stats["std"], np.full(3, np.sqrt(0.005)))  # two values 0.1 apart, ddof=1
    np.testing.assert_array_equal(tables.curve_stats([_result(0.0)], "imro", "accuracy")["std"], np.zeros(3))


def test_robustness_over_seeds_uses_the_multibench_definitions():
    rob = tables.robustness_over_seeds([_result(0.0), _result(0.1)], "imro", "late")
    curves = [np.array([0.9, 0.7, 0.5]), np.array([1.0, 0.8, 0.6])]
    late = np.array([0.8, 0.6, 0.4])
    assert rob["relative"] == pytest.approx([robustness_lib.relative_robustness(c) for c in curves])
    # ER = sum_i (f_i - (LF_i + f_0 - LF_0)) = 0 for a curve parallel to the reference
    assert rob["effective"] == pytest.approx([0.0, 0.0])
    assert rob["effective"] == pytest.approx([robustness_lib.effective_robustness(c, late) for c in curves])
    assert np.isnan(tables.robustness_over_seeds([_result(0.0)], "imro", None)["effective"]).all()


def test_sweep_table_rows_and_numbers():
    results = [_result(0.0), _result(0.1)]
    table, numbers = tables.sweep_table(results, ["imro", "late"], reference="late")
    lines = table.splitlines()
    assert lines[0] == "| method | 0 | 0.5 | 1 | rel. rob. | eff. rob. (vs late) |"
    relative = tables.fmt(numbers["imro"]["robustness"]["relative"], digits=1)
    assert lines[2] == f"| imro | 95.0 +- 7.1 | 75.0 +- 7.1 | 55.0 +- 7.1 | {relative} | 0.0 +- 0.0 |"
    assert lines[3].startswith("| late | 80.0 +- 0.0 | 60.0 +- 0.0 | 40.0 +- 0.0 |")
    np.testing.assert_allclose(numbers["late"]["mean"], [0.8, 0.6, 0.4])
    plain, plain_numbers = tables.sweep_table(results, ["imro"], metric="accuracy", robustness_columns=False)
    assert plain.splitlines()[0] == "| method | 0 | 0.5 | 1 |" and "robustness" not in plain_numbers["imro"]
