"""The one pre-LayerNorm Transformer block shared by every encoder, the fusion and the decoder.

Attention goes through :func:`jax.nn.dot_product_attention` (XLA by default; the cuDNN fused
kernel can be selected on GPU for bf16/fp16 inputs). Masks are boolean, ``True`` = attend.
Every attention call here guarantees at least one attendable key per query row (callers
always leave a class/query token unmasked), so no row is ever fully masked.

Dtypes: every module computes in the dtype of its inputs and parameters (float32, or bfloat16
under ``train.compute_dtype="bfloat16"``); the attention softmax is evaluated in float32 by
``jax.nn.dot_product_attention`` and LayerNorm statistics in float32 by ``nn.LayerNorm``.

Rematerialisation (``model.remat``): :func:`block_class` wraps the block in ``nn.remat`` with
:data:`REMAT_POLICY` ``= jax.checkpoint_policies.nothing_saveable``: only each block's input is
kept for the backward pass and the whole block forward is recomputed from it. That is the
largest memory saving (activation memory per block ~ one ``[batch, length, dim]`` tensor instead
of the attention probabilities ``[batch, heads, length, length]``, the MLP hidden
``[batch, length, mlp_dim]`` and the projections) for about one extra forward pass (~ +33 % step
FLOPs); ``dots_saveable`` would keep the matmul outputs, which are most of what there is to save.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from imro_jax.models.layers import annotated, constrain, dense, layer_norm


def key_padding_mask(key_mask: jax.Array) -> jax.Array:
    """``[batch, keys]`` bool -> ``[batch, 1, 1, keys]`` attention mask (broadcast over heads, queries)."""
    return key_mask[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention, split into reusable steps.

    ``__call__`` is the standard layer ``softmax(Q K^T / sqrt(d)) V W_O + b_O``. The steps
    (:meth:`query`, :meth:`key_value`, :meth:`attend`, :meth:`merge`) let the reliability-aware
    fusion weight the per-modality head outputs before the (linear) output projection.

    Attributes:
      num_heads: number of heads; ``dim`` must be divisible by it.
      dim: model width ``d_model``.
    """

    num_heads: int
    dim: int

    def setup(self):
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        heads = (self.num_heads, self.dim // self.num_heads)
        # Explicit params (not nn.DenseGeneral, whose flattened init breaks logical-axis
        # sharding constraints under a mesh); xavier-uniform over (fan_in, fan_out).
        in_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=0, out_axis=(1, 2))
        out_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1), out_axis=2)
        zeros = nn.initializers.zeros_init()
        self.projections = {
            name: (
                self.param(f"{name}_kernel", annotated(in_init, ("embed", "heads", "head_dim")), (self.dim, *heads)),
                self.param(f"{name}_bias", annotated(zeros, ("heads", "head_dim")), heads),
            )
            for name in ("query", "key", "value")
        }
        self.out_kernel = self.param("out_kernel", annotated(out_init, ("heads", "head_dim", "embed")), (*heads, self.dim))
        self.out_bias = self.param("out_bias", annotated(zeros, ("embed",)), (self.dim,))

    def _project(self, x: jax.Array, name: str) -> jax.Array:
        kernel, bias = self.projections[name]
        return jnp.einsum("...d,dhk->...hk", x, kernel) + bias

    def query(self, x: jax.Array) -> jax.Array:
        """``[..., T, dim] -> [..., T, heads, head_dim]``."""
        return self._project(x, "query")

    def key_value(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``[..., S, dim] -> ([..., S, heads, head_dim], [..., S, heads, head_dim])``."""
        return self._project(x, "key"), self._project(x, "value")

    @staticmethod
    def attend(
        query: jax.Array,
        key: jax.Array,
        value: jax.Array,
        mask: jax.Array | None,
        *,
        is_causal: bool = False,
    ) -> jax.Array:
        """Per-head attention ``softmax(q k^T / sqrt(head_dim)) v``.

        Args:
          query: ``[batch, T, heads, head_dim]``.
          key, value: ``[batch, S, heads, head_dim]``.
          mask: bool broadcastable to ``[batch, heads, T, S]`` or None.
          is_causal: also apply a causal (lower-triangular) mask.

        Returns:
          ``[batch, T, heads, head_dim]`` in the common (promoted) dtype of the inputs; the
          softmax itself is computed in float32 by ``jax.nn.dot_product_attention``.
        """
        dtype = jnp.result_type(query, key, value)  # it needs one dtype (e.g. bf16 q, f32 k)
        query, key, value = (a.astype(dtype) for a in (query, key, value))
        return jax.nn.dot_product_attention(query, key, value, mask=mask, is_causal=is_causal)

    def merge(self, heads: jax.Array) -> jax.Array:
        """Output projection ``[..., T, heads, head_dim] -> [..., T, dim]``."""
        return jnp.einsum("...hk,hkd->...d", heads, self.out_kernel) + self.out_bias

    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_kv: jax.Array,
        mask: jax.Array | None = None,
        *,
        is_causal: bool = False,
    ) -> jax.Array:
        """Standard attention layer: ``[batch, T, dim], [batch, S, dim] -> [batch, T, dim]``."""
        key, value = self.key_value(inputs_kv)
        return self.merge(self.attend(self.query(inputs_q), key, value, mask, is_causal=is_causal))


class MlpBlock(nn.Module):
    """Position-wise MLP ``Dense(mlp_dim) -> GELU -> Dropout -> Dense(dim)``."""

    mlp_dim: int
    dropout: float

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Args: x ``[..., dim]``. Returns ``[..., dim]``."""
        dim = x.shape[-1]
        h = nn.gelu(dense(self.mlp_dim, ("embed", "mlp"), name="fc1")(x))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        return dense(dim, ("mlp", "embed"), name="fc2")(h)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm Transformer block: self-attention, optional cross-attention, MLP.

    .. math::

        x &\\leftarrow x + \\mathrm{Drop}(\\mathrm{SelfAttn}(\\mathrm{LN}(x)))\\\\
        x &\\leftarrow x + \\mathrm{Drop}(\\mathrm{CrossAttn}(\\mathrm{LN}(x), c))
             \\quad\\text{(decoder only)}\\\\
        x &\\leftarrow x + \\mathrm{Drop}(\\mathrm{MLP}(\\mathrm{LN}(x)))

    Attributes:
      num_heads: attention heads.
      mlp_dim: hidden width of the MLP.
      dropout: residual/MLP dropout rate (rng stream ``"dropout"``).
      causal: causal self-attention (autoregressive decoder).
      cross_attention: add a cross-attention sublayer over ``context``.
    """

    num_heads: int
    mlp_dim: int
    dropout: float
    causal: bool = False
    cross_attention: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        train: bool,
        context: jax.Array | None = None,
        context_mask: jax.Array | None = None,
    ) -> jax.Array:
        """Applies the block.

        Args:
          x: tokens ``[batch, length, dim]``.
          mask: bool ``[batch, length]``, True for real (non-padding) tokens; padding tokens are
            never attended to.
          train: enables dropout (positional argument 3, static under :func:`block_class`'s remat).
          context: ``[batch, context_length, dim]`` for cross-attention.
          context_mask: bool ``[batch, context_length]``.

        Returns:
          ``[batch, length, dim]``.
        """
        dim = x.shape[-1]
        drop = nn.Dropout(self.dropout)
        h = layer_norm(name="ln_self")(x)
        h = MultiHeadAttention(self.num_heads, dim, name="self_attention")(
            h, h, key_padding_mask(mask), is_causal=self.causal
        )
        x = x + drop(h, deterministic=not train)
        if self.cross_attention:
            if context is None or context_mask is None:
                raise ValueError("cross_attention=True needs context and context_mask")
            h = layer_norm(name="ln_cross")(x)
            h = MultiHeadAttention(self.num_heads, dim, name="cross_attention")(
                h, context, key_padding_mask(context_mask)
            )
            x = x + drop(h, deterministic=not train)
        h = MlpBlock(self.mlp_dim, self.dropout, name="mlp")(layer_norm(name="ln_mlp")(x), train=train)
        x = x + drop(h, deterministic=not train)
        return constrain(x, ("batch", "length", "embed"))


REMAT_POLICY = jax.checkpoint_policies.nothing_saveable


def block_class(remat: bool) -> type[TransformerBlock]:
    """:class:`TransformerBlock`, or with ``remat`` its ``nn.remat`` version (same parameters).

    The rematerialised block recomputes its activations in the backward pass (policy
    :data:`REMAT_POLICY`, ``prevent_cse=True``); call it with ``train`` positionally (it is a
    static argument of the checkpoint).
    """
    if not remat:
        return TransformerBlock
    return nn.remat(TransformerBlock, static_argnums=(3,), policy=REMAT_POLICY)


class TransformerStack(nn.Module):
    """``depth`` :class:`TransformerBlock` s followed by a final LayerNorm.

    Attributes:
      remat: rematerialise each block (see :func:`block_class`).
    """

    depth: int
    num_heads: int
    mlp_dim: int
    dropout: float
    causal: bool = False
    cross_attention: bool = False
    remat: bool = False

    @nn.compact
    def __call__(self, x, mask, *, train, context=None, context_mask=None, return_residual=False):
        """Args/Returns as :class:`TransformerBlock`; with ``return_residual`` also the residual
        stream before the final LayerNorm (same shape), which keeps the inputs' magnitude."""
        block = block_class(self.remat)
        for i in range(self.depth):
            x = block(
                self.num_heads, self.mlp_dim, self.dropout, self.causal, self.cross_attention,
                name=f"block_{i}",
            )(x, mask, train, context, context_mask)
        out = layer_norm(name="ln_final")(x)
        return (out, x) if return_residual else out

