"""Per-sample reliability reports and robustness plots (host numpy + matplotlib, no pyplot state).

The one call a user needs for their own trained model::

    from imro_jax.eval import reliability_report
    numbers = reliability_report(model, batch, "reliability.png", variables=variables)

corrupts one modality at a time at increasing severity, and draws (left) the mean weight R of
the corrupted modality against the severity step and (right) the R bars of a few example samples,
clean and with one modality at the highest severity. Any :data:`imro_jax.eval.sweep.PredictFn`
that returns ``"reliability"`` can stand in for ``model`` (then ``variables`` is omitted).

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, so nothing here
changes the global matplotlib backend or opens a window.
"""

from __future__ import annotations

import pathlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from imro_jax import batch as batch_lib
from imro_jax.eval.sweep import ORACLE_SUFFIX, PredictFn, SweepResult, corrupt, model_predictor

DEFAULT_FLOAT_LEVELS = (0.0, 0.1, 0.3, 1.0, 3.0)  # Gaussian noise std, in input units


# ----------------------------------------------------------------------------- numbers


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays; NaN when either is constant or too short."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"spearman needs equal-length arrays, got {x.shape} and {y.shape}")
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(x, y).statistic)


def reliability_quality_correlation(
    reliability: np.ndarray, quality: np.ndarray, modalities: Sequence[str]
) -> dict[str, float]:
    """Spearman correlation between per-sample weights R[b, m] and ground-truth quality q[b, m].

    Args:
      reliability: ``[batch, modality]`` weights (``ModelOutput.reliability``).
      quality: ``[batch, modality]`` ground-truth quality, same modality order.
      modalities: the M names, for the per-modality entries.

    Returns:
      ``{"pooled": rho over all (b, m) pairs, "within_sample": mean over samples of rho across
      the modalities of that sample (M >= 3 needed; NaN rows skipped), "<m>": rho over samples
      for modality m}``; NaN where a side is constant (e.g. uniform weights).
    """
    reliability, quality = np.asarray(reliability, np.float64), np.asarray(quality, np.float64)
    if reliability.shape != quality.shape or reliability.ndim != 2 or reliability.shape[1] != len(modalities):
        raise ValueError(
            f"reliability and quality must both be [batch, {len(modalities)}], got {reliability.shape}, {quality.shape}"
        )
    out = {"pooled": spearman(reliability, quality)}
    rows = [spearman(r, q) for r, q in zip(reliability, quality)] if len(modalities) >= 3 else []
    finite = [r for r in rows if np.isfinite(r)]
    out["within_sample"] = float(np.mean(finite)) if finite else float("nan")
    out.update({m: spearman(reliability[:, i], quality[:, i]) for i, m in enumerate(modalities)})
    return out


def simplex_quality_ceiling(quality: np.ndarray, modalities: Sequence[str]) -> dict[str, float]:
    r"""The correlations of :func:`reliability_quality_correlation` reached by the quality itself
    put on the simplex, ``w[b, m] = q[b, m] / \sum_{m'} q[b, m']`` (``1/M`` where every q is 0).

    Fusion weights live on the simplex, so their *pooled* rank correlation with an absolute
    quality is bounded away from 1 even when they are exactly proportional to it: a sample whose
    modalities are all poor still gets weights summing to 1. This is that bound's reference value
    (the oracle on the simplex). Its ``within_sample`` entry is 1; its pooled and per-modality
    entries are below 1 (``w[b, m]`` also depends on the other modalities of sample b).

    Args:
      quality: ``[batch, modality]`` non-negative ground-truth quality.
      modalities: the M names.
    """
    q = np.asarray(quality, np.float64)
    if q.ndim != 2 or np.any(q < 0) or not np.all(np.isfinite(q)):
        raise ValueError(f"quality must be a finite non-negative [batch, modality] array, got shape {q.shape}")
    total = q.sum(axis=1, keepdims=True)
    weights = np.where(total > 0, q / np.where(total > 0, total, 1.0), 1.0 / q.shape[1])
    return reliability_quality_correlation(weights, q, modalities)


def _default_corruptions(batch: dict, levels: Sequence[float]) -> dict[str, tuple[str, list[float]]]:
    """Gaussian noise at ``levels`` for float modalities, token blanking at matching
    probabilities in [0, 1] for integer ones."""
    steps = len(levels)
    out = {}
    for m in batch_lib.modality_names(batch):
        if np.issubdtype(np.asarray(batch[m]).dtype, np.integer):
            out[m] = ("blank", np.linspace(0.0, 1.0, steps).tolist())
        else:
            out[m] = ("gaussian", list(map(float, levels)))
    return out


def reliability_by_level(
    predict: PredictFn,
    batch: dict,
    corruptions: Mapping[str, tuple[str, Sequence[float]]],
    *,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Mean R of each modality while that modality alone is corrupted at increasing severity.

    Args:
      predict: returns ``"reliability"`` ``[B, M]`` (modalities in sorted name order).
      batch: evaluation batch (numpy).
      corruptions: ``{modality: (corruption name, levels)}``.
      seed: corruption seed.

    Returns:
      ``{modality: {"corruption", "levels", "R_corrupted": [L] mean R of that modality,
      "R_others": [L] mean R of the other modalities, "reliability": [L, B, M] all weights}}``.
    """
    names = batch_lib.modality_names(batch)
    out = {}
    for i, (m, (name, levels)) in enumerate(sorted(corruptions.items())):
        col = names.index(m)
        weights = []
        for j, level in enumerate(levels):
            key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), i), j)
            weights.append(np.asarray(predict(corrupt(batch, name, level, (m,), key=key))["reliability"]))
        weights = np.stack(weights)  # [L, B, M]
        others = np.delete(weights, col, axis=2)
        out[m] = {
            "corruption": name,
            "levels": list(map(float, levels)),
            "R_corrupted": weights[:, :, col].mean(axis=1).tolist(),
            "R_others": others.mean(axis=(1, 2)).tolist() if others.size else [],
            "reliability": weights,
        }
    return out


# ----------------------------------------------------------------------------- plots


def _save(fig: Figure, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _bars(ax, weights: np.ndarray, modalities: Sequence[str], title: str, highlight: int | None = None,
          top: float = 1.0) -> None:
    colours = ["tab:red" if i == highlight else "tab:blue" for i in range(len(modalities))]
    ax.bar(range(len(modalities)), weights, color=colours)
    ax.axhline(1.0 / len(modalities), color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(modalities)), modalities, rotation=45, fontsize=7)
    ax.set_ylim(0, top)
    ax.set_title(title, fontsize=8)


def plot_reliability_bars(
    reliability: np.ndarray,
    modalities: Sequence[str],
    path,
    *,
    titles: Sequence[str] | None = None,
    highlight: Sequence[int | None] | None = None,
) -> pathlib.Path:
    """One bar chart of R per sample (a row of small panels).

    Args:
      reliability: ``[n, M]`` weights of n samples.
      modalities: the M names.
      path: output PNG.
      titles: n panel titles.
      highlight: per panel, the index of a modality drawn in red (e.g. the corrupted one).

    Returns:
      The written path.
    """
    reliability = np.asarray(reliability)
    if reliability.ndim != 2 or reliability.shape[1] != len(modalities):
        raise ValueError(f"reliability must be [n, {len(modalities)}], got {reliability.shape}")
    n = reliability.shape[0]
    fig = Figure(figsize=(2.2 * n, 2.4))
    axes = fig.subplots(1, n, squeeze=False)[0]
    top = min(1.0, 1.2 * float(reliability.max()))
    for k in range(n):
        _bars(axes[k], reliability[k], modalities, titles[k] if titles else f"sample {k}",
              highlight[k] if highlight else None, top)
    axes[0].set_ylabel("R")
    return _save(fig, path)


def plot_curves(
    levels: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    bands: Mapping[str, Sequence[float]] | None = None,
) -> pathlib.Path:
    """Lines of ``curves[label]`` against ``levels`` (symlog x when levels span decades), with
    optional +- ``bands[label]`` shading (e.g. std over seeds). Oracle labels are dashed."""
    levels = np.asarray(levels, float)
    fig = Figure(figsize=(5.2, 3.6))
    ax = fig.subplots()
    for label, values in curves.items():
        values = np.asarray(values, float)
        style = "--" if label.endswith(ORACLE_SUFFIX) else "-"
        (line,) = ax.plot(levels, values, style, marker="o", markersize=3, label=label)
        if bands and label in bands:
            band = np.asarray(bands[label], float)
            ax.fill_between(levels, values - band, values + band, color=line.get_color(), alpha=0.15)
    _x_scale(ax, levels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _x_scale(ax, levels: np.ndarray, decades: float = 2.0) -> None:
    """A symlog x axis when the positive ``levels`` span at least ``decades`` decades."""
    positive = levels[levels > 0]
    if positive.size >= 2 and positive.max() / positive.min() >= 10.0**decades:
        ax.set_xscale("symlog", linthresh=float(positive.min()))


def reliability_by_level_figure(by_level: Mapping[str, Mapping[str, Any]], *, title: str = "",
                                xlabels: Mapping[str, str] | None = None) -> Figure:
    """The output of :func:`reliability_by_level` drawn against the real corruption levels: one
    panel per corruption (modalities corrupted the same way share it), each modality's mean R as
    its own corruption grows, and a dotted line at the uniform weight 1/M.

    Args:
      by_level: ``reliability_by_level(...)``.
      title: figure title.
      xlabels: per corruption name, its x-axis label (default ``"<name> level"``).
    """
    corruptions = list(dict.fromkeys(d["corruption"] for d in by_level.values()))
    num_modalities = next(iter(by_level.values()))["reliability"].shape[-1]
    fig = Figure(figsize=(4.0 * len(corruptions), 3.2))
    axes = fig.subplots(1, len(corruptions), squeeze=False, sharey=True)[0]
    for ax, corruption in zip(axes, corruptions):
        for k, (m, d) in enumerate(by_level.items()):
            if d["corruption"] == corruption:  # one colour per modality across the panels
                ax.plot(d["levels"], d["R_corrupted"], marker="o", markersize=3, label=f"R[{m}]", color=f"C{k}")
                levels = np.asarray(d["levels"], float)
                _x_scale(ax, levels, decades=1.0)
                ax.set_xticks(levels, [f"{level:g}" for level in levels], fontsize=7)
                ax.minorticks_off()
        ax.axhline(1.0 / num_modalities, color="grey", lw=1.0, ls=":",
                   label=f"uniform 1/M = 1/{num_modalities}")
        ax.set_xlabel((xlabels or {}).get(corruption, f"{corruption} level"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("mean R of the corrupted modality")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_reliability_by_level(by_level: Mapping[str, Mapping[str, Any]], path, **kwargs) -> pathlib.Path:
    """Writes :func:`reliability_by_level_figure` (same keyword arguments) to ``path``."""
    return _save(reliability_by_level_figure(by_level, **kwargs), path)


def plot_sweep(result: SweepResult, path, *, metric: str = "accuracy", methods: Sequence[str] | None = None,
               title: str = "") -> pathlib.Path:
    """The mean-over-subsets ``metric`` curve of each method of a :class:`SweepResult`."""
    methods = list(result.scores) if methods is None else list(methods)
    curves = {m: result.curve(m, metric) for m in methods}
    return plot_curves(result.levels, curves, path, xlabel=f"{result.corruption} level", ylabel=metric,
                       title=title)


def plot_reliability_vs_quality(
    reliability: np.ndarray, quality: np.ndarray, modalities: Sequence[str], path, *, title: str = ""
) -> pathlib.Path:
    """Scatter of R[b, m] against ground-truth quality q[b, m], one panel per modality, with the
    Spearman rho of each panel in its title."""
    reliability, quality = np.asarray(reliability), np.asarray(quality)
    rho = reliability_quality_correlation(reliability, quality, modalities)
    fig = Figure(figsize=(3.0 * len(modalities), 2.8))
    axes = fig.subplots(1, len(modalities), squeeze=False)[0]
    for i, m in enumerate(modalities):
        axes[i].scatter(quality[:, i], reliability[:, i], s=4, alpha=0.4)
        axes[i].set_xlabel(f"quality q ({m})")
        axes[i].set_title(f"{m}: Spearman {rho[m]:.2f}", fontsize=8)
    axes[0].set_ylabel("R")
    if title:
        fig.suptitle(f"{title} (pooled Spearman {rho['pooled']:.2f})", fontsize=9)
    return _save(fig, path)


def reliability_report(
    model: Any,
    batch: dict,
    path,
    *,
    variables: Any = None,
    levels: Sequence[float] = DEFAULT_FLOAT_LEVELS,
    corruptions: Mapping[str, tuple[str, Sequence[float]]] | None = None,
    num_examples: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-sample reliability report of a trained model in one call (see the module docstring).

    Args:
      model: an ``imro_jax.models`` model (with ``variables``) or a ``PredictFn`` returning
        ``"reliability"``.
      batch: evaluation batch (numpy batch dict, a few hundred samples is plenty).
      path: output PNG.
      variables: the model's ``{"params": ...}``; None when ``model`` is already a predictor.
      levels: severity levels of Gaussian noise for float modalities (integer token modalities
        get blanking probabilities ``linspace(0, 1, len(levels))``).
      corruptions: ``{modality: (corruption, levels)}`` overriding the defaults.
      num_examples: example samples drawn as R bars.
      seed: corruption seed.

    Returns:
      ``{"path": the PNG, "modalities": [...], "by_level": {m: {"corruption", "levels",
      "R_corrupted", "R_others"}}, "examples": {"clean": [n, M], "<m> corrupted": [n, M]}}``.
    """
    predict: PredictFn = model if variables is None else model_predictor(model, variables)
    names = batch_lib.modality_names(batch)
    plan = dict(_default_corruptions(batch, levels))
    plan.update(corruptions or {})
    by_level = reliability_by_level(predict, batch, plan, seed=seed)
    n = min(num_examples, int(np.shape(batch[batch_lib.LABEL])[0]))
    clean = np.asarray(predict(batch)["reliability"])[:n]
    examples = {"clean": clean}
    for m in names:
        examples[f"{m} corrupted"] = by_level[m]["reliability"][-1][:n]

    columns = 1 + len(examples)
    fig = Figure(figsize=(4.2 + 2.0 * (columns - 1), 0.8 + 2.2 * n), layout="constrained")
    grid = fig.add_gridspec(n, columns, width_ratios=[2.2] + [1.0] * (columns - 1))
    ax = fig.add_subplot(grid[:, 0])
    for m in names:
        entry = by_level[m]
        ax.plot(range(len(entry["levels"])), entry["R_corrupted"], marker="o",
                label=f"{m} ({entry['corruption']} up to {entry['levels'][-1]:g})")
    ax.axhline(1.0 / len(names), color="grey", lw=0.8, ls=":", label="1/M")
    ax.set_xlabel("severity step of the corrupted modality")
    ax.set_ylabel("mean R of the corrupted modality")
    ax.set_ylim(0, 1.15 * max(max(e["R_corrupted"]) for e in by_level.values()))
    ax.legend(fontsize=7)
    top = min(1.0, 1.2 * max(float(np.max(w)) for w in examples.values()))
    for c, (label, weights) in enumerate(examples.items(), start=1):
        highlight = names.index(label.split(" ")[0]) if label != "clean" else None
        for k in range(n):
            _bars(fig.add_subplot(grid[k, c]), weights[k], names, f"#{k} {label}", highlight, top)
    written = _save(fig, path)
    return {
        "path": str(written),
        "modalities": names,
        "by_level": {m: {k: v for k, v in e.items() if k != "reliability"} for m, e in by_level.items()},
        "examples": {k: v.tolist() for k, v in examples.items()},
    }
