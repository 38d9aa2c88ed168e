"""The IMRO model as the pure functions of a `Task`: init, loss, eval and the statistics fit.

    init    model.init({"params", "dropout"}, batch, train=False): params + reliability_stats
    loss    imro_loss(model.apply(params, screen_batch(batch), train=True), batch, config.loss)
    eval    per-example logits, labels, presence and per-modality R, H, I (train=False)
    fit     the reliability statistics pass (`imro_jax.models.statistics`), surprisal H only

Nothing here imports the data layer (grain, TFDS): `imro_jax.train.model_task` adds the
datasets, and the benchmarks (`imro_jax.perf.step_bench`) use `fixed_batch_task` with
synthetic batches, so both run the same loss and step.

Under `jit` the model cannot raise on bad values, so the loss screens each training batch
(`screen_batch`): a sample whose label is out of range (classification) or non-finite
(regression) gets no modality, so the model marks it invalid and the loss ignores it, and
`invalid/<modality>` / `invalid/label` count the samples dropped per step. The run stops on any
of them (`Task.fatal_invalid`) except non-finite modalities under `model.nonfinite="as_missing"`.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn
from jax.experimental import multihost_utils

from imro_jax.batch import CAPTION, LABEL, MASK
from imro_jax.models import build_model, imro_loss
from imro_jax.models.reliability import STATS
from imro_jax.models.spec import ModelSpec, parse_model_config
from imro_jax.models.statistics import fit_reliability_stats
from imro_jax.models.validation import usable_inputs
from imro_jax.train.precision import cast_floating
from imro_jax.train.task import Task

PER_MODALITY = ("reliability", "entropy", "mi")


def _to_host(x):
    """A global array on the host (all-gathered across processes when there are several)."""
    if jax.process_count() == 1:
        return jax.device_get(x)
    return multihost_utils.process_allgather(x, tiled=True)


def _label_ok(label: jax.Array, spec: ModelSpec) -> jax.Array | None:
    """bool[B]: the label is usable (None for generation, whose targets are captions)."""
    if spec.task == "classification":
        return (label >= 0) & (label < spec.num_classes)
    if spec.task == "regression":
        return jnp.isfinite(label)
    return None


def screen_batch(batch: dict, spec: ModelSpec) -> tuple[dict, dict]:
    """In-graph screening of a training batch (see the module docstring).

    Args:
        batch: the batch dict (`{modality: [B, ...], "mask": {modality: bool[B]}, "label"}`).
        spec: the parsed model config.

    Returns:
        `(batch, counts)`: the batch with samples of unusable labels masked out (label set to
        0) and `{"invalid/<modality>" | "invalid/label": int32[]}` samples dropped.
    """
    mask = batch.get(MASK) or {name: jnp.ones(batch[name].shape[0], bool)
                               for name in spec.modality_names}
    counts = {
        f"invalid/{name}": jnp.sum(mask[name] & ~usable_inputs(batch[name], enc_spec),
                                   dtype=jnp.int32)
        for name, enc_spec in spec.modalities
    }
    label_ok = _label_ok(batch[LABEL], spec) if LABEL in batch else None
    if label_ok is None:
        return batch, counts
    counts["invalid/label"] = jnp.sum(~label_ok, dtype=jnp.int32)
    screened = dict(batch, **{
        MASK: {name: mask[name] & label_ok for name in spec.modality_names},
        LABEL: jnp.where(label_ok, batch[LABEL], jnp.zeros_like(batch[LABEL])),
    })
    return screened, counts


def fatal_invalid(spec: ModelSpec) -> tuple[str, ...]:
    """The `invalid/<name>` counts that stop a run under `spec.nonfinite`."""
    modalities = spec.modality_names if spec.nonfinite == "error" else ()
    return (*modalities, "label")


@dataclasses.dataclass(frozen=True)
class ModelFunctions:
    """The model of a config and its `Task` functions (see the module docstring).

    Attributes:
        model: the `IMROModel`.
        spec: its parsed `ModelSpec`.
        init_fn: `(rng, batch) -> variables`.
        loss_fn: `(params, batch, rng, step) -> (loss, metrics)`, outputs upcast to float32.
        eval_fn: `(variables, batch) -> {logits, present, label, reliability, entropy, mi[, caption]}`.
        fit_model_state: `(variables, batches) -> model_state`, or None where H is not the surprisal.
    """

    model: nn.Module
    spec: ModelSpec
    init_fn: Callable
    loss_fn: Callable
    eval_fn: Callable
    fit_model_state: Callable | None


def model_functions(config: ml_collections.ConfigDict) -> ModelFunctions:
    """The `ModelFunctions` of `config` (sections model and loss)."""
    model = build_model(config.model)
    spec = parse_model_config(config.model)

    def init_fn(rng, batch):
        return model.init({"params": rng, "dropout": rng}, batch, train=False)

    def loss_fn(params, batch, rng, step):
        batch, invalid = screen_batch(batch, spec)
        output = model.apply({"params": params}, batch, train=True, rngs={"dropout": rng})
        loss, metrics = imro_loss(cast_floating(output, jnp.float32), batch, config.loss, step=step)
        return loss, dict(metrics, **invalid)

    def eval_fn(variables, batch):
        output = cast_floating(model.apply(variables, batch, train=False), jnp.float32)
        outputs = {name: getattr(output, name) for name in PER_MODALITY}
        if CAPTION in batch and output.logits.ndim == 3:  # generation: teacher-forced targets
            outputs[CAPTION] = batch[CAPTION]
        return dict(outputs, logits=output.logits, present=output.present, label=batch[LABEL])

    def fit_model_state(variables, batches):
        return {STATS: fit_reliability_stats(model, variables, batches, to_host=_to_host)}

    surprisal = spec.reliability.entropy == "surprisal"
    return ModelFunctions(model, spec, init_fn, loss_fn, eval_fn,
                          fit_model_state if surprisal else None)


def _no_data(*_args):
    raise NotImplementedError("a fixed-batch task has no data pipeline (benchmarks feed batches)")


def fixed_batch_task(config: ml_collections.ConfigDict, example_batch: dict) -> Task:
    """The model's `Task` on one fixed numpy batch and without datasets (benchmarks).

    Its `train_data`/`eval_data`/`summarize_eval` raise; everything `build_runtime` reads
    (init, loss, example batch) is what `model_task(config)` has.
    """
    fns = model_functions(config)
    return Task(
        init_fn=fns.init_fn, loss_fn=fns.loss_fn, eval_fn=fns.eval_fn, summarize_eval=_no_data,
        example_batch=lambda: example_batch, train_data=_no_data, eval_data=_no_data,
        fit_model_state=fns.fit_model_state, fatal_invalid=fatal_invalid(fns.spec),
    )
