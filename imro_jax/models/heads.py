"""Task heads on the fused tokens: classification, regression and caption generation.

The caption decoder is a small autoregressive Transformer built from the same
:class:`~imro_jax.models.transformer.TransformerBlock` (causal self-attention plus
cross-attention to the fused tokens). Token id 0 is padding and also ends a caption: the
decoder is trained to emit 0 right after the last caption token, and greedy decoding emits only
0 after that.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from imro_jax.models.layers import (
    EMBEDDING_INIT,
    annotated,
    dense,
    learned_positions,
    token_embedding,
)
from imro_jax.models.spec import DecoderSpec
from imro_jax.models.transformer import AttentionOptions, TransformerStack


class PredictionHead(nn.Module):
    """Mean over the fused tokens followed by a Dense layer.

    Classification: ``[batch, F, dim] -> [batch, classes]`` logits. Regression (``outputs=1``):
    the caller squeezes to ``[batch]``.
    """

    outputs: int

    @nn.compact
    def __call__(self, fused: jax.Array) -> jax.Array:
        return dense(self.outputs, ("embed", "classes"), name="out")(jnp.mean(fused, axis=1))


def caption_loss_mask(caption: jax.Array) -> jax.Array:
    """Positions whose target counts in the loss: every token of the caption and the first
    padding (the end-of-caption signal). ``int [batch, L] -> bool [batch, L]``."""
    length = jnp.sum(caption != 0, axis=-1, keepdims=True)
    return jnp.arange(caption.shape[-1])[None, :] <= length


class CaptionDecoder(nn.Module):
    """Autoregressive Transformer decoder cross-attending to the fused tokens.

    Attributes:
      spec: decoder sizes (vocabulary, max length, depth).
      num_heads, mlp_dim, dropout: Transformer sizes shared with the encoders.
      remat: rematerialise the Transformer blocks (``model.remat``).
      attention: the blocks' attention options (``ModelSpec.attention``).
    """

    spec: DecoderSpec
    num_heads: int
    mlp_dim: int
    dropout: float
    remat: bool = False
    attention: AttentionOptions = AttentionOptions()

    @nn.compact
    def __call__(self, context: jax.Array, prefix: jax.Array, *, train: bool) -> jax.Array:
        """Next-token logits given a prefix (teacher forcing).

        Position t predicts token t from a learned begin-of-caption state and tokens
        ``prefix[:, :t]``.

        Args:
          context: fused tokens ``[batch, F, dim]``.
          prefix: int ``[batch, L]`` (the caption itself for teacher forcing; ``L <= max_len``).
          train: dropout.

        Returns:
          ``[batch, L, vocab]`` logits.
        """
        batch, length = prefix.shape
        dim = context.shape[-1]
        embed = token_embedding(self.spec.vocab_size, dim, name="embed")
        begin = self.param("begin", annotated(EMBEDDING_INIT, ("embed",)), (dim,))
        x = jnp.concatenate(
            [jnp.broadcast_to(begin, (batch, 1, dim)), embed(prefix[:, :-1])], axis=1
        )
        x = x + learned_positions(self, "positions", self.spec.max_len, dim)[:length]
        x = TransformerStack(
            self.spec.depth, self.num_heads, self.mlp_dim, self.dropout,
            causal=True, cross_attention=True, remat=self.remat, attention=self.attention,
            name="transformer",
        )(
            x, jnp.ones((batch, length), bool), train=train,
            context=context, context_mask=jnp.ones(context.shape[:2], bool),
        )
        return dense(self.spec.vocab_size, ("embed", "vocab"), name="out")(x)


def greedy_decode(decode_logits, context: jax.Array, max_len: int) -> jax.Array:
    """Greedy decoding compiled as one ``jax.lax.scan`` over positions (no Python loop per token).

    Each step recomputes the decoder on the fixed-size buffer (causal masking makes later
    buffer entries irrelevant) and writes the argmax at position t; after a 0 (end) every
    later token is 0.

    Args:
      decode_logits: ``(context, prefix [batch, max_len]) -> logits [batch, max_len, vocab]``, a
        pure function (e.g. a bound ``model.apply`` with ``method="decode"``).
      context: fused tokens ``[batch, F, dim]``.
      max_len: caption length to produce.

    Returns:
      int32 ``[batch, max_len]``.
    """
    batch = context.shape[0]

    def step(carry, t):
        tokens, ended = carry
        logits = decode_logits(context, tokens)
        next_token = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False), -1)
        next_token = jnp.where(ended, 0, next_token).astype(jnp.int32)
        tokens = jax.lax.dynamic_update_index_in_dim(tokens, next_token, t, axis=1)
        return (tokens, ended | (next_token == 0)), None

    init = (jnp.zeros((batch, max_len), jnp.int32), jnp.zeros((batch,), bool))
    (tokens, _), _ = jax.lax.scan(step, init, jnp.arange(max_len))
    return tokens
