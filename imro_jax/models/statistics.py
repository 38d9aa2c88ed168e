"""The statistics pass: fits ``reliability_stats`` (the encodings' clean density) after training.

Two passes over at most ``model.reliability.fit_examples`` clean training examples, in eval
mode:

1. sum the Gaussian sufficient statistics (:class:`imro_jax.info.GaussianStats`) of each
   modality's pooled encoding, per class, separately for two folds (even / odd rows). The sums
   are taken inside ``jax.jit`` over the whole (global) batch, so on a sharded batch they are
   reduced over the ``data`` mesh axis, on one host or several;
2. score every example under the density fitted on the *other* fold (out-of-fold, so that the
   scores are as typical as those of unseen clean data) and calibrate them
   (:func:`imro_jax.info.fit_calibration`: median, MAD, the clean ``quantile``).

The collection holds the density fitted on both folds plus the calibration. It is model state:
``variables = {"params": ..., "reliability_stats": ...}``; the trainer keeps it in
``TrainState.model_state`` and so in every checkpoint.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from imro_jax.batch import LABEL
from imro_jax.info import GaussianStats, fit_calibration, fit_gaussian_density, gaussian_sufficient_stats
from imro_jax.models.reliability import STATS, embedding_surprisal, stats_classes

FOLDS = 2


def _labels(batch: dict, spec, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """Class index per row for the density (0 when the task has no classes) and its validity."""
    if spec.task != "classification" or LABEL not in batch:
        return jnp.zeros(batch_size, jnp.int32), jnp.ones(batch_size, bool)
    label = jnp.asarray(batch[LABEL])
    ok = (label >= 0) & (label < spec.num_classes)
    return jnp.where(ok, label, 0).astype(jnp.int32), ok


def _rows_used(model, variables, batch: dict, valid: jax.Array):
    pooled, present = model.apply(variables, batch, method=type(model).encodings)
    label, label_ok = _labels(batch, model.spec, pooled.shape[0])
    use = present & (valid & label_ok)[:, None]  # [B, M]
    fold = jnp.arange(pooled.shape[0]) % FOLDS
    return pooled, use, label, fold


@functools.partial(jax.jit, static_argnums=0)
def _fold_stats(model, variables, batch: dict, valid: jax.Array) -> GaussianStats:
    """Sufficient statistics ``[fold, modality, ...]`` of one batch."""
    pooled, use, label, fold = _rows_used(model, variables, batch, valid)
    k = stats_classes(model.spec)

    def one(x, w):  # one modality: [B, D], [B] -> stats per fold
        return jax.vmap(lambda f: gaussian_sufficient_stats(x, label, num_classes=k, weight=w & (fold == f)))(
            jnp.arange(FOLDS))

    per_modality = jax.vmap(one, in_axes=(1, 1))(pooled, use)  # leaves [M, F, ...]
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), per_modality)


@functools.partial(jax.jit, static_argnums=0)
def _out_of_fold_scores(model, variables, batch: dict, valid: jax.Array, fold_stats: dict) -> tuple:
    """Surprisal ``[B, M]`` of each row under the other fold's density, and which rows count."""
    pooled, use, _, fold = _rows_used(model, variables, batch, valid)
    scores = jax.vmap(lambda f: embedding_surprisal(pooled, jax.tree.map(lambda s: s[f], fold_stats)))(
        jnp.arange(FOLDS))  # [F, B, M]
    other = (fold + 1) % FOLDS
    return jnp.take_along_axis(scores, other[None, :, None], axis=0)[0], use


def _density_stats(stats: GaussianStats, spec) -> dict:
    """``reliability_stats`` density entries from summed statistics (leading axes kept)."""
    return _fit_densities(stats, spec.reliability.shrinkage, spec.reliability.rank or None)


# One compiled program each (op by op, the fit and the calibration compiled dozens of small ones).
_fit_calibration = jax.jit(fit_calibration, static_argnames=("quantile", "axis"))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _fit_densities(stats: GaussianStats, shrinkage: float, rank: int | None) -> dict:
    fit = functools.partial(fit_gaussian_density, shrinkage=shrinkage, rank=rank)
    lead = stats.count.ndim - 1
    for _ in range(lead):
        fit = jax.vmap(fit)
    density = fit(stats)
    return {"means": density.means, "log_prior": density.log_prior, "precision": density.precision,
            "log_det_cov": density.log_det_cov}


def fit_reliability_stats(
    model,
    variables: dict,
    batches: Callable[[], Iterable[tuple[dict, Any]]],
    *,
    to_host: Callable[[Any], Any] = jax.device_get,
) -> dict:
    """Fits the ``reliability_stats`` collection of ``model`` on clean training data.

    Args:
      model: the :class:`imro_jax.models.IMROModel` (``reliability.entropy="surprisal"``).
      variables: ``{"params": ...}`` (any stats present are ignored: encodings do not use them).
      batches: returns a fresh iterable of ``(batch, valid)`` pairs, ``valid`` bool ``[B]`` (False
        for padding rows); called twice (one call per pass). Global (sharded) arrays are fine.
      to_host: fetches a global array to the host (e.g. a multi-host all-gather).

    Returns:
      The fitted collection, ``variables[STATS]``-shaped (``{"estimator": {...}}``).

    Raises:
      ValueError: the model has no statistics, or no usable example was seen for a modality.
    """
    spec = model.spec
    if spec.reliability.entropy != "surprisal":
        raise ValueError(f"model.reliability.entropy={spec.reliability.entropy!r} has no statistics to fit")
    params = {"params": variables["params"]}
    limit = spec.reliability.fit_examples

    def limited():
        seen = 0
        for batch, valid in batches():
            if seen >= limit:
                return
            valid = np.asarray(to_host(valid), bool) & (seen + np.arange(len(valid)) < limit)
            seen += len(valid)
            yield batch, valid

    total = None
    for batch, valid in limited():
        part = _fold_stats(model, params, batch, valid)
        total = part if total is None else jax.tree.map(jnp.add, total, part)
    if total is None:
        raise ValueError("the statistics pass got no training batch")
    counts = np.asarray(to_host(total.count)).sum(axis=-1)  # [F, M]
    names = spec.modality_names
    for m, name in enumerate(names):
        if counts[:, m].min() < 2:
            raise ValueError(f"the statistics pass saw fewer than 2 usable examples of modality {name!r} "
                             f"in a fold (counts {counts[:, m].tolist()}); raise model.reliability.fit_examples")
    fold_stats = _density_stats(total, spec)  # [F, M, ...]
    scores, used = [], []
    for batch, valid in limited():
        s, u = _out_of_fold_scores(model, params, batch, valid, fold_stats)
        scores.append(np.asarray(to_host(s)))
        used.append(np.asarray(to_host(u)))
    calibration = _fit_calibration(np.concatenate(scores), quantile=spec.reliability.quantile,
                                   weight=np.concatenate(used))
    whole = _density_stats(jax.tree.map(lambda x: jnp.sum(x, axis=0), total), spec)  # [M, ...]
    fitted = dict(whole, location=calibration.location, scale=calibration.scale, threshold=calibration.threshold)
    return {"estimator": {k: jnp.asarray(v, jnp.float32) for k, v in fitted.items()}}


def with_stats(variables: dict, stats: dict) -> dict:
    """``variables`` with the ``reliability_stats`` collection replaced by ``stats``."""
    return {**variables, STATS: stats}
