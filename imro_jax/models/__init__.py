"""Flax Linen IMRO model: modality encoders, reliability estimator, reliability-aware fusion,
task heads, the baselines' fusions and the reliability-regularised loss.

Public API::

    model = build_model(config.model)                      # IMROModel (flax.linen.Module)
    variables = model.init({"params": key}, batch, train=False)
    output = model.apply(variables, batch, train=True, rngs={"dropout": key})   # ModelOutput
    loss, metrics = imro_loss(output, batch, config.loss, step=step)
    captions = generate(model, variables, batch)            # task="generation"
    validate_batch(batch, config.model)                     # eager input checks
"""

from imro_jax.models.layers import ACTIVATION_AXES, PARAM_AXES
from imro_jax.models.loss import imro_loss
from imro_jax.models.model import IMROModel, ModelOutput, build_model, generate
from imro_jax.models.spec import ModelSpec, parse_model_config
from imro_jax.models.validation import validate_batch

__all__ = [
    "ACTIVATION_AXES",
    "IMROModel",
    "ModelOutput",
    "ModelSpec",
    "PARAM_AXES",
    "build_model",
    "generate",
    "imro_loss",
    "parse_model_config",
    "validate_batch",
]
