"""The fusion registry: one table from a fusion's name to everything the model and loss need.

Adding a fusion means adding one :class:`Fusion` entry here (and its test); the spec
(validation), the model (which path runs, which weights it reports), the loss (extra terms), the
experiments (the methods they compare) and the FLOP count read this table.

================  ========  ===============================================================
name              kind      what it does
================  ========  ===============================================================
``imro``          token     Z = sum_m R_m softmax(Q K_m^T / sqrt(d)) V_m, R from the estimator
``uniform``       token     the same with R = 1/M over present modalities (paper Sec. 2.1)
``concat``        token     early fusion: one joint self-attention block over queries + tokens
``late``          decision  mean of the present modalities' unimodal logits
``energy``        decision  QMF: logits weighted by their detached energy confidence, + ranking loss
``evidential``    decision  TMC: Dirichlet evidence combined by the reduced Dempster-Shafer rule
================  ========  ===============================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from imro_jax.models import energy, evidential

ALL_TASKS = ("classification", "regression", "generation")


def uniform_weights(present: jax.Array) -> jax.Array:
    """``present / (number present)`` per row, ``[batch, modality]``; all-absent rows are 0."""
    present = present.astype(jnp.float32)
    return present / jnp.maximum(jnp.sum(present, axis=-1, keepdims=True), 1.0)


def normalise_confidence(confidence: jax.Array, present: jax.Array) -> jax.Array:
    """``relu(c) * present`` normalised per row; rows without positive mass fall back to 1/M."""
    mass = jnp.where(present, jax.nn.relu(confidence), 0.0)
    total = jnp.sum(mass, axis=-1, keepdims=True)
    return jnp.where(total > 0, mass / jnp.where(total > 0, total, 1.0), uniform_weights(present))


def _late(unimodal, present):
    weights = uniform_weights(present)
    return jnp.einsum("bm,bmc->bc", weights, unimodal), weights


def _energy(unimodal, present):
    return (energy.energy_fusion(unimodal, present),
            normalise_confidence(energy.energy_confidence(unimodal), present))


def _evidential(unimodal, present):
    alpha = evidential.dirichlet_from_logits(unimodal, present)
    belief_total = 1.0 - evidential.uncertainty_mass(alpha)
    return jnp.log(evidential.combine_opinions(alpha)), normalise_confidence(belief_total, present)


@dataclasses.dataclass(frozen=True)
class Fusion:
    """What one fusion needs.

    Attributes:
      kind: ``"token"`` (fused tokens from learned queries, then a head or decoder) or
        ``"decision"`` (a combination of the unimodal predictions).
      tasks: the tasks it supports.
      token_weights: token fusions: ``(estimator R [B, M], present [B, M]) -> weights [B, M]``,
        the R that scales each modality's attention output (and that ``ModelOutput.reliability``
        reports).
      learned_weights: token fusions: the weights depend on parameters (gradients flow through
        them), as IMRO's R does.
      reliability_vote: token fusions: the prediction mixes in the R-weighted vote of the unimodal
        heads, ``model.reliability.decision`` times it (``imro_jax.models.model.reliability_vote``);
        the other fusions ignore ``decision``, so that every fusion can share one config.
      joint: token fusions: one joint self-attention block over queries and every modality's
        tokens instead of the reliability-weighted attention (the weights are then nominal).
      combine: decision fusions: ``(unimodal float32 [B, M, C], present) -> (fused [B, C],
        weights [B, M])``.
      task_loss: optional ``(output, batch, loss_config, step, nll [B, M], use [B, M], fused_loss)
        -> (task loss, metrics)`` replacing the default task loss (``fused_loss``, the fused
        prediction's loss); the baselines' own training terms.
    """

    kind: str
    tasks: tuple[str, ...] = ALL_TASKS
    token_weights: Callable | None = None
    learned_weights: bool = False
    reliability_vote: bool = False
    joint: bool = False
    combine: Callable | None = None
    task_loss: Callable | None = None


FUSIONS: dict[str, Fusion] = {
    "imro": Fusion("token", token_weights=lambda reliability, present: reliability, learned_weights=True,
                   reliability_vote=True),
    "uniform": Fusion("token", token_weights=lambda reliability, present: uniform_weights(present)),
    "concat": Fusion("token", token_weights=lambda reliability, present: uniform_weights(present), joint=True),
    "late": Fusion("decision", tasks=("classification", "regression"), combine=_late),
    "energy": Fusion("decision", tasks=("classification",), combine=_energy, task_loss=energy.energy_task_loss),
    "evidential": Fusion("decision", tasks=("classification",), combine=_evidential,
                         task_loss=evidential.evidential_task_loss),
}
TOKEN_FUSIONS = tuple(name for name, f in FUSIONS.items() if f.kind == "token")
DECISION_FUSIONS = tuple(name for name, f in FUSIONS.items() if f.kind == "decision")


def get_fusion(name: str) -> Fusion:
    """The registry entry of ``name``; a ValueError naming the known fusions otherwise."""
    if name not in FUSIONS:
        raise ValueError(f"model.fusion must be one of {tuple(FUSIONS)}, got {name!r}")
    return FUSIONS[name]
