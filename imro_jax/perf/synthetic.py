"""Synthetic batches of a model config's shapes: what a step benchmark needs, without datasets.

The batch follows the contract of `imro_jax.batch` (every modality present); its values are
random but of the right kind (token ids in range, images and waveforms N(0, 1)), so the model's
input checks pass and the step computes what it computes on real data. Nothing here imports
`imro_jax.data` (grain, TFDS).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from imro_jax.batch import CAPTION, LABEL, MASK
from imro_jax.models.spec import FeatureSpec, SpectrogramSpec, TextSpec, VitSpec, parse_model_config


def _random_input(spec: Any, batch_size: int, rng: np.random.Generator, feature_length: int | None,
                  audio_samples: int | None) -> np.ndarray:
    """One modality's input `[batch, ...]` for an encoder spec (float32 / int32 numpy)."""
    if isinstance(spec, TextSpec):  # ids in [2, vocab), every position real (worst case)
        return rng.integers(2, spec.vocab_size, size=(batch_size, spec.max_len), dtype=np.int32)
    if isinstance(spec, VitSpec):
        shape = (batch_size, spec.image_size, spec.image_size, spec.channels)
    elif isinstance(spec, SpectrogramSpec):
        waveform = (batch_size, audio_samples or spec.sample_rate)  # default: one second
        frames = (batch_size, 16 * spec.patch_frames, spec.num_mels)
        shape = waveform if spec.input == "waveform" else frames
    elif isinstance(spec, FeatureSpec):
        shape = (batch_size, spec.input_dim)
        if feature_length is not None:
            shape = (batch_size, feature_length, spec.input_dim)
    else:
        raise TypeError(f"no synthetic input for encoder spec {type(spec).__name__}")
    return rng.standard_normal(shape, dtype=np.float32)


def synthetic_batch(
    model_config: ml_collections.ConfigDict,
    batch_size: int,
    *,
    seed: int = 0,
    feature_length: int | None = None,
    audio_samples: int | None = None,
) -> dict:
    """A numpy batch dict for `model_config` with every modality present.

    Args:
        model_config: the `model` config section.
        batch_size: rows B.
        seed: numpy seed (the same seed gives the same batch).
        feature_length: `feature` encoders get sequences `[B, feature_length, input_dim]`
            (None: vectors `[B, input_dim]`, one token).
        audio_samples: waveform length of `spectrogram` encoders (default: one second,
            `sample_rate` samples); log-mel inputs are `[B, 16 patch_frames, num_mels]`.

    Returns:
        `{modality: array, "mask": {modality: bool[B]}, "label": int32[B] | float32[B]}`, or
        `"caption": int32[B, max_len]` (second half padding) for a generation head.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spec = parse_model_config(model_config)
    rng = np.random.default_rng(seed)
    batch = {name: _random_input(enc, batch_size, rng, feature_length, audio_samples)
             for name, enc in spec.modalities}
    batch[MASK] = {name: np.ones(batch_size, bool) for name in spec.modality_names}
    if spec.task == "classification":
        batch[LABEL] = rng.integers(0, spec.num_classes, size=batch_size, dtype=np.int32)
    elif spec.task == "regression":
        batch[LABEL] = rng.standard_normal(batch_size, dtype=np.float32)
    else:
        caption = rng.integers(1, spec.decoder.vocab_size, size=(batch_size, spec.decoder.max_len))
        caption[:, spec.decoder.max_len // 2:] = 0
        batch[CAPTION] = caption.astype(np.int32)
    return batch
