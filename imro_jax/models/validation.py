"""Input checks for model batches: clear errors outside ``jit``, defined behaviour inside it.

:func:`validate_batch` checks structure (modality names, shapes, dtypes: static, so also at
``jit`` trace time) and, when the arrays are concrete (not traced), values: NaN/Inf in a
modality, out-of-range token ids, out-of-range labels and samples with no modality present.
The model calls it at the start of every forward pass.

Inside ``jit`` value errors cannot be raised; :func:`usable_inputs` computes per-sample,
per-modality flags instead, and the model treats an unusable modality as missing for that
sample (and, with ``nonfinite="error"``, flags the sample ``valid=False``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from imro_jax.batch import CAPTION, LABEL, MASK, modality_names
from imro_jax.models.spec import ModelSpec, SpectrogramSpec, TextSpec, VitSpec, parse_model_config


def _shape_str(x) -> str:
    return f"{np.dtype(x.dtype).name}{list(x.shape)}"


def _is_concrete(tree) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def _check_modality_structure(name: str, spec, x, batch_size: int) -> None:
    """Shape/dtype of one modality against its encoder spec."""
    expected = spec.describe()
    is_int = jnp.issubdtype(x.dtype, jnp.integer)
    is_float = jnp.issubdtype(x.dtype, jnp.floating)
    ok = x.ndim >= 1 and x.shape[0] == batch_size
    if isinstance(spec, TextSpec):
        ok = ok and is_int and x.ndim == 2 and 1 <= x.shape[1] <= spec.max_len
    elif isinstance(spec, VitSpec):
        ok = ok and is_float and x.shape[1:] == (spec.image_size, spec.image_size, spec.channels)
    elif isinstance(spec, SpectrogramSpec):
        if spec.input == "waveform":
            ok = ok and is_float and x.ndim == 2 and x.shape[1] >= spec.n_fft
        else:
            ok = ok and is_float and x.ndim == 3 and x.shape[2] == spec.num_mels
    else:  # FeatureSpec
        ok = ok and is_float and x.ndim in (2, 3) and x.shape[-1] == spec.input_dim
    if not ok:
        raise ValueError(
            f"modality {name!r}: expected {expected} with batch={batch_size}, got {_shape_str(x)}"
        )


def validate_batch(batch: Mapping[str, Any], model_config: Any, *, check_values: bool | None = None) -> None:
    """Raises a ``ValueError`` naming the problem if ``batch`` does not fit the model.

    Args:
      batch: the batch dict (see :mod:`imro_jax.batch`).
      model_config: the ``model`` config section or a parsed :class:`ModelSpec`.
      check_values: check array values (NaN/Inf, token and label ranges, no modality present).
        ``None``: only when the arrays are concrete (i.e. not under ``jit``).

    Raises:
      ValueError: unknown or missing modality names, wrong shape/dtype (expected vs given),
        bad mask/label/caption, NaN/Inf in a modality (unless ``nonfinite="as_missing"``),
        out-of-range token ids or labels, or a sample with no modality present.
    """
    spec = model_config if isinstance(model_config, ModelSpec) else parse_model_config(model_config)
    if not isinstance(batch, Mapping):
        raise ValueError(f"batch must be a dict, got {type(batch).__name__}")
    expected, given = list(spec.modality_names), modality_names(batch)
    if given != expected:
        raise ValueError(
            f"batch modalities {given} do not match the model's {expected} "
            f"(unknown: {sorted(set(given) - set(expected))}, missing: "
            f"{sorted(set(expected) - set(given))})"
        )
    sizes = {name: (np.shape(batch[name])[:1] or (None,))[0] for name in expected}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"modalities disagree on the batch size (leading axis): {sizes}")
    batch_size = sizes[expected[0]]
    for name, enc_spec in spec.modalities:
        _check_modality_structure(name, enc_spec, batch[name], batch_size)
    _check_mask(batch, expected, batch_size)
    _check_label(batch, spec, batch_size)
    _check_caption(batch, spec, batch_size)
    if check_values is None:
        check_values = _is_concrete(batch)
    if check_values:
        _check_values(batch, spec)


def _check_mask(batch, names, batch_size) -> None:
    if MASK not in batch:
        return
    mask = batch[MASK]
    if not isinstance(mask, Mapping) or sorted(mask) != names:
        keys = sorted(mask) if isinstance(mask, Mapping) else type(mask).__name__
        raise ValueError(f"batch['mask'] must map each modality {names} to bool[batch]; got {keys}")
    for name in names:
        m = mask[name]
        if m.dtype != bool or m.shape != (batch_size,):
            raise ValueError(f"batch['mask'][{name!r}]: expected bool[{batch_size}], got {_shape_str(m)}")


def _check_label(batch, spec: ModelSpec, batch_size) -> None:
    if LABEL not in batch or spec.task == "generation":
        return
    label = batch[LABEL]
    kind = jnp.integer if spec.task == "classification" else jnp.floating
    if label.shape != (batch_size,) or not jnp.issubdtype(label.dtype, kind):
        want = "int" if spec.task == "classification" else "float"
        raise ValueError(f"batch['label']: expected {want}[{batch_size}] for {spec.task}, got {_shape_str(label)}")


def _check_caption(batch, spec: ModelSpec, batch_size) -> None:
    if spec.task != "generation" or CAPTION not in batch:
        return
    caption = batch[CAPTION]
    max_len = spec.decoder.max_len
    if (
        caption.ndim != 2 or caption.shape[0] != batch_size
        or not 1 <= caption.shape[1] <= max_len or not jnp.issubdtype(caption.dtype, jnp.integer)
    ):
        raise ValueError(
            f"batch['caption']: expected int[{batch_size}, length <= {max_len}], got {_shape_str(caption)}"
        )


def _check_values(batch, spec: ModelSpec) -> None:
    present = np.ones(np.shape(batch[spec.modality_names[0]])[0], bool)
    any_present = np.zeros_like(present)
    for name, enc_spec in spec.modalities:
        x = np.asarray(batch[name])
        given = np.asarray(batch[MASK][name]) if MASK in batch else present
        if isinstance(enc_spec, TextSpec):
            bad = ((x < 0) | (x >= enc_spec.vocab_size)) & given[:, None]
            if bad.any():
                raise ValueError(
                    f"modality {name!r}: token ids must be in [0, {enc_spec.vocab_size}); got values "
                    f"{sorted(set(x[bad].tolist()))[:5]} in samples {np.nonzero(bad.any(-1))[0][:5].tolist()}"
                )
            given = given & (x != 0).any(-1)  # an all-padding text carries nothing: absent
        else:
            finite = np.isfinite(x).reshape(x.shape[0], -1).all(-1)
            if spec.nonfinite == "error" and not finite[given].all():
                rows = np.nonzero(given & ~finite)[0]
                raise ValueError(
                    f"modality {name!r} contains NaN or Inf in samples {rows[:5].tolist()}; clean the "
                    "input, mark it missing in batch['mask'], or set model.nonfinite='as_missing'"
                )
            given = given & finite
        any_present |= given
    if not any_present.all():
        raise ValueError(
            f"samples {np.nonzero(~any_present)[0][:5].tolist()} have no modality present "
            "(batch['mask'] all False); the model has nothing to predict from"
        )
    if LABEL in batch and spec.task == "classification":
        label = np.asarray(batch[LABEL])
        if ((label < 0) | (label >= spec.num_classes)).any():
            raise ValueError(f"batch['label'] must be in [0, {spec.num_classes}); got {sorted(set(label.tolist()))[:5]}")
    if spec.task == "generation" and CAPTION in batch:
        caption = np.asarray(batch[CAPTION])
        if ((caption < 0) | (caption >= spec.decoder.vocab_size)).any():
            raise ValueError(f"batch['caption'] token ids must be in [0, {spec.decoder.vocab_size})")


def usable_inputs(x: jax.Array, enc_spec) -> jax.Array:
    """In-graph per-sample usability of one modality: finite values / token ids in range, ``bool[batch]``."""
    if isinstance(enc_spec, TextSpec):
        return jnp.all((x >= 0) & (x < enc_spec.vocab_size), axis=-1)
    return jnp.all(jnp.isfinite(x).reshape(x.shape[0], -1), axis=-1)
