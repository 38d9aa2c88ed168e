"""What the generic training loop needs from a model and a dataset, as plain functions.

`imro_jax.train.model_task.model_task(config)` builds it from `imro_jax.models` and
`imro_jax.data`; tests build it from a small stand-in model. The loop never imports a model.
"""

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class Task:
    """A trainable problem.

    Attributes:
        init_fn: `(rng, batch) -> {"params": params, **collections}` (Flax variables), params
            with `nn.LogicallyPartitioned` leaves; other collections become the untrained
            `TrainState.model_state`.
        loss_fn: `(params, batch, rng, step) -> (scalar loss, {name: scalar})`, training mode.
        eval_fn: `(variables, batch) -> {name: array[B, ...]}` per-example outputs, eval mode;
            `variables = {"params": params, **model_state}`.
        summarize_eval: `{name: np.ndarray[N, ...]} -> {metric: float}` over a whole split.
        example_batch: `() -> numpy batch`, identical on every process (shapes for init).
        train_data: `(seed, process_index, process_count) -> iterator` of per-process numpy
            batches with `get_state()` / `set_state(state)`.
        eval_data: `(split, process_index, process_count) -> finite iterable` of per-process
            numpy batches (the last one may be smaller).
        fit_model_state: optional `(variables, batches) -> model_state`: fits the model state
            (e.g. `imro_jax.models.statistics.fit_reliability_stats`) from `batches()`, a fresh
            ordered pass of `(global batch, valid [B])` over the training split. The loop runs
            it before every evaluation and at the end of training.
        fatal_invalid: names `<n>` of the loss metrics `invalid/<n>` (per-step counts of
            samples dropped as invalid) whose nonzero count stops the run
            (`imro_jax.train.guard`).
    """

    init_fn: Callable[[jax.Array, dict], Any]
    loss_fn: Callable[[Any, dict, jax.Array, jax.Array], tuple[jax.Array, dict]]
    eval_fn: Callable[[Any, dict], dict]
    summarize_eval: Callable[[dict[str, np.ndarray]], dict[str, float]]
    example_batch: Callable[[], dict]
    train_data: Callable[[int, int, int], Iterator[dict]]
    eval_data: Callable[[str, int, int], Iterable[dict]]
    fit_model_state: Callable[[dict, Callable[[], Iterable[tuple[dict, Any]]]], Any] | None = None
    fatal_invalid: tuple[str, ...] = ()
