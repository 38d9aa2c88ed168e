"""The one pre-LayerNorm Transformer block shared by every encoder, the fusion and the decoder.

Attention options (:class:`AttentionOptions`, from ``model.attention_impl`` and
``model.head_major_qkv``): by default every layer goes through
:func:`jax.nn.dot_product_attention` with XLA's implementation. ``attention_impl="cudnn"``
selects cuDNN's fused kernel instead (GPU only, bfloat16/float16 compute; query and key lengths
are zero-padded to a multiple of :data:`CUDNN_LENGTH_MULTIPLE`, the padded keys masked out and
the padded queries dropped, because cuDNN rejects a mask for odd lengths in training); elsewhere
it is a ``ValueError``, not a silent fallback. ``head_major_qkv=True`` computes the layer in
``[batch, heads, length, head_dim]`` layout with self-attention's three projections fused into
one product (the same parameters, stacked at trace time) and the softmax in float32: the same
function up to float rounding. Masks are boolean, ``True`` = attend.
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

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from imro_jax.models.layers import annotated, constrain, dense, layer_norm


ATTENTION_IMPLS = ("xla", "cudnn")
CUDNN_LENGTH_MULTIPLE = 8


@dataclasses.dataclass(frozen=True)
class AttentionOptions:
    """How the attention layers compute (the defaults are the reference numerics).

    Attributes:
      impl: ``"xla"`` or ``"cudnn"`` (see the module docstring).
      head_major: head-major layout with a fused QKV projection (see the module docstring).
    """

    impl: str = "xla"
    head_major: bool = False

    def __post_init__(self):
        if self.impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {self.impl!r}")
        if self.impl == "cudnn" and self.head_major:
            raise ValueError("head_major_qkv computes attention with einsums; it cannot be combined "
                             "with attention_impl='cudnn'")


def _pad_axis(x: jax.Array, axis: int, length: int) -> jax.Array:
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, length - x.shape[axis])
    return jnp.pad(x, widths)


def padded_attention(query, key, value, mask, *, is_causal=False, multiple=CUDNN_LENGTH_MULTIPLE,
                     implementation="cudnn"):
    """``dot_product_attention`` on query/key lengths zero-padded to a multiple of ``multiple``.

    Padded keys are masked out (the mask is broadcast to ``[batch, 1, T, S]`` padded), padded
    queries are dropped from the output, so the result is that of the unpadded call.

    Args:
      query: ``[batch, T, heads, head_dim]``; key, value ``[batch, S, heads, head_dim]``.
      mask: bool broadcastable to ``[batch, heads, T, S]`` or None.
      is_causal: causal mask over the unpadded positions (padding comes last, so it is kept).
      multiple: length multiple.
      implementation: passed to ``jax.nn.dot_product_attention`` (tests use ``"xla"``).

    Returns:
      ``[batch, T, heads, head_dim]``.
    """
    (batch, length_q), length_k = query.shape[:2], key.shape[1]
    pad_q, pad_k = (-(-n // multiple) * multiple for n in (length_q, length_k))
    full = jnp.ones((batch, 1, length_q, length_k), bool)
    full = full if mask is None else jnp.broadcast_to(mask, (batch, mask.shape[1], length_q, length_k))
    if mask is not None and full.shape[1] != 1:
        raise ValueError(f"padded attention needs a head-independent mask, got {mask.shape}")
    full = _pad_axis(_pad_axis(full, 2, pad_q), 3, pad_k)
    out = jax.nn.dot_product_attention(
        _pad_axis(query, 1, pad_q), _pad_axis(key, 1, pad_k), _pad_axis(value, 1, pad_k),
        mask=full, is_causal=is_causal, implementation=implementation,
    )
    return out[:, :length_q]


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
      options: implementation and layout (:class:`AttentionOptions`) of ``__call__``.
    """

    num_heads: int
    dim: int
    options: AttentionOptions = AttentionOptions()

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
        impl: str = "xla",
    ) -> jax.Array:
        """Per-head attention ``softmax(q k^T / sqrt(head_dim)) v``.

        Args:
          query: ``[batch, T, heads, head_dim]``.
          key, value: ``[batch, S, heads, head_dim]``.
          mask: bool broadcastable to ``[batch, heads, T, S]`` or None.
          is_causal: also apply a causal (lower-triangular) mask.
          impl: ``"xla"`` or ``"cudnn"`` (GPU, bfloat16/float16; lengths padded, see
            :func:`padded_attention`).

        Returns:
          ``[batch, T, heads, head_dim]`` in the common (promoted) dtype of the inputs; the
          softmax itself is computed in float32 by ``jax.nn.dot_product_attention``.
        """
        dtype = jnp.result_type(query, key, value)  # it needs one dtype (e.g. bf16 q, f32 k)
        query, key, value = (a.astype(dtype) for a in (query, key, value))
        if impl == "xla":
            return jax.nn.dot_product_attention(query, key, value, mask=mask, is_causal=is_causal)
        if jax.default_backend() != "gpu":
            raise ValueError(f"attention_impl='cudnn' needs a GPU backend, this one is "
                             f"{jax.default_backend()!r}; use attention_impl='xla'")
        if dtype not in (jnp.bfloat16, jnp.float16):
            raise ValueError(f"attention_impl='cudnn' needs bfloat16/float16 inputs "
                             f"(train.compute_dtype), got {dtype}")
        return padded_attention(query, key, value, mask, is_causal=is_causal)

    def _head_major(self, inputs_q, inputs_kv, mask, is_causal):
        """``__call__`` in ``[batch, heads, length, head_dim]`` layout, fused QKV (self-attention)."""
        names = ("query", "key", "value")
        if inputs_q is inputs_kv:
            kernel = jnp.stack([self.projections[n][0] for n in names], axis=1)  # [D, 3, H, hd]
            bias = jnp.stack([self.projections[n][1] for n in names], axis=0)  # [3, H, hd]
            qkv = jnp.einsum("btd,dchk->cbhtk", inputs_q, kernel) + bias[:, None, :, None, :]
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            q, k, v = (jnp.einsum("btd,dhk->bhtk", x, self.projections[n][0])
                       + self.projections[n][1][:, None, :]
                       for n, x in zip(names, (inputs_q, inputs_kv, inputs_kv)))
        logits = jnp.einsum("bhtk,bhsk->bhts", q, k, preferred_element_type=jnp.float32)
        logits = logits / math.sqrt(q.shape[-1])
        if is_causal:
            causal = jnp.tril(jnp.ones(logits.shape[-2:], bool))
            mask = causal if mask is None else jnp.logical_and(mask, causal)
        if mask is not None:
            logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        heads = jnp.einsum("bhts,bhsk->bhtk", probs, v)
        return jnp.einsum("bhtk,hkd->btd", heads, self.out_kernel) + self.out_bias

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
        if self.options.head_major:
            return self._head_major(inputs_q, inputs_kv, mask, is_causal)
        key, value = self.key_value(inputs_kv)
        heads = self.attend(self.query(inputs_q), key, value, mask, is_causal=is_causal,
                            impl=self.options.impl)
        return self.merge(heads)


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
      attention: :class:`AttentionOptions` of its attention layers.
    """

    num_heads: int
    mlp_dim: int
    dropout: float
    causal: bool = False
    cross_attention: bool = False
    attention: AttentionOptions = AttentionOptions()

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
        h = MultiHeadAttention(self.num_heads, dim, self.attention, name="self_attention")(
            h, h, key_padding_mask(mask), is_causal=self.causal
        )
        x = x + drop(h, deterministic=not train)
        if self.cross_attention:
            if context is None or context_mask is None:
                raise ValueError("cross_attention=True needs context and context_mask")
            h = layer_norm(name="ln_cross")(x)
            h = MultiHeadAttention(self.num_heads, dim, self.attention, name="cross_attention")(
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
      attention: :class:`AttentionOptions` of every block.
    """

    depth: int
    num_heads: int
    mlp_dim: int
    dropout: float
    causal: bool = False
    cross_attention: bool = False
    remat: bool = False
    attention: AttentionOptions = AttentionOptions()

    @nn.compact
    def __call__(self, x, mask, *, train, context=None, context_mask=None, return_residual=False):
        """Args/Returns as :class:`TransformerBlock`; with ``return_residual`` also the residual
        stream before the final LayerNorm (same shape), which keeps the inputs' magnitude."""
        block = block_class(self.remat)
        for i in range(self.depth):
            x = block(
                self.num_heads, self.mlp_dim, self.dropout, self.causal, self.cross_attention,
                self.attention, name=f"block_{i}",
            )(x, mask, train, context, context_mask)
        out = layer_norm(name="ln_final")(x)
        return (out, x) if return_residual else out

