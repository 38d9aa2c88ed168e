"""Fusion steps: reliability-aware attention (IMRO) and the baselines' fusions.

Token-level fusions produce fused tokens ``[batch, fusion_tokens, dim]`` from learned query
tokens; decision-level fusions combine unimodal predictions ``[batch, modality, classes]``. Which
fusion does what is the table of :mod:`imro_jax.models.registry`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from imro_jax.models.layers import EMBEDDING_INIT, annotated, constrain, layer_norm
from imro_jax.models.registry import get_fusion, normalise_confidence, uniform_weights  # noqa: F401 (re-export)
from imro_jax.models.spec import ModelSpec
from imro_jax.models.transformer import MlpBlock, MultiHeadAttention, block_class


class ReliabilityAwareAttention(nn.Module):
    """Reliability-weighted multi-modality attention, all modalities in one batched call.

    .. math::

        Z = \\sum_m R_{m}\\, \\mathrm{softmax}\\!\\Big(\\frac{Q K_m^\\top}{\\sqrt{d}}\\Big) V_m\\, W_O + b_O,
        \\qquad K_m = X_m W_K,\\ V_m = X_m W_V,

    computed by folding the modality axis into the batch: one ``dot_product_attention`` over
    ``[batch * modality, queries, heads, head_dim]`` against each modality's (padded) tokens,
    then the R-weighted sum over modalities, then the output projection. Because
    ``sum_m R_m = 1`` for a sample with any modality present, this equals
    ``sum_m R_m Attention(Q, K_m, V_m)`` exactly (bias included); with ``R = 1/M`` it is the
    paper's conventional fusion ``sum_m Attention(Q, K_m, V_m)`` (Sec. 2.1) divided by M.

    Masking: padding tokens (``token_mask`` False) get exactly zero attention weight; a modality
    with ``R = 0`` (absent) contributes exactly zero as long as its tokens are finite (the model
    zeroes absent inputs before encoding).

    ``absorbed`` (``model.absorbed_fusion_kv``) computes the same function without projecting
    the tokens: softmax ignores the per-row constant ``q . b_K`` and the weights sum to 1, so

    .. math::

        \\mathrm{softmax}(q (X W_K + b_K)^\\top) (X W_V + b_V)
          = \\mathrm{softmax}((q W_K^\\top) X^\\top)\\, X\\, W_V + b_V,

    which costs ``4 B M N F H d`` multiply-adds for scores and pooled tokens instead of the
    ``4 B M N d^2`` of the K/V projection of every (padded) token (``F H < d`` in our configs).
    Same parameters; float rounding differs.

    Attributes:
      num_heads: attention heads.
      dim: model width.
      absorbed: absorb W_K and W_V into the queries (see above).
    """

    num_heads: int
    dim: int
    absorbed: bool = False

    @nn.compact
    def __call__(
        self, queries: jax.Array, tokens: jax.Array, token_mask: jax.Array, reliability: jax.Array
    ) -> jax.Array:
        """Fuses.

        Args:
          queries: ``[batch, queries, dim]``.
          tokens: ``[batch, modality, tokens, dim]``, padded to a common length.
          token_mask: bool ``[batch, modality, tokens]``; each row needs >= 1 True entry.
          reliability: ``[batch, modality]`` weights R.

        Returns:
          ``[batch, queries, dim]``.
        """
        batch, num_modalities, length, dim = tokens.shape
        attention = MultiHeadAttention(self.num_heads, self.dim, name="attention")
        q = attention.query(queries)  # [B, F, H, hd]
        if self.absorbed:
            return attention.merge(self._absorbed(attention, q, tokens, token_mask, reliability))
        q = jnp.broadcast_to(q[:, None], (batch, num_modalities, *q.shape[1:]))
        key, value = attention.key_value(tokens.reshape(batch * num_modalities, length, dim))
        per_modality = attention.attend(
            q.reshape(batch * num_modalities, *q.shape[2:]),
            key,
            value,
            token_mask.reshape(batch * num_modalities, 1, 1, length),
        )  # [B*M, F, H, hd]
        per_modality = per_modality.reshape(batch, num_modalities, *per_modality.shape[1:])
        weighted = jnp.einsum("bm,bmfhk->bfhk", reliability.astype(per_modality.dtype), per_modality)
        return attention.merge(weighted)

    @staticmethod
    def _absorbed(attention, q, tokens, token_mask, reliability):
        """The R-weighted heads ``[B, F, H, hd]`` with W_K, W_V absorbed (softmax in float32)."""
        w_key, _ = attention.projections["key"]  # [D, H, hd]; b_K cancels in the softmax
        w_value, b_value = attention.projections["value"]
        q_in_tokens = jnp.einsum("bfhk,dhk->bfhd", q, w_key.astype(q.dtype))  # [B, F, H, D]
        logits = jnp.einsum("bfhd,bmnd->bmhfn", q_in_tokens, tokens.astype(q.dtype))
        logits = logits.astype(jnp.float32) / math.sqrt(q.shape[-1])
        logits = jnp.where(token_mask[:, :, None, None, :], logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(tokens.dtype)  # [B, M, H, F, N]
        pooled = jnp.einsum("bmhfn,bmnd->bmfhd", probs, tokens)  # [B, M, F, H, D]
        per_modality = jnp.einsum("bmfhd,dhk->bmfhk", pooled, w_value.astype(pooled.dtype)) + b_value
        return jnp.einsum("bm,bmfhk->bfhk", reliability.astype(per_modality.dtype), per_modality)


class TokenFusion(nn.Module):
    """Learned fusion query tokens attend to the modalities' tokens: ``imro``/``uniform``/``concat``.

    ``imro``/``uniform``: ``z = q + RAA(LN(q), tokens, R)``, ``z = z + MLP(LN(z))``.
    ``concat``: one :class:`TransformerBlock` over ``[q; tokens of every present modality]``.
    Output: ``LN(z)``, ``[batch, fusion_tokens, dim]``.
    """

    spec: ModelSpec

    @nn.compact
    def __call__(
        self,
        tokens: jax.Array,
        token_mask: jax.Array,
        weights: jax.Array,
        present: jax.Array,
        *,
        train: bool,
    ) -> jax.Array:
        """Args: tokens ``[B, M, N, dim]``, token_mask bool ``[B, M, N]``, weights ``[B, M]``
        (R; unused by ``concat``), present bool ``[B, M]``. Returns ``[B, F, dim]``."""
        spec = self.spec
        batch, num_modalities, length, dim = tokens.shape
        queries = self.param(
            "queries", annotated(EMBEDDING_INIT, (None, "embed")), (spec.fusion_tokens, dim)
        )
        z = jnp.broadcast_to(queries, (batch, spec.fusion_tokens, dim))
        drop = nn.Dropout(spec.dropout)
        if get_fusion(spec.fusion).joint:
            joint = jnp.concatenate([z, tokens.reshape(batch, num_modalities * length, dim)], axis=1)
            joint_mask = jnp.concatenate(
                [
                    jnp.ones((batch, spec.fusion_tokens), bool),
                    (token_mask & present[:, :, None]).reshape(batch, num_modalities * length),
                ],
                axis=1,
            )
            z = block_class(spec.remat)(spec.num_heads, spec.mlp_dim, spec.dropout,
                                        attention=spec.attention, name="joint_block")(
                joint, joint_mask, train
            )[:, : spec.fusion_tokens]
        else:
            fused = ReliabilityAwareAttention(spec.num_heads, dim, spec.absorbed_fusion_kv,
                                              name="reliability_attention")(
                layer_norm(name="ln_queries")(z), tokens, token_mask, weights
            )
            z = z + drop(fused, deterministic=not train)
            h = MlpBlock(spec.mlp_dim, spec.dropout, name="mlp")(layer_norm(name="ln_mlp")(z), train=train)
            z = z + drop(h, deterministic=not train)
        return constrain(layer_norm(name="ln_out")(z), ("batch", "length", "embed"))


def decision_fusion(fusion: str, unimodal: jax.Array, present: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Decision-level fusion of unimodal outputs.

    Args:
      fusion: ``"late"``, ``"energy"`` or ``"evidential"``.
      unimodal: ``[batch, modality, outputs]`` unimodal head outputs (logits; for regression
        ``late`` averages the predicted means).
      present: bool ``[batch, modality]``.

    Returns:
      ``(fused [batch, outputs], weights [batch, modality])``: the fused prediction (for
      ``evidential``, ``log alpha`` of the combined Dirichlet, so that ``softmax`` gives its
      expected class probabilities) and each modality's normalised weight in it (``late``:
      1/M; ``energy``: relu(confidence) normalised; ``evidential``: ``1 - u_m`` normalised).
      Both in the dtype of ``unimodal``; ``energy`` and ``evidential`` (log-sum-exp, Dirichlet
      evidence) are computed in float32 and cast.
    """
    combine = get_fusion(fusion).combine
    if combine is None:
        raise ValueError(f"{fusion!r} is not a decision fusion")
    fused, weights = combine(unimodal.astype(jnp.float32), present)
    return fused.astype(unimodal.dtype), weights.astype(unimodal.dtype)
