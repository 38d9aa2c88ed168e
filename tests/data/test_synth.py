"""The imro_synth generator: ground truth, learnability versus quality, determinism."""

import numpy as np
import pytest
from scipy import stats
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from imro_jax.data import synth

SPEC = synth.SynthSpec()
COL = {m: i for i, m in enumerate(synth.MODALITIES)}


def _chunk(n, seed):
    labels = synth.balanced_labels(n, SPEC.num_classes, np.random.default_rng([seed, 0]))
    return synth.generate(SPEC, labels, np.random.default_rng([seed, 1]))


@pytest.fixture(scope="module")
def train_test():
    return _chunk(2400, 1), _chunk(2400, 2)


def _features(chunk, modality):
    """Phase-invariant unimodal features: bag of words, oriented image power, audio band power."""
    x = chunk[modality]
    if modality == "text":
        return np.stack([np.bincount(row, minlength=SPEC.vocab_size) for row in x]).astype(np.float64)
    if modality == "vision":
        img = x.astype(np.float64) / 255
        power = (np.abs(np.fft.fft2(img - img.mean(axis=(1, 2), keepdims=True), axes=(1, 2))) ** 2).sum(-1)
        f = np.fft.fftfreq(SPEC.image_size)
        angle = np.arctan2(f[:, None], f[None, :]) % np.pi
        radius = np.hypot(f[:, None], f[None, :])
        bins = (np.minimum(angle / np.pi * 16, 15).astype(int) * 4 + np.minimum(radius * 8, 3).astype(int)).ravel()
        flat = power.reshape(len(x), -1)
        return np.log1p(np.stack([flat[:, bins == b].sum(1) for b in range(64)], axis=1))
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) / 32767, axis=1)) ** 2
    return np.log1p(spectrum[:, :4000].reshape(len(x), 100, 40).sum(-1))


@pytest.mark.parametrize("modality", synth.MODALITIES)
def test_unimodal_accuracy_rises_with_quality(train_test, modality):
    train, test = train_test
    clf = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    clf.fit(_features(train, modality), train["evidence"][:, COL[modality]])
    correct = clf.predict(_features(test, modality)) == test["evidence"][:, COL[modality]]
    q = test["quality"][:, COL[modality]]
    edges = [0.0, 0.05, 0.35, 0.65, 1.01]
    acc = [correct[(q >= lo) & (q < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])]
    n_noise = int(np.sum(q < 0.05))
    chance = 1 / SPEC.num_classes
    # q ~ 0: indistinguishable from chance (two-sided binomial test, alpha = 0.001).
    assert stats.binomtest(int(correct[q < 0.05].sum()), n_noise, chance).pvalue > 1e-3, acc
    assert all(b > a + 0.05 for a, b in zip(acc, acc[1:])), acc
    assert acc[-1] > 0.85, acc
    assert acc[1] < 0.75, acc  # low quality is not trivially separable


def test_ground_truth_distribution(train_test):
    chunk = train_test[0]
    n = chunk["label"].shape[0]
    conflict_rows = np.any(chunk["evidence"] != chunk["label"][:, None], axis=1)
    # At most one conflicting modality per sample, evidence of a different class.
    assert np.all(np.sum(chunk["evidence"] != chunk["label"][:, None], axis=1) <= 1)
    assert abs(conflict_rows.mean() - SPEC.p_conflict) < 4 * np.sqrt(SPEC.p_conflict * (1 - SPEC.p_conflict) / n)
    conflicting_q = chunk["quality"][chunk["evidence"] != chunk["label"][:, None]]
    assert conflicting_q.min() >= 0.5
    clean = chunk["quality"][~conflict_rows]
    p0 = np.mean(clean == 0.0)
    assert abs(p0 - SPEC.p_noise) < 4 * np.sqrt(SPEC.p_noise * (1 - SPEC.p_noise) / clean.size)
    # Non-noise qualities follow Beta(alpha, beta): Kolmogorov-Smirnov against scipy.
    positive = clean[clean > 0]
    assert stats.kstest(positive, stats.beta(SPEC.quality_alpha, SPEC.quality_beta).cdf).pvalue > 1e-3
    np.testing.assert_array_equal(np.bincount(chunk["label"]), np.full(SPEC.num_classes, n // SPEC.num_classes))


def test_shapes_ranges_and_caption(train_test):
    chunk = train_test[0]
    n = chunk["label"].shape[0]
    assert chunk["text"].shape == (n, SPEC.text_length) and chunk["text"].dtype == np.int32
    assert chunk["vision"].shape == (n, SPEC.image_size, SPEC.image_size, 3) and chunk["vision"].dtype == np.uint8
    assert chunk["audio"].shape == (n, SPEC.audio_samples) and chunk["audio"].dtype == np.int16
    assert chunk["text"].max() < SPEC.vocab_size and chunk["text"].min() >= 0
    lengths = np.sum(chunk["text"] != 0, axis=1)
    assert lengths.min() >= SPEC.text_length // 4 and lengths.max() == SPEC.text_length
    # Padding only at the end.
    assert np.all(np.diff((chunk["text"] != 0).astype(int), axis=1) <= 0)
    # Caption decodes to the template with the sample's class and attributes.
    words = {i: w for w, i in synth.CAPTION_WORD_ID.items()}
    row = 7
    decoded = [words.get(int(t), int(t)) for t in chunk["caption"][row] if t > synth.EOS_ID]
    assert decoded == [
        "a",
        synth.SIZES[chunk["size"][row]],
        synth.COLOURS[chunk["colour"][row]],
        f"class_{chunk['label'][row]}",
        "with",
        synth.RHYTHMS[chunk["rhythm"][row]],
        "sound",
    ]
    # Audio stays within int16 without clipping much (headroom).
    assert np.mean(np.abs(chunk["audio"]) == 32767) < 1e-4


def test_generate_split_is_deterministic():
    spec = synth.SynthSpec(audio_samples=800, sample_rate=800)
    first = list(synth.generate_split(spec, num_examples=50, seed=3, split="test", chunk_size=16))
    second = list(synth.generate_split(spec, num_examples=50, seed=3, split="test", chunk_size=16))
    other = list(synth.generate_split(spec, num_examples=50, seed=4, split="test", chunk_size=16))
    for a, b in zip(first, second):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(first[0]["vision"], other[0]["vision"])
    with pytest.raises(ValueError, match="unknown split"):
        next(synth.generate_split(spec, num_examples=4, seed=0, split="valid"))


def test_spec_validation():
    with pytest.raises(ValueError, match="vocab_size"):
        synth.SynthSpec(vocab_size=64)
    with pytest.raises(ValueError, match="num_classes"):
        synth.SynthSpec(num_classes=1)


# ---- regression variant ----


def test_regression_target_is_class_plus_attributes_plus_known_noise():
    n, noise = 20_000, 0.2
    rng = np.random.default_rng(5)
    labels = synth.balanced_labels(n, SPEC.num_classes, rng)
    size, rhythm = rng.integers(0, 2, n), rng.integers(0, 2, n)
    score = synth.regression_target(SPEC, labels, size, rhythm, noise, np.random.default_rng(6))
    # Hand formula for K = 4: classes at -1.5, -0.5, 0.5, 1.5; each attribute +-0.25.
    expected = np.array([-1.5, -0.5, 0.5, 1.5])[labels] + 0.25 * (2 * size - 1) + 0.25 * (2 * rhythm - 1)
    residual = score.astype(np.float64) - expected
    # The residual is N(0, 0.2^2): Kolmogorov-Smirnov against scipy, and the known variance.
    assert stats.kstest(residual, stats.norm(0, noise).cdf).pvalue > 1e-3
    assert synth.score_variance(SPEC, noise) == pytest.approx(1.25 + 2 * 0.0625 + 0.04)
    assert np.var(score) == pytest.approx(synth.score_variance(SPEC, noise), rel=0.03)
    with pytest.raises(ValueError, match="noise std must be >= 0"):
        synth.regression_target(SPEC, labels, size, rhythm, -1.0, rng)


def test_regression_chunk_equals_classification_chunk_plus_score():
    labels = synth.balanced_labels(16, SPEC.num_classes, np.random.default_rng(0))
    plain = synth.generate(SPEC, labels, np.random.default_rng(1))
    with_score = synth.generate(SPEC, labels, np.random.default_rng(1), score_noise_std=0.0)
    assert set(with_score) == set(plain) | {"score"}
    for key, value in plain.items():
        np.testing.assert_array_equal(with_score[key], value, err_msg=key)
    # Without noise the score is exactly the class and attribute terms of this chunk.
    expected = (labels - 1.5) + 0.25 * (2 * plain["size"] - 1) + 0.25 * (2 * plain["rhythm"] - 1)
    np.testing.assert_allclose(with_score["score"], expected, rtol=1e-6)


def test_quality_matrix_orders_the_columns_as_the_model_does():
    q = {"vision": np.array([0.1, 0.2]), "audio": np.array([0.3, 0.4]), "text": np.array([0.5, 0.6])}
    matrix = synth.quality_matrix({"quality": q, "label": np.zeros(2)})
    assert matrix.dtype == np.float32 and matrix.shape == (2, 3)
    for m, column in COL.items():  # MODALITIES order, whatever the dict's order
        np.testing.assert_allclose(matrix[:, column], q[m])
    with pytest.raises(KeyError, match="no 'quality' feature"):
        synth.quality_matrix({"label": np.zeros(2)})
