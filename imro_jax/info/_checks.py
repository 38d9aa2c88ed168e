"""Shape and value checks shared by the estimators (private).

Checks run on static shapes, so they also work on tracers under ``jit``/``vmap``/``grad``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def as_float_array(value: ArrayLike) -> jax.Array:
    """Converts to a jax array with a floating dtype (integers become float32)."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(jnp.float32)
    return array


def check_score_matrix(scores: ArrayLike, name: str) -> jax.Array:
    """Returns ``scores`` as a float array after checking it is a square ``[K, K]`` matrix, K >= 2.

    Args:
      scores: critic scores ``scores[i, j] = f(x_i, y_j)``.
      name: the calling estimator, for the error message.

    Raises:
      ValueError: if ``scores`` is not 2-D and square, or K < 2 (no off-diagonal pairs).
    """
    scores = as_float_array(scores)
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(
            f"{name} expects a square score matrix [K, K] with scores[i, j] = f(x_i, y_j) and "
            f"positive pairs on the diagonal; got shape {scores.shape}. Use jax.vmap for a "
            "leading batch axis."
        )
    if scores.shape[0] < 2:
        raise ValueError(
            f"{name} needs K >= 2 (at least one off-diagonal negative pair); got shape "
            f"{scores.shape}"
        )
    return scores


def as_sample_matrix(x, name: str, arg: str = "x"):
    """Reshapes ``[n]`` samples to ``[n, 1]`` and checks the result is a non-empty ``[n, d]``.

    Works on numpy and jax arrays alike (the type is kept).

    Raises:
      ValueError: if the input has more than 2 dimensions or no samples.
    """
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} expects {arg} of shape [n] or [n, d]; got shape {x.shape}")
    return x


def check_samples(x: ArrayLike, name: str, arg: str = "x") -> jax.Array:
    """Returns samples as a float ``[n, d]`` array; a 1-D ``[n]`` input becomes ``[n, 1]``.

    Raises:
      ValueError: if the input has more than 2 dimensions or no samples.
    """
    return as_sample_matrix(as_float_array(x), name, arg)


def check_finite(x, name: str, arg: str = "x") -> None:
    """Raises if a concrete ``x`` (jax or numpy, checked in its own precision) holds NaN or inf;
    a tracer (under ``jit``) is not checked.

    Raises:
      ValueError: naming the estimator and the argument.
    """
    if isinstance(x, jax.core.Tracer):
        return
    finite = np.all(np.isfinite(x)) if isinstance(x, np.ndarray) else jnp.all(jnp.isfinite(x))
    if not bool(finite):
        raise ValueError(f"{name} got non-finite values (NaN or inf) in {arg}")
