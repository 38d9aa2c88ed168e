"""Model FLOPs of a train step, three ways: a hand count from the config, the jaxpr's matrix
products, and XLA's cost analysis of the compiled executable.

Model FLOPs are the multiply-adds of matrix products, 2 per multiply-add (the convention of MFU;
elementwise ops, softmax, norms and the FFT are left out). The hand count (`hand_count`) lists
every matrix product of the forward pass with the number of its operands that need a gradient
(`grads`): reverse mode computes one product of the same size per such operand, so

    train FLOPs = sum_terms flops * (1 + grads)          (~ 3 x forward; the usual "6 N D")

Forward terms, for batch B, width d, MLP width h, H heads, depth L, F fusion tokens, C outputs,
and N_m = 1 + (tokens of modality m) (class token), N = max_m N_m (modalities are padded to it):

    encoder block (per modality)    8 B N_m d^2 (QKV, out)  + 4 B N_m^2 d (QK^T, AV)  + 4 B N_m d h (MLP)
    embeddings                      2 B P (patch size) d  (ViT, spectrogram), 2 B T D_in d (feature)
    log-mel                         2 B frames (n_fft/2 + 1) mels          (no gradient)
    estimator (unimodal heads)      2 B M d h + 2 B M h C
    label critic                    2 B M d^2 + 2 M B^2 d      (gradient only for mi_bound=infonce)
    imro / uniform fusion           2 B F d^2 (Q) + 4 B M N d^2 (K, V over padded tokens)
                                    + 4 B M F N d (QK^T, AV) + 2 B M F d (R-weighted sum)
                                    + 2 B F d^2 (out) + 4 B F d h (MLP)
    concat fusion                   one block over S = F + M N tokens: 8 B S d^2 + 4 B S^2 d + 4 B S d h
    head                            2 B d C;  decision fusions: the products of the registry's
                                    `combine` (2 B M C for late and energy, none for evidential)

`jaxpr_matmul_flops` counts the same quantity mechanically: it traces a function to a jaxpr and
sums `2 * prod(lhs) * prod(rhs free dims)` over every `dot_general`, nested jaxprs included. The
two agree exactly for the train step (tested in `tests/perf`), which checks the hand count.
`xla_flops` is what the compiler counts: every op, so at least the matmul FLOPs.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from imro_jax.batch import RESERVED_KEYS
from imro_jax.models.registry import get_fusion
from imro_jax.models.spec import FeatureSpec, SpectrogramSpec, TextSpec, VitSpec, parse_model_config


@dataclasses.dataclass(frozen=True)
class Term:
    """One matrix product (or a group of equal ones) of the forward pass.

    Attributes:
        name: what it computes, e.g. "audio/block_0/qkv".
        flops: forward FLOPs (2 per multiply-add).
        grads: operands that need a gradient (0, 1 or 2); the backward pass costs `grads * flops`.
    """

    name: str
    flops: float
    grads: int


def forward_flops(terms: list[Term]) -> float:
    """Forward-pass FLOPs: `sum_terms flops`."""
    return float(sum(t.flops for t in terms))


def train_flops(terms: list[Term]) -> float:
    """Forward plus backward FLOPs of one train step: `sum_terms flops * (1 + grads)`."""
    return float(sum(t.flops * (1 + t.grads) for t in terms))


def _block_terms(prefix: str, batch: int, tokens: int, dim: int, mlp_dim: int) -> list[Term]:
    """Self-attention Transformer block on `[batch, tokens, dim]` (every operand differentiable)."""
    b, n, d = batch, tokens, dim
    return [
        Term(f"{prefix}/qkv", 3 * 2 * b * n * d * d, 2),
        Term(f"{prefix}/scores", 2 * b * n * n * d, 2),
        Term(f"{prefix}/attend", 2 * b * n * n * d, 2),
        Term(f"{prefix}/out", 2 * b * n * d * d, 2),
        Term(f"{prefix}/mlp", 2 * 2 * b * n * d * mlp_dim, 2),
    ]


def _embedding_terms(name: str, enc: Any, x_shape: tuple[int, ...], batch: int, dim: int):
    """Embedding products of one modality and its token count (class token excluded)."""
    if isinstance(enc, TextSpec):
        return [], x_shape[1]  # table lookup: no product
    if isinstance(enc, VitSpec):
        patches = (enc.image_size // enc.patch_size) ** 2
        size = enc.patch_size**2 * enc.channels
        return [Term(f"{name}/patch_embed", 2 * batch * patches * size * dim, 1)], patches
    if isinstance(enc, SpectrogramSpec):
        terms = []
        if enc.input == "waveform":
            frames = 1 + (x_shape[1] - enc.n_fft) // enc.hop_length
            bins = enc.n_fft // 2 + 1
            terms.append(Term(f"{name}/log_mel", 2 * batch * frames * bins * enc.num_mels, 0))
        else:
            frames = x_shape[1]
        patches = (frames // enc.patch_frames) * (enc.num_mels // enc.patch_mels)
        size = enc.patch_frames * enc.patch_mels
        terms.append(Term(f"{name}/patch_embed", 2 * batch * patches * size * dim, 1))
        return terms, patches
    if isinstance(enc, FeatureSpec):
        steps = x_shape[1] if len(x_shape) == 3 else 1
        return [Term(f"{name}/project", 2 * batch * steps * enc.input_dim * dim, 1)], steps
    raise TypeError(f"no FLOP count for encoder spec {type(enc).__name__}")


def hand_count(model_config: Any, input_shapes: Mapping[str, tuple[int, ...]], *,
               mi_bound: str = "barber_agakov") -> list[Term]:
    """Every matrix product of the model's train-mode forward pass (see module docstring).

    Args:
        model_config: the `model` config section (task classification or regression).
        input_shapes: `{modality: shape of its batch array}` (leading axis = batch), e.g.
            `{"text": (B, T), "vision": (B, H, W, C), "audio": (B, samples)}`.
        mi_bound: `loss.mi_bound`; the label critic gets gradients only for "infonce".

    Returns:
        The list of `Term`s (FLOPs per train step for that batch).

    Raises:
        NotImplementedError: a generation (caption) head.
        ValueError: `input_shapes` lacks a modality of the config.
    """
    spec = parse_model_config(model_config)
    if spec.task == "generation":
        raise NotImplementedError("hand FLOP count covers classification and regression heads")
    missing = sorted(set(spec.modality_names) - set(input_shapes))
    if missing:
        raise ValueError(f"input_shapes must have every modality {list(spec.modality_names)}, "
                         f"missing {missing}")
    batch = int(next(iter(input_shapes.values()))[0])
    d, h, f, m = spec.dim, spec.mlp_dim, spec.fusion_tokens, len(spec.modalities)
    c = spec.num_outputs
    terms, lengths = [], []
    for name, enc in spec.modalities:
        embed, tokens = _embedding_terms(name, enc, tuple(input_shapes[name]), batch, d)
        terms += embed
        lengths.append(tokens + 1)
        for i in range(spec.depth):
            terms += _block_terms(f"{name}/block_{i}", batch, tokens + 1, d, h)
    terms += [
        Term("estimator/hidden", 2 * batch * m * d * h, 2),
        Term("estimator/out", 2 * batch * m * h * c, 2),
        # cross-modal agreement: the consensus of the others (detached: no backward matmul)
        Term("estimator/consensus", (2 * 2 * batch * m * m if spec.task == "regression" else 2 * batch * m * m * c)
             if spec.reliability.agreement > 0 else 0, 0),
        Term("critic/project", 2 * batch * m * d * d, 2 if mi_bound == "infonce" else 0),
        Term("critic/scores", 2 * m * batch * batch * d, 2 if mi_bound == "infonce" else 0),
    ]
    n = max(lengths)
    fusion = get_fusion(spec.fusion)
    # a detached joint head (beside the vote) reads the tokens and R through a stop-gradient: its K/V
    # projections differentiate the weights only, and R gets no gradient from the weighted sum
    detached = spec.reliability.joint_detached and spec.reliability.decision > 0 and fusion.reliability_vote
    if fusion.kind == "token" and not fusion.joint:
        terms += [
            Term("fusion/query", 2 * batch * f * d * d, 2),
            Term("fusion/key_value", 2 * 2 * batch * m * n * d * d, 1 if detached else 2),
            Term("fusion/scores", 2 * batch * m * f * n * d, 2),
            Term("fusion/attend", 2 * batch * m * f * n * d, 2),
            Term("fusion/weighted_sum", 2 * batch * m * f * d, 2 if fusion.learned_weights and not detached else 1),
            Term("fusion/out", 2 * batch * f * d * d, 2),
            Term("fusion/mlp", 2 * 2 * batch * f * d * h, 2),
        ]
    elif fusion.joint:
        terms += _block_terms("fusion/joint_block", batch, f + m * n, d, h)
    if fusion.kind == "token":
        terms.append(Term("head", 2 * batch * d * (c if spec.task == "classification" else 1), 2))
        if spec.reliability.decision > 0 and fusion.reliability_vote:  # the vote: R (constant) x log q
            terms.append(Term("fusion/vote", 2 * batch * m * (c if spec.task == "classification" else 1), 1))
    else:  # a decision fusion: the products of its registry `combine` (gradient: the logits only)
        unimodal = jax.ShapeDtypeStruct((batch, m, c), np.float32)
        present = jax.ShapeDtypeStruct((batch, m), np.bool_)
        combine_flops = jaxpr_matmul_flops(lambda u, p: fusion.combine(u, p)[0], unimodal, present)
        terms.append(Term("fusion/weighted_logits", int(combine_flops), 1))
    return terms


def _dot_general_flops(eqn) -> float:
    """2 * prod(lhs shape) * prod(rhs dims that are neither contracted nor batch)."""
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
    rhs_free = [size for i, size in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
    return 2.0 * math.prod(lhs) * math.prod(rhs_free)


def _sub_jaxprs(value):
    if hasattr(value, "jaxpr") and hasattr(value, "consts"):  # ClosedJaxpr
        yield value.jaxpr
    elif hasattr(value, "eqns"):  # Jaxpr
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _sub_jaxprs(item)


def _count_jaxpr(jaxpr) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            total += _dot_general_flops(eqn)
        if eqn.primitive.name == "while":
            raise NotImplementedError("while loops have no static trip count")
        repeat = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for value in eqn.params.values():
            for sub in _sub_jaxprs(value):
                total += repeat * _count_jaxpr(sub)
    return total


def jaxpr_matmul_flops(fn: Callable, *args: Any) -> float:
    """FLOPs of every `dot_general` in `jax.make_jaxpr(fn)(*args)` (nested jaxprs included).

    A `scan` body counts `length` times; a `while` loop has no static trip count and raises.

    Args:
        fn: any traceable function (a jitted train step, a loss, a gradient).
        *args: its arguments (arrays or `jax.ShapeDtypeStruct`s: nothing runs).

    Returns:
        FLOPs, 2 per multiply-add, e.g. `2 m k n` for `[m, k] @ [k, n]`.

    Raises:
        NotImplementedError: the jaxpr holds a `while` loop.

    Example:
        >>> jaxpr_matmul_flops(jax.numpy.dot, np.ones((4, 5)), np.ones((5, 6)))  # 2 * 4 * 5 * 6
        240.0
    """
    return _count_jaxpr(jax.make_jaxpr(fn)(*args).jaxpr)


def xla_flops(compiled) -> float:
    """`flops` of XLA's cost analysis of a compiled executable (all ops, elementwise included).

    Args:
        compiled: a `jax.stages.Compiled` (`jax.jit(f).lower(...).compile()`).

    Returns:
        FLOPs per call as XLA counts them; NaN where the backend has no cost analysis.
    """
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis.get("flops", np.nan)) if analysis else float("nan")


def flop_groups(terms: list[Term]) -> dict[str, float]:
    """Train FLOPs per term, an encoder's blocks summed ("audio/block_0/qkv" -> "audio/blocks")."""
    groups = collections.Counter()
    for term in terms:
        parts = term.name.split("/") + [""]
        group = f"{parts[0]}/blocks" if parts[1].startswith("block_") else term.name
        groups[group] += term.flops * (1 + term.grads)
    return dict(groups)


def model_shaped_product(terms: list[Term], model_config) -> tuple[int, int, int]:
    """`(rows, dim, mlp_dim)` of the largest encoder MLP input product `[rows, dim] @ [dim, mlp_dim]`.

    `rows` = batch x tokens of the encoder whose MLP costs most: the model-shaped product that an
    MFU can be compared with (how fast the model's own matrices run).
    """
    mlp = max((t for t in terms if t.name.endswith("/mlp") and "/block_" in t.name), key=lambda t: t.flops)
    rows = int(mlp.flops // (4 * model_config.dim * model_config.mlp_dim))
    return rows, model_config.dim, model_config.mlp_dim


def train_step_terms(config, numpy_batch: dict) -> list[Term]:
    """`hand_count` of `config` (model and `loss.mi_bound`) on the shapes of a batch dict."""
    shapes = {k: np.shape(v) for k, v in numpy_batch.items() if k not in RESERVED_KEYS}
    return hand_count(config.model, shapes, mi_bound=config.loss.mi_bound)
