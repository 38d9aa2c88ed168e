"""Evaluation: classification and sentiment-regression metrics, robustness summaries (host-side numpy)."""

from imro_jax.eval.affect import (
    affect_report,
    binary_accuracy,
    binary_f1,
    mean_absolute_error,
    multiclass_accuracy,
    pearson_corr,
    weighted_f1,
)
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
    "affect_report",
    "binary_accuracy",
    "binary_f1",
    "mean_absolute_error",
    "multiclass_accuracy",
    "pearson_corr",
    "weighted_f1",
    "auroc",
    "classification_report",
    "confidence_auroc",
    "effective_robustness",
    "expected_calibration_error",
    "negative_log_likelihood",
    "relative_robustness",
]

# Robustness sweeps and reliability reports (imro_jax.eval.sweep / .reports). They import
# imro_jax.data (TFDS) and matplotlib, so they load on first use to keep this package light;
# so do the result tables and files (imro_jax.eval.tables / .results_files; the latter imports jax).
# The sweep function itself is `imro_jax.eval.sweep.sweep` (the name `sweep` is the module).
_LAZY = {
    "sweep": (
        "ORACLE_SUFFIX", "SweepResult", "caption_predictor", "caption_scorer", "caption_scores",
        "class_prototypes", "classification_scorer", "corrupt", "corrupted_mask", "mask_corrupted",
        "modality_subsets", "model_predictor", "proper_subsets", "rcml_conflictive", "regression_scorer",
        "score_predictors",
    ),
    "reports": (
        "plot_curves", "plot_reliability_bars", "plot_reliability_vs_quality", "plot_sweep",
        "reliability_by_level", "reliability_quality_correlation", "reliability_report", "simplex_quality_ceiling",
        "spearman",
    ),
    "tables": ("curve_stats", "fmt", "markdown_table", "mean_std", "robustness_over_seeds", "sweep_table"),
    "results_files": ("environment", "jsonable", "replace_section", "repo_relative", "summary_payload",
                      "write_results"),
}
__all__ += [name for names in _LAZY.values() for name in names]


def __getattr__(name: str):
    import importlib

    for module, names in _LAZY.items():
        if name in names:
            return getattr(importlib.import_module(f"imro_jax.eval.{module}"), name)
    if name in _LAZY:
        return importlib.import_module(f"imro_jax.eval.{name}")
    raise AttributeError(f"module 'imro_jax.eval' has no attribute {name!r}")
