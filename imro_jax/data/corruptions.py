"""Controlled, reproducible, recorded corruptions of batch dicts (pure JAX, jit-able).

``apply_corruption(batch, name, level, *, modalities, fraction, key)`` corrupts the listed
modalities of exactly ``round(fraction * B)`` samples chosen uniformly with ``key`` (for
``missing`` and ``conflict``, which have no intensity, ``round(fraction * level * B)``):

  ==============  =========================================================  =====================
  name            effect on a selected sample's modality x                   level
  ==============  =========================================================  =====================
  gaussian        x + level * N(0, 1) per element (MGP; no clipping)         noise std (x units)
  salt_pepper     each pixel [.., H, W, :] set to 1 (salt) or 0 (pepper)     pixel probability
                  with probability level/2 each (images in [0, 1])
  blank           each non-pad token -> ``blank_token`` (int tokens, QMF),   token probability
                  or each non-zero step of a float sequence -> 0
  snr             x + N(0, s^2), s^2 = mean(x^2) / 10^(level / 10)           target SNR in dB
                  (mean over the sample's elements)
  missing         x -> 0 and mask -> False                                   scales fraction
  conflict        x -> the same modality of a donor with label (y + 1) % K;  scales fraction
                  ONE modality per sample, drawn uniformly from
                  ``modalities`` (RCML); donors are drawn uniformly from
                  ``pool`` (default: the batch itself); samples with no
                  donor of class (y + 1) % K are left unchanged
  ==============  =========================================================  =====================

The result records what was done under ``batch["corruption"][name]``:
``{"applied": {m: bool[B]}, "level": {m: float32[B]} (0 where not applied)}`` and, for conflict,
``"donor_label": int32[B]`` (-1 where not applied). Applying the same name again merges the
record (applied OR, latest level). ``quality`` (ground truth of the clean source) is left as is,
except that a conflict copies the donor's quality and mask with its modality.

Randomness comes only from ``key`` (a JAX PRNG key): the same key gives the same corruption.
``level`` and ``fraction`` may be traced; ``name``, ``modalities``, ``num_classes`` and
``blank_token`` must be static under ``jax.jit``.

References:
  MGP (Jung et al., NeurIPS 2022), QMF (Zhang et al., ICML 2023), RCML (Xu et al., AAAI 2024);
  protocols in ``shared/anchors.md`` sections 2-3.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from imro_jax import batch as batch_lib
from imro_jax.data.synth import BLANK_ID

CORRUPTIONS = ("gaussian", "salt_pepper", "blank", "snr", "missing", "conflict")
_COUNT_SCALED_BY_LEVEL = ("missing", "conflict")


def select_samples(key: jax.Array, batch_size: int, fraction: ArrayLike) -> jax.Array:
    """Exactly ``round(fraction * batch_size)`` True entries at uniformly random positions. bool[B]."""
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(key, (batch_size,))))
    return rank < jnp.round(jnp.asarray(fraction, jnp.float32) * batch_size)


def _require_float(x: jax.Array, modality: str, name: str) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"corruption {name!r} needs a float modality; {modality!r} is {x.dtype}"
            + (" (token ids: use 'blank')" if jnp.issubdtype(x.dtype, jnp.integer) else "")
        )


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
    if jnp.issubdtype(x.dtype, jnp.integer):
        return jnp.where((x != 0) & (u < prob), jnp.asarray(blank_token, x.dtype), x)
    if x.ndim != 3:
        raise ValueError(f"blank expects int tokens [B, T] or float steps [B, T, D], got {x.dtype}{x.shape}")
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
    if not isinstance(level, (int, float)) or name == "snr":  # SNR in dB may be any real
        return
    upper = 1.0 if name in ("salt_pepper", "blank", *_COUNT_SCALED_BY_LEVEL) else float("inf")
    if not 0.0 <= level <= upper:
        raise ValueError(f"level of {name!r} must be in [0, {upper}], got {level}")


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
      level: intensity (std, probability, SNR in dB) or, for missing/conflict, a factor in
        [0, 1] on ``fraction``.
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
    as_f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731  one compilation for floats and arrays
    return _apply(
        batch, as_f32(level), as_f32(fraction), key, pool, name=name, modalities=modalities, num_classes=num_classes,
        blank_token=blank_token,
    )


@functools.partial(jax.jit, static_argnames=("name", "modalities", "num_classes", "blank_token"))
def _apply(batch, level, fraction, key, pool, *, name, modalities, num_classes, blank_token):
    """Jitted body of ``apply_corruption`` (one compilation per name, modalities and shapes)."""
    size = jnp.shape(batch[batch_lib.LABEL])[0]
    key_select, key_apply = jax.random.split(key)
    count_fraction = fraction * level if name in _COUNT_SCALED_BY_LEVEL else fraction
    selected = select_samples(key_select, size, count_fraction)
    if name == "conflict":
        out, record = _conflict(batch, selected, level, key_apply, batch if pool is None else pool,
                                modalities=modalities, num_classes=num_classes)
    else:
        out, record = _per_modality(batch, selected, level, key_apply, name=name, modalities=modalities,
                                    blank_token=blank_token)
    records = dict(batch.get(batch_lib.CORRUPTION, {}))
    records[name] = _merge_record(records.get(name), record)
    out[batch_lib.CORRUPTION] = records
    return out


def _per_modality(batch, selected, level, key, *, name, modalities, blank_token):
    """Every listed modality of the selected samples gets the named transform."""
    out = dict(batch)
    out[batch_lib.MASK] = dict(batch[batch_lib.MASK])
    record = {"applied": {}, "level": {}}
    for k, m in zip(jax.random.split(key, len(modalities)), modalities):
        x = jnp.asarray(batch[m])
        if name == "missing":
            corrupted = jnp.zeros_like(x)
            out[batch_lib.MASK][m] = jnp.asarray(batch[batch_lib.MASK][m]) & ~selected
        elif name == "blank":
            corrupted = blank_tokens(k, x, level, blank_token)
        else:
            _require_float(x, m, name)
            transform = {"gaussian": gaussian_noise, "salt_pepper": salt_and_pepper, "snr": noise_at_snr}[name]
            corrupted = transform(k, x, level)
        out[m] = jnp.where(_rows(selected, x), corrupted, x)
        record["applied"][m] = selected
        record["level"][m] = jnp.where(selected, level, 0.0)
    return out, record


def _conflict(batch, selected, level, key, pool, *, modalities, num_classes):
    """One modality per selected sample (uniform among ``modalities``) taken from a donor of class
    (y + 1) % K in ``pool``, with the donor's mask and, when both have it, quality."""
    out = dict(batch)
    out[batch_lib.MASK] = dict(batch[batch_lib.MASK])
    has_quality = batch_lib.QUALITY in batch and batch_lib.QUALITY in pool
    if has_quality:
        out[batch_lib.QUALITY] = dict(batch[batch_lib.QUALITY])
    labels, pool_labels = jnp.asarray(batch[batch_lib.LABEL]), jnp.asarray(pool[batch_lib.LABEL])
    key_donor, key_modality = jax.random.split(key)
    donor, has_donor = _conflict_donors(key_donor, labels, pool_labels, num_classes)
    chosen = jax.random.randint(key_modality, labels.shape, 0, len(modalities))
    applied_any = selected & has_donor
    record = {"applied": {}, "level": {}}
    for i, m in enumerate(modalities):
        applied = applied_any & (chosen == i)
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
