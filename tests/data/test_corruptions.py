"""Corruption statistics, selection, records, determinism and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from imro_jax.data import apply_corruption
from imro_jax.data.synth import BLANK_ID

B = 64


def _batch(rng=np.random.default_rng(0), num_classes=4):
    text = rng.integers(32, 256, (B, 32)).astype(np.int32)
    text[:, 20:] = 0  # padding
    t = np.arange(8000) / 8000
    audio = np.sin(2 * np.pi * rng.uniform(200, 2000, (B, 1)) * t) * rng.uniform(0.1, 1.0, (B, 1))
    return {
        "audio": audio.astype(np.float32),
        "text": text,
        "vision": rng.uniform(0.2, 0.8, (B, 16, 16, 3)).astype(np.float32),
        "mask": {m: np.ones(B, bool) for m in ("audio", "text", "vision")},
        "label": (np.arange(B) % num_classes).astype(np.int32),
        "quality": {m: rng.uniform(0, 1, B).astype(np.float32) for m in ("audio", "text", "vision")},
    }


def _changed_rows(before, after):
    return np.any(np.asarray(before != after).reshape(B, -1), axis=1)


def _binomial_ok(successes, trials, p, z=4.0):
    return abs(successes / trials - p) <= z * np.sqrt(p * (1 - p) / trials)


def test_gaussian_std_fraction_and_record():
    batch = _batch()
    out = apply_corruption(batch, "gaussian", 0.3, modalities=["audio"], fraction=0.5, key=jax.random.key(0))
    changed = _changed_rows(batch["audio"], out["audio"])
    assert changed.sum() == B // 2
    noise = np.asarray(out["audio"])[changed] - batch["audio"][changed]
    assert abs(noise.std() / 0.3 - 1) < 0.02 and abs(noise.mean()) < 0.01
    record = out["corruption"]["gaussian"]
    np.testing.assert_array_equal(record["applied"]["audio"], changed)
    np.testing.assert_allclose(record["level"]["audio"], np.where(changed, 0.3, 0.0))
    np.testing.assert_array_equal(out["vision"], batch["vision"])  # untouched modality
    np.testing.assert_array_equal(out["mask"]["audio"], True)


def test_jit_matches_eager_and_key_determines_result():
    batch = _batch()
    corrupt = jax.jit(apply_corruption, static_argnames=("name", "modalities", "num_classes", "blank_token"))
    kwargs = dict(modalities=("audio",), key=jax.random.key(3))
    eager = apply_corruption(batch, "gaussian", 0.1, fraction=0.25, **kwargs)
    jitted = corrupt(batch, "gaussian", jnp.float32(0.1), fraction=jnp.float32(0.25), **kwargs)
    np.testing.assert_allclose(eager["audio"], jitted["audio"], rtol=1e-6, atol=1e-6)
    again = apply_corruption(batch, "gaussian", 0.1, fraction=0.25, **kwargs)
    np.testing.assert_array_equal(eager["audio"], again["audio"])
    other = apply_corruption(batch, "gaussian", 0.1, fraction=0.25, modalities=("audio",), key=jax.random.key(4))
    assert not np.array_equal(eager["audio"], other["audio"])


def test_salt_and_pepper_rate():
    batch = _batch()
    out = apply_corruption(batch, "salt_pepper", 0.3, modalities=["vision"], fraction=1.0, key=jax.random.key(1))
    out = np.asarray(out["vision"])
    pixels = B * 16 * 16
    salt, pepper = np.all(out == 1.0, axis=-1).sum(), np.all(out == 0.0, axis=-1).sum()
    assert _binomial_ok(salt, pixels, 0.15) and _binomial_ok(pepper, pixels, 0.15)
    untouched = ~np.all(out == 1.0, axis=-1) & ~np.all(out == 0.0, axis=-1)
    np.testing.assert_array_equal(out[untouched], batch["vision"][untouched])


def test_token_blanking_rate_and_padding():
    batch = _batch()
    out = apply_corruption(batch, "blank", 0.4, modalities=["text"], fraction=1.0, key=jax.random.key(2))
    out = np.asarray(out["text"])
    real = batch["text"] != 0
    blanked = out == BLANK_ID
    assert _binomial_ok(blanked[real].sum(), real.sum(), 0.4)
    assert not blanked[~real].any()
    np.testing.assert_array_equal(out[real & ~blanked], batch["text"][real & ~blanked])


def test_blanking_float_word_vectors():
    x = np.random.default_rng(1).normal(size=(B, 50, 8)).astype(np.float32)
    batch = {"text": x, "mask": {"text": np.ones(B, bool)}, "label": np.zeros(B, np.float32)}
    out = apply_corruption(batch, "blank", 0.25, modalities=["text"], fraction=1.0, key=jax.random.key(5))
    out = np.asarray(out["text"])
    zeroed = np.all(out == 0, axis=-1)
    assert _binomial_ok(zeroed.sum(), B * 50, 0.25)
    np.testing.assert_array_equal(out[~zeroed], x[~zeroed])


@pytest.mark.parametrize("snr_db", [0.0, 10.0])
def test_snr_achieved(snr_db):
    batch = _batch()
    out = apply_corruption(batch, "snr", snr_db, modalities=["audio"], fraction=1.0, key=jax.random.key(6))
    signal = batch["audio"].astype(np.float64)
    noise = np.asarray(out["audio"], np.float64) - signal
    achieved = 10 * np.log10(np.mean(signal**2, axis=1) / np.mean(noise**2, axis=1))
    # 8000 Gaussian samples: noise-power relative sd ~ sqrt(2/8000) = 1.6% ~ 0.07 dB.
    np.testing.assert_allclose(achieved, snr_db, atol=0.3)
    assert abs(achieved.mean() - snr_db) < 0.05


def test_missing_modality_exact_count_uniform_selection():
    batch = _batch()
    counts = np.zeros(B)
    for seed in range(60):
        out = apply_corruption(
            batch, "missing", 0.5, modalities=["vision", "text"], fraction=0.5, key=jax.random.key(seed)
        )
        dropped = ~np.asarray(out["mask"]["vision"])
        assert dropped.sum() == round(0.5 * 0.5 * B)
        counts += dropped
    np.testing.assert_array_equal(out["mask"]["text"], ~dropped)
    assert np.all(np.asarray(out["vision"])[dropped] == 0) and np.all(np.asarray(out["text"])[dropped] == 0)
    np.testing.assert_array_equal(np.asarray(out["vision"])[~dropped], batch["vision"][~dropped])
    np.testing.assert_array_equal(out["mask"]["audio"], True)
    # Each sample is selected with probability 1/4: chi-square goodness of fit of the counts.
    assert stats.chisquare(counts).pvalue > 1e-4


def test_conflict_replaces_one_modality_with_next_class():
    batch = _batch()
    modalities = ("audio", "text", "vision")
    out = apply_corruption(
        batch, "conflict", 1.0, modalities=modalities, fraction=0.5, key=jax.random.key(8), num_classes=4
    )
    record = out["corruption"]["conflict"]
    applied = {m: np.asarray(record["applied"][m]) for m in modalities}
    per_sample = sum(a.astype(int) for a in applied.values())
    assert per_sample.max() == 1 and per_sample.sum() == B // 2  # every class has donors here
    donor_label = np.asarray(record["donor_label"])
    hit = per_sample == 1
    np.testing.assert_array_equal(donor_label[hit], (batch["label"][hit] + 1) % 4)
    assert np.all(donor_label[~hit] == -1) and np.all(donor_label[hit] != batch["label"][hit])
    for m in modalities:
        rows = np.nonzero(applied[m])[0]
        for i in rows:
            new = np.asarray(out[m])[i]
            donors = [j for j in range(B) if np.array_equal(batch[m][j], new)]
            assert donors and all(batch["label"][j] == (batch["label"][i] + 1) % 4 for j in donors)
            np.testing.assert_allclose(out["quality"][m][i], batch["quality"][m][donors[0]])
        untouched = ~applied[m]
        np.testing.assert_array_equal(np.asarray(out[m])[untouched], batch[m][untouched])
    np.testing.assert_array_equal(out["label"], batch["label"])


def test_conflict_pool_without_donors_leaves_samples():
    batch = _batch()
    pool = {k: v for k, v in _batch(np.random.default_rng(1)).items()}
    keep = pool["label"] == 1  # donors only for label-0 samples
    pool = {
        "audio": pool["audio"][keep],
        "label": pool["label"][keep],
        "mask": {"audio": pool["mask"]["audio"][keep]},
    }
    out = apply_corruption(
        batch, "conflict", 1.0, modalities=["audio"], fraction=1.0, key=jax.random.key(9), num_classes=4, pool=pool
    )
    applied = np.asarray(out["corruption"]["conflict"]["applied"]["audio"])
    np.testing.assert_array_equal(applied, batch["label"] == 0)


def test_records_merge_across_calls():
    batch = _batch()
    first = apply_corruption(batch, "gaussian", 0.1, modalities=["audio"], fraction=1.0, key=jax.random.key(0))
    second = apply_corruption(first, "gaussian", 0.2, modalities=["vision"], fraction=0.5, key=jax.random.key(1))
    record = second["corruption"]["gaussian"]
    assert np.all(record["applied"]["audio"]) and np.asarray(record["applied"]["vision"]).sum() == B // 2
    np.testing.assert_allclose(record["level"]["audio"], 0.1)


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("gaussian", dict(modalities=["text"]), "token ids: use 'blank'"),
        ("gaussian", dict(modalities=["depth"]), "batch has"),
        ("fog", dict(modalities=["audio"]), "unknown corruption"),
        ("conflict", dict(modalities=["audio"]), "num_classes"),
        ("blank", dict(modalities=["text"], level=1.5), r"level of 'blank' must be in \[0, 1.0\]"),
        ("gaussian", dict(modalities=["audio"], fraction=2.0), r"fraction must be in \[0, 1\]"),
    ],
)
def test_bad_arguments_are_named(name, kwargs, match):
    args = dict(level=0.1, fraction=0.5, key=jax.random.key(0))
    args.update(kwargs)
    level = args.pop("level")
    with pytest.raises(ValueError, match=match):
        apply_corruption(_batch(), name, level, **args)


def test_conflict_needs_class_labels():
    batch = _batch()
    batch["label"] = batch["label"].astype(np.float32)
    with pytest.raises(ValueError, match="integer class labels"):
        apply_corruption(
            batch, "conflict", 1.0, modalities=["audio"], fraction=0.5, key=jax.random.key(0), num_classes=4
        )
