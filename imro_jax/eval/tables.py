"""Result tables: markdown tables, ``mean +- std`` over seeds, and the table of a robustness sweep.

    markdown_table(header, rows)              a GitHub markdown table
    mean_std(values) / fmt(values)            mean and sample std over seeds, as "mean +- std"
    seed_table(per_seed, rows, columns, value)
                                              a table of fmt over seeds: one cell per (row, column)
    curve_stats(results, method, metric)      per-seed sweep curves [S, L] with their mean and std
    robustness_over_seeds(results, method, reference)
                                              per-seed MultiBench relative / effective robustness
    sweep_table(results, methods)             one row per method: each level, then the robustness

The sweep functions take one :class:`imro_jax.eval.sweep.SweepResult` per seed (anything with
its ``levels``, ``curve`` and ``summary``); nothing here imports the data layer or JAX.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table: the header, the ``|---|`` rule, one line per row (cells by ``str``)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for a single value) of the finite values.

    None, NaN and inf are left out; ``(nan, nan)`` when no finite value is left.
    """
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
    if values.size == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def fmt(values: Sequence[float] | float, *, scale: float = 100.0, digits: int = 2) -> str:
    """``"mean +- std"`` (:func:`mean_std`) of ``values * scale`` with ``digits`` decimals.

    One value (a scalar or a one-element sequence) is written alone; no finite value as "n/a".
    """
    values = [values] if np.isscalar(values) else list(values)
    mean, std = mean_std(values)
    if not math.isfinite(mean):
        return "n/a"
    if len(values) == 1:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} +- {std * scale:.{digits}f}"


def seed_table(per_seed: Sequence[Any], rows: Sequence[Hashable], columns: Sequence[Hashable],
               value: Callable[[Any, Any, Any], float], *, header: Sequence[Any] | None = None,
               labels: Sequence[Any] | None = None, scale: float | Callable[[Any], float] = 100.0,
               digits: int | Callable[[Any], int] = 2) -> str:
    """A markdown table of :func:`fmt` over seeds, one row per ``rows`` entry and one cell per column.

    The cell of row ``r`` and column ``c`` is ``fmt([value(s, r, c) for s in per_seed])``.

    Args:
      per_seed: one result per seed (whatever ``value`` reads).
      rows: the row keys, passed to ``value``.
      columns: the column keys, passed to ``value``.
      value: ``(one seed's result, row, column) -> number``.
      header: the header (default ``["method", *columns]``).
      labels: the first cell of each row (default the row keys).
      scale, digits: as for :func:`fmt`; a number, or a function of the column key.

    Returns:
      The markdown table (:func:`markdown_table`).
    """
    scale_of = scale if callable(scale) else lambda column: scale
    digits_of = digits if callable(digits) else lambda column: digits
    body = [[label, *(fmt([value(s, row, c) for s in per_seed], scale=scale_of(c), digits=digits_of(c))
                      for c in columns)]
            for label, row in zip(rows if labels is None else labels, rows)]
    return markdown_table(["method", *columns] if header is None else header, body)


def curve_stats(results: Sequence[Any], method: str, metric: str) -> dict[str, np.ndarray]:
    """Per-seed curves of a method (``SweepResult.curve``) and their mean and std over seeds.

    Args:
      results: one ``SweepResult`` per seed (S of them, same levels).
      method: a method of the sweep (plain or ``+oracle`` name).
      metric: the scored metric.

    Returns:
      ``{"per_seed": [S, L], "mean": [L], "std": [L]}`` (std with ddof=1; 0 for one seed).
    """
    per_seed = np.array([r.curve(method, metric) for r in results])
    std = per_seed.std(0, ddof=1) if len(per_seed) > 1 else np.zeros(per_seed.shape[1])
    return {"per_seed": per_seed, "mean": per_seed.mean(0), "std": std}


def robustness_over_seeds(results: Sequence[Any], method: str, reference: str | None,
                          metric: str = "accuracy") -> dict[str, list[float]]:
    """Per-seed MultiBench relative and effective robustness of ``method`` (``SweepResult.summary``).

    Returns:
      ``{"relative": [S], "effective": [S]}``; effective robustness is NaN without a ``reference``.
    """
    summaries = [r.summary(metric, reference=reference) for r in results]
    return {
        "relative": [s[method]["relative_robustness"] for s in summaries],
        "effective": [s[method].get("effective_robustness", float("nan")) for s in summaries],
    }


def sweep_table(results: Sequence[Any], methods: Sequence[str], *, metric: str = "accuracy",
                reference: str | None = None, scale: float = 100.0, digits: int = 1,
                robustness_columns: bool = True) -> tuple[str, dict]:
    """Markdown table of a sweep over seeds, and the numbers behind it.

    One row per method: the :func:`fmt` of ``metric`` at each level, then (with
    ``robustness_columns``) relative and effective robustness.

    Args:
      results: one ``SweepResult`` per seed (same levels and subsets).
      methods: rows (plain or ``+oracle`` names).
      metric: the scored metric.
      reference: effective-robustness reference method (MultiBench: late fusion) or None.
      scale, digits: as for :func:`fmt`.
      robustness_columns: the MultiBench robustness columns (they assume a higher-is-better
        metric such as accuracy; off for an error such as MAE).

    Returns:
      ``(markdown, {method: curve_stats(...) plus "robustness": robustness_over_seeds(...) with the
      robustness columns})``.
    """
    levels = results[0].levels
    header = ["method", *(f"{level:.3g}" for level in levels)]
    if robustness_columns:
        header += ["rel. rob.", f"eff. rob. (vs {reference})" if reference else "eff. rob."]
    rows, numbers = [], {}
    for m in methods:
        stats = curve_stats(results, m, metric)
        row = [m, *(fmt(stats["per_seed"][:, i], scale=scale, digits=digits) for i in range(len(levels)))]
        numbers[m] = stats
        if robustness_columns:
            rob = (robustness_over_seeds(results, m, reference, metric) if len(levels) >= 2
                   else {"relative": [], "effective": []})
            numbers[m] = {**stats, "robustness": rob}
            row += [fmt(rob["relative"], scale=scale, digits=digits) if rob["relative"] else "",
                    fmt(rob["effective"], scale=scale, digits=digits) if reference else ""]
        rows.append(row)
    return markdown_table(header, rows), numbers
