"""Robustness sweeps against independently computed accuracies, with hand-made predictors.

Three float views a, b, c of dimension K = 4 carry ``one_hot(y) + small noise``. Predictors are
plain functions of the batch, so every expected number is computed here by numpy from the
inputs (or from ``apply_corruption`` called directly with the documented key).
"""

import itertools
import math

import jax
import numpy as np
import pytest

from imro_jax.data import apply_corruption
from imro_jax.eval import relative_robustness
from imro_jax.eval import sweep as sw

K, B = 4, 64
VIEWS = ("a", "b", "c")


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    label = rng.integers(0, K, B).astype(np.int32)
    out = {v: (np.eye(K)[label] + 0.05 * rng.normal(size=(B, K))).astype(np.float32) for v in VIEWS}
    out["mask"] = {v: np.ones(B, bool) for v in VIEWS}
    out["label"] = label
    return out


def view_a_only(batch):
    """Answers from view a alone (10 x its features as logits)."""
    return {"logits": 10.0 * np.asarray(batch["a"], np.float64), "valid": np.ones(len(batch["label"]), bool)}


def sum_of_present(batch):
    """Late fusion of the present views; reliability = 1/(number present) on present views."""
    mask = np.stack([batch["mask"][v] for v in VIEWS], 1).astype(np.float64)  # [B, 3]
    logits = sum(mask[:, i : i + 1] * np.asarray(batch[v], np.float64) for i, v in enumerate(VIEWS))
    return {"logits": 10.0 * logits, "reliability": mask / np.maximum(mask.sum(1, keepdims=True), 1)}


def test_subsets_enumeration():
    views = ("fou", "fac", "kar", "pix", "zer", "mor")
    triples = sw.modality_subsets(views, 3)
    assert len(triples) == math.comb(6, 3) == 20
    assert len(set(triples)) == 20 and all(len(t) == 3 and list(t) == sorted(t) for t in triples)
    for v in views:  # each view is noisy in C(5, 2) = 10 of the 20 triples
        assert sum(v in t for t in triples) == 10
    assert {frozenset(t) for t in triples} == {frozenset(c) for c in itertools.combinations(views, 3)}
    assert sw.proper_subsets(VIEWS) == [("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c")]
    with pytest.raises(ValueError, match="subset size"):
        sw.modality_subsets(views, 7)


def test_missing_view_drops_accuracy_exactly(batch):
    # Missing zeroes the view: argmax of zeros is class 0, so a sample stays correct iff y == 0.
    result = sw.sweep({"a_only": view_a_only}, batch, corruption="missing", levels=[0.0, 1.0],
                      subsets=[("a",), ("b",), ("c",)], fraction=1.0)
    acc = result.scores["a_only"]["accuracy"]  # [levels, subsets]
    p0 = np.mean(batch["label"] == 0)
    np.testing.assert_allclose(acc, [[1.0, 1.0, 1.0], [p0, 1.0, 1.0]])
    np.testing.assert_allclose(result.curve("a_only", "accuracy"), [1.0, (p0 + 2) / 3])


def test_gaussian_sweep_matches_direct_corruption(batch):
    levels, subsets = [0.0, 0.5, 3.0], [("a",), ("b", "c"), ("a", "c")]
    result = sw.sweep({"a_only": view_a_only}, batch, corruption="gaussian", levels=levels, subsets=subsets, seed=3)
    for i, level in enumerate(levels):
        for j, subset in enumerate(subsets):
            key = jax.random.fold_in(jax.random.fold_in(jax.random.key(3), i), j)
            noisy = apply_corruption(batch, "gaussian", level, modalities=subset, fraction=1.0, key=key)
            expected = np.mean(np.argmax(np.asarray(noisy["a"]), -1) == batch["label"])
            assert result.scores["a_only"]["accuracy"][i, j] == pytest.approx(expected)
    acc = result.scores["a_only"]["accuracy"]
    assert acc[2, 0] < 0.8 and acc[2, 1] == 1.0  # noise on a hurts; noise on b, c does not


def test_oracle_masks_exactly_the_noisy_views(batch):
    result = sw.sweep({"late": sum_of_present}, batch, corruption="gaussian", levels=[0.0, 100.0],
                      subsets=[("b",)], oracle=["late"])
    late, oracle = result.scores["late"], result.scores["late+oracle"]
    assert late["accuracy"][0, 0] == oracle["accuracy"][0, 0] == 1.0  # level 0: nothing masked
    assert late["accuracy"][1, 0] < 0.6  # sigma 100 on b swamps a + c
    assert oracle["accuracy"][1, 0] == 1.0  # a + c alone are clean
    # Weights: 1/3 everywhere at level 0; the oracle gives b weight 0 and a, c 1/2 at level 100.
    assert oracle["R/b"][1, 0] == 0.0 and oracle["R/a"][1, 0] == pytest.approx(0.5)
    assert np.isnan(late["R_corrupted"][0, 0])  # level 0 corrupts nothing
    assert late["R_corrupted"][1, 0] == pytest.approx(1 / 3)


def test_mask_corrupted(batch):
    noisy = sw.corrupt(batch, "gaussian", 1.0, ("a", "c"), key=jax.random.key(0), fraction=0.25)
    applied = np.asarray(noisy["corruption"]["gaussian"]["applied"]["a"])
    assert applied.sum() == round(0.25 * B)
    masked = sw.mask_corrupted(noisy)
    for v in ("a", "c"):
        np.testing.assert_array_equal(masked["mask"][v], ~applied)
        np.testing.assert_array_equal(masked[v][applied], 0.0)
        np.testing.assert_array_equal(masked[v][~applied], noisy[v][~applied])
    np.testing.assert_array_equal(masked["mask"]["b"], True)
    np.testing.assert_array_equal(masked["b"], batch["b"])


def test_summary_robustness(batch):
    levels = [0.0, 0.3, 1.0, 3.0]
    result = sw.sweep({"a_only": view_a_only, "late": sum_of_present}, batch, corruption="gaussian",
                      levels=levels, subsets=[("a",), ("b",)])
    summary = result.summary("accuracy", reference="late")
    for method in ("a_only", "late"):
        curve = result.scores[method]["accuracy"].mean(axis=1)
        np.testing.assert_allclose(summary[method]["curve"], curve)
        trapezoid = sum((curve[i] + curve[i + 1]) * 0.1 / 2 for i in range(len(curve) - 1))
        assert summary[method]["relative_robustness"] == pytest.approx(trapezoid)
        assert summary[method]["relative_robustness"] == pytest.approx(relative_robustness(curve))
    late, own = np.asarray(summary["late"]["curve"]), np.asarray(summary["a_only"]["curve"])
    assert summary["late"]["effective_robustness"] == 0.0
    assert summary["a_only"]["effective_robustness"] == pytest.approx(np.sum(own - (late + own[0] - late[0])))


def test_rcml_conflictive(batch):
    pool = sw.class_prototypes(batch, K)
    np.testing.assert_array_equal(pool["label"], np.arange(K))
    out = sw.rcml_conflictive(batch, key=jax.random.key(1), num_classes=K, pool=pool,
                              noise_fraction=0.25, noise_std=0.5, conflict_fraction=0.5)
    record = out["corruption"]
    replaced = np.stack([record["conflict"]["applied"][v] for v in VIEWS], 1)  # [B, 3]
    assert replaced.sum() == round(0.5 * B) and replaced.sum(1).max() == 1  # one view per sample
    noisy = np.stack([record["gaussian"]["applied"][v] for v in VIEWS], 1)
    assert noisy.any(1).sum() <= round(0.25 * B) and noisy.sum(1).max() <= len(VIEWS) - 1
    donor = (batch["label"] + 1) % K
    for i, v in enumerate(VIEWS):
        rows = replaced[:, i]
        np.testing.assert_array_equal(out[v][rows], pool[v][donor[rows]])  # the class-(y+1) prototype
        same = ~rows & ~noisy[:, i]
        np.testing.assert_array_equal(out[v][same], batch[v][same])
        changed = ~rows & noisy[:, i]
        assert np.all(np.abs(out[v][changed] - batch[v][changed]).max(1) > 0)
    # Oracle: the clean views decide; a sample with every view touched has no view left, its
    # logits are 0 and argmax says class 0.
    scores = sw.score_predictors({"late": sum_of_present}, out, oracle=["late"])
    none_left = (replaced | noisy).all(1)
    expected = np.mean(np.where(none_left, batch["label"] == 0, True))
    assert scores["late+oracle"]["accuracy"] == pytest.approx(expected)


def test_caption_scores():
    targets = np.array([[2, 5, 6, 3, 0, 0], [2, 7, 3, 0, 0, 0]])
    tokens = np.array([[2, 5, 6, 3, 0, 0], [2, 8, 3, 3, 0, 0]])
    scores = sw.caption_scores(tokens, targets)
    assert scores["token_accuracy"] == pytest.approx(6 / 7)  # 7 target tokens, one wrong
    assert scores["exact_match"] == 0.5  # the second also fails to stop
    with pytest.raises(ValueError, match="no caption token"):
        sw.caption_scores(tokens, np.zeros_like(targets))


def test_batched_predictor_pads_last_chunk():
    calls = []

    def fn(chunk):
        calls.append(len(chunk["x"]))
        return {"y": 2 * chunk["x"]}

    out = sw._batched(fn, {"x": np.arange(10.0)}, chunk_size=4)
    np.testing.assert_array_equal(out["y"], 2 * np.arange(10.0))
    assert calls == [4, 4, 4]  # one shape only: one compilation


def test_errors(batch):
    with pytest.raises(ValueError, match="oracle methods"):
        sw.sweep({"a_only": view_a_only}, batch, corruption="gaussian", levels=[0.0], subsets=[("a",)],
                 oracle=["late"])
    with pytest.raises(ValueError, match="at least one level"):
        sw.sweep({"a_only": view_a_only}, batch, corruption="gaussian", levels=[], subsets=[("a",)])
    with pytest.raises(ValueError, match="no sample of classes"):
        sw.class_prototypes({**batch, "label": np.zeros(B, np.int32)}, K)


def test_oracle_masks_exactly_the_levels_that_change_the_input():
    from imro_jax.eval import sweep as sweep_lib

    rng = np.random.default_rng(0)
    batch = {"a": rng.normal(size=(6, 5)).astype(np.float32), "label": np.arange(6) % 2,
             "mask": {"a": np.ones(6, bool)}}
    cases = {("clipping", 1.0): False, ("clipping", 0.5): True, ("stuck", 0.0): True, ("gaussian", 0.0): False,
             ("gaussian", 0.3): True, ("snr", 0.0): True}
    for (name, level), hit in cases.items():
        out = sweep_lib.corrupt(batch, name, level, ["a"], key=jax.random.key(0))
        changed = not np.array_equal(out["a"], batch["a"])
        assert changed == hit, (name, level)  # the ground truth: did the input change?
        assert bool(sweep_lib.corrupted_mask(out)["a"].all()) == hit, (name, level)


def test_regression_scorer_matches_sklearn_and_scipy():
    from scipy import stats
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    rng = np.random.default_rng(3)
    labels = rng.normal(size=50)
    predictions = labels + 0.3 * rng.normal(size=50)
    reliability = np.full((50, 3), 1 / 3)
    batch = {"label": labels, "mask": {v: np.ones(50, bool) for v in VIEWS}, **{v: np.zeros((50, 2)) for v in VIEWS}}
    scores = sw.regression_scorer({"logits": predictions, "reliability": reliability,
                                   "valid": np.r_[np.ones(40, bool), np.zeros(10, bool)]}, batch)
    assert scores["mae"] == pytest.approx(mean_absolute_error(labels, predictions))
    assert scores["rmse"] == pytest.approx(math.sqrt(mean_squared_error(labels, predictions)))
    assert scores["corr"] == pytest.approx(stats.pearsonr(predictions, labels).statistic)
    assert scores["valid"] == pytest.approx(0.8) and scores["R/a"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"\[B\] predictions"):
        sw.regression_scorer({"logits": predictions[:, None]}, batch)


def test_protocol_conflict_with_a_regression_target_takes_donors_of_the_next_class():
    from imro_jax.eval import protocols

    rng = np.random.default_rng(4)
    n, classes = 40, np.repeat(np.arange(K, dtype=np.int32), 10)
    # each view holds the sample's class in column 0 (so the donor's class is visible afterwards)
    test = {v: np.stack([classes.astype(np.float32), rng.normal(size=n).astype(np.float32)], 1) for v in VIEWS}
    test["mask"] = {v: np.ones(n, bool) for v in VIEWS}
    test["label"] = (classes + 0.1 * rng.normal(size=n)).astype(np.float32)  # a regression target
    seen = {}

    def predictor(batch):  # the mean of the views' column 0: the target if nothing is swapped
        seen["batch"] = batch
        return {"logits": np.mean([np.asarray(batch[v])[:, 0] for v in VIEWS], 0), "valid": np.ones(n, bool),
                "reliability": np.full((n, 3), 1 / 3)}

    def conflict_only(predictors, batch, **kwargs):
        return protocols.modality_protocol(predictors, batch, noise={}, seed=0, scorer=sw.regression_scorer,
                                           num_classes=K, kinds=False, modalities=VIEWS, **kwargs)["conflict"]

    scores = conflict_only({"mean": predictor}, test, classes=classes)
    conflicted = seen["batch"]
    np.testing.assert_array_equal(conflicted["label"], test["label"])  # the target is kept
    swapped = np.stack([np.asarray(conflicted[v])[:, 0] != classes for v in VIEWS], 1)
    assert np.all(swapped.sum(1) == 1)  # every sample: exactly one view from another sample ...
    donors = np.asarray([np.asarray(conflicted[v])[i, 0] for i, v in zip(range(n), np.array(VIEWS)[swapped.argmax(1)])])
    np.testing.assert_array_equal(donors, (classes + 1) % K)  # ... of the next class
    expected = np.mean(np.abs((2 * classes + (classes + 1) % K) / 3 - test["label"]))
    assert scores["mean"]["mae"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="integer class labels"):  # no classes: a float target cannot pick donors
        conflict_only({"mean": predictor}, test)


def test_modality_headline_reads_each_condition(batch):
    from imro_jax.eval import protocols

    label = batch["label"]

    def accuracy_without(dropped):  # sum_of_present's accuracy with the views `dropped` masked, by numpy
        logits = sum(np.asarray(batch[v], np.float64) for v in VIEWS if v not in dropped)
        return float(np.mean(np.argmax(logits, 1) == label))

    result = protocols.modality_protocol({"late": sum_of_present}, batch, noise={"a": ("missing", [0.0, 1.0])},
                                         seed=0, oracle=["late"], num_classes=K, kinds=False, modalities=VIEWS)
    row = protocols.modality_headline(result, "late", "accuracy")
    assert set(row) == {"clean", "missing", "conflict", "conflict+oracle", "noise:a@1", "noise:a@1+oracle"}
    assert row["clean"] == pytest.approx(accuracy_without(()))
    subsets = [s for r in (1, 2) for s in itertools.combinations(VIEWS, r)]
    assert row["missing"] == pytest.approx(np.mean([accuracy_without(s) for s in subsets]))
    assert row["noise:a@1"] == pytest.approx(accuracy_without(("a",)))
    assert row["noise:a@1+oracle"] == pytest.approx(accuracy_without(("a",)))
    assert 0.0 <= row["conflict"] <= 1.0


def test_synth_eval_split_takes_classes_from_the_classification_config(monkeypatch):
    import ml_collections

    from imro_jax.eval import protocols

    quality = np.arange(12, dtype=np.float32).reshape(4, 3)
    splits = {("cls", "validation"): {"label": np.array([0, 1, 2, 3]), "quality": quality},
              ("reg", "validation"): {"label": np.array([0.1, 0.9, 2.2, 2.8]), "quality": quality},
              ("other", "validation"): {"label": np.array([0, 1, 2, 3]), "quality": quality + 1}}
    monkeypatch.setattr(protocols, "load_split", lambda config, split: splits[(config.builder_config, split)])
    monkeypatch.setattr(protocols, "quality_matrix", lambda b: np.asarray(b["quality"]))
    monkeypatch.setattr(protocols, "prepare_dataset", lambda config: None)
    data = lambda name: ml_collections.ConfigDict({"builder_config": name})
    batch, classes = protocols.synth_eval_split(data("reg"), "validation", 3, data("cls"))
    np.testing.assert_array_equal(classes, [0, 1, 2])
    np.testing.assert_allclose(batch["label"], [0.1, 0.9, 2.2])
    batch, classes = protocols.synth_eval_split(data("cls"), "validation", 2)
    np.testing.assert_array_equal(classes, [0, 1])
    with pytest.raises(RuntimeError, match="other and reg validation splits hold other samples"):
        protocols.synth_eval_split(data("reg"), "validation", 3, data("other"))
