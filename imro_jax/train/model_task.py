"""The IMRO model and its datasets as a `Task` for the training loop.

    model   `imro_jax.train.model_fns`: init, loss (with the in-graph batch screening), eval
            outputs and the reliability statistics fit, which import no data layer
    eval    the per-example outputs summarised over the split by
            `imro_jax.eval.classification_report` (classification), MSE and
            `imro_jax.eval.affect_report` (regression: MAE, Corr, Acc-2/F1, Acc-7, Acc-5) or
            teacher-forced token accuracy / NLL / perplexity (generation), plus mean R/H/I per
            modality over the samples where it is present.
    data    `imro_jax.data.make_pipeline` (the dataset is prepared first if it is missing).
"""

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from imro_jax.batch import CAPTION, LABEL
from imro_jax.data import make_pipeline, prepare_dataset
from imro_jax.eval import affect_report, classification_report
from imro_jax.models import validate_batch
from imro_jax.models.heads import caption_loss_mask
from imro_jax.train.model_fns import (  # noqa: F401 (screen_batch, fatal_invalid: re-exported)
    PER_MODALITY,
    fatal_invalid,
    model_functions,
    screen_batch,
)
from imro_jax.train.task import Task


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


def _prepare_once(data_config: ml_collections.ConfigDict) -> None:
    """Builds the dataset on process 0 while the others wait (they share the data dir)."""
    if jax.process_index() == 0:
        prepare_dataset(data_config)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("imro_prepare_dataset")


def model_task(config: ml_collections.ConfigDict) -> Task:
    """Builds the `Task` for `config` (sections data, model, loss, seed)."""
    fns = model_functions(config)
    _prepare_once(config.data)

    def pipeline(split, train, seed, index, count):
        split = config.data.train_split if split == "train" else split
        return make_pipeline(config.data, split=split, train=train, seed=seed,
                             process_index=index, process_count=count)

    def example_batch():
        batch = next(pipeline("train", False, 0, 0, 1))
        validate_batch(batch, config.model)  # eager, readable errors before anything compiles
        return batch

    modalities = tuple(sorted(config.model.modalities.keys()))
    return Task(
        init_fn=fns.init_fn,
        loss_fn=fns.loss_fn,
        eval_fn=fns.eval_fn,
        summarize_eval=lambda outputs: summarize_outputs(outputs, modalities),
        example_batch=example_batch,
        train_data=lambda seed, index, count: pipeline("train", True, seed, index, count),
        eval_data=lambda split, index, count: pipeline(split, False, 0, index, count),
        fit_model_state=fns.fit_model_state,
        fatal_invalid=fatal_invalid(fns.spec),
    )
