"""Mixed precision: compute in bfloat16 while params and optimizer state stay float32.

The loss function sees bfloat16 copies of the float32 parameters and of the floating inputs;
gradients flow back through the casts, so they (and the Adam moments) are float32. The model
adapter returns its outputs upcast to float32 before the loss, so reductions stay accurate.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from imro_jax.batch import RESERVED_KEYS
from imro_jax.train.config import ConfigError

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> jnp.dtype:
    """Maps `config.train.compute_dtype` ("float32" | "bfloat16") to a dtype."""
    if name not in COMPUTE_DTYPES:
        raise ConfigError(
            f"train.compute_dtype must be one of {sorted(COMPUTE_DTYPES)}, got {name!r}"
        )
    return COMPUTE_DTYPES[name]


def cast_floating(tree, dtype):
    """Casts every floating-point leaf of `tree` to `dtype`; other leaves are left as they are."""

    def cast(x):
        return x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x

    return jax.tree.map(cast, tree)


def cast_inputs(batch: dict, dtype) -> dict:
    """Casts the floating modality inputs of a batch; labels, masks and quality stay as given."""
    return {k: v if k in RESERVED_KEYS else cast_floating(v, dtype) for k, v in batch.items()}


def with_compute_dtype(fn: Callable, dtype) -> Callable:
    """Wraps `fn(params, batch, *rest) -> (loss, metrics)` to compute in `dtype`.

    Params and modality inputs are cast to `dtype`; the returned loss and metrics are cast back
    to float32. Returns `fn` itself for float32 (no casts in the graph).
    """
    if jnp.dtype(dtype) == jnp.float32:
        return fn

    def cast_fn(params, batch, *rest):
        out = fn(cast_floating(params, dtype), cast_inputs(batch, dtype), *rest)
        return cast_floating(out, jnp.float32)

    return cast_fn
