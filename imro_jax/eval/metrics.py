"""Classification metrics for robustness evaluation: accuracy, NLL, ECE, AUROC.

These run on the host over a whole evaluation set (numpy in, Python float out), after the
model's logits have been gathered; they are not meant to be traced by ``jit``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _check_logits_labels(logits: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2:
        raise ValueError(f"logits must be [batch, classes], got shape {logits.shape}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(
            f"labels must be [batch] = ({logits.shape[0]},) to match logits, got {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integer class ids, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(
            f"labels must lie in [0, {logits.shape[1]}), got range [{labels.min()}, {labels.max()}]"
        )
    if np.isnan(logits).any():
        raise ValueError("logits contain NaN")
    return logits, labels


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis (``-inf`` entries allowed)."""
    shift = np.max(logits, axis=-1, keepdims=True)
    shift = np.where(np.isfinite(shift), shift, 0.0)
    z = logits - shift
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def accuracy(logits: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of samples whose arg-max class equals the label.

    Args:
      logits: ``[batch, classes]`` unnormalised log-probabilities.
      labels: ``[batch]`` integer class ids.

    Returns:
      Accuracy in [0, 1].
    """
    logits, labels = _check_logits_labels(logits, labels)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def negative_log_likelihood(logits: ArrayLike, labels: ArrayLike) -> float:
    r"""Mean negative log-likelihood of the labels, in nats.

    .. math:: \mathrm{NLL} = -\frac{1}{N}\sum_i \log \mathrm{softmax}(z_i)_{y_i}

    Args:
      logits: ``[batch, classes]``.
      labels: ``[batch]`` integer class ids.

    Returns:
      Mean NLL in nats (``inf`` if a label has zero probability).
    """
    logits, labels = _check_logits_labels(logits, labels)
    logp = log_softmax(logits)
    return float(-np.mean(logp[np.arange(labels.shape[0]), labels]))


def expected_calibration_error(logits: ArrayLike, labels: ArrayLike, num_bins: int = 15) -> float:
    r"""Expected calibration error of the top-1 confidence with equal-width bins.

    .. math:: \mathrm{ECE} = \sum_{b=1}^{B} \frac{|S_b|}{N}\,
              \big|\mathrm{acc}(S_b) - \mathrm{conf}(S_b)\big|

    where :math:`S_b` holds the samples whose confidence :math:`\max_k p_{ik}` lies in
    ``((b-1)/B, b/B]`` (the first bin also holds confidence 0).

    Args:
      logits: ``[batch, classes]``.
      labels: ``[batch]`` integer class ids.
      num_bins: number of equal-width confidence bins (15 as in Guo et al.).

    Returns:
      ECE in [0, 1].

    References:
      Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    logits, labels = _check_logits_labels(logits, labels)
    probs = np.exp(log_softmax(logits))
    confidence = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == labels).astype(np.float64)
    # Bin b holds confidences in ((b-1)/B, b/B]; ceil maps 0 to bin 0 as well.
    bins = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
    counts = np.bincount(bins, minlength=num_bins)
    gap = np.abs(
        np.bincount(bins, weights=correct, minlength=num_bins)
        - np.bincount(bins, weights=confidence, minlength=num_bins)
    )
    return float(np.sum(gap) / max(labels.shape[0], 1)) if counts.sum() else 0.0


def auroc(scores: ArrayLike, positives: ArrayLike) -> float:
    r"""Area under the ROC curve: P(score of a positive > score of a negative), ties count 1/2.

    Computed exactly from average ranks (the Mann-Whitney U statistic):
    :math:`\mathrm{AUROC} = (\sum_{i \in P} r_i - |P|(|P|+1)/2) / (|P|\,|N|)`.

    Used with ``scores = confidence`` and ``positives = correct`` to measure how well a model's
    confidence separates its right answers from its wrong ones.

    Args:
      scores: ``[n]`` real scores.
      positives: ``[n]`` booleans.

    Returns:
      AUROC in [0, 1]; NaN if one of the two classes is empty (the AUROC is undefined then).
    """
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    if scores.ndim != 1 or positives.shape != scores.shape:
        raise ValueError(f"scores and positives must be equal-length 1-D, got {scores.shape}, {positives.shape}")
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # Average ranks (1-based) over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    u = ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def confidence_auroc(logits: ArrayLike, labels: ArrayLike) -> float:
    """AUROC of the top-1 softmax confidence for correct-versus-wrong predictions."""
    logits, labels = _check_logits_labels(logits, labels)
    logp = log_softmax(logits)
    return auroc(np.exp(logp.max(axis=-1)), logp.argmax(axis=-1) == labels)


def classification_report(logits: ArrayLike, labels: ArrayLike, num_bins: int = 15) -> dict[str, float]:
    """Accuracy, NLL (nats), ECE and confidence AUROC in one dict."""
    return {
        "accuracy": accuracy(logits, labels),
        "nll": negative_log_likelihood(logits, labels),
        "ece": expected_calibration_error(logits, labels, num_bins),
        "auroc": confidence_auroc(logits, labels),
    }
