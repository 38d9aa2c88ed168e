"""Split summaries of the model task: the generation branch against an independent computation."""

import jax
import numpy as np
import optax
import pytest

import pathlib
import sys

from imro_jax.models import build_model, imro_loss
from imro_jax.models.heads import caption_loss_mask
from imro_jax.models.spec import parse_model_config
from imro_jax.train.model_task import (
    fatal_invalid,
    screen_batch,
    summarize_outputs,
    teacher_forced_caption_metrics,
)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "models"))
from models_testlib import loss_config, make_batch, tiny_config  # noqa: E402

N, L, V, M = 6, 5, 7, 2


def _caption_outputs(seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, L, size=N)
    caption = np.where(np.arange(L)[None, :] < lengths[:, None], rng.integers(2, V, size=(N, L)), 0)
    return {
        "logits": rng.normal(size=(N, L, V)).astype(np.float32) * 3,
        "caption": caption.astype(np.int32),
        "label": rng.integers(0, 4, size=N).astype(np.int32),
        "present": np.ones((N, M), bool),
        **{k: rng.uniform(size=(N, M)).astype(np.float32) for k in ("reliability", "entropy", "mi")},
    }


def test_generation_summary_matches_optax_cross_entropy_over_the_loss_mask():
    outputs = _caption_outputs()
    metrics = summarize_outputs(outputs, ("a", "b"))
    # Independent path: optax's cross-entropy and the loss's own mask (jnp), pooled over tokens.
    token_nll = np.asarray(optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], outputs["caption"]))
    mask = np.asarray(caption_loss_mask(outputs["caption"]))
    expected_nll = token_nll[mask].sum() / mask.sum()
    np.testing.assert_allclose(metrics["token_nll"], expected_nll, rtol=1e-5)
    np.testing.assert_allclose(metrics["perplexity"], np.exp(expected_nll), rtol=1e-5)
    hits = [outputs["logits"][b, t].argmax() == outputs["caption"][b, t] for b, t in zip(*np.nonzero(mask))]
    assert metrics["token_accuracy"] == pytest.approx(np.mean(hits))
    np.testing.assert_allclose(metrics["reliability/b"], outputs["reliability"][:, 1].mean(), rtol=1e-6)
    assert metrics["num_examples"] == N and "accuracy" not in metrics and "mae" not in metrics


def test_perfect_caption_logits_give_accuracy_one_and_perplexity_near_one():
    outputs = _caption_outputs(1)
    outputs["logits"] = np.asarray(jax.nn.one_hot(outputs["caption"], V)) * 50.0
    metrics = teacher_forced_caption_metrics(outputs["logits"], outputs["caption"])
    assert metrics["token_accuracy"] == 1.0
    assert 1.0 <= metrics["perplexity"] < 1.0 + 1e-12  # e^{-50} per token


def test_generation_summary_names_what_is_missing_or_mismatched():
    outputs = _caption_outputs()
    with pytest.raises(ValueError, match=r"do not match captions"):
        teacher_forced_caption_metrics(outputs["logits"][:, :-1], outputs["caption"])
    del outputs["caption"]
    with pytest.raises(KeyError, match="caption"):
        summarize_outputs(outputs, ("a", "b"))


def _jitted_loss(model_config):
    """loss(params, batch) of the model task's loss path (screening, model, imro_loss) under jit."""
    spec = parse_model_config(model_config)
    net = build_model(model_config)

    @jax.jit
    def loss(params, batch):
        batch, invalid = screen_batch(batch, spec)
        output = net.apply({"params": params}, batch, train=False)
        value, metrics = imro_loss(output, batch, loss_config())
        return value, dict(metrics, **invalid)

    batch = make_batch(model_config, batch_size=8)
    params = net.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, batch,
                      train=False)["params"]
    return loss, params, batch


def _with(batch, name, row, value):
    batch = jax.tree.map(np.copy, batch)
    batch[name][row] = value
    return batch


def test_out_of_range_labels_under_jit_are_invalid_samples_never_part_of_the_loss():
    config = tiny_config()
    loss, params, batch = _jitted_loss(config)
    values = {}
    for label in (-1, -2, config.num_classes, 10**6):
        value, metrics = loss(params, _with(batch, "label", 3, label))
        values[label] = float(value)
        assert int(metrics["invalid/label"]) == 1 and float(metrics["valid_fraction"]) == 7 / 8
    assert len(set(values.values())) == 1, values  # whatever the bad label, it contributes nothing
    all_bad = dict(batch, label=np.full_like(batch["label"], -1))
    _, metrics = loss(params, all_bad)
    assert float(metrics["valid_fraction"]) == 0.0  # the train step skips such a batch


def test_nan_labels_and_nan_modalities_under_jit_are_counted_invalid():
    config = tiny_config(task="regression")
    loss, params, batch = _jitted_loss(config)
    value, metrics = loss(params, _with(batch, "label", 2, np.nan))
    assert np.isfinite(float(value)) and int(metrics["invalid/label"]) == 1
    name = sorted(config.modalities)[0]
    _, metrics = loss(params, _with(batch, name, 5, np.nan))
    assert int(metrics[f"invalid/{name}"]) == 1 and float(metrics["valid_fraction"]) == 7 / 8
    spec = parse_model_config(config)
    assert set(fatal_invalid(spec)) == {*spec.modality_names, "label"}  # nonfinite="error"
    assert fatal_invalid(parse_model_config(tiny_config(nonfinite="as_missing"))) == ("label",)


def test_regression_summary_reports_the_sentiment_metrics():
    from scipy import stats
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(2)
    label = np.round(rng.uniform(-3, 3, 40) * 3).astype(np.float32) / 3
    label[:5] = 0.0
    outputs = {"logits": (label + rng.normal(0, 0.7, 40)).astype(np.float32), "label": label,
               "present": np.ones((40, M), bool),
               **{k: rng.uniform(size=(40, M)).astype(np.float32) for k in ("reliability", "entropy", "mi")}}
    metrics = summarize_outputs(outputs, ("a", "b"))
    p, y = outputs["logits"].astype(np.float64), label.astype(np.float64)
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(p - y)))
    assert metrics["mse"] == pytest.approx(np.mean((p - y) ** 2))
    assert metrics["corr"] == pytest.approx(stats.pearsonr(p, y).statistic)
    keep = y != 0
    assert metrics["acc2_non0"] == pytest.approx(accuracy_score(y[keep] > 0, p[keep] > 0))
    assert metrics["f1_has0"] == pytest.approx(f1_score(y >= 0, p >= 0, average="weighted"))
    assert {"acc7", "acc5", "f1_non0", "acc2_has0", "reliability/a"} <= set(metrics)
