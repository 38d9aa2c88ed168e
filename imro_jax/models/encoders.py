"""Modality-specific encoders: inputs -> tokens ``[batch, tokens, dim]`` + padding mask + pooled.

Every encoder embeds its input into tokens and runs the same :class:`EncoderTrunk` (a learned
class token followed by ``depth`` shared-design Transformer blocks), so encoders differ only in
how they embed:

* :class:`TextEncoder`: token ids (0 = padding), learned positions.
* :class:`ViTEncoder`: non-overlapping square image patches, learned positions (Dosovitskiy et al.).
* :class:`SpectrogramEncoder`: AST-style (Gong et al. 2021) time-frequency patches of a
  log-mel spectrogram computed on the device from the raw waveform (or precomputed); learned
  frequency-patch positions plus sinusoidal time positions, so any clip length works.
* :class:`FeatureEncoder`: a feature vector (one token) or a feature sequence (one token per
  step, sinusoidal positions; all-zero steps are padding).

Dtypes: a floating input keeps its dtype (float32, or bfloat16 under
``train.compute_dtype="bfloat16"``), an integer one (e.g. uint8 pixels) becomes float32, and
the computation follows it and the parameters' dtype. The log-mel spectrogram is always
computed in float32 (power spectra span many decades) and only its result is cast.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from imro_jax.models import spectrogram
from imro_jax.models.layers import (
    EMBEDDING_INIT,
    annotated,
    as_floating,
    dense,
    learned_positions,
    sinusoidal_positions,
    token_embedding,
)
from imro_jax.models.spec import FeatureSpec, SpectrogramSpec, TextSpec, VitSpec
from imro_jax.models.transformer import AttentionOptions, TransformerStack


@dataclasses.dataclass(frozen=True)
class TrunkSpec:
    """Transformer sizes shared by every encoder."""

    dim: int
    num_heads: int
    mlp_dim: int
    depth: int
    dropout: float
    remat: bool = False
    attention: AttentionOptions = AttentionOptions()


class Encoded(NamedTuple):
    """An encoder's output."""

    tokens: jax.Array  # [batch, tokens, dim]
    mask: jax.Array  # bool [batch, tokens], True = real token
    pooled: jax.Array  # [batch, dim], the class-token state
    residual: jax.Array  # [batch, dim], mean residual stream of the input tokens before the final LN


class EncoderTrunk(nn.Module):
    """Prepends a learned class token and applies a :class:`TransformerStack`.

    The class token is always unmasked, so attention never sees a fully masked row even for an
    all-padding input. ``pooled`` is the final class-token state; ``residual`` the mean over the
    real input tokens of the residual stream before the final LayerNorm (0 for an all-padding
    input). Unlike the class token, which only reads LayerNorm-ed tokens, it keeps the
    magnitude of the input: it is what the reliability statistics score.
    """

    trunk: TrunkSpec

    @nn.compact
    def __call__(self, embedded: jax.Array, mask: jax.Array, *, train: bool) -> Encoded:
        """Args: embedded ``[batch, T, dim]``; mask bool ``[batch, T]``.

        Returns: :class:`Encoded` with ``1 + T`` tokens.
        """
        batch = embedded.shape[0]
        cls = self.param("cls", annotated(EMBEDDING_INIT, ("embed",)), (self.trunk.dim,))
        x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, self.trunk.dim)), embedded], axis=1)
        mask = jnp.concatenate([jnp.ones((batch, 1), bool), mask], axis=1)
        x, residual = TransformerStack(
            self.trunk.depth, self.trunk.num_heads, self.trunk.mlp_dim, self.trunk.dropout,
            remat=self.trunk.remat, attention=self.trunk.attention, name="transformer",
        )(x, mask, train=train, return_residual=True)
        real = mask[:, 1:, None].astype(residual.dtype)
        mean_residual = jnp.sum(residual[:, 1:] * real, axis=1) / jnp.maximum(jnp.sum(real, axis=1), 1.0)
        return Encoded(x, mask, x[:, 0], mean_residual)


class TextEncoder(nn.Module):
    """Token ids ``int[batch, T]`` (0 = padding, ``T <= max_len``) -> tokens."""

    spec: TextSpec
    trunk: TrunkSpec

    @nn.compact
    def __call__(self, ids: jax.Array, *, train: bool) -> Encoded:
        length = ids.shape[1]
        x = token_embedding(self.spec.vocab_size, self.trunk.dim, name="embed")(ids)
        x = x + learned_positions(self, "positions", self.spec.max_len, self.trunk.dim)[:length]
        return EncoderTrunk(self.trunk, name="trunk")(x, ids != 0, train=train)


def image_patches(images: jax.Array, patch_size: int) -> jax.Array:
    """``[batch, H, W, C] -> [batch, (H/p)(W/p), p*p*C]`` non-overlapping patches, row-major."""
    b, h, w, c = images.shape
    p = patch_size
    x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


class ViTEncoder(nn.Module):
    """Images ``float[batch, H, W, C]`` -> patch tokens with learned positions."""

    spec: VitSpec
    trunk: TrunkSpec

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> Encoded:
        patches = image_patches(as_floating(images), self.spec.patch_size)
        x = dense(self.trunk.dim, ("patch", "embed"), name="patch_embed")(patches)
        x = x + learned_positions(self, "positions", patches.shape[1], self.trunk.dim)
        return EncoderTrunk(self.trunk, name="trunk")(
            x, jnp.ones(x.shape[:2], bool), train=train
        )


def spectrogram_patches(log_mel: jax.Array, patch_frames: int, patch_mels: int) -> jax.Array:
    """``[batch, frames, mels] -> [batch, frames/pt, mels/pf, pt*pf]``.

    Trailing frames that do not fill a whole patch are dropped.
    """
    b, frames, mels = log_mel.shape
    time_patches = frames // patch_frames
    x = log_mel[:, : time_patches * patch_frames]
    x = x.reshape(b, time_patches, patch_frames, mels // patch_mels, patch_mels)
    return x.transpose(0, 1, 3, 2, 4).reshape(b, time_patches, mels // patch_mels, -1)


class SpectrogramEncoder(nn.Module):
    """Waveform ``[batch, samples]`` or log-mel ``[batch, frames, mels]`` -> patch tokens."""

    spec: SpectrogramSpec
    trunk: TrunkSpec

    def log_mel(self, audio: jax.Array) -> jax.Array:
        """The log-mel spectrogram ``[batch, frames, num_mels]`` of the input.

        Computed in float32 from the waveform and cast to the input's floating dtype.
        """
        s = self.spec
        audio = as_floating(audio)
        if s.input == "spectrogram":
            return audio
        return spectrogram.log_mel_spectrogram(
            audio, sample_rate=s.sample_rate, n_fft=s.n_fft, hop_length=s.hop_length,
            num_mels=s.num_mels, fmin=s.fmin, fmax=s.fmax,
        ).astype(audio.dtype)

    @nn.compact
    def __call__(self, audio: jax.Array, *, train: bool) -> Encoded:
        patches = spectrogram_patches(self.log_mel(audio), self.spec.patch_frames, self.spec.patch_mels)
        b, time_patches, freq_patches, _ = patches.shape
        if time_patches == 0:
            raise ValueError(
                f"spectrogram: input gives fewer than patch_frames={self.spec.patch_frames} frames"
            )
        x = dense(self.trunk.dim, ("patch", "embed"), name="patch_embed")(patches)
        x = x + learned_positions(self, "freq_positions", freq_patches, self.trunk.dim)[None, None]
        x = x + sinusoidal_positions(time_patches, self.trunk.dim, x.dtype)[None, :, None]
        x = x.reshape(b, time_patches * freq_patches, self.trunk.dim)
        return EncoderTrunk(self.trunk, name="trunk")(x, jnp.ones(x.shape[:2], bool), train=train)


def feature_step_mask(features: jax.Array) -> jax.Array:
    """Padding mask of a feature sequence ``[batch, T, D] -> bool [batch, T]``: a step is real
    unless every one of its D features is exactly 0 (the zero-padded steps of the CMU-MOSI/MOSEI
    releases, Tsai et al. 2019)."""
    return jnp.any(features != 0, axis=-1)


class FeatureEncoder(nn.Module):
    """Feature vector ``[batch, D]`` (one token) or sequence ``[batch, T, D]`` -> tokens.

    In the sequence form all-zero steps are padding (:func:`feature_step_mask`): no token attends
    to them and the fusion does not see them.
    """

    spec: FeatureSpec
    trunk: TrunkSpec

    @nn.compact
    def __call__(self, features: jax.Array, *, train: bool) -> Encoded:
        features = as_floating(features)
        is_sequence = features.ndim == 3
        if not is_sequence:
            features = features[:, None, :]
        x = dense(self.trunk.dim, ("patch", "embed"), name="project")(features)
        if is_sequence:
            x = x + sinusoidal_positions(x.shape[1], self.trunk.dim, x.dtype)[None]
        mask = feature_step_mask(features) if is_sequence else jnp.ones(x.shape[:2], bool)
        return EncoderTrunk(self.trunk, name="trunk")(x, mask, train=train)


_ENCODERS = {TextSpec: TextEncoder, VitSpec: ViTEncoder, SpectrogramSpec: SpectrogramEncoder,
             FeatureSpec: FeatureEncoder}


def make_encoder(spec, trunk: TrunkSpec) -> nn.Module:
    """The encoder module for an encoder spec (one of :data:`imro_jax.models.spec.ENCODER_SPECS`)."""
    return _ENCODERS[type(spec)](spec, trunk)
