"""The IMRO classification model and its training step in PyTorch: a peer to time ours against.

Optional: needs torch (the `bench` extra, `pip install "imro-jax[bench]"` or `pip install
torch==2.13.0`); nothing else in `imro_jax` imports this module.

`TorchIMRO` re-implements the tri-modal IMRO model and its loss (`imro_jax.models`) in
PyTorch, operation by operation: the same encoders (text embedding, ViT patches, on-the-fly
log-mel spectrogram patches, feature views), pre-LN blocks with tanh-GELU and LayerNorm eps
1e-6, the reliability estimator (per-modality heads, label-free I, H from the unfitted surprisal
statistics (0) plus the consensus disagreement, R on the simplex), modality dropout, IMRO
reliability-weighted fusion attention, the head (mixed with the R-weighted vote of the unimodal
heads, `model.reliability.decision`, its weights R^p with `vote_power` p, and its per-sample gate
`decision_gate`; `joint_detached`: the fusion reads stop-gradient tokens and R), the label
critic, and the loss (fused cross-entropy + lambda1 H - lambda2 Barber-Agakov I + unimodal NLL
+ `joint_weight` x the head's own cross-entropy), with global-norm clipping
and AdamW (no decay on biases, norms and 1-D parameters) under the warmup-cosine schedule.
Attention uses `F.scaled_dot_product_attention` (a key mask only where tokens can be padding:
text), as a PyTorch user would write it.

Its parameters are keyed by the Flax parameter paths ("encoders_text/trunk/cls", ...), so the
two models can be compared and copied one to one. The checks that make it a peer:

* `check_parameter_shapes`: names, shapes and count equal the Flax model's (the torch shapes
  are derived independently, from the spec);
* `first_step_losses`: the first train-step loss on the same parameters and batch (dropout and
  modality dropout off) equals ours to float32 rounding: the two are the same function;
* `torch_train_flops`: the matmul FLOPs torch's `FlopCounterMode` counts in one forward +
  backward, to compare with `imro_jax.perf.flops.hand_count`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from flax import linen as nn_flax

try:
    import torch
    import torch.nn.functional as F
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError(
        "imro_jax.perf.torch_peer needs PyTorch, the optional `bench` extra: "
        "pip install \"imro-jax[bench]\" (or pip install torch==2.13.0)"
    ) from error

from imro_jax.models import registry
from imro_jax.models.layers import sinusoidal_positions
from imro_jax.models.spec import FeatureSpec, SpectrogramSpec, TextSpec, VitSpec, parse_model_config
from imro_jax.models.spectrogram import LOG_FLOOR, mel_filterbank
from imro_jax.perf import step_bench
from imro_jax.train import config as config_lib
from imro_jax.train import model_fns

LN_EPS = 1e-6  # flax.linen.LayerNorm's default


# ---------------------------------------------------------------------------------------------
# The model: parameter shapes from the spec, a functional forward over a ParameterDict


def _block_shapes(prefix: str, d: int, heads: int, mlp: int) -> dict:
    hd = d // heads
    shapes = {f"{prefix}/ln_self/scale": (d,), f"{prefix}/ln_self/bias": (d,),
              f"{prefix}/ln_mlp/scale": (d,), f"{prefix}/ln_mlp/bias": (d,),
              f"{prefix}/mlp/fc1/kernel": (d, mlp), f"{prefix}/mlp/fc1/bias": (mlp,),
              f"{prefix}/mlp/fc2/kernel": (mlp, d), f"{prefix}/mlp/fc2/bias": (d,)}
    return shapes | _attention_shapes(f"{prefix}/self_attention", d, heads, hd)


def _attention_shapes(prefix: str, d: int, heads: int, hd: int) -> dict:
    shapes = {f"{prefix}/out_kernel": (heads, hd, d), f"{prefix}/out_bias": (d,)}
    for name in ("query", "key", "value"):
        shapes |= {f"{prefix}/{name}_kernel": (d, heads, hd), f"{prefix}/{name}_bias": (heads, hd)}
    return shapes


def _encoder_shapes(name: str, enc, spec) -> dict:
    d, p = spec.dim, f"encoders_{name}"
    shapes = {f"{p}/trunk/cls": (d,), f"{p}/trunk/transformer/ln_final/scale": (d,),
              f"{p}/trunk/transformer/ln_final/bias": (d,)}
    for i in range(spec.depth):
        shapes |= _block_shapes(f"{p}/trunk/transformer/block_{i}", d, spec.num_heads, spec.mlp_dim)
    if isinstance(enc, TextSpec):
        return shapes | {f"{p}/embed/embedding": (enc.vocab_size, d), f"{p}/positions": (enc.max_len, d)}
    if isinstance(enc, VitSpec):
        patches = (enc.image_size // enc.patch_size) ** 2
        return shapes | {f"{p}/patch_embed/kernel": (enc.patch_size ** 2 * enc.channels, d),
                         f"{p}/patch_embed/bias": (d,), f"{p}/positions": (patches, d)}
    if isinstance(enc, SpectrogramSpec):
        return shapes | {f"{p}/patch_embed/kernel": (enc.patch_frames * enc.patch_mels, d),
                         f"{p}/patch_embed/bias": (d,),
                         f"{p}/freq_positions": (enc.num_mels // enc.patch_mels, d)}
    if isinstance(enc, FeatureSpec):
        return shapes | {f"{p}/project/kernel": (enc.input_dim, d), f"{p}/project/bias": (d,)}
    raise TypeError(f"no torch encoder for {type(enc).__name__}")


def parameter_shapes(spec) -> dict[str, tuple[int, ...]]:
    """`{flax path: shape}` of the IMRO model of a `ModelSpec`, derived from the spec alone.

    Raises:
        NotImplementedError: not a classification model with imro or uniform fusion.
    """
    if spec.task != "classification" or spec.fusion not in ("imro", "uniform"):
        raise NotImplementedError("the torch peer covers classification with imro/uniform fusion")
    d, m, c, f = spec.dim, len(spec.modalities), spec.num_classes, spec.fusion_tokens
    shapes = {}
    for name, enc in spec.modalities:
        shapes |= _encoder_shapes(name, enc, spec)
    shapes |= {"estimator/ln/scale": (d,), "estimator/ln/bias": (d,),
               "estimator/head_hidden/kernel": (m, d, spec.mlp_dim), "estimator/head_hidden/bias": (m, spec.mlp_dim),
               "estimator/head_out/kernel": (m, spec.mlp_dim, c), "estimator/head_out/bias": (m, c),
               "critic/modality_proj/kernel": (m, d, d), "critic/modality_proj/bias": (m, d),
               "critic/label_embedding": (c, d), "head/out/kernel": (d, c), "head/out/bias": (c,),
               "token_fusion/queries": (f, d)}
    for ln in ("ln_queries", "ln_mlp", "ln_out"):
        shapes |= {f"token_fusion/{ln}/scale": (d,), f"token_fusion/{ln}/bias": (d,)}
    shapes |= {"token_fusion/mlp/fc1/kernel": (d, spec.mlp_dim), "token_fusion/mlp/fc1/bias": (spec.mlp_dim,),
               "token_fusion/mlp/fc2/kernel": (spec.mlp_dim, d), "token_fusion/mlp/fc2/bias": (d,)}
    return shapes | _attention_shapes("token_fusion/reliability_attention/attention", d, spec.num_heads,
                                      d // spec.num_heads)


class TorchIMRO(torch.nn.Module):
    """The IMRO classification model and its training loss (see the module docstring).

    Parameters live in one `ParameterDict` keyed by the Flax parameter paths, so the two models'
    parameters can be compared and copied one to one. `forward(batch)` returns the scalar loss.

    Args:
        config: full config (`model` and `loss` sections).
        input_shapes: `{modality: shape}`; a waveform's length fixes the spectrogram's frames.
    """

    def __init__(self, config, input_shapes: dict):
        super().__init__()
        self.spec = parse_model_config(config.model)
        self.loss_config = config.loss
        shapes = parameter_shapes(self.spec)
        self.params = torch.nn.ParameterDict({
            k: torch.nn.Parameter(torch.zeros(s) if k.endswith("bias") else torch.ones(s) if k.endswith("scale")
                                  else 0.02 * torch.randn(s)) for k, s in shapes.items()})
        self.buffers_ = {}
        for name, enc in self.spec.modalities:
            if isinstance(enc, SpectrogramSpec):
                filters = mel_filterbank(sample_rate=enc.sample_rate, n_fft=enc.n_fft, num_mels=enc.num_mels,
                                         fmin=enc.fmin, fmax=enc.fmax)
                n = torch.arange(enc.n_fft, dtype=torch.float32)
                frames = 1 + (input_shapes[name][-1] - enc.n_fft) // enc.hop_length
                time_positions = sinusoidal_positions(frames // enc.patch_frames, self.spec.dim)
                self.buffers_[name] = (torch.from_numpy(np.array(filters)),
                                       0.5 - 0.5 * torch.cos(2 * math.pi * n / enc.n_fft),
                                       torch.from_numpy(np.array(time_positions)))

    # -- layers
    def _ln(self, x, prefix):
        return F.layer_norm(x, x.shape[-1:], self.params[f"{prefix}/scale"], self.params[f"{prefix}/bias"], LN_EPS)

    def _dense(self, x, prefix):
        return x @ self.params[f"{prefix}/kernel"] + self.params[f"{prefix}/bias"]

    def _project(self, x, prefix, name):  # [..., T, D] -> [..., T, H, hd]
        kernel = self.params[f"{prefix}/{name}_kernel"]
        d, h, hd = kernel.shape
        return (x @ kernel.reshape(d, h * hd)).unflatten(-1, (h, hd)) + self.params[f"{prefix}/{name}_bias"]

    def _merge(self, heads, prefix):  # [..., T, H, hd] -> [..., T, D]
        kernel = self.params[f"{prefix}/out_kernel"]
        return heads.flatten(-2) @ kernel.reshape(-1, kernel.shape[-1]) + self.params[f"{prefix}/out_bias"]

    def _attention(self, q_in, kv_in, mask, prefix):
        q, k, v = (self._project(x, prefix, n).transpose(-3, -2)
                   for x, n in ((q_in, "query"), (kv_in, "key"), (kv_in, "value")))  # [B, H, T, hd]
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self._merge(heads.transpose(-3, -2), prefix)

    def _mlp(self, x, prefix):
        h = F.gelu(self._dense(x, f"{prefix}/fc1"), approximate="tanh")
        return self._dense(self._drop(h), f"{prefix}/fc2")

    def _drop(self, x):
        return F.dropout(x, self.spec.dropout, self.training) if self.spec.dropout else x

    def _block(self, x, mask, prefix):
        h = self._ln(x, f"{prefix}/ln_self")
        x = x + self._drop(self._attention(h, h, mask, f"{prefix}/self_attention"))
        return x + self._drop(self._mlp(self._ln(x, f"{prefix}/ln_mlp"), f"{prefix}/mlp"))

    # -- encoders
    def _trunk(self, x, mask, prefix):
        """Class token + blocks: (tokens, token mask, pooled, mean input-token residual)."""
        b = x.shape[0]
        x = torch.cat([self.params[f"{prefix}/trunk/cls"].expand(b, 1, -1), x], dim=1)
        full = None if mask is None else torch.cat([torch.ones(b, 1, dtype=torch.bool), mask], dim=1)
        attn_mask = None if full is None else full[:, None, None, :]
        for i in range(self.spec.depth):
            x = self._block(x, attn_mask, f"{prefix}/trunk/transformer/block_{i}")
        out = self._ln(x, f"{prefix}/trunk/transformer/ln_final")
        full = torch.ones(out.shape[:2], dtype=torch.bool) if full is None else full
        real = full[:, 1:, None].to(x.dtype)
        residual = (x[:, 1:] * real).sum(1) / real.sum(1).clamp(min=1.0)
        return out, full, out[:, 0], residual

    def _embed(self, name, enc, x):
        p = f"encoders_{name}"
        if isinstance(enc, TextSpec):
            tokens = self.params[f"{p}/embed/embedding"][x] + self.params[f"{p}/positions"][: x.shape[1]]
            return tokens, x != 0
        if isinstance(enc, VitSpec):
            b, h, w, c = x.shape
            s = enc.patch_size
            patches = x.reshape(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, -1, s * s * c)
            return self._dense(patches, f"{p}/patch_embed") + self.params[f"{p}/positions"], None
        if isinstance(enc, SpectrogramSpec):
            filters, window, time_positions = self.buffers_[name]
            frames = x.unfold(-1, enc.n_fft, enc.hop_length) * window  # [B, T, n_fft]
            spectrum = torch.fft.rfft(frames, n=enc.n_fft, dim=-1)
            log_mel = torch.log((spectrum.real ** 2 + spectrum.imag ** 2) @ filters + LOG_FLOOR)
            b, t, mels = log_mel.shape
            tp, fp = t // enc.patch_frames, mels // enc.patch_mels
            patches = log_mel[:, : tp * enc.patch_frames].reshape(b, tp, enc.patch_frames, fp, enc.patch_mels)
            patches = patches.permute(0, 1, 3, 2, 4).reshape(b, tp, fp, -1)
            tokens = (self._dense(patches, f"{p}/patch_embed") + self.params[f"{p}/freq_positions"][None, None]
                      + time_positions[None, :tp, None])
            return tokens.reshape(b, tp * fp, -1), None
        if x.ndim == 3:
            raise NotImplementedError("feature sequences are not part of the peer benchmark")
        return self._dense(x[:, None, :], f"{p}/project"), None

    @staticmethod
    def _usable(x, enc):
        if isinstance(enc, TextSpec):
            return ((x >= 0) & (x < enc.vocab_size)).flatten(1).all(-1)
        return torch.isfinite(x).flatten(1).all(-1)

    # -- reliability, fusion, loss
    @staticmethod
    def _scores(mi, entropy, present, eps):
        raw = torch.where(present, (F.relu(mi) + eps) / (F.softplus(entropy) + eps), torch.zeros_like(mi))
        total = raw.sum(-1, keepdim=True)
        return raw / torch.where(total > 0, total, torch.ones_like(total))

    @staticmethod
    def _disagreement(unimodal, weights, present):
        m = unimodal.shape[1]
        w = torch.where(present, weights, torch.zeros_like(weights))
        others = w[:, None, :] * (1.0 - torch.eye(m))
        total = others.sum(-1, keepdim=True)
        others = others / torch.where(total > 0, total, torch.ones_like(total))
        log_q = F.log_softmax(unimodal, -1)
        consensus = torch.einsum("bmn,bnc->bmc", others, log_q.exp())
        log_c = consensus.clamp(min=1e-30).log()
        kl = torch.where(consensus > 0, consensus * (log_c - log_q), torch.zeros_like(consensus)).sum(-1)
        return torch.where(present & (total[..., 0] > 0), kl.clamp(min=0.0), torch.zeros_like(kl))

    def _modality_dense(self, x, prefix):
        return torch.einsum("bmi,mio->bmo", x, self.params[f"{prefix}/kernel"]) + self.params[f"{prefix}/bias"]

    def forward(self, batch: dict, modality_dropout: bool = True) -> torch.Tensor:
        """The IMRO training loss of one batch (`imro_jax.models.imro_loss` of the forward)."""
        spec, loss_cfg = self.spec, self.loss_config
        tokens, masks, pooled, residual, present, bad = [], [], [], [], [], []
        for name, enc in spec.modalities:
            x = batch[name]
            given = batch["mask"][name]
            usable = self._usable(x, enc)
            keep = given & usable
            x = torch.where(keep.view(-1, *([1] * (x.ndim - 1))), x, torch.zeros_like(x))
            t, token_mask, p, r = self._trunk(*self._embed(name, enc, x), f"encoders_{name}")
            if isinstance(enc, TextSpec):
                keep = keep & token_mask[:, 1:].any(-1)
            tokens.append(t), masks.append(token_mask), pooled.append(p), residual.append(r)
            present.append(keep), bad.append(given & ~usable)
        n = max(t.shape[1] for t in tokens)
        tokens = torch.stack([F.pad(t, (0, 0, 0, n - t.shape[1])) for t in tokens], 1)  # [B, M, N, D]
        token_mask = torch.stack([F.pad(t, (0, n - t.shape[1])) for t in masks], 1)  # [B, M, N]
        pooled, present, bad = torch.stack(pooled, 1), torch.stack(present, 1), torch.stack(bad, 1)
        fusion_present = present
        if self.training and modality_dropout and spec.modality_dropout > 0:
            u = torch.rand(present.shape)
            kept = present & (u >= spec.modality_dropout)
            survivor = F.one_hot(torch.where(present, u, -1.0).argmax(-1), present.shape[-1]).bool()
            fusion_present = torch.where(kept.any(-1, keepdim=True), kept, survivor & present)

        # estimator: unimodal heads, label-free I, H (unfitted surprisal = 0, + agreement), R
        unimodal = self._modality_dense(F.gelu(self._modality_dense(
            self._ln(pooled, "estimator/ln"), "estimator/head_hidden"), approximate="tanh"), "estimator/head_out")
        h_y = math.log(spec.num_classes)
        log_q = F.log_softmax(unimodal, -1)
        mi = (h_y + (log_q.exp() * log_q).sum(-1)).clamp(0.0, h_y)
        entropy = torch.zeros_like(mi)
        eps = spec.reliability.eps
        if spec.reliability.agreement > 0:
            first = self._scores(mi, entropy, fusion_present, eps)
            entropy = entropy + spec.reliability.agreement * self._disagreement(
                unimodal.detach(), first.detach(), fusion_present)
        reliability = self._scores(mi, entropy, fusion_present, eps)
        if spec.fusion == "uniform":
            weights = fusion_present.float() / fusion_present.float().sum(-1, keepdim=True).clamp(min=1.0)
        else:
            weights = reliability
        valid = present.any(-1) & ~bad.any(-1)

        # reliability-aware fusion: Z = sum_m R_m softmax(Q K_m^T / sqrt(hd)) V_m W_O + b_O
        b, m = present.shape
        prefix = "token_fusion/reliability_attention/attention"
        z = self.params["token_fusion/queries"].expand(b, -1, -1)
        q = self._project(self._ln(z, "token_fusion/ln_queries"), prefix, "query")  # [B, F, H, hd]
        flat = (tokens.detach() if spec.reliability.joint_detached else tokens).reshape(b * m, n, -1)
        k, v = (self._project(flat, prefix, name).transpose(1, 2) for name in ("key", "value"))  # [BM, H, N, hd]
        q = q.transpose(1, 2).repeat_interleave(m, dim=0)  # [BM, H, F, hd]
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=token_mask.reshape(b * m, 1, 1, n))
        heads = heads.reshape(b, m, *heads.shape[1:]).transpose(2, 3)  # [B, M, F, H, hd]
        fusion_weights = weights.detach() if spec.reliability.joint_detached else weights
        weighted = torch.einsum("bm,bmfhk->bfhk", fusion_weights, heads)
        z = z + self._drop(self._merge(weighted, prefix))
        z = z + self._drop(self._mlp(self._ln(z, "token_fusion/ln_mlp"), "token_fusion/mlp"))
        fused = self._ln(z, "token_fusion/ln_out")
        logits = self._dense(fused.mean(1), "head/out")
        rel = spec.reliability
        beta = rel.decision
        joint = None
        if beta > 0 and registry.get_fusion(spec.fusion).reliability_vote:  # the R-weighted vote of the heads
            joint = logits * valid[:, None]
            r = weights.detach()
            if rel.vote_power != 1.0:  # tempered: R^p / sum R^p over the present modalities
                r = torch.where(r > 0, r.clamp(min=1e-30) ** rel.vote_power, torch.zeros_like(r))
                r = r / r.sum(-1, keepdim=True).clamp(min=1e-30)
            if rel.decision_gate > 0:  # per sample: beta (1 - exp(-max_m H / tau))
                worst = torch.where(fusion_present, entropy.detach(), torch.zeros_like(entropy)).amax(-1).clamp(min=0.0)
                beta = beta * -torch.expm1(-worst / rel.decision_gate)[:, None]
            vote = torch.einsum("bm,bmc->bc", r, F.log_softmax(unimodal, -1))
            logits = (1.0 - beta) * F.log_softmax(logits, -1) + beta * vote
        logits = logits * valid[:, None]

        # label critic (its scores are the model's output; the Barber-Agakov loss does not read them)
        label = batch["label"]
        g = self._modality_dense(pooled, "critic/modality_proj")
        critic = torch.einsum("imk,jk->mij", g, self.params["critic/label_embedding"][label]) / math.sqrt(g.shape[-1])

        # loss
        use = present & valid[:, None]
        nll = F.cross_entropy(unimodal.reshape(b * m, -1), label.repeat_interleave(m), reduction="none").view(b, m)
        unimodal_loss = torch.where(use, nll, 0.0).sum(-1).mean()
        validf = valid.float()
        fused_loss = (F.cross_entropy(logits, label, reduction="none") * validf).sum() / validf.sum().clamp(min=1.0)
        if loss_cfg.mi_bound == "infonce":
            raise NotImplementedError("the torch peer covers loss.mi_bound='barber_agakov'")
        del critic
        count = use.sum(0).clamp(min=1).float()
        bounds = (h_y + torch.where(use, -nll, -h_y).mean(0)) * b / count  # [M]
        regularizer = (use.float() * (loss_cfg.lambda1 * entropy - loss_cfg.lambda2 * bounds)).sum(-1).mean()
        loss = fused_loss + regularizer + loss_cfg.unimodal_weight * unimodal_loss
        if joint is not None:  # the token fusion head's own loss beside the vote's (loss.joint_weight)
            joint_loss = (F.cross_entropy(joint, label, reduction="none") * validf).sum() / validf.sum().clamp(min=1.0)
            loss = loss + loss_cfg.joint_weight * joint_loss
        return loss


def torch_batch(numpy_batch: dict) -> dict:
    """The numpy batch dict as torch tensors (int32 ids and labels as int64, for indexing)."""
    def convert(x):
        x = np.asarray(x)
        return torch.from_numpy(x.astype(np.int64) if x.dtype == np.int32 else x)
    return {k: ({n: convert(v) for n, v in x.items()} if isinstance(x, dict) else convert(x))
            for k, x in numpy_batch.items()}


def torch_optimizer(model: TorchIMRO, config: ml_collections.ConfigDict):
    """AdamW and the warmup-cosine schedule of `config.optimizer`, as `imro_jax.train.optim`.

    Weight decay applies to the parameters with >= 2 dimensions not named bias or scale; the
    learning rate is `peak * factor(k)` with `factor` = k / warmup during warm-up, then
    `end + (1 - end) (1 + cos(pi progress)) / 2` (`optax.warmup_cosine_decay_schedule`).

    Returns:
        `(optimizer, scheduler)`.
    """
    opt = config.optimizer
    decays = {k: p.ndim >= 2 and k.rsplit("/", 1)[-1] not in ("bias", "scale") for k, p in model.params.items()}
    decay = [p for k, p in model.params.items() if decays[k]]
    rest = [p for k, p in model.params.items() if not decays[k]]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": opt.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}],
                                  lr=opt.learning_rate, betas=(opt.b1, opt.b2), eps=opt.eps, foreach=True)
    total, warmup, end = config.train.num_steps, opt.warmup_steps, opt.end_learning_rate_ratio

    def factor(k):
        if k < warmup:
            return k / warmup
        progress = min((k - warmup) / max(total - warmup, 1), 1.0)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def load_flax_params(model: TorchIMRO, params) -> None:
    """Copies a Flax `params` tree into the torch model (same paths, float32)."""
    with torch.no_grad():
        for path, leaf in jax.tree_util.tree_leaves_with_path(params):
            model.params["/".join(p.key for p in path)].copy_(torch.from_numpy(np.array(leaf, np.float32)))


def peer_model(config: ml_collections.ConfigDict, input_shapes: dict, params) -> TorchIMRO:
    """A `TorchIMRO` of `config` holding the Flax `params`, in train mode.

    Args:
        config: full config (model, loss).
        input_shapes: `{batch key: shape}` of the batches it will see (waveform lengths).
        params: a Flax `params` tree of the same model (e.g. `StepBench.state.params`).
    """
    model = TorchIMRO(config, input_shapes)
    load_flax_params(model, params)
    return model.train()


def make_train_step(model: TorchIMRO, config: ml_collections.ConfigDict, *,
                    compile: bool = False) -> Callable[[dict], torch.Tensor]:
    """`step(torch batch) -> loss`: forward, backward, global-norm clipping, AdamW, schedule.

    Args:
        model: the peer (`peer_model`); the step updates its parameters in place.
        config: `optimizer` (incl. `grad_clip_norm`) and `train.num_steps` sections.
        compile: run the forward through `torch.compile` (inductor; the first call compiles).
    """
    optimizer, scheduler = torch_optimizer(model, config)
    forward = torch.compile(model) if compile else model
    clip = config.optimizer.grad_clip_norm

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        loss = forward(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)
        optimizer.step()
        scheduler.step()
        return loss

    return step


# ---------------------------------------------------------------------------------------------
# Checks: the peer computes our function


def check_parameter_shapes(config: ml_collections.ConfigDict, numpy_batch: dict) -> int:
    """Checks the peer's `{path: shape}` against the Flax model's; returns the parameter count.

    Raises:
        RuntimeError: the two differ (the message lists the differing entries).
    """
    fns = model_fns.model_functions(config)
    params = nn_flax.unbox(jax.eval_shape(lambda: fns.init_fn(jax.random.key(0), numpy_batch)))["params"]
    ours = {"/".join(p.key for p in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
    theirs = parameter_shapes(parse_model_config(config.model))
    if ours != theirs:
        raise RuntimeError(f"parameter shapes differ (path, shape): {sorted(set(ours.items()) ^ set(theirs.items()))}")
    return sum(math.prod(shape) for shape in ours.values())


def first_step_losses(config: ml_collections.ConfigDict, numpy_batch: dict) -> tuple[float, float, float]:
    """`(ours op by op, ours jitted, torch)` first-step loss on the same params, dropout off.

    Op by op (`jax.disable_jit`) our loss equals torch's to float32 rounding; the jitted step
    differs by ~1e-5 relative, the deviation of XLA's fused kernels (its approximations of
    tanh and exp), not of the model.
    """
    config = config_lib.with_overrides(config, {"model.dropout": 0.0, "model.modality_dropout": 0.0})
    bench = step_bench.build_step_bench("check", config, numpy_batch, devices=jax.devices()[:1])
    model = peer_model(config, {k: np.shape(v) for k, v in numpy_batch.items()}, bench.state.params)
    loss_fn = model_fns.model_functions(config).loss_fn
    with jax.disable_jit():
        eager = float(loss_fn(bench.state.params, numpy_batch, jax.random.key(0), 0)[0])
    jitted = float(bench.train()["loss"])
    with torch.no_grad():
        return eager, jitted, float(model(torch_batch(numpy_batch)))


def _register_cpu_sdpa_flops() -> None:
    """Teaches `FlopCounterMode` the CPU flash-attention kernels (it knows only the GPU ones).

    Forward: torch's SDPA formula (QK^T and PV). Backward: the gradients of those two products,
    2 x the forward: model FLOPs, as `imro_jax.perf.flops` counts them (torch's own backward
    formula adds the flash kernel's recomputation of QK^T, a hardware FLOP, 2.5 x the forward).
    """
    from torch.utils import flop_counter

    aten = torch.ops.aten
    if aten._scaled_dot_product_flash_attention_for_cpu in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    @flop_counter.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return 2 * flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def torch_train_flops(model: TorchIMRO, batch: dict) -> int:
    """Matmul FLOPs of one forward + backward of `model` on a torch batch, by `FlopCounterMode`.

    The gradients it leaves are cleared; the parameters are not updated.
    """
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_sdpa_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        model(batch).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def torch_matmul_probe(size: int) -> Callable[[], torch.Tensor]:
    """`call()` of a float32 `[size, size] @ [size, size]` in torch; 2 size^3 FLOPs."""
    a, b = (torch.from_numpy(x) for x in np.random.default_rng(0).standard_normal((2, size, size), dtype=np.float32))
    return lambda: a @ b
