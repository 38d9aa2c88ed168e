"""Controlled, reproducible, recorded corruptions of batch dicts (pure JAX, jit-able).

``apply_corruption(batch, name, level, *, modalities, fraction, key)`` corrupts the listed
modalities of exactly ``round(fraction * B)`` samples chosen uniformly with ``key`` (for
``missing``, ``conflict`` and ``misaligned``, which have no intensity,
``round(fraction * level * B)``). "Per sample" below means over the sample's own elements
(every non-batch axis):

  ===============  =========================================================  =====================
  name             effect on a selected sample's modality x                   level
  ===============  =========================================================  =====================
  gaussian         x + level * N(0, 1) per element (MGP; no clipping)         noise std (x units)
  salt_pepper      each pixel [.., H, W, :] set to 1 (salt) or 0 (pepper)     pixel probability
                   with probability level/2 each (images in [0, 1])
  blank            each non-pad token -> ``blank_token`` (int tokens, QMF),   token probability
                   or each non-zero step of a float sequence -> 0
  snr              x + N(0, s^2), s^2 = mean(x^2) / 10^(level / 10)           target SNR in dB
                   (mean over the sample's elements)
  missing          x -> 0 and mask -> False                                   scales fraction
  conflict         x -> the same modality of a donor with label (y + 1) % K;  scales fraction
                   ONE modality per sample, drawn uniformly from
                   ``modalities`` (RCML); donors are drawn uniformly from
                   ``pool`` (default: the batch itself); samples with no
                   donor of class (y + 1) % K are left unchanged
  feature_dropout  each element -> 0 with probability level (any float x)     element probability
  shuffle          each element is chosen with probability level; the         element probability
                   chosen elements of the sample are permuted uniformly
                   among themselves (its multiset of values is kept;
                   level 1: all its values permuted)
  misaligned       x -> the same modality of another sample j != i of the     scales fraction
                   batch, uniform (any label: a desynchronised stream),
                   with j's mask, quality and evidence; each listed
                   modality draws its own donor
  stuck            every element -> level (a dead or stuck sensor)            the constant (any
                                                                              real)
  blur             separable Gaussian blur over H and W, ``reflect``          std in pixels
                   (half-sample symmetric) padding, images [B, H, W, C];
                   keeps a constant image and the image mean; 0 = identity
  occlusion        a square of side round(level * min(H, W)) at a uniform     side / min(H, W),
                   position per sample -> 0 (all channels), images            in [0, 1]
  clipping         clip(x, -t, t), t = level * max|x| per sample (any         in (0, 1];
                   float x, e.g. audio [B, S])                                1 = identity
  babble           x + g * b, b = sum of 4 other distinct samples of the      target SNR in dB
                   batch (fewer when B < 5), each rolled in time by its
                   own uniform shift; g such that 10 log10(P_x / P_gb) =
                   level (P = mean square per sample); audio [B, S]
  word_dropout     each non-pad token dropped with probability level; the     token probability
                   kept tokens move left in order, padding (0) at the end
                   (an all-dropped sample is all padding)
  token_shuffle    each non-pad token is chosen with probability level;       token probability
                   the chosen tokens of the sample are permuted among
                   their own positions (padding, unchosen tokens stay)
  ===============  =========================================================  =====================

The result records what was done under ``batch["corruption"][name]``:
``{"applied": {m: bool[B]}, "level": {m: float32[B]} (0 where not applied)}`` and, for conflict,
``"donor_label": int32[B]`` (-1 where not applied), for misaligned, ``"donor": {m: int32[B]}``
(the donor's row, -1 where not applied). Applying the same name again merges the record
(applied OR, latest level and donor). ``quality`` (ground truth of the clean source) is left as
is, except that conflict and misaligned copy the donor's quality and mask (misaligned also its
``evidence``) with its modality. Identity levels: 0 for every probability, std and size, 1 for
``clipping``; ``stuck`` at 0 and ``snr`` / ``babble`` at 0 dB do change x although the record's
level is 0 (an oracle that masks ``level != 0`` misses them).

Randomness comes only from ``key`` (a JAX PRNG key): the same key gives the same corruption.
``level`` and ``fraction`` may be traced; ``name``, ``modalities``, ``num_classes`` and
``blank_token`` must be static under ``jax.jit``.

References:
  MGP (Jung et al., NeurIPS 2022), QMF (Zhang et al., ICML 2023), RCML (Xu et al., AAAI 2024);
  protocols in ``docs/protocols.md`` sections 2-3.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from imro_jax import batch as batch_lib
from imro_jax.data.synth import BLANK_ID

CORRUPTIONS = (
    "gaussian", "salt_pepper", "blank", "snr", "missing", "conflict",
    "feature_dropout", "shuffle", "misaligned", "stuck", "blur", "occlusion", "clipping", "babble",
    "word_dropout", "token_shuffle",
)
_COUNT_SCALED_BY_LEVEL = ("missing", "conflict", "misaligned")
_ANY_REAL = None
# name -> (low, high, low_inclusive) for Python-number levels, or _ANY_REAL (any finite value).
# The level at which a corruption leaves its input unchanged (the sweep's oracle does not mask
# it); None: every level changes the input (a stuck sensor at 0, noise at 0 dB SNR).
IDENTITY_LEVELS = {"clipping": 1.0, "snr": None, "babble": None, "stuck": None}


def identity_level(name: str) -> float | None:
    """The level of ``name`` that is the identity (0 unless listed in ``IDENTITY_LEVELS``)."""
    return IDENTITY_LEVELS.get(name, 0.0)


_LEVEL_RANGES = {
    "gaussian": (0.0, float("inf"), True), "salt_pepper": (0.0, 1.0, True), "blank": (0.0, 1.0, True),
    "snr": _ANY_REAL, "missing": (0.0, 1.0, True), "conflict": (0.0, 1.0, True),
    "feature_dropout": (0.0, 1.0, True), "shuffle": (0.0, 1.0, True), "misaligned": (0.0, 1.0, True),
    "stuck": _ANY_REAL, "blur": (0.0, float("inf"), True), "occlusion": (0.0, 1.0, True),
    "clipping": (0.0, 1.0, False), "babble": _ANY_REAL, "word_dropout": (0.0, 1.0, True),
    "token_shuffle": (0.0, 1.0, True),
}
_IMAGES, _WAVEFORMS, _TOKENS = "images [B, H, W, C]", "waveforms [B, S]", "int token ids [B, T] (0 = padding)"
_REQUIRED_RANK = {  # name -> (ndim, what): shape checks naming the modality
    "salt_pepper": (4, _IMAGES), "blur": (4, _IMAGES), "occlusion": (4, _IMAGES), "babble": (2, _WAVEFORMS),
    "word_dropout": (2, _TOKENS), "token_shuffle": (2, _TOKENS),
}
_ON_TOKENS = ("word_dropout", "token_shuffle")
_ANY_DTYPE = ("missing", "conflict", "misaligned", "blank")  # blank checks its own input
BABBLE_VOICES = 4


def select_samples(key: jax.Array, batch_size: int, fraction: ArrayLike) -> jax.Array:
    """Exactly ``round(fraction * batch_size)`` True entries at uniformly random positions. bool[B]."""
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(key, (batch_size,))))
    return rank < jnp.round(jnp.asarray(fraction, jnp.float32) * batch_size)


def _require_float(x: jax.Array, modality: str, name: str) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"corruption {name!r} needs a float modality; {modality!r} is {x.dtype}"
            + (" (token ids: use 'blank', 'word_dropout' or 'token_shuffle')"
               if jnp.issubdtype(x.dtype, jnp.integer) else "")
        )


def _require_modality(x: jax.Array, modality: str, name: str) -> None:
    """Dtype (float, or int tokens) and rank checks of corruption ``name`` on ``modality``."""
    if name in _ANY_DTYPE:
        return
    if name in _ON_TOKENS:
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(f"corruption {name!r} needs {_TOKENS}; {modality!r} is {x.dtype}{list(x.shape)}")
    else:
        _require_float(x, modality, name)
    if name in _REQUIRED_RANK and x.ndim != _REQUIRED_RANK[name][0]:
        raise ValueError(f"corruption {name!r} needs {_REQUIRED_RANK[name][1]}; {modality!r} has shape {list(x.shape)}")


def gaussian_noise(key: jax.Array, x: jax.Array, std: ArrayLike) -> jax.Array:
    """``x + std * N(0, 1)``. Args: x float[B, ...]. Returns the same shape and dtype."""
    return x + jnp.asarray(std, x.dtype) * jax.random.normal(key, x.shape, x.dtype)


def salt_and_pepper(key: jax.Array, x: jax.Array, prob: ArrayLike) -> jax.Array:
    """Sets each pixel to 1 (prob/2) or 0 (prob/2), all channels together. x float[B, H, W, C] in [0, 1]."""
    if x.ndim != 4:
        raise ValueError(f"salt_pepper expects images [B, H, W, C], got shape {x.shape}")
    u = jax.random.uniform(key, (*x.shape[:-1], 1))
    prob = jnp.asarray(prob, u.dtype)
    return jnp.where(u < prob / 2, 1.0, jnp.where(u < prob, 0.0, x)).astype(x.dtype)


def _require_blankable(x) -> None:
    """blank's input check: int tokens [B, T] or float steps [B, T, D]."""
    if not jnp.issubdtype(x.dtype, jnp.integer) and jnp.ndim(x) != 3:
        raise ValueError(f"blank expects int tokens [B, T] or float steps [B, T, D], got {x.dtype}{tuple(x.shape)}")


def blank_tokens(key: jax.Array, x: jax.Array, prob: ArrayLike, blank_token: int) -> jax.Array:
    """Blanks each non-padding token with probability ``prob``.

    Args:
      key: PRNG key.
      x: int[B, T] token ids (0 = padding) or float[B, T, D] step features (all-zero = padding).
      prob: blanking probability.
      blank_token: replacement id for int tokens (float steps become 0).

    Returns:
      The same shape and dtype.
    """
    u = jax.random.uniform(key, x.shape[:2])
    _require_blankable(x)
    if jnp.issubdtype(x.dtype, jnp.integer):
        return jnp.where((x != 0) & (u < prob), jnp.asarray(blank_token, x.dtype), x)
    return jnp.where((u < prob)[..., None], jnp.zeros((), x.dtype), x)


def noise_at_snr(key: jax.Array, x: jax.Array, snr_db: ArrayLike) -> jax.Array:
    """Adds white Gaussian noise at a target signal-to-noise ratio per sample.

    ``s^2 = P / 10^(snr_db / 10)`` with ``P = mean(x^2)`` over each sample's elements, so that
    ``10 log10(P / s^2) = snr_db``.

    Args:
      key: PRNG key.
      x: float[B, ...] (e.g. audio [B, S]).
      snr_db: target SNR in dB.

    Returns:
      The same shape and dtype.
    """
    axes = tuple(range(1, x.ndim))
    power = jnp.mean(jnp.square(x), axis=axes, keepdims=True)
    std = jnp.sqrt(power / 10.0 ** (jnp.asarray(snr_db, x.dtype) / 10.0))
    return x + std * jax.random.normal(key, x.shape, x.dtype)


def feature_dropout(key: jax.Array, x: jax.Array, prob: ArrayLike) -> jax.Array:
    """Sets each element to 0 with probability ``prob`` (independently).

    Args:
      key: PRNG key.
      x: float[B, ...] (e.g. Handwritten views [B, D], images, audio).
      prob: drop probability in [0, 1].

    Returns:
      The same shape and dtype.
    """
    u = jax.random.uniform(key, x.shape)
    return jnp.where(u < prob, jnp.zeros((), x.dtype), x)


def _permute_chosen(key: jax.Array, x: jax.Array, chosen: jax.Array) -> jax.Array:
    """Permutes the chosen entries of each row uniformly among the chosen positions.

    Args:
      key: PRNG key.
      x: [B, N] any dtype.
      chosen: bool[B, N].

    Returns:
      [B, N]: unchosen entries in place; the chosen ones of each row a uniform random permutation
      of themselves (a chosen entry may stay where it was).
    """
    n = x.shape[1]
    position = jnp.arange(n)
    # Both orders list the chosen positions first and then the unchosen ones in index order, so
    # matching them rank by rank is the identity on unchosen positions.
    in_order = jnp.argsort(jnp.where(chosen, position, n + position), axis=1)
    at_random = jnp.argsort(jnp.where(chosen, jax.random.uniform(key, x.shape), 2.0 + position), axis=1)
    rows = jnp.arange(x.shape[0])[:, None]
    source = jnp.zeros_like(in_order).at[rows, in_order].set(at_random)
    return jnp.take_along_axis(x, source, axis=1)


def shuffle_features(key: jax.Array, x: jax.Array, prob: ArrayLike) -> jax.Array:
    """Shuffles elements within each sample: each element is chosen with probability ``prob``
    and the chosen elements of a sample are permuted uniformly among themselves.

    The sample's multiset of values is kept at every ``prob``; at ``prob = 1`` its values (over
    the flattened non-batch axes) are a uniform random permutation of the original.

    Args:
      key: PRNG key.
      x: float[B, ...].
      prob: choice probability in [0, 1].

    Returns:
      The same shape and dtype.
    """
    key_choose, key_permute = jax.random.split(key)
    flat = x.reshape(x.shape[0], -1)
    chosen = jax.random.uniform(key_choose, flat.shape) < prob
    return _permute_chosen(key_permute, flat, chosen).reshape(x.shape)


def stuck_sensor(key: jax.Array, x: jax.Array, value: ArrayLike) -> jax.Array:
    """A dead or stuck sensor: every element set to ``value`` (``key`` is unused).

    Args:
      key: unused (uniform signature with the other transforms).
      x: float[B, ...].
      value: the constant reading (any real).

    Returns:
      The same shape and dtype.
    """
    del key
    return jnp.full_like(x, value)


def _blur_matrix(n: int, std: jax.Array) -> jax.Array:
    """[n, n] float32 matrix of a 1-D Gaussian blur (std in samples, every offset |k| < n kept,
    weights normalised) with half-sample symmetric ("reflect") padding folded in.

    Rows sum to 1 (a constant is kept); the matrix is symmetric, so columns also sum to 1 (the
    mean is kept). ``std = 0`` gives the identity exactly.
    """
    offset = jnp.arange(-(n - 1), n)
    w = jnp.exp(-0.5 * jnp.square(offset / jnp.maximum(std, 1e-6)))
    w = w / jnp.sum(w)
    source = jnp.arange(n)[:, None] + offset[None, :]  # [n, 2n - 1]
    source = jnp.where(source < 0, -1 - source, jnp.where(source >= n, 2 * n - 1 - source, source))
    rows = jnp.broadcast_to(jnp.arange(n)[:, None], source.shape)
    return jnp.zeros((n, n), jnp.float32).at[rows, source].add(jnp.broadcast_to(w, source.shape))


def gaussian_blur(key: jax.Array, x: jax.Array, std: ArrayLike) -> jax.Array:
    """Separable Gaussian blur of images over H and W (``key`` is unused).

    ``y = A_H x A_W^T`` per image and channel, where ``A_n[i, j]`` sums the weights
    ``exp(-k^2 / (2 std^2))`` (normalised over ``|k| < n``) of every offset ``k`` whose
    reflected position ``i + k`` is ``j`` (``scipy.ndimage`` ``mode="reflect"``, i.e. ``d c b a |
    a b c d | d c b a``). ``std`` may be traced: the support is the whole image, so the kernel
    size does not depend on it. ``std = 0`` is the identity; a constant image and each image's
    mean are kept (to float rounding).

    Args:
      key: unused.
      x: float[B, H, W, C].
      std: blur std in pixels, >= 0.

    Returns:
      The same shape and dtype.
    """
    del key
    if x.ndim != 4:
        raise ValueError(f"blur expects images [B, H, W, C], got shape {x.shape}")
    std = jnp.asarray(std, jnp.float32)
    along_h, along_w = _blur_matrix(x.shape[1], std), _blur_matrix(x.shape[2], std)
    highest = jax.lax.Precision.HIGHEST  # no bf16 passes on accelerators: keeps std = 0 exact
    y = jnp.einsum("hi,biwc->bhwc", along_h, x.astype(jnp.float32), precision=highest)
    y = jnp.einsum("wj,bhjc->bhwc", along_w, y, precision=highest)
    return y.astype(x.dtype)


def occlusion(key: jax.Array, x: jax.Array, size: ArrayLike) -> jax.Array:
    """Sets a square of side ``round(size * min(H, W))`` pixels (all channels) to 0, at a
    uniformly random position per sample, entirely inside the image.

    Args:
      key: PRNG key.
      x: float[B, H, W, C].
      size: side as a fraction of ``min(H, W)``, in [0, 1].

    Returns:
      The same shape and dtype.
    """
    if x.ndim != 4:
        raise ValueError(f"occlusion expects images [B, H, W, C], got shape {x.shape}")
    b, h, w = x.shape[:3]
    side = jnp.clip(jnp.round(jnp.asarray(size, jnp.float32) * min(h, w)), 0, min(h, w)).astype(jnp.int32)
    key_top, key_left = jax.random.split(key)

    def inside(k, n):  # bool[B, n]: rows (or columns) covered by the square
        start = jnp.minimum(jnp.floor(jax.random.uniform(k, (b,)) * (n - side + 1)).astype(jnp.int32), n - side)
        index = jnp.arange(n)[None, :]
        return (index >= start[:, None]) & (index < (start + side)[:, None])

    box = inside(key_top, h)[:, :, None] & inside(key_left, w)[:, None, :]
    return jnp.where(box[..., None], jnp.zeros((), x.dtype), x)


def hard_clip(key: jax.Array, x: jax.Array, ratio: ArrayLike) -> jax.Array:
    """Hard clipping at ``t = ratio * max|x|`` per sample: ``clip(x, -t, t)`` (``key`` unused).

    Args:
      key: unused.
      x: float[B, ...] (e.g. audio [B, S]).
      ratio: in (0, 1]; 1 is the identity.

    Returns:
      The same shape and dtype.
    """
    del key
    axes = tuple(range(1, x.ndim))
    t = jnp.asarray(ratio, x.dtype) * jnp.max(jnp.abs(x), axis=axes, keepdims=True)
    return jnp.clip(x, -t, t)


def _other_rows(key: jax.Array, batch_size: int, count: int) -> jax.Array:
    """int32[B, count]: per row, ``count`` distinct other rows (never the row itself), uniform.

    Draws rank ``r_k ~ U{0, ..., B - 2 - k}`` among the offsets not taken yet and maps it to the
    offset in ``1 .. B - 1`` by stepping over the earlier picks in increasing order (O(B count^2)).
    """
    picks = []
    for k, key_k in enumerate(jax.random.split(key, count)):
        rank = jax.random.randint(key_k, (batch_size,), 0, batch_size - 1 - k)
        if picks:
            for earlier in jnp.unstack(jnp.sort(jnp.stack(picks, axis=1), axis=1), axis=1):
                rank = rank + (rank >= earlier)
        picks.append(rank)
    offsets = jnp.stack(picks, axis=1) + 1
    return ((jnp.arange(batch_size)[:, None] + offsets) % batch_size).astype(jnp.int32)


def babble(key: jax.Array, x: jax.Array, snr_db: ArrayLike, voices: int = BABBLE_VOICES) -> jax.Array:
    """Adds babble: the sum of ``voices`` other samples of the batch at a target SNR per sample.

    ``b_i = sum_k roll(x_{j_k}, s_k)`` over ``min(voices, B - 1)`` distinct other rows ``j_k != i``
    and independent circular shifts ``s_k ~ U{0, ..., S - 1}``; ``y_i = x_i + g_i b_i`` with
    ``g_i^2 = P(x_i) / (P(b_i) 10^(snr_db / 10))`` and ``P = mean square``, so that
    ``10 log10(P(x_i) / P(g_i b_i)) = snr_db`` (a silent ``b_i`` adds nothing).

    Args:
      key: PRNG key.
      x: float[B, S] waveforms, B >= 2.
      snr_db: target SNR in dB.
      voices: K, the number of other samples summed.

    Returns:
      The same shape and dtype.
    """
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"babble expects waveforms [B, S] with B >= 2, got shape {x.shape}")
    b, s = x.shape
    voices = min(voices, b - 1)
    key_rows, key_shift = jax.random.split(key)
    donors = _other_rows(key_rows, b, voices)
    shifts = jax.random.randint(key_shift, (b, voices), 0, s)
    time = jnp.arange(s)[None, :]
    chatter = sum(
        jnp.take_along_axis(x[donors[:, k]], (time + shifts[:, k : k + 1]) % s, axis=1) for k in range(voices)
    )
    power = jnp.mean(jnp.square(x), axis=1, keepdims=True)
    chatter_power = jnp.mean(jnp.square(chatter), axis=1, keepdims=True)
    ratio = 10.0 ** (jnp.asarray(snr_db, x.dtype) / 10.0)
    gain = jnp.where(chatter_power > 0, jnp.sqrt(power / (ratio * jnp.where(chatter_power > 0, chatter_power, 1))), 0)
    return x + gain * chatter


def word_dropout(key: jax.Array, x: jax.Array, prob: ArrayLike) -> jax.Array:
    """Drops each non-padding token with probability ``prob``; the kept ones move left in order.

    Args:
      key: PRNG key.
      x: int[B, T] token ids, 0 = padding (anywhere; it is removed too).
      prob: drop probability in [0, 1].

    Returns:
      int[B, T]: per sample the kept tokens in their original order, then padding. A sample
      whose tokens were all dropped is all padding.
    """
    if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(f"word_dropout expects {_TOKENS}, got {x.dtype}{list(x.shape)}")
    t = x.shape[1]
    position = jnp.arange(t)
    keep = (x != 0) & (jax.random.uniform(key, x.shape) >= prob)
    moved = jnp.take_along_axis(x, jnp.argsort(jnp.where(keep, position, t + position), axis=1), axis=1)
    return jnp.where(position[None, :] < jnp.sum(keep, axis=1, keepdims=True), moved, jnp.zeros((), x.dtype))


def shuffle_tokens(key: jax.Array, x: jax.Array, prob: ArrayLike) -> jax.Array:
    """Per-token shuffling: each non-padding token is chosen with probability ``prob`` and the
    chosen tokens of a sample are permuted uniformly among their own positions.

    Padding positions and unchosen tokens stay in place; the sample's multiset of tokens is
    kept. At ``prob = 1`` all of a sample's tokens are permuted among the non-padding positions.

    Args:
      key: PRNG key.
      x: int[B, T] token ids, 0 = padding.
      prob: choice probability in [0, 1].

    Returns:
      The same shape and dtype.
    """
    if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(f"token_shuffle expects {_TOKENS}, got {x.dtype}{list(x.shape)}")
    key_choose, key_permute = jax.random.split(key)
    chosen = (x != 0) & (jax.random.uniform(key_choose, x.shape) < prob)
    return _permute_chosen(key_permute, x, chosen)


_TRANSFORMS = {
    "gaussian": gaussian_noise, "salt_pepper": salt_and_pepper, "snr": noise_at_snr,
    "feature_dropout": feature_dropout, "shuffle": shuffle_features, "stuck": stuck_sensor,
    "blur": gaussian_blur, "occlusion": occlusion, "clipping": hard_clip, "babble": babble,
    "word_dropout": word_dropout, "token_shuffle": shuffle_tokens,
}


def _rows(selected: jax.Array, x: jax.Array) -> jax.Array:
    """Broadcasts bool[B] against x[B, ...]."""
    return selected.reshape((-1,) + (1,) * (x.ndim - 1))


def _conflict_donors(key, labels, pool_labels, num_classes):
    """Uniform donor in the pool with label (y + 1) % K. Returns (donor int32[B], has_donor bool[B])."""
    match = pool_labels[None, :] == ((labels + 1) % num_classes)[:, None]
    scores = jnp.where(match, jax.random.gumbel(key, match.shape), -jnp.inf)
    return jnp.argmax(scores, axis=1), jnp.any(match, axis=1)


def _check_arguments(batch, name, modalities, num_classes, pool):
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {CORRUPTIONS}")
    available = batch_lib.modality_names(batch)
    unknown = [m for m in modalities if m not in available]
    if not modalities or unknown:
        raise ValueError(f"modalities {list(modalities)} invalid for {name!r}; batch has {available}")
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities {list(modalities)} list a modality twice for {name!r}")
    if name == "conflict":
        if num_classes is None or num_classes < 2:
            raise ValueError(f"conflict needs num_classes >= 2, got {num_classes}")
        if not jnp.issubdtype(jnp.asarray(batch[batch_lib.LABEL]).dtype, jnp.integer):
            raise ValueError("conflict needs integer class labels; this batch has float (regression) labels")
        if pool is not None:
            missing = [k for k in (*modalities, batch_lib.LABEL, batch_lib.MASK) if k not in pool]
            if missing:
                raise ValueError(f"conflict pool lacks {missing}")


def _check_concrete(name: str, level, fraction) -> None:
    """Range checks of Python-number arguments (traced values cannot be checked)."""
    if isinstance(fraction, (int, float)) and not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if not isinstance(level, (int, float)):
        return
    if not math.isfinite(level):
        raise ValueError(f"level of {name!r} must be finite, got {level}")
    bounds = _LEVEL_RANGES[name]
    if bounds is _ANY_REAL:  # SNR in dB, a stuck value: any real
        return
    low, high, low_inclusive = bounds
    if not ((low <= level) if low_inclusive else (low < level)) or not level <= high:
        interval = f"{'[' if low_inclusive else '('}{low:g}, {high}]"
        raise ValueError(f"level of {name!r} must be in {interval}, got {level}")


def _merge_record(old: dict | None, new: dict) -> dict:
    if old is None:
        return new
    merged = {"applied": dict(old["applied"]), "level": dict(old["level"])}
    for m, applied in new["applied"].items():
        prev = merged["applied"].get(m, jnp.zeros_like(applied))
        merged["applied"][m] = prev | applied
        merged["level"][m] = jnp.where(applied, new["level"][m], merged["level"].get(m, 0.0))
    if "donor_label" in new:
        previous = old.get("donor_label", jnp.full_like(new["donor_label"], -1))
        merged["donor_label"] = jnp.where(new["donor_label"] >= 0, new["donor_label"], previous)
    if "donor" in new:
        merged["donor"] = dict(old.get("donor", {}))
        for m, donor in new["donor"].items():
            previous = merged["donor"].get(m, jnp.full_like(donor, -1))
            merged["donor"][m] = jnp.where(donor >= 0, donor, previous)
    return merged


def apply_corruption(
    batch: dict,
    name: str,
    level: ArrayLike,
    *,
    modalities: Sequence[str],
    fraction: ArrayLike,
    key: jax.Array,
    num_classes: int | None = None,
    pool: dict | None = None,
    blank_token: int = BLANK_ID,
) -> dict:
    """Applies corruption ``name`` at ``level`` to ``modalities`` of a fraction of the samples.

    See the module docstring for each corruption and the record it leaves.

    Args:
      batch: batch dict (``imro_jax.batch``): modality arrays [B, ...], ``mask``, ``label``.
      name: one of ``CORRUPTIONS``.
      level: intensity (std, probability, SNR in dB, ...; see the module docstring) or, for
        missing, conflict and misaligned, a factor in [0, 1] on ``fraction``.
      modalities: modality names to corrupt (conflict: the candidates, one drawn per sample).
      fraction: fraction of samples to corrupt, in [0, 1].
      key: JAX PRNG key.
      num_classes: K, required for conflict.
      pool: conflict donors, a batch dict with the same modalities, ``label`` and ``mask``
        (default: ``batch``).
      blank_token: id written by ``blank`` into int token sequences (imro_synth: 1).

    Returns:
      A new batch dict (jax arrays for the touched entries) with ``corruption`` recorded.
    """
    modalities = tuple(modalities)
    _check_arguments(batch, name, modalities, num_classes, pool)
    _check_concrete(name, level, fraction)
    for m in modalities:
        _check_modality(batch, m, name)
    candidates = _candidates(batch, name, pool)
    slots = jnp.asarray([modalities.index(m) if m in modalities else -1 for m in candidates], jnp.int32)
    as_f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731  one compilation for floats and arrays
    inputs = {k: v for k, v in batch.items() if k != batch_lib.CORRUPTION}
    pool_inputs = None if pool is None else {k: v for k, v in pool.items() if k != batch_lib.CORRUPTION}
    out, record = _apply(inputs, as_f32(level), as_f32(fraction), key, pool_inputs, slots, name=name,
                         candidates=candidates, num_listed=len(modalities), num_classes=num_classes,
                         blank_token=blank_token)
    return _keep_listed(batch, out, record, name, modalities)


def _check_modality(batch: dict, modality: str, name: str) -> None:
    """The dtype, rank and batch-size checks of corruption ``name`` on ``modality`` (eager)."""
    x = batch[modality]
    if name == "blank":
        _require_blankable(x)
        return
    _require_modality(x, modality, name)
    if name == "babble" and x.shape[0] < 2:
        raise ValueError(f"babble on {modality!r} needs a batch of at least 2 samples, got {x.shape[0]}")


def _candidates(batch: dict, name: str, pool: dict | None) -> tuple[str, ...]:
    """Every modality of ``batch`` that corruption ``name`` could be applied to: the static set the
    jitted body is traced for, whichever of them a call lists (so a sweep over modality subsets
    compiles once per corruption, not once per subset)."""
    out = []
    for m in batch_lib.modality_names(batch):
        if name == "conflict" and pool is not None and m not in pool:
            continue
        try:
            _check_modality(batch, m, name)
        except ValueError:
            continue
        out.append(m)
    return tuple(out)


def _keep_listed(batch: dict, out: dict, record: dict, name: str, modalities: tuple[str, ...]) -> dict:
    """The corrupted batch: the listed modalities (and their mask, quality and evidence entries)
    from ``out``, every other entry as in ``batch``; the record of ``name`` merged into the
    batch's earlier records of it."""
    result = dict(batch)
    for m in modalities:
        result[m] = out[m]
    for entry in (batch_lib.MASK, batch_lib.QUALITY, batch_lib.EVIDENCE):
        if entry in batch:
            result[entry] = {**batch[entry], **{m: out[entry][m] for m in modalities if m in batch[entry]}}
    listed = {"applied": {m: record["applied"][m] for m in modalities},
              "level": {m: record["level"][m] for m in modalities}}
    if "donor" in record:
        listed["donor"] = {m: record["donor"][m] for m in modalities}
    if "donor_label" in record:
        listed["donor_label"] = record["donor_label"]
    records = dict(batch.get(batch_lib.CORRUPTION, {}))
    records[name] = _merge_record(records.get(name), listed)
    result[batch_lib.CORRUPTION] = records
    return result


@functools.partial(jax.jit, static_argnames=("name", "candidates", "num_listed", "num_classes", "blank_token"))
def _apply(batch, level, fraction, key, pool, slots, *, name, candidates, num_listed, num_classes, blank_token):
    """Jitted body of ``apply_corruption``: one compilation per corruption, candidate modalities,
    number of listed modalities and shapes. ``slots[i]`` is candidate i's position among the
    listed modalities (its key and, for conflict, its index among the choices) or -1 (untouched).
    Returns the batch with every candidate's entries and the record of every candidate."""
    size = jnp.shape(batch[batch_lib.LABEL])[0]
    key_select, key_apply = jax.random.split(key)
    count_fraction = fraction * level if name in _COUNT_SCALED_BY_LEVEL else fraction
    selected = select_samples(key_select, size, count_fraction)
    slot = dict(zip(candidates, slots))
    if name == "conflict":
        return _conflict(batch, selected, level, key_apply, batch if pool is None else pool, slot=slot,
                         num_listed=num_listed, num_classes=num_classes)
    if name == "misaligned":
        return _misaligned(batch, selected, level, key_apply, slot=slot, num_listed=num_listed)
    return _per_modality(batch, selected, level, key_apply, name=name, slot=slot, num_listed=num_listed,
                         blank_token=blank_token)


def _listed_key(keys: jax.Array, slot: jax.Array) -> jax.Array:
    """The key of the listed modality at position ``slot`` (any key for an unlisted one, -1)."""
    return keys[jnp.maximum(slot, 0)]


def _per_modality(batch, selected, level, key, *, name, slot, num_listed, blank_token):
    """Every listed modality of the selected samples gets the named transform (the i-th listed
    modality draws with the i-th of ``num_listed`` keys)."""
    out = dict(batch)
    out[batch_lib.MASK] = dict(batch[batch_lib.MASK])
    record = {"applied": {}, "level": {}}
    keys = jax.random.split(key, num_listed)
    for m, position in slot.items():
        k, applied = _listed_key(keys, position), selected & (position >= 0)
        x = jnp.asarray(batch[m])
        if name == "missing":
            corrupted = jnp.zeros_like(x)
            out[batch_lib.MASK][m] = jnp.asarray(batch[batch_lib.MASK][m]) & ~applied
        elif name == "blank":
            corrupted = blank_tokens(k, x, level, blank_token)
        else:
            corrupted = _TRANSFORMS[name](k, x, level)
        out[m] = jnp.where(_rows(applied, x), corrupted, x)
        record["applied"][m] = applied
        record["level"][m] = jnp.where(applied, level, 0.0)
    return out, record


def _conflict(batch, selected, level, key, pool, *, slot, num_listed, num_classes):
    """One modality per selected sample (uniform among the ``num_listed`` listed ones) taken from a donor of class
    (y + 1) % K in ``pool``, with the donor's mask and, when both have it, quality."""
    out = dict(batch)
    out[batch_lib.MASK] = dict(batch[batch_lib.MASK])
    has_quality = batch_lib.QUALITY in batch and batch_lib.QUALITY in pool
    if has_quality:
        out[batch_lib.QUALITY] = dict(batch[batch_lib.QUALITY])
    labels, pool_labels = jnp.asarray(batch[batch_lib.LABEL]), jnp.asarray(pool[batch_lib.LABEL])
    key_donor, key_modality = jax.random.split(key)
    donor, has_donor = _conflict_donors(key_donor, labels, pool_labels, num_classes)
    chosen = jax.random.randint(key_modality, labels.shape, 0, num_listed)
    applied_any = selected & has_donor
    record = {"applied": {}, "level": {}}
    for m, position in slot.items():
        applied = applied_any & (chosen == position)
        x = jnp.asarray(batch[m])
        out[m] = jnp.where(_rows(applied, x), jnp.asarray(pool[m])[donor], x)
        out[batch_lib.MASK][m] = jnp.where(
            applied, jnp.asarray(pool[batch_lib.MASK][m])[donor], jnp.asarray(batch[batch_lib.MASK][m])
        )
        if has_quality and m in pool[batch_lib.QUALITY]:
            donor_quality = jnp.asarray(pool[batch_lib.QUALITY][m])[donor]
            out[batch_lib.QUALITY][m] = jnp.where(applied, donor_quality, jnp.asarray(batch[batch_lib.QUALITY][m]))
        record["applied"][m] = applied
        record["level"][m] = jnp.where(applied, level, 0.0)
    record["donor_label"] = jnp.where(applied_any, pool_labels[donor], -1).astype(jnp.int32)
    return out, record


def _misaligned(batch, selected, level, key, *, slot, num_listed):
    """Each listed modality of the selected samples taken from its own uniformly drawn other
    sample of the batch (any label), with that sample's mask and, when present, quality and
    evidence."""
    size = jnp.shape(batch[batch_lib.LABEL])[0]
    if size < 2:
        raise ValueError(f"misaligned needs a batch of at least 2 samples (a donor other than the sample), got {size}")
    out = dict(batch)
    extras = [k for k in (batch_lib.QUALITY, batch_lib.EVIDENCE) if k in batch]
    for k in (batch_lib.MASK, *extras):
        out[k] = dict(batch[k])
    record = {"applied": {}, "level": {}, "donor": {}}
    keys = jax.random.split(key, num_listed)
    for m, position in slot.items():
        applied = selected & (position >= 0)
        donor = _other_rows(_listed_key(keys, position), size, 1)[:, 0]
        x = jnp.asarray(batch[m])
        out[m] = jnp.where(_rows(applied, x), x[donor], x)
        for entry in (batch_lib.MASK, *extras):
            if m in batch[entry]:
                value = jnp.asarray(batch[entry][m])
                out[entry][m] = jnp.where(applied, value[donor], value)
        record["applied"][m] = applied
        record["level"][m] = jnp.where(applied, level, 0.0)
        record["donor"][m] = jnp.where(applied, donor, -1).astype(jnp.int32)
    return out, record
