"""Evaluation: classification metrics and robustness summaries (host-side numpy)."""

from imro_jax.eval.metrics import (
    accuracy,
    auroc,
    classification_report,
    confidence_auroc,
    expected_calibration_error,
    negative_log_likelihood,
)
from imro_jax.eval.robustness import effective_robustness, relative_robustness

__all__ = [
    "accuracy",
    "auroc",
    "classification_report",
    "confidence_auroc",
    "effective_robustness",
    "expected_calibration_error",
    "negative_log_likelihood",
    "relative_robustness",
]
