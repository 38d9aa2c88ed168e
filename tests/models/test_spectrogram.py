"""Log-mel spectrogram in JAX against librosa (an independent implementation) and analytic cases."""

import numpy as np
import pytest

from imro_jax.models import spectrogram

SR, N_FFT, HOP, MELS, FMIN, FMAX = 8000, 256, 128, 32, 0.0, 4000.0


def test_mel_filterbank_matches_librosa_htk():
    librosa = pytest.importorskip("librosa")
    ours = np.asarray(spectrogram.mel_filterbank(sample_rate=SR, n_fft=N_FFT, num_mels=MELS, fmin=FMIN, fmax=FMAX))
    ref = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=MELS, fmin=FMIN, fmax=FMAX, htk=True, norm=None)
    np.testing.assert_allclose(ours, ref.T, atol=1e-5)


def test_log_mel_matches_librosa_on_noise_and_chirp():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    waves = np.stack([rng.normal(size=SR), np.sin(2 * np.pi * (200 + 1500 * t) * t)]).astype(np.float32)
    ours = np.asarray(spectrogram.log_mel_spectrogram(
        waves, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, num_mels=MELS, fmin=FMIN, fmax=FMAX))
    for wave, got in zip(waves, ours):
        power = np.abs(librosa.stft(wave.astype(np.float64), n_fft=N_FFT, hop_length=HOP, center=False, window="hann")) ** 2
        fb = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=MELS, fmin=FMIN, fmax=FMAX, htk=True, norm=None)
        ref = np.log(fb @ power + spectrogram.LOG_FLOOR).T  # [frames, mels]
        assert got.shape == ref.shape == (1 + (SR - N_FFT) // HOP, MELS)
        np.testing.assert_allclose(got, ref, atol=2e-3, rtol=1e-4)


def test_power_spectrogram_hand_computed_dft():
    # One frame, explicit DFT sum with the periodic Hann window written out by hand.
    n_fft = 8
    x = np.arange(1.0, 9.0)
    window = np.array([0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft) for n in range(n_fft)])
    dft = [sum(window[n] * x[n] * np.exp(-2j * np.pi * k * n / n_fft) for n in range(n_fft)) for k in range(5)]
    expected = np.abs(np.array(dft)) ** 2
    got = np.asarray(spectrogram.power_spectrogram(x[None].astype(np.float32), n_fft=n_fft, hop_length=4))
    assert got.shape == (1, 1, 5)
    np.testing.assert_allclose(got[0, 0], expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("freq", [440.0, 1000.0, 2500.0])
def test_pure_tone_peaks_in_nearest_mel_band(freq):
    t = np.arange(SR) / SR
    wave = np.sin(2 * np.pi * freq * t).astype(np.float32)[None]
    log_mel = np.asarray(spectrogram.log_mel_spectrogram(
        wave, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, num_mels=MELS, fmin=FMIN, fmax=FMAX))
    # Filter centres from the HTK formula written independently of the module.
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
    centres_mel = np.linspace(mel(FMIN), mel(FMAX), MELS + 2)[1:-1]
    expected_band = int(np.argmin(np.abs(centres_mel - mel(freq))))
    assert int(np.argmax(log_mel[0].mean(0))) == expected_band


def test_mel_scale_round_trip_and_bad_range():
    f = np.array([0.0, 100.0, 1000.0, 3999.0])
    np.testing.assert_allclose(spectrogram.mel_to_hz(spectrogram.hz_to_mel(f)), f, atol=1e-9)
    np.testing.assert_allclose(spectrogram.hz_to_mel(700.0), 2595.0 * np.log10(2.0))
    with pytest.raises(ValueError, match="fmax"):
        spectrogram.mel_filterbank(sample_rate=SR, n_fft=N_FFT, num_mels=8, fmin=0.0, fmax=5000.0)
    with pytest.raises(ValueError, match="shorter than n_fft"):
        spectrogram.power_spectrogram(np.zeros((1, 100), np.float32), n_fft=N_FFT, hop_length=HOP)
