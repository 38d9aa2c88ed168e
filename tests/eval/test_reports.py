"""Reliability reports: one call writes a PNG and returns numbers that match a direct computation."""

import numpy as np
import pytest
from scipy import stats

from imro_jax.eval import reports
from imro_jax.eval import sweep as sw

K, B = 4, 48
VIEWS = ("a", "b", "c")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(1)
    label = rng.integers(0, K, B).astype(np.int32)
    out = {v: (np.eye(K)[label] + 0.05 * rng.normal(size=(B, K))).astype(np.float32) for v in VIEWS}
    out["tokens"] = rng.integers(1, 9, size=(B, 5)).astype(np.int32)  # an integer (text) modality
    out["mask"] = {v: np.ones(B, bool) for v in (*VIEWS, "tokens")}
    out["label"] = label
    return out


def variance_reliability(batch):
    """R_m proportional to 1 / (1 + per-sample variance of x_m); tokens get a fixed score."""
    raw = [1.0 / (1.0 + np.var(np.asarray(batch[v], np.float64), axis=1)) for v in ("a", "b", "c")]
    tokens = np.asarray(batch["tokens"])
    raw.append(0.2 + 0.8 * np.mean(tokens != 1, axis=1))  # blanked tokens (id 1) lower it
    raw = np.stack([raw[0], raw[1], raw[2], raw[3]], 1)  # sorted order: a, b, c, tokens
    return {"reliability": raw / raw.sum(1, keepdims=True)}


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def test_reliability_report_one_call(batch, tmp_path):
    path = tmp_path / "report.png"
    numbers = reports.reliability_report(variance_reliability, batch, path, levels=(0.0, 0.5, 2.0), num_examples=2)
    assert _is_png(path) and numbers["path"] == str(path)
    clean = variance_reliability(batch)["reliability"]
    for i, m in enumerate(("a", "b", "c")):
        entry = numbers["by_level"][m]
        assert entry["corruption"] == "gaussian" and entry["levels"] == [0.0, 0.5, 2.0]
        assert entry["R_corrupted"][0] == pytest.approx(clean[:, i].mean())  # level 0 = clean
        assert np.all(np.diff(entry["R_corrupted"]) < 0)  # more noise, less weight
    tokens = numbers["by_level"]["tokens"]
    assert tokens["corruption"] == "blank" and tokens["levels"] == [0.0, 0.5, 1.0]
    assert tokens["R_corrupted"][-1] < tokens["R_corrupted"][0]
    np.testing.assert_allclose(numbers["examples"]["clean"], clean[:2])
    assert set(numbers["examples"]) == {"clean", "a corrupted", "b corrupted", "c corrupted", "tokens corrupted"}


def test_reliability_quality_correlation_matches_scipy():
    rng = np.random.default_rng(0)
    quality = rng.uniform(size=(200, 3))
    reliability = quality + 0.3 * rng.normal(size=(200, 3))
    rho = reports.reliability_quality_correlation(reliability, quality, ("x", "y", "z"))
    assert rho["pooled"] == pytest.approx(stats.spearmanr(reliability.ravel(), quality.ravel()).statistic)
    for i, m in enumerate(("x", "y", "z")):
        assert rho[m] == pytest.approx(stats.spearmanr(reliability[:, i], quality[:, i]).statistic)
    rows = [stats.spearmanr(r, q).statistic for r, q in zip(reliability, quality)]
    assert rho["within_sample"] == pytest.approx(np.mean(rows))
    constant = reports.reliability_quality_correlation(np.full((200, 3), 1 / 3), quality, ("x", "y", "z"))
    assert np.isnan(constant["pooled"]) and np.isnan(constant["x"])  # uniform weights: undefined
    with pytest.raises(ValueError, match="must both be"):
        reports.reliability_quality_correlation(reliability[:, :2], quality, ("x", "y", "z"))


def test_simplex_quality_ceiling_is_the_normalised_quality_scored_against_itself():
    rng = np.random.default_rng(1)
    quality = rng.beta(2.0, 2.0, size=(3000, 3))
    quality[rng.random(quality.shape) < 0.1] = 0.0
    quality[0] = 0.0  # a sample without any usable modality: uniform weights
    rho = reports.simplex_quality_ceiling(quality, ("x", "y", "z"))
    total = quality.sum(axis=1, keepdims=True)
    weights = np.divide(quality, total, out=np.full_like(quality, 1 / 3), where=total > 0)
    assert rho["pooled"] == pytest.approx(stats.spearmanr(weights.ravel(), quality.ravel()).statistic)
    assert rho["x"] == pytest.approx(stats.spearmanr(weights[:, 0], quality[:, 0]).statistic)
    assert rho["within_sample"] == pytest.approx(1.0)  # the order within a sample is the quality's
    assert 0.5 < rho["pooled"] < 0.95  # on the simplex, even the oracle's pooled rho stays below 1
    with pytest.raises(ValueError, match="non-negative"):
        reports.simplex_quality_ceiling(-quality, ("x", "y", "z"))


def test_plots_are_written(batch, tmp_path):
    result = sw.sweep({"var": lambda b: dict(variance_reliability(b), logits=10.0 * np.asarray(b["a"]))},
                      {k: batch[k] for k in (*VIEWS, "mask", "label")} | {"tokens": batch["tokens"]},
                      corruption="gaussian", levels=[0.0, 0.01, 1.0, 10.0], subsets=[("a",), ("b",)])
    paths = [
        reports.plot_sweep(result, tmp_path / "sweep.png"),
        reports.plot_curves([0, 1, 2], {"m": [1, 2, 3], "m+oracle": [3, 3, 3]}, tmp_path / "curves.png",
                            xlabel="x", ylabel="y", bands={"m": [0.1, 0.1, 0.1]}),
        reports.plot_reliability_bars(np.full((2, 3), 1 / 3), VIEWS, tmp_path / "bars.png", highlight=[0, None]),
        reports.plot_reliability_vs_quality(np.random.default_rng(0).uniform(size=(30, 3)),
                                            np.random.default_rng(1).uniform(size=(30, 3)), VIEWS,
                                            tmp_path / "rq.png", title="t"),
    ]
    assert all(_is_png(p) for p in paths)


def test_reliability_by_level_figure_has_the_real_levels_and_the_uniform_line(tmp_path):
    weights = np.full((5, 4, 3), 1 / 3)  # [L, B, M]
    by_level = {
        "audio": {"corruption": "gaussian", "levels": [0.0, 0.1, 0.3, 1.0, 3.0], "R_corrupted": [0.4, 0.4, 0.3, 0.2, 0.1],
                  "reliability": weights},
        "text": {"corruption": "blank", "levels": [0.0, 0.25, 0.5, 0.75, 1.0], "R_corrupted": [0.3, 0.3, 0.2, 0.1, 0.0],
                 "reliability": weights},
        "vision": {"corruption": "gaussian", "levels": [0.0, 0.1, 0.3, 1.0, 3.0], "R_corrupted": [0.3, 0.3, 0.3, 0.2, 0.1],
                   "reliability": weights},
    }
    fig = reports.reliability_by_level_figure(by_level, xlabels={"blank": "blanked"})
    gaussian, blank = fig.axes
    assert blank.get_xlabel() == "blanked" and gaussian.get_xlabel() == "gaussian level"
    curves = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    np.testing.assert_allclose(curves["R[audio]"].get_xdata(), by_level["audio"]["levels"])
    np.testing.assert_allclose(curves["R[text]"].get_xdata(), by_level["text"]["levels"])
    assert {line.get_label() for line in gaussian.get_lines()} == {"R[audio]", "R[vision]", "uniform 1/M = 1/3"}
    for ax in fig.axes:
        (uniform,) = [line for line in ax.get_lines() if line.get_label().startswith("uniform")]
        np.testing.assert_allclose(uniform.get_ydata(), [1 / 3, 1 / 3])
    assert _is_png(reports.plot_reliability_by_level(by_level, tmp_path / "r.png"))
