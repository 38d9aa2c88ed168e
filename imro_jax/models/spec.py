"""Typed, validated model specification parsed from the ``model`` section of a config.

``parse_model_config(config.model)`` turns the ``ml_collections.ConfigDict`` into frozen
dataclasses (hashable, so they can be Flax module attributes). It raises a ``ValueError``
naming the key for every missing, unknown or ill-typed entry, so that every key in a config is
one the code uses.

The ``model`` section::

    task          "classification" | "regression" | "generation"
    fusion        "imro" | "uniform" | "concat" | "late" | "energy" | "evidential"
    dim, num_heads, mlp_dim, depth, dropout      Transformer sizes (encoders and decoder)
    fusion_tokens number of learned fusion query tokens
    nonfinite     "error" | "as_missing"  (NaN/Inf in a modality: raise, or drop that modality
                  for that sample)
    reliability   {entropy: "surprisal" | "predictive" | "gaussian" | "embedding", eps: float,
                   and optionally normalize, agreement, shrinkage, rank, quantile,
                   fit_examples (see :class:`ReliabilitySpec`)}
    modalities    {name: {encoder: "text" | "vit" | "spectrogram" | "feature", ...}}
    num_classes   (classification only)
    label_variance (regression only) Var(Y) of the training labels, gives H(Y) for the MI
    decoder       (generation only) {vocab_size, max_len, depth}
    remat         bool, rematerialise every Transformer block in the backward pass (saves
                  activation memory for ~one extra forward; optional, default False)
    modality_dropout  probability in [0, 1) that training hides a present modality of a sample
                  from the fusion (at least one stays); every fusion, so comparisons stay fair
                  (optional, default 0)

Implementation options (optional keys, not in the shipped configs, whose run hashes they would
change; set them in a config file or with ``benchlib.variant``; each computes the same function,
the defaults are the reference numerics, and each has an equivalence test in ``tests/models/test_attention_options.py``;
measurements in ``experiments/bench/NOTES.md``):

    attention_impl      "xla" (default) | "cudnn": the Transformer blocks' attention kernel
                        (cuDNN: GPU and bfloat16/float16 only; see
                        :mod:`imro_jax.models.transformer`)
    head_major_qkv      bool: attention in head-major layout with one fused QKV product
    absorbed_fusion_kv  bool: the fusion attention with W_K, W_V absorbed into the F queries
                        instead of projecting every modality token (see
                        :class:`imro_jax.models.fusion.ReliabilityAwareAttention`)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from imro_jax.models import registry
from imro_jax.models.transformer import ATTENTION_IMPLS, AttentionOptions

TASKS = ("classification", "regression", "generation")
FUSIONS = tuple(registry.FUSIONS)
TOKEN_FUSIONS = registry.TOKEN_FUSIONS
DECISION_FUSIONS = registry.DECISION_FUSIONS
ENTROPY_SOURCES = ("surprisal", "predictive", "gaussian", "embedding")
NONFINITE_POLICIES = ("error", "as_missing")


@dataclasses.dataclass(frozen=True)
class TextSpec:
    """Token ids ``int32[batch, tokens]`` with 0 = padding; learned positions up to ``max_len``."""

    vocab_size: int
    max_len: int

    def describe(self) -> str:
        return f"int[batch, tokens <= {self.max_len}] with ids in [0, {self.vocab_size})"


@dataclasses.dataclass(frozen=True)
class VitSpec:
    """Images ``float[batch, image_size, image_size, channels]`` cut into square patches."""

    image_size: int
    patch_size: int
    channels: int

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(
                f"vit: image_size={self.image_size} is not divisible by patch_size={self.patch_size}"
            )

    def describe(self) -> str:
        return f"float[batch, {self.image_size}, {self.image_size}, {self.channels}]"


@dataclasses.dataclass(frozen=True)
class SpectrogramSpec:
    """Raw waveforms ``float[batch, samples]`` (``input="waveform"``) turned into a log-mel
    spectrogram on the device, or precomputed log-mel ``float[batch, frames, num_mels]``
    (``input="spectrogram"``); cut into ``patch_frames x patch_mels`` time-frequency patches."""

    input: str
    sample_rate: int
    n_fft: int
    hop_length: int
    num_mels: int
    fmin: float
    fmax: float
    patch_frames: int
    patch_mels: int

    def __post_init__(self):
        if self.input not in ("waveform", "spectrogram"):
            raise ValueError(f"spectrogram: input must be 'waveform' or 'spectrogram', got {self.input!r}")
        if self.num_mels % self.patch_mels:
            raise ValueError(
                f"spectrogram: num_mels={self.num_mels} is not divisible by patch_mels={self.patch_mels}"
            )

    def describe(self) -> str:
        if self.input == "waveform":
            return f"float[batch, samples >= {self.n_fft}] (waveform at {self.sample_rate} Hz)"
        return f"float[batch, frames, {self.num_mels}] (log-mel spectrogram)"


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """A feature vector ``float[batch, input_dim]`` (one token) or a feature sequence
    ``float[batch, steps, input_dim]`` (one token per step, sinusoidal positions)."""

    input_dim: int

    def describe(self) -> str:
        return f"float[batch, {self.input_dim}] or float[batch, steps, {self.input_dim}]"


ENCODER_SPECS = {"text": TextSpec, "vit": VitSpec, "spectrogram": SpectrogramSpec, "feature": FeatureSpec}


@dataclasses.dataclass(frozen=True)
class ReliabilitySpec:
    """Reliability estimator choices (see :mod:`imro_jax.models.reliability`).

    Attributes:
      entropy: the H of R = I / (H + eps): ``"surprisal"`` (excess surprisal of the modality's
        encoding under statistics fitted on clean training data), or the unimodal head's
        ``"predictive"`` entropy (the paper-literal estimator), ``"gaussian"``, ``"embedding"``.
      eps: the epsilon of R.
      normalize: False: raw I / (H + eps), not on the simplex (an ablation).
      agreement: weight (>= 0) of the disagreement ``KL(consensus of the others || q(y|x_m))``
        in nats, added to H; 0 turns cross-modal agreement off.
      shrinkage: covariance shrinkage of the fitted embedding density, in [0, 1].
      rank: 0 (full covariance) or the rank of its probabilistic-PCA structure.
      quantile: the clean quantile beyond which surprisal counts as excess, in (0, 1).
      fit_examples: at most this many training examples are read by the statistics pass.
      decision: ``imro`` only: the weight ``beta`` in [0, 1] of the reliability-weighted vote of the
        unimodal heads in the prediction, ``(1 - beta) log p_joint + beta sum_m R_m log q_m``
        (classification; regression mixes the means); 0 is the paper's token fusion alone.
      vote_power: the power ``p > 0`` the vote tempers R with: each present modality votes with
        ``R_m^p / sum_m' R_m'^p`` (1: R itself; below 1 flattens the weights towards the present
        modalities, so one confident head counts less).
      decision_gate: ``tau`` in nats, 0 (default) = off. Otherwise the vote's weight is gated per
        sample by how atypical its worst modality looks: ``beta_b = beta (1 - exp(-max_m H_bm / tau))``
        over the present modalities (H: the estimator's entropy, excess surprisal plus disagreement), so
        a sample whose modalities all look clean is predicted by the joint head and a sample with a
        flagged modality by the vote.
      joint_detached: the token fusion reads the encoders' tokens and R through a stop-gradient, so its
        head (trained by ``loss.joint_weight``) cannot change the encoders, the unimodal heads and
        hence the vote: the joint head becomes an extra expert pooled with an unchanged vote. Needs
        ``decision > 0`` (without the vote the token fusion is the prediction, and detaching it would
        leave the encoders without the task's gradient); ignored by fusions without the vote.
    """

    entropy: str
    eps: float
    normalize: bool = True
    agreement: float = 0.0
    shrinkage: float = 0.1
    rank: int = 0
    quantile: float = 0.99
    fit_examples: int = 4096
    decision: float = 0.0
    vote_power: float = 1.0
    decision_gate: float = 0.0
    joint_detached: bool = False

    def __post_init__(self):
        checks = (
            ("eps", self.eps > 0), ("agreement", self.agreement >= 0), ("shrinkage", 0 <= self.shrinkage <= 1),
            ("rank", isinstance(self.rank, int) and self.rank >= 0), ("quantile", 0 < self.quantile < 1),
            ("fit_examples", isinstance(self.fit_examples, int) and self.fit_examples >= 2),
            ("decision", 0 <= self.decision <= 1), ("vote_power", self.vote_power > 0),
            ("decision_gate", self.decision_gate >= 0), ("joint_detached", isinstance(self.joint_detached, bool)),
        )
        for key, ok in checks:
            if not ok:
                raise ValueError(f"model.reliability.{key} has an invalid value {getattr(self, key)!r} "
                                 "(eps > 0, agreement >= 0, shrinkage in [0, 1], rank int >= 0, "
                                 "quantile in (0, 1), fit_examples int >= 2, decision in [0, 1], vote_power > 0, decision_gate >= 0, "
                                 "joint_detached a bool)")
        if self.joint_detached and self.decision == 0:
            raise ValueError("model.reliability.joint_detached=True needs model.reliability.decision > 0: without "
                             "the vote the token fusion is the prediction, and detaching it would leave the "
                             "encoders without the task's gradient")


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
    """Caption decoder: output vocabulary (0 = padding/end), maximum length, number of blocks."""

    vocab_size: int
    max_len: int
    depth: int


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The whole model. ``modalities`` is sorted by name (the model's modality order)."""

    task: str
    fusion: str
    dim: int
    num_heads: int
    mlp_dim: int
    depth: int
    dropout: float
    fusion_tokens: int
    nonfinite: str
    reliability: ReliabilitySpec
    modalities: tuple[tuple[str, Any], ...]
    num_classes: int | None = None
    label_variance: float | None = None
    decoder: DecoderSpec | None = None
    remat: bool = False
    modality_dropout: float = 0.0
    attention_impl: str = "xla"
    head_major_qkv: bool = False
    absorbed_fusion_kv: bool = False

    @property
    def attention(self) -> AttentionOptions:
        """The Transformer blocks' :class:`~imro_jax.models.transformer.AttentionOptions`."""
        return AttentionOptions(self.attention_impl, self.head_major_qkv)

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.modalities)

    @property
    def num_outputs(self) -> int:
        """Width of a unimodal/fused prediction: classes, 2 (mean, log-variance) or vocabulary."""
        if self.task == "classification":
            return self.num_classes
        if self.task == "regression":
            return 2
        return self.decoder.vocab_size


def _as_dict(section: Any, where: str) -> dict:
    if hasattr(section, "to_dict"):
        section = section.to_dict()
    if not isinstance(section, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(section).__name__}")
    return dict(section)


def _build(cls, fields: dict, where: str):
    expected = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing, unknown = required - fields.keys(), fields.keys() - expected
    if missing or unknown:
        raise ValueError(
            f"{where}: expected keys {sorted(expected)}; missing {sorted(missing)}, "
            f"unknown {sorted(unknown)}"
        )
    return cls(**fields)


def _choice(value: str, options: tuple[str, ...], where: str) -> str:
    if value not in options:
        raise ValueError(f"{where} must be one of {options}, got {value!r}")
    return value


def parse_model_config(model_config: Any) -> ModelSpec:
    """Validates the ``model`` config section and returns a :class:`ModelSpec`.

    Raises:
      ValueError: naming the missing/unknown key or the invalid value.
    """
    cfg = _as_dict(model_config, "model")
    task = _choice(cfg.get("task"), TASKS, "model.task")
    fusion = _choice(cfg.get("fusion"), FUSIONS, "model.fusion")
    supported = registry.get_fusion(fusion).tasks
    if task not in supported:
        raise ValueError(f"model.fusion={fusion!r} supports the tasks {supported}, not {task!r}"
                         + (" (it needs class logits)" if supported == ("classification",) else ""))
    task_keys = {"classification": {"num_classes"}, "regression": {"label_variance"},
                 "generation": {"decoder"}}
    for other in TASKS:
        if other != task and task_keys[other] & cfg.keys():
            raise ValueError(f"model keys {sorted(task_keys[other])} are only used by task {other!r}")

    modalities_cfg = _as_dict(cfg.get("modalities", {}), "model.modalities")
    if not modalities_cfg:
        raise ValueError("model.modalities must name at least one modality")
    modalities = []
    for name in sorted(modalities_cfg):
        entry = _as_dict(modalities_cfg[name], f"model.modalities.{name}")
        kind = entry.pop("encoder", None)
        if kind not in ENCODER_SPECS:
            raise ValueError(
                f"model.modalities.{name}.encoder must be one of {tuple(ENCODER_SPECS)}, got {kind!r}"
            )
        modalities.append((name, _build(ENCODER_SPECS[kind], entry, f"model.modalities.{name}")))

    fields = {k: v for k, v in cfg.items() if k != "modalities"}
    fields["reliability"] = _build(
        ReliabilitySpec, _as_dict(cfg.get("reliability", {}), "model.reliability"), "model.reliability"
    )
    _choice(fields["reliability"].entropy, ENTROPY_SOURCES, "model.reliability.entropy")
    if not isinstance(fields["reliability"].normalize, bool):
        raise ValueError(f"model.reliability.normalize must be a bool, got {fields['reliability'].normalize!r}")
    _choice(cfg.get("nonfinite"), NONFINITE_POLICIES, "model.nonfinite")
    if "decoder" in fields:
        fields["decoder"] = _build(DecoderSpec, _as_dict(fields["decoder"], "model.decoder"), "model.decoder")
    fields["modalities"] = tuple(modalities)
    spec = _build(ModelSpec, fields, "model")
    missing_task_key = task_keys[task] - cfg.keys()
    if missing_task_key:
        raise ValueError(f"task {task!r} needs model keys {sorted(missing_task_key)}")
    if not (isinstance(spec.modality_dropout, (int, float)) and 0 <= spec.modality_dropout < 1):
        raise ValueError(f"model.modality_dropout must be in [0, 1), got {spec.modality_dropout!r}")
    if spec.reliability.decision > 0 and task == "generation":
        raise ValueError("model.reliability.decision > 0 mixes unimodal predictions into the output, which "
                         "task 'generation' does not have (its unimodal heads are bags of words); set it to 0")
    for key in ("remat", "head_major_qkv", "absorbed_fusion_kv"):
        if not isinstance(getattr(spec, key), bool):
            raise ValueError(f"model.{key} must be a bool, got {getattr(spec, key)!r}")
    _choice(spec.attention_impl, ATTENTION_IMPLS, "model.attention_impl")
    _ = spec.attention  # AttentionOptions rejects cudnn + head_major_qkv
    if spec.dim % spec.num_heads:
        raise ValueError(f"model.dim={spec.dim} must be divisible by model.num_heads={spec.num_heads}")
    return spec
