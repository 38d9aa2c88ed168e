"""MultiBench robustness summaries of a metric-versus-corruption-level curve.

References:
  Liang et al., "MultiBench: Multiscale Benchmarks for Multimodal Representation Learning",
  NeurIPS Datasets and Benchmarks 2021 (``eval_scripts/robustness.py``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _curve(values: ArrayLike, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"{name} must be a 1-D curve with at least 2 levels, got shape {values.shape}")
    return values


def relative_robustness(metric: ArrayLike, levels: ArrayLike | None = None) -> float:
    r"""Area under the metric-versus-noise-level curve (trapezoid rule).

    .. math:: \mathrm{RR} = \sum_i \frac{(f_i + f_{i+1})(\ell_{i+1} - \ell_i)}{2}

    MultiBench uses levels ``i/10`` for ``i = 0..10``; that is the default when ``levels`` is None
    (then the spacing is 0.1 whatever the curve's length, as in MultiBench).

    Args:
      metric: ``[num_levels]`` metric (higher is better) at increasing corruption levels.
      levels: optional ``[num_levels]`` increasing corruption levels.

    Returns:
      The area.
    """
    f = _curve(metric, "metric")
    if levels is None:
        levels = np.arange(f.size) / 10.0
    levels = np.asarray(levels, dtype=np.float64)
    if levels.shape != f.shape or np.any(np.diff(levels) <= 0):
        raise ValueError(f"levels must be increasing with shape {f.shape}, got {levels}")
    return float(np.sum((f[1:] + f[:-1]) * np.diff(levels) / 2.0))


def effective_robustness(metric: ArrayLike, reference: ArrayLike) -> float:
    r"""Accumulated gain over a reference curve shifted to the same clean performance.

    .. math:: \mathrm{ER} = \sum_i \big(f_i - (\mathrm{LF}_i + f_0 - \mathrm{LF}_0)\big)

    where LF is the reference (late fusion in MultiBench). Positive means the method degrades
    more slowly than the reference.

    Args:
      metric: ``[num_levels]`` the method's curve.
      reference: ``[num_levels]`` the reference curve at the same levels.

    Returns:
      The effective robustness.
    """
    f = _curve(metric, "metric")
    lf = _curve(reference, "reference")
    if lf.shape != f.shape:
        raise ValueError(f"reference curve shape {lf.shape} differs from metric curve {f.shape}")
    return float(np.sum(f - (lf + f[0] - lf[0])))
