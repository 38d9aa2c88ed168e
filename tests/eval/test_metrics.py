"""Evaluation metrics against sklearn and explicit loop references."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from imro_jax import eval as ev


@pytest.fixture
def predictions():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=500)
    logits = rng.normal(size=(500, 5)) * 2.0
    logits[np.arange(500), labels] += rng.normal(1.0, 1.0, size=500)  # better than chance
    return logits, labels


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_accuracy_and_nll_match_sklearn(predictions):
    logits, labels = predictions
    probs = _softmax(logits)
    assert ev.accuracy(logits, labels) == pytest.approx(accuracy_score(labels, probs.argmax(-1)))
    assert ev.negative_log_likelihood(logits, labels) == pytest.approx(
        log_loss(labels, probs, labels=np.arange(5)), rel=1e-9
    )


def test_nll_handles_masked_logits():
    logits = np.array([[0.0, -np.inf, 1.0]])
    assert np.isfinite(ev.negative_log_likelihood(logits, np.array([2])))
    assert ev.negative_log_likelihood(logits, np.array([1])) == np.inf


def test_ece_matches_loop_reference(predictions):
    logits, labels = predictions
    probs = _softmax(logits)
    conf, pred = probs.max(-1), probs.argmax(-1)
    edges = np.linspace(0, 1, 16)
    expected = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            expected += in_bin.mean() * abs((pred[in_bin] == labels[in_bin]).mean() - conf[in_bin].mean())
    assert ev.expected_calibration_error(logits, labels, 15) == pytest.approx(expected, abs=1e-12)


def test_ece_is_zero_for_perfectly_calibrated_confident_model():
    logits = np.array([[50.0, 0.0], [0.0, 50.0]])
    assert ev.expected_calibration_error(logits, np.array([0, 1])) == pytest.approx(0.0, abs=1e-12)


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=300), 1)  # many ties
    positives = rng.random(300) < 0.3 + 0.4 * (scores > 0)
    assert ev.auroc(scores, positives) == pytest.approx(roc_auc_score(positives, scores), abs=1e-12)


def test_confidence_auroc_and_degenerate_cases(predictions):
    logits, labels = predictions
    probs = _softmax(logits)
    correct = probs.argmax(-1) == labels
    assert ev.confidence_auroc(logits, labels) == pytest.approx(roc_auc_score(correct, probs.max(-1)))
    assert np.isnan(ev.auroc([0.1, 0.2], [True, True]))


@pytest.mark.parametrize(
    "logits, labels, error",
    [
        (np.zeros((3,)), np.zeros(3, int), ValueError),
        (np.zeros((3, 2)), np.zeros(4, int), ValueError),
        (np.zeros((3, 2)), np.zeros(3), TypeError),
        (np.zeros((3, 2)), np.array([0, 1, 2]), ValueError),
        (np.full((3, 2), np.nan), np.zeros(3, int), ValueError),
    ],
)
def test_bad_input_raises(logits, labels, error):
    with pytest.raises(error):
        ev.accuracy(logits, labels)


def test_multibench_robustness_definitions():
    f = np.array([0.9, 0.85, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.3, 0.3])
    lf = np.array([0.95, 0.8, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.2, 0.2, 0.2])
    # MultiBench's helpers, written out as loops.
    area = sum((f[i] + f[i + 1]) * 0.1 / 2 for i in range(len(f) - 1))
    eff = sum(f[i] - (lf[i] + f[0] - lf[0]) for i in range(len(f)))
    assert ev.relative_robustness(f) == pytest.approx(area)
    assert ev.effective_robustness(f, lf) == pytest.approx(eff)
    assert ev.effective_robustness(lf, lf) == pytest.approx(0.0)
    # A constant curve over explicit levels [0, 2] has area 2 * value.
    assert ev.relative_robustness([0.5, 0.5, 0.5], levels=[0.0, 1.0, 2.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ev.relative_robustness([0.5, 0.4], levels=[1.0, 0.0])
