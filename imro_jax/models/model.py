"""The IMRO model (paper Sec. 4, Fig. 1): encoders -> reliability estimator -> fusion -> head.

``build_model(config.model)`` returns an :class:`IMROModel` (Flax Linen). Its
``__call__(batch, *, train)`` returns a :class:`ModelOutput`; dropout (and the Gaussian
embedding's sampling) use the rng stream ``"dropout"``.

Missing and bad inputs (per sample b, modality m, in sorted name order):

* ``present[b, m] = mask[b, m] and usable and has content``: usable = finite values / token ids
  in range (see :mod:`imro_jax.models.validation`), content = at least one non-padding text token.
* The input of every non-present modality is replaced by zeros before encoding, and its
  reliability is exactly 0, so it cannot change sample b's output (nor can a NaN in it).
* ``valid[b]`` is False when no modality is present or, with ``model.nonfinite="error"``, when
  sample b had an unusable (NaN/Inf, out-of-range) input in a modality marked present. Eagerly
  (outside ``jit``) these cases raise ``ValueError`` instead (:func:`validate_batch`); under
  ``jit`` the invalid samples get ``logits = 0``, ``reliability = 0`` and ``valid = False``, and
  :func:`imro_jax.models.imro_loss` leaves them out.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct

from imro_jax.batch import CAPTION, LABEL, MASK
from imro_jax.models.encoders import TrunkSpec, make_encoder
from imro_jax.models.fusion import TokenFusion, decision_fusion
from imro_jax.models.registry import get_fusion
from imro_jax.models.heads import CaptionDecoder, PredictionHead, greedy_decode
from imro_jax.models.reliability import LabelCritic, ReliabilityEstimator, label_entropy
from imro_jax.models.spec import ModelSpec, TextSpec, parse_model_config
from imro_jax.models.validation import usable_inputs, validate_batch


@struct.dataclass
class ModelOutput:
    """Everything the loss, the metrics and the robustness evaluation read from a forward pass.

    Shapes: B batch, M modalities (sorted names, ``modalities``), C classes, D model width,
    F fusion tokens, L caption length, V caption vocabulary.

    Attributes:
      logits: ``[B, C]`` class logits (``evidential``: log of the combined Dirichlet alpha, so
        softmax is its expected probability); ``[B]`` regression prediction; ``[B, L, V]``
        teacher-forced caption logits. Zero where ``valid`` is False.
      reliability: ``[B, M]`` the modality weights used by the fusion, on the simplex over the
        present modalities (absent: 0). ``imro``: R from the estimator; ``uniform``/``concat``/
        ``late``: 1/M (nominal for ``concat``); ``energy``: normalised relu(energy confidence);
        ``evidential``: normalised belief mass ``1 - u_m``.
      entropy: ``[B, M]`` the estimator's H in nats (chosen by ``model.reliability.entropy``).
      mi: ``[B, M]`` the estimator's label-free I = H(Y) - H(q(y | x_m)) in nats.
      unimodal_logits: ``[B, M, C]`` unimodal head outputs (regression: ``[B, M, 2]`` mean and
        log-variance; generation: ``[B, M, V]`` bag-of-words logits).
      present: bool ``[B, M]`` modalities actually used per sample.
      valid: bool ``[B]`` whether the sample's prediction is defined (see module docstring).
      pooled: ``[B, M, D]`` per-modality pooled (class-token) embeddings.
      fused: ``[B, F, D]`` fused tokens (token fusions), None for decision fusions.
      joint_logits: the token fusion head's own prediction before the reliability vote is mixed
        in (``imro`` with ``model.reliability.decision > 0``), same shape as ``logits``; None where
        there is no vote (it would equal ``logits``). ``loss.joint_weight`` trains it on its own.
      critic_scores: ``[M, B, B]`` label-critic scores ``f(x_m,i, y_j)`` when the batch has a
        label (classification/regression), else None; for the InfoNCE term of the loss.
      embedding_mean, embedding_log_var: ``[B, M, D]`` the Gaussian embedding
        (``reliability.entropy="gaussian"``), else None.
      modalities: the modality names, in order (static).
      task, fusion: ``model.task`` and ``model.fusion`` (static; select the loss pieces).
      label_entropy: H(Y) in nats used by the MI estimates (static).
    """

    logits: jax.Array
    reliability: jax.Array
    entropy: jax.Array
    mi: jax.Array
    unimodal_logits: jax.Array
    present: jax.Array
    valid: jax.Array
    pooled: jax.Array
    fused: jax.Array | None
    joint_logits: jax.Array | None
    critic_scores: jax.Array | None
    embedding_mean: jax.Array | None
    embedding_log_var: jax.Array | None
    modalities: tuple[str, ...] = struct.field(pytree_node=False)
    task: str = struct.field(pytree_node=False)
    fusion: str = struct.field(pytree_node=False)
    label_entropy: float = struct.field(pytree_node=False)


def _pad_tokens(x: jax.Array, length: int) -> jax.Array:
    """Zero-pads axis 1 of ``[batch, tokens, ...]`` to ``length``."""
    pad = [(0, 0)] * x.ndim
    pad[1] = (0, length - x.shape[1])
    return jnp.pad(x, pad)


def _zero_unless(flag: jax.Array, x: jax.Array) -> jax.Array:
    """``x`` where the per-sample ``flag [batch]`` is True, else 0."""
    return jnp.where(flag.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros((), x.dtype))


class IMROModel(nn.Module):
    """Modality encoders, reliability estimator, fusion and task head (see module docstring)."""

    spec: ModelSpec

    def setup(self):
        s = self.spec
        trunk = TrunkSpec(s.dim, s.num_heads, s.mlp_dim, s.depth, s.dropout, s.remat, s.attention)
        self.encoders = {name: make_encoder(enc, trunk) for name, enc in s.modalities}
        self.estimator = ReliabilityEstimator(s)
        if s.task != "generation":
            self.critic = LabelCritic(s, s.dim)
        if get_fusion(s.fusion).kind == "token":
            self.token_fusion = TokenFusion(s)
            if s.task == "generation":
                self.decoder = CaptionDecoder(s.decoder, s.num_heads, s.mlp_dim, s.dropout, s.remat, s.attention)
            else:
                self.head = PredictionHead(s.num_outputs if s.task == "classification" else 1)

    def _encode(self, batch: dict, train: bool):
        """Encodes every modality: tokens ``[B, M, N, D]``, token mask, pooled ``[B, M, D]``,
        presence and unusable-input flags ``[B, M]``, and the pre-LayerNorm mean input-token
        residuals ``[B, M, D]`` (the encodings the reliability statistics score)."""
        s = self.spec
        first = batch[s.modality_names[0]]
        batch_size = first.shape[0]
        tokens, token_masks, pooled, present, bad, residual = [], [], [], [], [], []
        for name, enc_spec in s.modalities:
            x = jnp.asarray(batch[name])
            given = jnp.asarray(batch[MASK][name], bool) if MASK in batch else jnp.ones(batch_size, bool)
            usable = usable_inputs(x, enc_spec)
            keep = given & usable
            encoded = self.encoders[name](_zero_unless(keep, x), train=train)
            if isinstance(enc_spec, TextSpec):
                keep = keep & jnp.any(encoded.mask[:, 1:], axis=-1)
            tokens.append(encoded.tokens)
            token_masks.append(encoded.mask)
            pooled.append(encoded.pooled)
            residual.append(encoded.residual)
            present.append(keep)
            bad.append(given & ~usable)
        length = max(t.shape[1] for t in tokens)
        tokens = jnp.stack([_pad_tokens(t, length) for t in tokens], axis=1)  # [B, M, N, D]
        token_mask = jnp.stack([_pad_tokens(m, length) for m in token_masks], axis=1)  # [B, M, N]
        return (tokens, token_mask, jnp.stack(pooled, 1), jnp.stack(present, 1), jnp.stack(bad, 1),
                jnp.stack(residual, 1))

    def _caption(self, batch):
        caption = jnp.asarray(batch[CAPTION])
        ok = jnp.all((caption >= 0) & (caption < self.spec.decoder.vocab_size), axis=-1)
        return jnp.where(ok[:, None], caption, 0), ok

    def __call__(self, batch: dict, *, train: bool) -> ModelOutput:
        """Forward pass.

        Args:
          batch: the batch dict (see :mod:`imro_jax.batch`); ``caption`` is required for
            ``task="generation"`` (teacher forcing), ``label`` is optional (it only adds
            ``critic_scores``).
          train: dropout and stochastic embeddings on.

        Returns:
          :class:`ModelOutput`.
        """
        s = self.spec
        validate_batch(batch, s)
        if s.task == "generation" and CAPTION not in batch:
            raise ValueError(
                "task 'generation' needs batch['caption'] (int[batch, length], 0 = padding) for "
                "teacher forcing; use imro_jax.models.generate to decode without one"
            )
        tokens, token_mask, pooled, present, bad, residual = self._encode(batch, train)
        fusion_present = present
        if train and s.modality_dropout > 0:
            fusion_present = drop_modalities(self.make_rng("dropout"), present, s.modality_dropout)
        estimate = self.estimator(pooled, fusion_present, train=train, encoding=residual)
        valid = jnp.any(present, axis=-1)
        if s.nonfinite == "error":
            valid = valid & ~jnp.any(bad, axis=-1)

        fused = joint = None
        if get_fusion(s.fusion).kind == "token":
            weights = self._token_weights(estimate, fusion_present)
            has_vote = (s.task != "generation" and s.reliability.decision > 0
                        and get_fusion(s.fusion).reliability_vote)
            fusion_tokens, fusion_weights = tokens, weights
            if s.reliability.joint_detached and has_vote:  # neither the tokens nor R carry the joint head's
                # gradient (without a vote the token fusion is the prediction, and this never applies)
                fusion_tokens, fusion_weights = jax.lax.stop_gradient((tokens, weights))
            fused = self.token_fusion(fusion_tokens, token_mask, fusion_weights, fusion_present, train=train)
            if s.task == "generation":
                caption, caption_ok = self._caption(batch)
                valid = valid & caption_ok
                logits = self.decoder(fused, caption, train=train)
            else:
                logits = self.head(fused)
                if has_vote:
                    joint = logits
                    beta = vote_weight(s.reliability.decision, s.reliability.decision_gate, estimate.entropy,
                                       fusion_present)
                    logits = reliability_vote(logits, estimate.unimodal, weights, beta, s.task,
                                              power=s.reliability.vote_power)
        else:
            logits, weights = decision_fusion(s.fusion, estimate.unimodal, fusion_present)
        if s.task == "regression":
            logits = logits[:, 0]
            joint = None if joint is None else joint[:, 0]

        critic_scores = None
        if s.task != "generation" and (LABEL in batch or self.is_initializing()):
            label = batch[LABEL] if LABEL in batch else jnp.zeros(pooled.shape[0], jnp.int32)
            critic_scores = self.critic(pooled, jnp.asarray(label))
            if LABEL not in batch:
                critic_scores = None

        return ModelOutput(
            logits=_zero_unless(valid, logits),
            reliability=weights * valid[:, None],
            entropy=estimate.entropy,
            mi=estimate.mi,
            unimodal_logits=estimate.unimodal,
            present=present,
            valid=valid,
            pooled=pooled,
            fused=fused,
            joint_logits=None if joint is None else _zero_unless(valid, joint),
            critic_scores=critic_scores,
            embedding_mean=estimate.embedding_mean,
            embedding_log_var=estimate.embedding_log_var,
            modalities=s.modality_names,
            task=s.task,
            fusion=s.fusion,
            label_entropy=label_entropy(s),
        )

    def _token_weights(self, estimate, present: jax.Array) -> jax.Array:
        """The weights the registry's token fusion puts on each modality (R for ``imro``)."""
        return get_fusion(self.spec.fusion).token_weights(estimate.reliability, present)

    def encodings(self, batch: dict) -> tuple[jax.Array, jax.Array]:
        """Eval-mode encodings float32 ``[B, M, D]`` (each modality's mean input-token residual before
        its encoder's final LayerNorm) and presence bool ``[B, M]``: what the reliability
        statistics are fitted on (:mod:`imro_jax.models.statistics`)."""
        validate_batch(batch, self.spec)
        _, _, _, present, _, residual = self._encode(batch, False)
        return residual.astype(jnp.float32), present

    def fuse(self, batch: dict) -> jax.Array:
        """Fused tokens ``[B, F, D]`` for decoding (eval mode)."""
        validate_batch(batch, self.spec)
        tokens, token_mask, pooled, present, _, residual = self._encode(batch, False)
        estimate = self.estimator(pooled, present, train=False, encoding=residual)
        weights = self._token_weights(estimate, present)
        return self.token_fusion(tokens, token_mask, weights, present, train=False)

    def decode(self, context: jax.Array, prefix: jax.Array) -> jax.Array:
        """Next-token logits ``[B, L, V]`` for a prefix (eval mode)."""
        return self.decoder(context, prefix, train=False)


def vote_weight(beta: float, gate_nats: float, entropy: jax.Array, present: jax.Array) -> float | jax.Array:
    r"""The vote's weight in the prediction: ``beta``, or with a gate ``tau > 0`` per sample

    .. math::  \beta_b = \beta \left(1 - e^{-\max_{m \in present(b)} H_{bm} / \tau}\right),

    held constant (stop-gradient). ``H`` is the estimator's entropy in nats (excess surprisal plus
    disagreement for the default estimator: about 0 for a sample whose modalities all look like clean
    training data), so such a sample is predicted by the joint head and one with a flagged modality by
    the vote.

    Args:
      beta: the vote's weight in [0, 1].
      gate_nats: ``tau`` in nats; 0 turns the gate off (returns ``beta``).
      entropy: ``[B, M]`` the estimator's H.
      present: bool ``[B, M]``.

    Returns:
      ``beta`` (gate off) or float32 ``[B, 1]``.
    """
    if gate_nats <= 0:
        return beta
    worst = jnp.max(jnp.where(present, jax.lax.stop_gradient(entropy).astype(jnp.float32), 0.0), axis=-1)
    return (beta * -jnp.expm1(-jnp.maximum(worst, 0.0) / gate_nats))[:, None]


def reliability_vote(joint: jax.Array, unimodal: jax.Array, weights: jax.Array, beta: float | jax.Array,
                     task: str, power: float = 1.0) -> jax.Array:
    r"""The prediction mixed with the reliability-weighted vote of the unimodal heads.

    .. math::

        \text{classification: } (1 - \beta) \log p_{joint}(y) + \beta \sum_m w_m \log q(y \mid x_m),
        \qquad \text{regression: } (1 - \beta) \mu_{joint} + \beta \sum_m w_m \mu_m,
        \qquad w_m = R_m^p / \textstyle\sum_{m'} R_{m'}^p,

    with the weights ``R`` (on the simplex over the present modalities, so an absent modality,
    R = 0, casts no vote) held constant (stop-gradient): the vote trains the heads, not the
    weights. ``p = 1`` votes with R itself; ``p < 1`` tempers it (a log-linear pool with R
    weights counts a confident head twice: once in R, once in its sharp log q).
    The classification output is a log-linear pool (a weighted product of experts); softmax
    renormalises it. The vote degrades as late fusion does when modalities go missing, which
    the token fusion alone does not (``experiments/results/select_reliability``).

    Args:
      joint: the fused head's output ``[B, C]`` (logits) or ``[B, 1]`` (regression mean).
      unimodal: ``[B, M, C]`` unimodal logits, or ``[B, M, 2]`` (mean, log-variance).
      weights: ``[B, M]`` the fusion's R.
      beta: the vote's weight in [0, 1], a float or per sample ``[B, 1]`` (:func:`vote_weight`).
      task: ``"classification"`` or ``"regression"``.
      power: the tempering power ``p > 0``.

    Returns:
      The pooled output, same shape and dtype as ``joint``.
    """
    r = jax.lax.stop_gradient(weights).astype(jnp.float32)
    if power != 1.0:
        tempered = jnp.where(r > 0, jnp.maximum(r, 1e-30) ** power, 0.0)
        total = jnp.sum(tempered, axis=-1, keepdims=True)
        r = jnp.where(total > 0, tempered / jnp.where(total > 0, total, 1.0), 0.0)
    if task == "regression":
        vote = jnp.einsum("bm,bm->b", r, unimodal[..., 0].astype(jnp.float32))[:, None]
        pooled = (1.0 - beta) * joint.astype(jnp.float32) + beta * vote
    else:
        vote = jnp.einsum("bm,bmc->bc", r, jax.nn.log_softmax(unimodal.astype(jnp.float32), axis=-1))
        pooled = (1.0 - beta) * jax.nn.log_softmax(joint.astype(jnp.float32), axis=-1) + beta * vote
    return pooled.astype(joint.dtype)


def drop_modalities(key: jax.Array, present: jax.Array, rate: float) -> jax.Array:
    """Modality dropout: hides each present modality with probability ``rate``, per sample,
    but always keeps at least one (a uniformly chosen present one) where any is present.

    Args:
      key: PRNG key.
      present: bool ``[batch, modality]``.
      rate: drop probability in [0, 1).

    Returns:
      bool ``[batch, modality]``, a subset of ``present``.
    """
    u = jax.random.uniform(key, present.shape)
    kept = present & (u >= rate)
    # The present modality with the largest u survives: uniform among the present ones.
    survivor = jax.nn.one_hot(jnp.argmax(jnp.where(present, u, -1.0), axis=-1), present.shape[-1], dtype=bool)
    return jnp.where(jnp.any(kept, axis=-1, keepdims=True), kept, survivor & present)


def build_model(model_config: Any) -> IMROModel:
    """Builds the model from the ``model`` config section (validated by
    :func:`imro_jax.models.spec.parse_model_config`)."""
    return IMROModel(parse_model_config(model_config))


def generate(model: IMROModel, variables: Any, batch: dict) -> jax.Array:
    """Greedy captions ``int32[B, decoder.max_len]`` (0 after the end), one ``lax.scan``.

    jit-compatible: ``jax.jit(functools.partial(generate, model))(variables, batch)``.
    """
    spec = model.spec
    if spec.task != "generation":
        raise ValueError(f"generate needs task='generation', the model's task is {spec.task!r}")
    context = model.apply(variables, batch, method=IMROModel.fuse)
    return greedy_decode(
        lambda c, p: model.apply(variables, c, p, method=IMROModel.decode), context, spec.decoder.max_len
    )
