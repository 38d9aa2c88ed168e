"""The IMRO model and its datasets as a `Task` for the training loop.

    init    model.init({"params", "dropout"}, batch, train=False): params + reliability_stats
    fit     the reliability statistics pass (`imro_jax.models.statistics`), surprisal H only
    loss    imro_loss(model.apply(params, batch, train=True), batch, config.loss, step=step)
    eval    per-example logits, labels and per-modality R, H, I (train=False), summarised over
            the split by `imro_jax.eval.classification_report` (classification), MSE and
            `imro_jax.eval.affect_report` (regression: MAE, Corr, Acc-2/F1, Acc-7, Acc-5) or teacher-forced token accuracy / NLL / perplexity (generation),
            plus mean R/H/I per modality over the samples where it is present.
    data    `imro_jax.data.make_pipeline` (the dataset is prepared first if it is missing).

Under `jit` the model cannot raise on bad values, so the loss screens each training batch
(`screen_batch`): a sample whose label is out of range (classification) or non-finite
(regression) gets no modality, so the model marks it invalid and the loss ignores it, and
`invalid/<modality>` / `invalid/label` count the samples dropped per step. The run stops on any
of them (`Task.fatal_invalid`) except non-finite modalities under `model.nonfinite="as_missing"`.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from imro_jax.batch import CAPTION, LABEL, MASK
from imro_jax.data import make_pipeline, prepare_dataset
from imro_jax.eval import affect_report, classification_report
from imro_jax.models import build_model, imro_loss, validate_batch
from imro_jax.models.heads import caption_loss_mask
from imro_jax.models.reliability import STATS
from imro_jax.models.statistics import fit_reliability_stats
from imro_jax.models.spec import ModelSpec, parse_model_config
from imro_jax.models.validation import usable_inputs
from imro_jax.train.precision import cast_floating
from imro_jax.train.task import Task

PER_MODALITY = ("reliability", "entropy", "mi")


def teacher_forced_caption_metrics(logits: np.ndarray, caption: np.ndarray) -> dict[str, float]:
    """Token accuracy, NLL (nats per token) and perplexity of teacher-forced caption logits.

    Counted positions are those of `imro_jax.models.heads.caption_loss_mask` (every caption
    token and the first padding, the end-of-caption signal), pooled over the split:
    NLL = -sum_{b,t} log softmax(logits[b, t])[caption[b, t]] / #positions, perplexity = e^NLL.

    Args:
        logits: `[N, L, V]` next-token logits given the true previous tokens.
        caption: `[N, L]` int targets, 0 = padding.
    """
    if logits.ndim != 3 or logits.shape[:2] != caption.shape:
        raise ValueError(f"caption logits [N, L, V] {logits.shape} do not match captions [N, L] {caption.shape}")
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    target = np.take_along_axis(log_probs, caption[..., None].astype(np.int64), axis=-1)[..., 0]
    counted = np.asarray(caption_loss_mask(caption))
    nll = float(-target[counted].mean())
    return {
        "token_accuracy": float((logits.argmax(axis=-1) == caption)[counted].mean()),
        "token_nll": nll,
        "perplexity": float(np.exp(nll)),
    }


def summarize_outputs(
    outputs: dict[str, np.ndarray], modalities: tuple[str, ...]
) -> dict[str, float]:
    """Split-level metrics from per-example eval outputs.

    Args:
        outputs: `logits` `[N, C]` (`[N]` regression; `[N, L, V]` generation, with `caption`
            `[N, L]`), `label` `[N]`, `present` bool `[N, M]` and `reliability`, `entropy`, `mi`
            `[N, M]` (nats).
        modalities: the M modality names (sorted).

    Returns:
        classification: accuracy, nll, ece, auroc; regression: mse and the sentiment metrics of
        `imro_jax.eval.affect_report` (mae, corr, acc2/f1 has-0 and non-0, acc7, acc5); generation:
        token_accuracy, token_nll, perplexity; and per modality
        `reliability/<m>`, `entropy/<m>`, `mi/<m>` averaged where the modality is present.
    """
    logits, label = outputs["logits"], outputs[LABEL]
    if logits.ndim == 3:
        if CAPTION not in outputs:
            raise KeyError("generation eval outputs need the target `caption` [N, L] next to the [N, L, V] logits")
        metrics = teacher_forced_caption_metrics(logits, outputs[CAPTION])
    elif logits.ndim == 2:
        metrics = classification_report(logits, label)
    else:
        error = logits.astype(np.float64) - label.astype(np.float64)
        metrics = {**affect_report(logits, label), "mse": float(np.mean(error**2))}
    present = outputs["present"]
    for name in PER_MODALITY:
        for m, modality in enumerate(modalities):
            rows = present[:, m]
            if rows.any():
                metrics[f"{name}/{modality}"] = float(np.mean(outputs[name][rows, m]))
    metrics["num_examples"] = float(len(label))
    return metrics


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


def _prepare_once(data_config: ml_collections.ConfigDict) -> None:
    """Builds the dataset on process 0 while the others wait (they share the data dir)."""
    if jax.process_index() == 0:
        prepare_dataset(data_config)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("imro_prepare_dataset")


def model_task(config: ml_collections.ConfigDict) -> Task:
    """Builds the `Task` for `config` (sections data, model, loss, seed)."""
    model = build_model(config.model)
    spec = parse_model_config(config.model)
    _prepare_once(config.data)

    def pipeline(split, train, seed, index, count):
        split = config.data.train_split if split == "train" else split
        return make_pipeline(config.data, split=split, train=train, seed=seed,
                             process_index=index, process_count=count)

    def example_batch():
        batch = next(pipeline("train", False, 0, 0, 1))
        validate_batch(batch, config.model)  # eager, readable errors before anything compiles
        return batch

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

    modalities = tuple(sorted(config.model.modalities.keys()))
    return Task(
        init_fn=init_fn,
        loss_fn=loss_fn,
        eval_fn=eval_fn,
        summarize_eval=lambda outputs: summarize_outputs(outputs, modalities),
        example_batch=example_batch,
        train_data=lambda seed, index, count: pipeline("train", True, seed, index, count),
        eval_data=lambda split, index, count: pipeline(split, False, 0, index, count),
        fit_model_state=fit_model_state if model.spec.reliability.entropy == "surprisal" else None,
        fatal_invalid=fatal_invalid(spec),
    )
