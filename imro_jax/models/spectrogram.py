"""Log-mel spectrograms computed in JAX on the device (pure functions).

Conventions (equal to ``librosa.feature.melspectrogram(..., center=False, htk=True,
norm=None, power=2.0, window="hann")`` followed by ``log(S + floor)``):

* frames: ``1 + (samples - n_fft) // hop_length`` frames, no centring/padding;
* window: periodic Hann, ``w[n] = 0.5 - 0.5 cos(2 pi n / n_fft)``;
* power spectrum ``|rfft(w * frame)|^2``, ``n_fft // 2 + 1`` bins;
* mel scale: **HTK**, ``mel(f) = 2595 log10(1 + f / 700)``; ``num_mels`` triangular filters
  whose corners are equally spaced in mel between ``fmin`` and ``fmax``, each with peak 1 (no
  Slaney area normalisation);
* ``log(mel_power + LOG_FLOOR)`` in nats-scale natural log.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

LOG_FLOOR = 1e-6


def hz_to_mel(freq_hz: ArrayLike) -> np.ndarray:
    """HTK mel scale ``2595 log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(freq_hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: ArrayLike) -> np.ndarray:
    """Inverse HTK mel scale ``700 (10^(m / 2595) - 1)``."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_center_frequencies(num_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Centre frequencies (Hz) of the ``num_mels`` filters, ``[num_mels]``."""
    corners = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), num_mels + 2))
    return corners[1:-1]


def mel_filterbank(
    *, sample_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float
) -> jax.Array:
    """Triangular HTK mel filterbank, ``[n_fft // 2 + 1, num_mels]``.

    Filter ``k`` rises linearly from corner ``c_k`` to ``c_{k+1}`` and falls to ``c_{k+2}``
    (corners equally spaced in mel), evaluated at the FFT bin frequencies
    ``f_j = j * sample_rate / n_fft``; peak value 1.

    Args:
      sample_rate: Hz.
      n_fft: FFT size.
      num_mels: number of filters.
      fmin, fmax: lowest/highest corner in Hz, ``0 <= fmin < fmax <= sample_rate / 2``.

    Returns:
      float32 ``[n_fft // 2 + 1, num_mels]``.
    """
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(
            f"mel filterbank needs 0 <= fmin < fmax <= sample_rate / 2; got fmin={fmin}, "
            f"fmax={fmax}, sample_rate={sample_rate}"
        )
    bin_freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft  # [F]
    corners = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), num_mels + 2))  # [K+2]
    lower, center, upper = corners[:-2], corners[1:-1], corners[2:]  # [K] each
    rising = (bin_freqs[:, None] - lower) / (center - lower)
    falling = (upper - bin_freqs[:, None]) / (upper - center)
    return jnp.asarray(np.maximum(0.0, np.minimum(rising, falling)), dtype=jnp.float32)


def hann_window(n_fft: int) -> jax.Array:
    """Periodic Hann window ``0.5 - 0.5 cos(2 pi n / n_fft)``, ``[n_fft]``."""
    n = jnp.arange(n_fft, dtype=jnp.float32)
    return 0.5 - 0.5 * jnp.cos(2.0 * jnp.pi * n / n_fft)


def num_frames(num_samples: int, *, n_fft: int, hop_length: int) -> int:
    """Number of STFT frames without centring: ``1 + (num_samples - n_fft) // hop_length``."""
    if num_samples < n_fft:
        raise ValueError(f"waveform of {num_samples} samples is shorter than n_fft={n_fft}")
    return 1 + (num_samples - n_fft) // hop_length


def power_spectrogram(waveform: ArrayLike, *, n_fft: int, hop_length: int) -> jax.Array:
    """Short-time power spectrum ``|STFT|^2`` with a periodic Hann window.

    Args:
      waveform: ``[batch, samples]`` float.
      n_fft: frame/FFT length.
      hop_length: frame step.

    Returns:
      ``[batch, frames, n_fft // 2 + 1]`` float32.
    """
    waveform = jnp.asarray(waveform, dtype=jnp.float32)
    frames = num_frames(waveform.shape[-1], n_fft=n_fft, hop_length=hop_length)
    index = hop_length * jnp.arange(frames)[:, None] + jnp.arange(n_fft)[None, :]  # [T, n_fft]
    framed = waveform[..., index] * hann_window(n_fft)  # [B, T, n_fft]
    spectrum = jnp.fft.rfft(framed, n=n_fft, axis=-1)
    return jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2


def log_mel_spectrogram(
    waveform: ArrayLike,
    *,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    num_mels: int,
    fmin: float,
    fmax: float,
) -> jax.Array:
    """Log-mel spectrogram ``log(|STFT|^2 @ mel_filterbank + LOG_FLOOR)``.

    Args:
      waveform: ``[batch, samples]`` float.
      sample_rate, n_fft, hop_length, num_mels, fmin, fmax: see the module docstring.

    Returns:
      ``[batch, frames, num_mels]`` float32 (natural log of power).
    """
    power = power_spectrogram(waveform, n_fft=n_fft, hop_length=hop_length)
    filters = mel_filterbank(
        sample_rate=sample_rate, n_fft=n_fft, num_mels=num_mels, fmin=fmin, fmax=fmax
    )
    return jnp.log(power @ filters + LOG_FLOOR)
