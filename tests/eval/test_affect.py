"""Sentiment metrics (imro_jax.eval.affect) against sklearn, scipy and hand computation."""

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error

from imro_jax import eval as ev


@pytest.fixture
def scores():
    """Predictions and labels in the MOSEI range, with exact zeros and half-integer ties."""
    rng = np.random.default_rng(3)
    labels = np.round(rng.uniform(-3, 3, 400) * 3) / 3  # MOSEI scores are averages of 3 ratings
    labels[:40] = 0.0
    labels[40:60] = rng.choice([-2.5, -0.5, 0.5, 1.5, 2.5], 20)
    predictions = 0.7 * labels + rng.normal(0, 0.8, 400)
    predictions[60:70] = [-3.5, 3.5, 0.0, 0.0, -0.5, 0.5, 2.5, -2.5, 4.0, -4.0]
    return predictions, labels


def test_mae_and_corr_match_sklearn_and_scipy(scores):
    p, y = scores
    assert ev.mean_absolute_error(p, y) == pytest.approx(mean_absolute_error(y, p), rel=1e-12)
    assert ev.pearson_corr(p, y) == pytest.approx(stats.pearsonr(p, y).statistic, rel=1e-12)


@pytest.mark.parametrize("convention", ["has0", "non0"])
def test_binary_accuracy_and_f1_match_sklearn(scores, convention):
    p, y = scores
    if convention == "has0":  # MMSA: negative vs non-negative over every sample
        true, pred = y >= 0, p >= 0
    else:  # MulT exclude_zero=True: label-0 samples dropped, then > 0
        true, pred = y[y != 0] > 0, p[y != 0] > 0
    assert ev.binary_accuracy(p, y, convention=convention) == pytest.approx(accuracy_score(true, pred))
    assert ev.binary_f1(p, y, convention=convention) == pytest.approx(
        f1_score(true, pred, average="weighted"), rel=1e-12)
    # MulT's call order f1_score(preds, truth): a different number, also matched.
    swapped = f1_score(pred, true, average="weighted")
    assert ev.binary_f1(p, y, convention=convention, mult_argument_order=True) == pytest.approx(swapped, rel=1e-12)


def test_multiclass_accuracy_matches_a_per_sample_loop(scores):
    p, y = scores
    for bound, classes in ((3, 7), (2, 5)):
        def label(x):
            return int(np.round(min(max(x, -bound), bound)))  # round half to even, as numpy
        expected = np.mean([label(a) == label(b) for a, b in zip(p, y)])
        assert ev.multiclass_accuracy(p, y, bound=bound) == pytest.approx(expected)
        assert len({label(v) for v in np.linspace(-9, 9, 1001)}) == classes


def test_hand_computed_values():
    y = np.array([-2.0, 0.0, 1.0, 0.0, 2.5, -0.5])
    p = np.array([-1.0, 0.5, -0.2, -0.3, 3.4, 0.0])
    report = ev.affect_report(p, y)
    # non-0 keeps samples 0, 2, 4, 5: true > 0 = [F, T, T, F], predicted > 0 = [F, F, T, F].
    assert report["acc2_non0"] == pytest.approx(3 / 4)
    # F1: class F (2 true, TP 2, FP 1, FN 0) 4/5; class T (2 true, TP 1, FN 1) 2/3.
    assert report["f1_non0"] == pytest.approx((2 * 4 / 5 + 2 * 2 / 3) / 4)
    # MulT's argument order weights by the predicted counts (3 F, 1 T).
    assert report["f1_non0_mult_order"] == pytest.approx((3 * 4 / 5 + 1 * 2 / 3) / 4)
    # has-0: true >= 0 = [F, T, T, T, T, F], predicted >= 0 = [F, T, F, F, T, T].
    assert report["acc2_has0"] == pytest.approx(3 / 6)
    # Acc-7: labels -> [-2, 0, 1, 0, 2, 0] (2.5 -> 2, -0.5 -> 0), predictions -> [-1, 0, 0, 0, 3, 0].
    assert report["acc7"] == pytest.approx(3 / 6)
    # Acc-5: predictions clipped to 2 -> [-1, 0, 0, 0, 2, 0].
    assert report["acc5"] == pytest.approx(4 / 6)
    assert report["mae"] == pytest.approx((1 + 0.5 + 1.2 + 0.3 + 0.9 + 0.5) / 6)


def test_constant_predictions_have_undefined_corr():
    assert np.isnan(ev.pearson_corr(np.ones(5), np.arange(5.0)))


@pytest.mark.parametrize("p,y,message", [
    (np.zeros(3), np.zeros(4), r"same shape"),
    (np.zeros(0), np.zeros(0), r"at least one sample"),
    (np.array([0.0, np.nan]), np.zeros(2), r"predictions hold 1 non-finite"),
    (np.zeros(2), np.array([np.inf, 0.0]), r"labels hold 1 non-finite"),
])
def test_bad_inputs_raise(p, y, message):
    with pytest.raises(ValueError, match=message):
        ev.affect_report(p, y)


def test_non0_without_nonzero_labels_and_unknown_convention_raise():
    with pytest.raises(ValueError, match=r"all 3 labels are 0"):
        ev.binary_accuracy(np.ones(3), np.zeros(3), convention="non0")
    with pytest.raises(ValueError, match=r"convention must be one of"):
        ev.binary_f1(np.ones(3), np.ones(3), convention="zero")
