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


# ----------------------------------------------------------------------------- harder corruptions (issue 13)

NEW_PER_MODALITY = [  # (name, modality, level): every transform applied per modality of the selected rows
    ("feature_dropout", "audio", 0.3),
    ("shuffle", "vision", 0.5),
    ("stuck", "audio", -0.7),
    ("blur", "vision", 1.5),
    ("occlusion", "vision", 0.3),
    ("clipping", "audio", 0.5),
    ("babble", "audio", 5.0),
    ("word_dropout", "text", 0.4),
    ("token_shuffle", "text", 0.5),
]


def _moved_ok(moved, trials, p, z=4.0):
    """Chosen ~ Binomial(trials, p); a chosen element stays put only as a fixed point of its
    sample's random permutation, ~ Poisson(1) per sample: moved ~ p * trials - B."""
    return abs(moved - (p * trials - B)) <= z * (np.sqrt(trials * p * (1 - p)) + np.sqrt(B))


def _full(batch, name, level, modality, seed=0, **kwargs):
    out = apply_corruption(batch, name, level, modalities=[modality], fraction=1.0, key=jax.random.key(seed), **kwargs)
    return np.asarray(out[modality])


@pytest.mark.parametrize("name, modality, level", NEW_PER_MODALITY)
def test_new_corruptions_touch_only_selected_rows_and_record(name, modality, level):
    batch = _batch()
    out = apply_corruption(batch, name, level, modalities=[modality], fraction=0.5, key=jax.random.key(11))
    record = out["corruption"][name]
    applied = np.asarray(record["applied"][modality])
    assert applied.sum() == B // 2
    assert not _changed_rows(batch[modality], out[modality])[~applied].any()
    assert _changed_rows(batch[modality], out[modality])[applied].all()
    np.testing.assert_allclose(record["level"][modality], np.where(applied, level, 0.0))
    for m in ("audio", "text", "vision"):
        if m != modality:
            np.testing.assert_array_equal(out[m], batch[m])
        np.testing.assert_array_equal(out["mask"][m], batch["mask"][m])
    assert np.asarray(out[modality]).dtype == batch[modality].dtype


@pytest.mark.parametrize(  # levels that set a size or a count (apply_corruption always traces level)
    "name, modality, level",
    [("blur", "vision", 1.5), ("occlusion", "vision", 0.3), ("word_dropout", "text", 0.4), ("misaligned", "vision", 1.0)],
)
def test_new_corruptions_jit_with_traced_level(name, modality, level):
    batch = _batch()
    corrupt = jax.jit(apply_corruption, static_argnames=("name", "modalities", "num_classes", "blank_token"))
    kwargs = dict(modalities=(modality,), key=jax.random.key(12))
    eager = apply_corruption(batch, name, level, fraction=0.5, **kwargs)
    jitted = corrupt(batch, name, jnp.float32(level), fraction=jnp.float32(0.5), **kwargs)
    np.testing.assert_allclose(eager[modality], jitted[modality], rtol=1e-5, atol=1e-6)


def test_feature_dropout_rate_on_a_feature_view():
    x = np.random.default_rng(2).normal(size=(B, 76)).astype(np.float32)  # a Handwritten-like view [B, D]
    batch = {"fou": x, "mask": {"fou": np.ones(B, bool)}, "label": np.zeros(B, np.int32)}
    out = _full(batch, "feature_dropout", 0.3, "fou")
    zero = out == 0
    assert _binomial_ok(zero.sum(), x.size, 0.3)
    np.testing.assert_array_equal(out[~zero], x[~zero])
    np.testing.assert_array_equal(_full(batch, "feature_dropout", 0.0, "fou"), x)
    assert np.all(_full(batch, "feature_dropout", 1.0, "fou") == 0)


@pytest.mark.parametrize("level", [0.3, 1.0])
def test_shuffle_keeps_each_samples_values(level):
    batch = _batch()
    x = batch["vision"].reshape(B, -1)
    out = _full(batch, "shuffle", level, "vision").reshape(B, -1)
    np.testing.assert_array_equal(np.sort(out, axis=1), np.sort(x, axis=1))
    moved = out != x  # values are continuous: a moved element differs
    assert _moved_ok(moved.sum(), x.size, level)


def test_misaligned_takes_another_sample_with_its_mask_and_quality():
    batch = _batch()
    batch["mask"]["vision"][::3] = False
    batch["evidence"] = {m: (np.arange(B) * 7 % 5).astype(np.int32) for m in ("audio", "text", "vision")}
    out = apply_corruption(batch, "misaligned", 0.5, modalities=["vision", "audio"], fraction=1.0,
                           key=jax.random.key(13))
    record = out["corruption"]["misaligned"]
    for m in ("vision", "audio"):
        applied = np.asarray(record["applied"][m])
        donor = np.asarray(record["donor"][m])
        assert applied.sum() == B // 2 and np.all(donor[~applied] == -1)
        for i in np.flatnonzero(applied):
            matches = [j for j in range(B) if np.array_equal(batch[m][j], np.asarray(out[m])[i])]
            assert matches == [donor[i]] and donor[i] != i
            assert out["mask"][m][i] == batch["mask"][m][donor[i]]
            assert out["quality"][m][i] == batch["quality"][m][donor[i]]
            assert out["evidence"][m][i] == batch["evidence"][m][donor[i]]
        np.testing.assert_array_equal(np.asarray(out[m])[~applied], batch[m][~applied])
        np.testing.assert_array_equal(np.asarray(out["mask"][m])[~applied], batch["mask"][m][~applied])
    np.testing.assert_array_equal(out["label"], batch["label"])
    np.testing.assert_array_equal(out["text"], batch["text"])
    # Records merge: a later call on another modality keeps the earlier donors.
    again = apply_corruption(out, "misaligned", 1.0, modalities=["text"], fraction=0.25, key=jax.random.key(14))
    np.testing.assert_array_equal(again["corruption"]["misaligned"]["donor"]["vision"], record["donor"]["vision"])
    assert np.sum(np.asarray(again["corruption"]["misaligned"]["donor"]["text"]) >= 0) == B // 4


def test_other_rows_are_distinct_uniform_and_never_self():
    from imro_jax.data.corruptions import _other_rows

    size, count, draws = 6, 4, 300
    draw = jax.jit(jax.vmap(lambda k: _other_rows(k, size, count)))
    rows = np.asarray(draw(jax.random.split(jax.random.key(15), draws))).reshape(-1, count)
    own = np.tile(np.arange(size), draws)[:, None]
    assert np.all(rows != own) and all(len(set(r)) == count for r in rows)
    offsets = (rows - own) % size  # each of 1 .. 5 with probability 4/5 per row
    assert stats.chisquare(np.bincount(offsets.ravel(), minlength=size)[1:]).pvalue > 1e-4


def test_stuck_sensor_is_constant():
    batch = _batch()
    for value in (-0.7, 0.0, 3.0):
        out = _full(batch, "stuck", value, "audio")
        np.testing.assert_array_equal(out, np.full_like(batch["audio"], value))


def _images(h=12, w=20, rng=np.random.default_rng(3)):
    return rng.uniform(0.0, 1.0, (4, h, w, 3)).astype(np.float32)


def _image_batch(x):
    n = x.shape[0]
    return {"vision": x, "mask": {"vision": np.ones(n, bool)}, "label": np.zeros(n, np.int32)}


def test_blur_matches_scipy_and_keeps_constants_and_means():
    from scipy import ndimage

    x = _images()
    std = 1.5
    out = _full(_image_batch(x), "blur", std, "vision")
    # Whole-image support and reflect padding: scipy with a radius of (n - 1) per axis.
    for b in range(x.shape[0]):
        for c in range(3):
            ref = ndimage.gaussian_filter1d(x[b, :, :, c].astype(np.float64), std, axis=0, mode="reflect",
                                            truncate=(x.shape[1] - 1) / std)
            ref = ndimage.gaussian_filter1d(ref, std, axis=1, mode="reflect", truncate=(x.shape[2] - 1) / std)
            np.testing.assert_allclose(out[b, :, :, c], ref, atol=1e-5)
    # Interior against scipy's default 4-sigma kernel (differs only by the truncated tail mass).
    ref = ndimage.gaussian_filter(x.astype(np.float64), sigma=(0, std, std, 0), mode="reflect")
    np.testing.assert_allclose(out[:, 6:-6, 6:-6], ref[:, 6:-6, 6:-6], atol=2e-4)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=1e-5)
    constant = np.full((4, 12, 20, 3), 0.37, np.float32)
    np.testing.assert_allclose(_full(_image_batch(constant), "blur", 2.5, "vision"), constant, rtol=1e-6)
    np.testing.assert_array_equal(_full(_image_batch(x), "blur", 0.0, "vision"), x)


def test_blur_of_a_periodic_grating_keeps_its_mean_and_damps_it():
    h = w = 16
    grating = 0.5 + 0.4 * np.sin(2 * np.pi * 4 * np.arange(w) / w)
    x = np.broadcast_to(grating[None, None, :, None], (2, h, w, 3)).astype(np.float32)
    out = _full(_image_batch(x), "blur", 1.0, "vision")
    np.testing.assert_allclose(out.mean(), x.mean(), atol=1e-5)
    # A period-4 sine through a std-1 Gaussian: amplitude x exp(-2 pi^2 / 16) = 0.29 (interior).
    amplitude = (out[:, :, 4:12].max() - out[:, :, 4:12].min()) / 2
    assert abs(amplitude / 0.4 - np.exp(-2 * np.pi**2 * 1.0 / 16)) < 0.03


@pytest.mark.parametrize("level, side", [(0.3, 5), (0.0, 0), (1.0, 16)])
def test_occlusion_zeroes_one_square_per_sample(level, side):
    batch = _batch()  # vision in [0.2, 0.8]: no pixel is 0 before
    out = _full(batch, "occlusion", level, "vision")
    zero = np.all(out == 0, axis=-1)
    assert np.all((out == 0) == zero[..., None])  # all channels together
    assert np.all(zero.sum(axis=(1, 2)) == side**2)
    tops = []
    for i in range(B):
        rows, cols = np.nonzero(zero[i])
        if side:
            assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side
            tops.append(rows.min())
        np.testing.assert_array_equal(out[i][~zero[i]], batch["vision"][i][~zero[i]])
    if 0 < side < 16:
        assert len(set(tops)) >= 8  # positions spread over 0 .. 16 - side


def test_clipping_at_a_fraction_of_the_peak():
    batch = _batch()
    x = batch["audio"]
    out = _full(batch, "clipping", 0.5, "audio")
    peak = np.float32(0.5) * np.abs(x).max(axis=1)
    np.testing.assert_allclose(np.abs(out).max(axis=1), peak, rtol=1e-6)
    inside = np.abs(x) <= peak[:, None]
    np.testing.assert_array_equal(out[inside], x[inside])
    np.testing.assert_allclose(np.abs(out[~inside]), np.broadcast_to(peak[:, None], x.shape)[~inside], rtol=1e-6)
    np.testing.assert_array_equal(_full(batch, "clipping", 1.0, "audio"), x)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, -5.0])
def test_babble_snr_is_exact(snr_db):
    batch = _batch()
    signal = batch["audio"].astype(np.float64)
    noise = _full(batch, "babble", snr_db, "audio").astype(np.float64) - signal
    achieved = 10 * np.log10(np.mean(signal**2, axis=1) / np.mean(noise**2, axis=1))
    np.testing.assert_allclose(achieved, snr_db, atol=0.1)


def test_babble_is_four_other_samples_rolled():
    # Sample i is a tone at FFT bin 10 + 7 i; circular shifts keep every tone on its bin, so the
    # added babble must have energy at exactly 4 bins, of 4 other samples.
    size, length = 8, 512
    t = np.arange(length)
    bins = 10 + 7 * np.arange(size)
    x = (np.sin(2 * np.pi * bins[:, None] * t / length) * np.linspace(0.5, 1.5, size)[:, None]).astype(np.float32)
    batch = {"audio": x, "mask": {"audio": np.ones(size, bool)}, "label": np.zeros(size, np.int32)}
    noise = _full(batch, "babble", 3.0, "audio").astype(np.float64) - x
    spectrum = np.abs(np.fft.rfft(noise, axis=1))
    for i in range(size):
        strong = np.flatnonzero(spectrum[i] > 1e-2 * spectrum[i].max())
        assert len(strong) == 4 and set(strong) <= set(bins) - {bins[i]}


@pytest.mark.parametrize("level", [0.4, 0.0, 1.0])
def test_word_dropout_keeps_order_and_drops_at_rate(level):
    batch = _batch()
    x = batch["text"]
    out = _full(batch, "word_dropout", level, "text")
    kept = 0
    for i in range(B):
        real, new = x[i][x[i] != 0], out[i][out[i] != 0]
        n = len(new)
        assert np.all(out[i][:n] != 0) and np.all(out[i][n:] == 0)  # padding at the end
        it = iter(real)
        assert all(any(tok == r for r in it) for tok in new)  # an in-order subsequence
        kept += n
    total = (x != 0).sum()
    if 0 < level < 1:
        assert _binomial_ok(kept, total, 1 - level)
    else:
        assert kept == (total if level == 0 else 0)


@pytest.mark.parametrize("level", [0.5, 1.0])
def test_token_shuffle_keeps_tokens_and_padding(level):
    rng = np.random.default_rng(4)
    text = np.stack([rng.permutation(np.arange(32, 288))[:32] for _ in range(B)]).astype(np.int32)  # distinct ids
    lengths = rng.integers(8, 33, B)
    text[np.arange(32)[None, :] >= lengths[:, None]] = 0
    batch = {"text": text, "mask": {"text": np.ones(B, bool)}, "label": np.zeros(B, np.int32)}
    out = _full(batch, "token_shuffle", level, "text")
    np.testing.assert_array_equal(out == 0, text == 0)
    np.testing.assert_array_equal(np.sort(out, axis=1), np.sort(text, axis=1))
    assert _moved_ok((out != text).sum(), (text != 0).sum(), level)  # ids are distinct within a sample


@pytest.mark.parametrize(
    "name, modality, level, match",
    [
        ("blur", "audio", 1.0, r"'blur' needs images \[B, H, W, C\]; 'audio' has shape \[64, 8000\]"),
        ("occlusion", "text", 0.2, r"'occlusion' needs a float modality; 'text' is int32"),
        ("babble", "vision", 0.0, r"'babble' needs waveforms \[B, S\]; 'vision' has shape"),
        ("word_dropout", "audio", 0.2, r"'word_dropout' needs int token ids \[B, T\] .*'audio' is float32"),
        ("token_shuffle", "vision", 0.2, r"'token_shuffle' needs int token ids"),
        ("feature_dropout", "text", 0.2, "token ids: use 'blank', 'word_dropout'"),
        ("clipping", "audio", 0.0, r"level of 'clipping' must be in \(0, 1.0\], got 0.0"),
        ("occlusion", "vision", 1.5, r"level of 'occlusion' must be in \[0, 1.0\]"),
        ("blur", "vision", -1.0, r"level of 'blur' must be in \[0, inf\]"),
        ("shuffle", "vision", 2.0, r"level of 'shuffle' must be in \[0, 1.0\]"),
        ("misaligned", "vision", 1.5, r"level of 'misaligned' must be in \[0, 1.0\]"),
        ("stuck", "audio", float("nan"), "level of 'stuck' must be finite"),
    ],
)
def test_new_corruptions_reject_bad_inputs(name, modality, level, match):
    with pytest.raises(ValueError, match=match):
        apply_corruption(_batch(), name, level, modalities=[modality], fraction=0.5, key=jax.random.key(0))


@pytest.mark.parametrize("name", ["misaligned", "babble"])
def test_donor_corruptions_need_two_samples(name):
    batch = {"audio": np.ones((1, 16), np.float32), "mask": {"audio": np.ones(1, bool)}, "label": np.zeros(1, np.int32)}
    with pytest.raises(ValueError, match="at least 2 samples"):
        apply_corruption(batch, name, 1.0, modalities=["audio"], fraction=1.0, key=jax.random.key(0))


@pytest.mark.parametrize("name,level,kwargs", [
    ("gaussian", 0.5, {}), ("missing", 1.0, {}), ("misaligned", 1.0, {}), ("conflict", 1.0, {"num_classes": 4}),
])
def test_another_modality_in_the_batch_changes_nothing_and_one_compilation_serves_every_subset(name, level, kwargs):
    # the jitted body is traced for every modality the corruption could touch; which ones a call lists
    # is data, so the sweeps' many modality subsets share one program per corruption
    from imro_jax.data import corruptions
    batch = _batch()
    batch["extra"] = np.random.default_rng(5).normal(size=batch["audio"].shape).astype(np.float32)
    batch["mask"] = {**batch["mask"], "extra": np.ones(len(batch["label"]), bool)}
    key = jax.random.key(11)
    names = [m for m in ("audio", "vision", "extra") if m in batch]
    before = corruptions._apply._cache_size()
    results = {pair: apply_corruption(batch, name, level, modalities=pair, fraction=0.6, key=key, **kwargs)
               for pair in [(names[0], names[1]), (names[1], names[2]), (names[2], names[0])]}
    assert corruptions._apply._cache_size() - before <= 1
    pair = (names[0], names[1])
    without = {k: v for k, v in batch.items() if k != "extra"}
    without["mask"] = {k: v for k, v in batch["mask"].items() if k != "extra"}
    reference = apply_corruption(without, name, level, modalities=pair, fraction=0.6, key=key, **kwargs)
    for m in pair:
        np.testing.assert_array_equal(results[pair][m], reference[m])
        np.testing.assert_array_equal(results[pair]["mask"][m], reference["mask"][m])
        np.testing.assert_array_equal(results[pair]["corruption"][name]["applied"][m],
                                      reference["corruption"][name]["applied"][m])
    assert results[pair]["extra"] is batch["extra"]  # an unlisted modality is the input itself
    assert set(results[pair]["corruption"][name]["applied"]) == set(pair)


def test_a_modality_listed_twice_is_an_error():
    with pytest.raises(ValueError, match="twice"):
        apply_corruption(_batch(), "gaussian", 0.5, modalities=("audio", "audio"), fraction=1.0, key=jax.random.key(0))
