"""Optimisation levers measured before anyone edits the model: patched variants, side by side.

    python experiments/bench/levers.py [--config trimodal] [--rounds 30] [--levers absorbed,headmajor]

Each lever is a patch applied only while its variant's train step is traced and compiled (the
model files are not edited); every variant starts from the same host-drawn state and batch, and
the steps are timed interleaved round by round against the unpatched baseline.

* `absorbed`: the IMRO fusion attention with W_K and W_V absorbed into the queries. Now the keys
  and values of every (padded) modality token are projected, 4 B M N d^2 FLOPs, although only F
  query tokens read them. Because softmax ignores the constant q.b_K and the attention weights
  sum to 1,
      softmax(q (X W_K + b_K)^T) (X W_V + b_V) = softmax((q W_K^T) X^T) X W_V + b_V,
  so scores and pooled tokens cost 4 B M N F H d and W_V is applied to F pooled tokens per
  modality. Same parameters, same function; for F H < d the fusion is ~4x cheaper.
* `nomask`: encoder self-attention without the key-padding mask. ViT and spectrogram encoders
  pass an all-True mask, which `jax.nn.dot_product_attention` (XLA path) broadcasts to
  `[batch, 1, heads, T, T]` and applies with a select in the forward and backward pass. The
  exact fix passes `mask=None` for encoders without padding; this patch drops every encoder
  mask, which is equivalent here only because the synthetic text has no padding (an upper bound
  of the gain, for measurement only).
* `headmajor`: every `MultiHeadAttention` layer computed in `[batch, heads, length, head_dim]`
  layout (`HeadMajorAttention`): projections write head-major tensors, self-attention's three
  projections are one product with the kernels stacked at trace time, and the two attention
  products are batched matmuls over `(batch, heads)` without the BTNH <-> BNTS transposes of
  `jax.nn.dot_product_attention`'s XLA path. Same parameters and function (float rounding
  differs: the softmax scale is applied to the logits, not inside the library's kernel).
* `cudnn` (GPU only; `gpu.sh` runs it): the encoders' and decoder's self-attention through
  `jax.nn.dot_product_attention(implementation="cudnn")`, the fused cuDNN kernel, with the
  `nomask` patch (cuDNN takes a boolean mask only as a full `[B, N, T, S]` bias, which it rejects
  for odd lengths in training; the synthetic batch has no padding, so dropping the masks is
  exact here). The fusion's attention stays on XLA. An upper bound of what the fused kernel
  gains at the config's sizes, measured before the model gets an `attention` option.
* `flatadam`: the optimizer (`optim.make_optimizer`: global-norm clipping + masked AdamW over
  ~95 parameter leaves) replaced by `flat_adamw`, the same update on one raveled vector: a few
  large elementwise ops instead of several per leaf, plus one ravel of the gradients and one
  unravel of the updates. Same math (`tests/bench` checks it against the Optax chain); the sums
  of the global norm are ordered differently. The first-step loss does not see the optimizer, so
  its column is equal by construction for this lever.
* `remat` (a config variant, not a patch): `model.remat=True`, every Transformer block
  recomputed in the backward pass. Trades step time for activation memory; the table's memory
  column (`benchlib.memory_bytes` of the compiled step) shows what it buys.
* `framing`: the STFT frames cut by reshaping the waveform into hop-sized chunks and
  concatenating n_fft / hop neighbours instead of a `[frames, n_fft]` index gather (the profile's
  largest single layout op, 3% of op time, sits in the log-mel). Bitwise the same frames.
* `both` = absorbed + nomask; `all` = absorbed + headmajor.

Reported: per-variant step time, paired ratio to the baseline, and the first-step loss
difference (same state and batch: must be ~1e-6 relative for exact levers).
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.flatten_util import ravel_pytree

import benchlib
from imro_jax.models import fusion, spectrogram, transformer
from imro_jax.train import optim


class AbsorbedReliabilityAwareAttention(fusion.ReliabilityAwareAttention):
    """`ReliabilityAwareAttention` with W_K, W_V absorbed (same parameters and function)."""

    @nn.compact
    def __call__(self, queries, tokens, token_mask, reliability):
        attention = transformer.MultiHeadAttention(self.num_heads, self.dim, name="attention")
        q = attention.query(queries)  # [B, F, H, hd]
        w_key, _ = attention.projections["key"]  # [D, H, hd]; b_K cancels in the softmax
        w_value, b_value = attention.projections["value"]
        q_in_tokens = jnp.einsum("bfhk,dhk->bfhd", q, w_key.astype(q.dtype))  # [B, F, H, D]
        logits = jnp.einsum("bfhd,bmnd->bmhfn", q_in_tokens, tokens.astype(q.dtype))
        logits = logits.astype(jnp.float32) / math.sqrt(q.shape[-1])
        logits = jnp.where(token_mask[:, :, None, None, :], logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(tokens.dtype)  # [B, M, H, F, N]
        pooled = jnp.einsum("bmhfn,bmnd->bmfhd", probs, tokens)  # [B, M, F, H, D]
        per_modality = jnp.einsum("bmfhd,dhk->bmfhk", pooled, w_value.astype(pooled.dtype)) + b_value
        weighted = jnp.einsum("bm,bmfhk->bfhk", reliability.astype(per_modality.dtype), per_modality)
        return attention.merge(weighted)


class HeadMajorAttention(transformer.MultiHeadAttention):
    """`MultiHeadAttention` in head-major layout (the `headmajor` lever; same parameters)."""

    def __call__(self, inputs_q, inputs_kv, mask=None, *, is_causal=False):
        """`MultiHeadAttention.__call__` computed in `[batch, heads, length, head_dim]` layout.

        The projections write head-major tensors directly (``btd,dhk->bhtk``), so the two attention
        products are plain batched matmuls over `(batch, heads)` without the BTNH <-> BNTS
        transposes of `jax.nn.dot_product_attention`'s XLA path; for self-attention the three
        projections are one product with a `[dim, 3, heads, head_dim]` kernel (concatenated at
        trace time from the same parameters). Same function; softmax in float32.
        """
        names = ("query", "key", "value")
        if inputs_q is inputs_kv:
            kernel = jnp.stack([self.projections[n][0] for n in names], axis=1)  # [D, 3, H, hd]
            bias = jnp.stack([self.projections[n][1] for n in names], axis=0)  # [3, H, hd]
            qkv = jnp.einsum("btd,dchk->cbhtk", inputs_q, kernel) + bias[:, None, :, None, :]
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            q, k, v = (jnp.einsum("btd,dhk->bhtk", x, self.projections[n][0]) + self.projections[n][1][:, None, :]
                       for n, x in zip(names, (inputs_q, inputs_kv, inputs_kv)))
        logits = jnp.einsum("bhtk,bhsk->bhts", q, k, preferred_element_type=jnp.float32)
        logits = logits / math.sqrt(q.shape[-1])
        if is_causal:
            length = logits.shape[-1]
            causal = jnp.tril(jnp.ones((logits.shape[-2], length), bool))
            mask = causal if mask is None else jnp.logical_and(mask, causal)
        if mask is not None:
            logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        heads = jnp.einsum("bhts,bhsk->bhtk", probs, v)
        return jnp.einsum("bhtk,hkd->btd", heads, self.out_kernel) + self.out_bias


class CudnnAttention(transformer.MultiHeadAttention):
    """`MultiHeadAttention` through cuDNN's fused attention (the `cudnn` lever; same parameters)."""

    def __call__(self, inputs_q, inputs_kv, mask=None, *, is_causal=False):
        if jax.default_backend() != "gpu":
            raise ValueError(f"the cudnn lever needs a GPU backend, not {jax.default_backend()!r}")
        key, value = self.key_value(inputs_kv)
        query = self.query(inputs_q)
        dtype = jnp.result_type(query, key, value)
        if dtype not in (jnp.bfloat16, jnp.float16):
            raise ValueError(f"cuDNN attention needs bfloat16/float16 inputs (train.compute_dtype), got {dtype}")
        heads = jax.nn.dot_product_attention(
            query.astype(dtype), key.astype(dtype), value.astype(dtype), mask=mask,
            is_causal=is_causal, implementation="cudnn")
        return self.merge(heads)


def strided_power_spectrogram(waveform, *, n_fft: int, hop_length: int) -> jax.Array:
    """`spectrogram.power_spectrogram` with frames cut by reshape + concatenate (`framing` lever).

    Frame t is chunks t .. t + k - 1 of the waveform cut into hop-sized chunks, k = n_fft / hop.
    """
    if n_fft % hop_length:
        raise ValueError(f"the framing lever needs hop_length={hop_length} to divide n_fft={n_fft}")
    waveform = jnp.asarray(waveform, dtype=jnp.float32)
    frames = spectrogram.num_frames(waveform.shape[-1], n_fft=n_fft, hop_length=hop_length)
    k = n_fft // hop_length
    chunks = waveform[..., : (frames + k - 1) * hop_length]
    chunks = chunks.reshape(*waveform.shape[:-1], frames + k - 1, hop_length)
    framed = jnp.concatenate([chunks[..., i:i + frames, :] for i in range(k)], axis=-1)
    spectrum = jnp.fft.rfft(framed * spectrogram.hann_window(n_fft), n=n_fft, axis=-1)
    return jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2


class FlatAdamState(NamedTuple):
    count: jax.Array  # int32 [], updates so far
    mu: jax.Array  # [num_params] first moment
    nu: jax.Array  # [num_params] second moment


def flat_adamw(config, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`optim.make_optimizer`'s update (no accumulation) computed on one raveled vector.

        g <- g * min(1, c / ||g||_2);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
        u = -lr(t) * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd * mask * p)
    """
    if config.accumulation_steps != 1:
        raise ValueError("the flatadam lever covers accumulation_steps=1 only")
    schedule = optim.learning_rate_schedule(config, optim.num_optimizer_updates(config, num_steps))

    def init(params):
        flat, _ = ravel_pytree(params)
        return FlatAdamState(jnp.zeros([], jnp.int32), jnp.zeros_like(flat), jnp.zeros_like(flat))

    def update(grads, state, params):
        g, unravel = ravel_pytree(grads)
        p, _ = ravel_pytree(params)
        mask, _ = ravel_pytree(jax.tree.map(lambda x, m: jnp.full(x.shape, m, x.dtype), params, optim.decay_mask(params)))
        norm = jnp.sqrt(jnp.sum(jnp.square(g)))
        g = jnp.where(norm < config.grad_clip_norm, g, g / norm * config.grad_clip_norm)
        mu = config.b1 * state.mu + (1 - config.b1) * g
        nu = config.b2 * state.nu + (1 - config.b2) * jnp.square(g)
        count = state.count + 1
        m_hat = mu / (1 - config.b1 ** count.astype(g.dtype))
        v_hat = nu / (1 - config.b2 ** count.astype(g.dtype))
        step = m_hat / (jnp.sqrt(v_hat) + config.eps) + config.weight_decay * mask * p
        return unravel(-schedule(state.count) * step), FlatAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update), schedule


def _no_key_padding_mask(key_mask):
    """The `nomask` patch of `transformer.key_padding_mask`."""
    return None


_ABSORBED = (fusion, "ReliabilityAwareAttention", AbsorbedReliabilityAwareAttention)
_NOMASK = (transformer, "key_padding_mask", _no_key_padding_mask)
_HEADMAJOR = (transformer, "MultiHeadAttention", HeadMajorAttention)
# lever -> (module, attribute, replacement) patches; "remat" is a config variant (see `main`).
PATCHES = {
    "baseline": [],
    "absorbed": [_ABSORBED],
    "nomask": [_NOMASK],
    "headmajor": [_HEADMAJOR],
    "cudnn": [_NOMASK, (transformer, "MultiHeadAttention", CudnnAttention)],
    "framing": [(spectrogram, "power_spectrogram", strided_power_spectrogram)],
    "flatadam": [(optim, "make_optimizer", flat_adamw)],
    "remat": [],
    "both": [_ABSORBED, _NOMASK],
    "all": [_ABSORBED, _HEADMAJOR],
}


@contextlib.contextmanager
def patched(lever: str):
    """Applies one lever's patches (see module docstring) for the duration of the block."""
    if lever not in PATCHES:
        raise ValueError(f"unknown lever {lever!r}; one of {sorted(PATCHES)}")
    saved = [(module, name, getattr(module, name)) for module, name, _ in PATCHES[lever]]
    for module, name, replacement in PATCHES[lever]:
        setattr(module, name, replacement)
    try:
        yield
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)


def main(argv=None) -> None:
    parser = benchlib.base_parser(__doc__)
    parser.add_argument("--levers", default="absorbed,nomask,headmajor,both,all")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    if args.tiny:
        args.rounds, args.warmup, args.levers = 3, 1, "absorbed"
    report = benchlib.Report("Optimisation levers (patched variants)", args)
    config = benchlib.resolve_config(args)
    batch = benchlib.synthetic_batch(config.model, config.data.batch_size)
    names = ["baseline", *[lever for lever in args.levers.split(",") if lever]]
    benches, first_loss, memory = {}, {}, {}
    for name in names:
        variant_config = benchlib.variant(config, remat=True) if name == "remat" else config
        with patched(name):
            bench = benchlib.build_step_bench(name, variant_config, batch, devices=jax.devices()[:1])
            memory[name] = benchlib.memory_bytes(bench.compile_train())
        first_loss[name] = float(bench.train()["loss"])
        benches[name] = bench
    times = benchlib.interleaved_timings({n: b.train for n, b in benches.items()},
                                         rounds=args.rounds, warmup=args.warmup)
    rows = []
    for name in names:
        rel = abs(first_loss[name] - first_loss["baseline"]) / abs(first_loss["baseline"])
        ratio = "1 (reference)" if name == "baseline" else \
            benchlib.paired_ratio(times[name], times["baseline"]).fmt()
        rows.append((name, benchlib.Summary.of(times[name]).fmt(1e3, 2), ratio,
                     f"{memory[name] / 2**20:.1f}", f"{first_loss[name]:.6f}", f"{rel:.1e}"))
    report.finish(benchlib.markdown_table(
        ["variant", "train step ms", "ratio to baseline", "step memory MiB", "loss step 1", "rel. diff"],
        rows), notes=[
        f"config `{benchlib.TINY_CONFIG.name if args.tiny else args.config}` (fusion "
        f"{config.model.fusion}, batch {config.data.batch_size}), synthetic batch (no text "
        f"padding), same host-drawn state, 1 device, {args.rounds} interleaved rounds",
        "patches apply only while tracing; imro_jax/models is unchanged",
        "step memory: arguments + temporaries + outputs - donated, from the compiled step's memory_analysis()",
    ])


if __name__ == "__main__":
    main()
