"""Sentiment-regression metrics of the CMU-MOSI/MOSEI literature (host-side numpy).

The field scores a continuous sentiment prediction ``p`` in [-3, 3] against the annotated score
``y`` with (protocols and sources: ``docs/protocols.md``, section 6 ("Affect"))::

    MAE     mean |p - y|                                   (all samples, no clipping)
    Corr    Pearson correlation of p and y                 (all samples, no clipping)
    Acc-2   binary accuracy, two conventions:
              "has0": negative (< 0) vs non-negative (>= 0), all samples
              "non0": negative (< 0) vs positive (> 0), samples with y == 0 left out
    F1      weighted F1 of the same binary labels (sklearn ``f1_score(average="weighted")``)
    Acc-7   accuracy of round(clip(., -3, 3)) on p and y   (7 classes -3 .. 3)
    Acc-5   accuracy of round(clip(., -2, 2)) on p and y   (5 classes -2 .. 2)

``round`` is numpy's round-half-to-even, as in the reference code. The "non0" convention is the
one MulT reports (``eval_mosei_senti(results, truths, exclude_zero=True)`` in
``yaohungt/Multimodal-Transformer`` ``src/eval_metrics.py``); "has0" and the names come from MMSA
(``thuiar/MMSA`` ``src/MMSA/utils/metricsTop.py``). MulT's own F1 call passes the predictions as
``y_true`` (``f1_score(preds > 0, truth > 0, average="weighted")``), which weights the per-class
F1 by the *predicted* class sizes; :func:`binary_f1` with ``mult_argument_order=True`` reproduces
that number for comparison with MulT's published F1.

All functions take arrays of any equal shape (flattened, as the reference code does with
``view(-1)``) and raise ``ValueError`` on a shape mismatch, an empty input or non-finite values.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

CONVENTIONS = ("has0", "non0")


def _check(predictions: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as flat float64 after checking shape, size and finiteness."""
    predictions = np.asarray(predictions, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} must have the same shape")
    if predictions.size == 0:
        raise ValueError("affect metrics need at least one sample, got empty arrays")
    for name, values in (("predictions", predictions), ("labels", labels)):
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"{name} hold {int(bad.sum())} non-finite value(s) (NaN/Inf)")
    return predictions.reshape(-1), labels.reshape(-1)


def mean_absolute_error(predictions: ArrayLike, labels: ArrayLike) -> float:
    r"""Mean absolute error :math:`\frac{1}{N}\sum_i |p_i - y_i|` (sentiment units).

    Args:
      predictions: ``[N]`` predicted scores.
      labels: ``[N]`` annotated scores.

    Returns:
      MAE >= 0.
    """
    p, y = _check(predictions, labels)
    return float(np.mean(np.abs(p - y)))


def pearson_corr(predictions: ArrayLike, labels: ArrayLike) -> float:
    r"""Pearson correlation :math:`\mathrm{cov}(p, y) / (\sigma_p \sigma_y)` (``np.corrcoef``).

    Args:
      predictions: ``[N]`` predicted scores.
      labels: ``[N]`` annotated scores.

    Returns:
      Corr in [-1, 1]; NaN when either array is constant (the correlation is undefined, e.g. a
      model that predicts one value for every sample).
    """
    p, y = _check(predictions, labels)
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(p, y)[0, 1])


def binary_labels(predictions: ArrayLike, labels: ArrayLike, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """The binary (predicted, true) sentiment of the samples a convention scores.

    Args:
      predictions: ``[N]`` predicted scores.
      labels: ``[N]`` annotated scores.
      convention: ``"has0"`` (``x >= 0``, every sample) or ``"non0"`` (``x > 0``, only the
        samples whose label is not exactly 0).

    Returns:
      ``(predicted, true)``, bool ``[N']``.

    Raises:
      ValueError: unknown convention, or ``"non0"`` with every label equal to 0.
    """
    p, y = _check(predictions, labels)
    if convention == "has0":
        return p >= 0, y >= 0
    if convention == "non0":
        keep = y != 0
        if not keep.any():
            raise ValueError(f"convention 'non0' leaves out samples with label 0; all {y.size} labels are 0")
        return p[keep] > 0, y[keep] > 0
    raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def binary_accuracy(predictions: ArrayLike, labels: ArrayLike, *, convention: str) -> float:
    """Acc-2: fraction of scored samples whose predicted sign class equals the true one.

    Args:
      predictions: ``[N]`` predicted scores.
      labels: ``[N]`` annotated scores.
      convention: ``"has0"`` or ``"non0"`` (see :func:`binary_labels`).

    Returns:
      Accuracy in [0, 1].
    """
    predicted, true = binary_labels(predictions, labels, convention)
    return float(np.mean(predicted == true))


def weighted_f1(true: ArrayLike, predicted: ArrayLike) -> float:
    r"""Support-weighted F1 of binary labels, as ``sklearn.metrics.f1_score(true, predicted,
    average="weighted")`` (a class with no true and no predicted sample has F1 0 and weight 0).

    .. math:: F_1^{w} = \sum_{c \in \{0, 1\}} \frac{n_c}{N}\,\frac{2\,TP_c}{2\,TP_c + FP_c + FN_c}

    where :math:`n_c` is the number of samples whose *true* class is c.

    Args:
      true: ``[N]`` bool true classes.
      predicted: ``[N]`` bool predicted classes.

    Returns:
      Weighted F1 in [0, 1].
    """
    true, predicted = np.asarray(true, bool).reshape(-1), np.asarray(predicted, bool).reshape(-1)
    if true.shape != predicted.shape or true.size == 0:
        raise ValueError(f"true {true.shape} and predicted {predicted.shape} must be equal-length and non-empty")
    total = 0.0
    for c in (False, True):
        tp = np.sum((true == c) & (predicted == c))
        wrong = np.sum((true == c) != (predicted == c))  # FP_c + FN_c
        if 2 * tp + wrong:
            total += np.sum(true == c) * 2 * tp / (2 * tp + wrong)
    return float(total / true.size)


def binary_f1(predictions: ArrayLike, labels: ArrayLike, *, convention: str, mult_argument_order: bool = False) -> float:
    """F1: :func:`weighted_f1` of the binary labels of a convention.

    Args:
      predictions: ``[N]`` predicted scores.
      labels: ``[N]`` annotated scores.
      convention: ``"has0"`` or ``"non0"`` (see :func:`binary_labels`).
      mult_argument_order: weight by the predicted class sizes, as MulT's code does by passing
        the predictions as ``y_true`` (see the module docstring); False is sklearn's (and MMSA's)
        order.

    Returns:
      Weighted F1 in [0, 1].
    """
    predicted, true = binary_labels(predictions, labels, convention)
    return weighted_f1(predicted, true) if mult_argument_order else weighted_f1(true, predicted)


def multiclass_accuracy(predictions: ArrayLike, labels: ArrayLike, *, bound: int) -> float:
    """Acc-(2 bound + 1): accuracy of ``round(clip(x, -bound, bound))`` (half to even).

    Args:
      predictions: ``[N]`` predicted scores.
      labels: ``[N]`` annotated scores.
      bound: 3 for Acc-7, 2 for Acc-5.

    Returns:
      Accuracy in [0, 1].
    """
    if bound < 1:
        raise ValueError(f"bound must be a positive integer, got {bound}")
    p, y = _check(predictions, labels)
    classes = lambda x: np.round(np.clip(x, -bound, bound))  # noqa: E731
    return float(np.mean(classes(p) == classes(y)))


def affect_report(predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Every metric above in one dict.

    Args:
      predictions: ``[N]`` predicted sentiment scores.
      labels: ``[N]`` annotated scores in [-3, 3].

    Returns:
      ``{"mae", "corr", "acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "f1_non0_mult_order",
      "acc7", "acc5"}`` (accuracies and F1 as fractions in [0, 1]).
    """
    report = {"mae": mean_absolute_error(predictions, labels), "corr": pearson_corr(predictions, labels)}
    for convention in CONVENTIONS:
        report[f"acc2_{convention}"] = binary_accuracy(predictions, labels, convention=convention)
        report[f"f1_{convention}"] = binary_f1(predictions, labels, convention=convention)
    report["f1_non0_mult_order"] = binary_f1(predictions, labels, convention="non0", mult_argument_order=True)
    report["acc7"] = multiclass_accuracy(predictions, labels, bound=3)
    report["acc5"] = multiclass_accuracy(predictions, labels, bound=2)
    return report
