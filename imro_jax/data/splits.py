"""Seeded stratified splits and train-only feature scaling (no test-set leakage)."""

from __future__ import annotations

import numpy as np


def stratified_split(
    labels: np.ndarray, *, test_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Splits indices so that every class puts exactly ``test_per_class`` samples in the test set.

    For each class (in increasing order) the class's indices are permuted with
    ``np.random.default_rng(seed)``; the first ``test_per_class`` go to test, the rest to train.

    Args:
      labels: int[n] class labels.
      test_per_class: test samples per class.
      seed: split seed (the same seed gives the same split).

    Returns:
      ``(train_indices, test_indices)``, each sorted int64.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == c)[0])
        if idx.size <= test_per_class:
            raise ValueError(
                f"class {c} has {idx.size} samples, cannot hold out {test_per_class} for test"
            )
        test.append(idx[:test_per_class])
        train.append(idx[test_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def minmax_fit(train_features: np.ndarray) -> dict[str, np.ndarray]:
    """Min-max statistics of the training features.

    Args:
      train_features: float[n_train, d], the TRAINING split only.

    Returns:
      ``{"min": float64[d], "max": float64[d]}``.
    """
    x = np.asarray(train_features, np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected non-empty [n, d] training features, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("training features contain NaN or inf")
    return {"min": x.min(axis=0), "max": x.max(axis=0)}


def minmax_apply(features: np.ndarray, stats: dict) -> np.ndarray:
    """Scales features with training statistics: ``(x - min) / (max - min)``.

    Training features land in [0, 1]; other splits may fall outside. Features that are constant on
    the training split (``max == min``) are only shifted (divided by 1).

    Args:
      features: float[n, d].
      stats: output of ``minmax_fit``.

    Returns:
      float32[n, d].
    """
    lo, hi = np.asarray(stats["min"], np.float64), np.asarray(stats["max"], np.float64)
    x = np.asarray(features, np.float64)
    if x.shape[-1] != lo.shape[0]:
        raise ValueError(f"features have {x.shape[-1]} columns, statistics {lo.shape[0]}")
    span = np.where(hi > lo, hi - lo, 1.0)
    return ((x - lo) / span).astype(np.float32)
