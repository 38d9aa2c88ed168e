"""Parameter-carrying building blocks annotated with logical axis names for sharding.

Every parameter of every imro_jax model is created through these helpers, so that each one
carries a :class:`flax.linen.LogicallyPartitioned` box whose names come from
:data:`PARAM_AXES`. The training engineer maps the names to mesh axes by rules in the config
(e.g. ``("mlp", "model"), ("heads", "model"), ("batch", "data")``); ``None`` in a name tuple
marks an axis that is always replicated (token/position axes of learned tables).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

# Logical names used on parameters. "norm" is the feature axis of LayerNorm scale/bias.
PARAM_AXES = ("embed", "mlp", "heads", "head_dim", "vocab", "classes", "patch", "modality", "norm")
# Logical names used on activations (sharding constraints only).
ACTIVATION_AXES = ("batch", "length")

Axes = tuple[str | None, ...]

DEFAULT_KERNEL_INIT = nn.initializers.xavier_uniform()
EMBEDDING_INIT = nn.initializers.normal(stddev=0.02)


def annotated(init: Callable, axes: Axes) -> Callable:
    """Wraps an initializer so the created parameter carries logical axis names ``axes``."""
    return nn.with_logical_partitioning(init, axes)


def dense(features: int, axes: tuple[str, str], *, name: str | None = None) -> nn.Dense:
    """A Dense layer ``[..., in] -> [..., features]``; kernel named ``axes``, bias ``axes[-1:]``."""
    return nn.Dense(
        features,
        kernel_init=annotated(DEFAULT_KERNEL_INIT, axes),
        bias_init=annotated(nn.initializers.zeros_init(), axes[-1:]),
        name=name,
    )


def layer_norm(*, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm over the last axis; scale and bias named ``("norm",)``."""
    return nn.LayerNorm(
        scale_init=annotated(nn.initializers.ones_init(), ("norm",)),
        bias_init=annotated(nn.initializers.zeros_init(), ("norm",)),
        name=name,
    )


def token_embedding(vocab_size: int, dim: int, *, name: str | None = None) -> nn.Embed:
    """Embedding table ``[vocab, embed]`` for token ids."""
    return nn.Embed(
        vocab_size, dim, embedding_init=annotated(EMBEDDING_INIT, ("vocab", "embed")), name=name
    )


class ModalityDense(nn.Module):
    """One independent Dense layer per modality, applied in one einsum.

    .. math:: y_{b m o} = \\sum_i x_{b m i} W_{m i o} + c_{m o}

    Attributes:
      features: output width ``o``.
      axes: logical names of the ``(in, out)`` kernel axes; the modality axis is prepended.
    """

    features: int
    axes: tuple[str, str] = ("embed", "mlp")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Args: x ``[batch, modality, in]``. Returns ``[batch, modality, features]``."""
        num_modalities, in_features = x.shape[-2], x.shape[-1]
        kernel = self.param(
            "kernel",
            annotated(DEFAULT_KERNEL_INIT, ("modality", *self.axes)),
            (num_modalities, in_features, self.features),
        )
        bias = self.param(
            "bias",
            annotated(nn.initializers.zeros_init(), ("modality", self.axes[-1])),
            (num_modalities, self.features),
        )
        return jnp.einsum("...mi,mio->...mo", x, kernel) + bias


def as_floating(x: jax.typing.ArrayLike) -> jax.Array:
    """``x`` unchanged if it is floating point (float32 or the bfloat16 compute dtype), else float32."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def sinusoidal_positions(length: int, dim: int, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Fixed sinusoidal position codes (Vaswani et al. 2017), ``[length, dim]`` in ``dtype``.

    ``P[t, 2i] = sin(t / 10000^(2i/dim))``, ``P[t, 2i+1] = cos(t / 10000^(2i/dim))``; computed in
    float64 and rounded once to ``dtype`` (the activations' dtype, so bf16 stays bf16).
    """
    position = np.arange(length, dtype=np.float64)[:, None]
    rate = np.exp(-np.log(10000.0) * np.arange(0, dim, 2, dtype=np.float64) / dim)
    table = np.zeros((length, dim), dtype=np.float64)
    table[:, 0::2] = np.sin(position * rate)
    table[:, 1::2] = np.cos(position * rate)[:, : dim // 2]
    return jnp.asarray(table, dtype=dtype)


def learned_positions(module: nn.Module, name: str, length: int, dim: int) -> jax.Array:
    """A learned position table ``[length, dim]`` owned by ``module`` (token axis replicated)."""
    return module.param(name, annotated(EMBEDDING_INIT, (None, "embed")), (length, dim))


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Activation sharding constraint by logical names (a no-op without axis rules)."""
    return nn.with_logical_constraint(x, tuple(axes))
