"""The statistics pass: fits ``reliability_stats`` (the encodings' clean density) after training.

One pass of the encoders over at most ``model.reliability.fit_examples`` clean training
examples, in eval mode, then two steps on the pooled encodings it keeps (``fit_examples x M x D``
floats: 3 MB at 4096 x 3 x 64):

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


@functools.partial(jax.jit, static_argnums=0)
def _encodings(model, variables, batch: dict, valid: jax.Array) -> tuple:
    """The pooled encodings ``[B, M, D]`` of one batch, which ``[B, M]`` entries count (present,
    a valid row, a valid label), the density's class per row and its fold (even / odd row)."""
    pooled, present = model.apply(variables, batch, method=type(model).encodings)
    label, label_ok = _labels(batch, model.spec, pooled.shape[0])
    use = present & (valid & label_ok)[:, None]  # [B, M]
    fold = jnp.arange(pooled.shape[0]) % FOLDS
    return pooled, use, label, fold


@functools.partial(jax.jit, static_argnums=0)
def _fold_stats(num_classes: int, pooled: jax.Array, use: jax.Array, label: jax.Array,
                fold: jax.Array) -> GaussianStats:
    """Sufficient statistics ``[fold, modality, ...]`` of one batch's encodings."""

    def one(x, w):  # one modality: [B, D], [B] -> stats per fold
        return jax.vmap(lambda f: gaussian_sufficient_stats(x, label, num_classes=num_classes,
                                                            weight=w & (fold == f)))(jnp.arange(FOLDS))

    per_modality = jax.vmap(one, in_axes=(1, 1))(pooled, use)  # leaves [M, F, ...]
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), per_modality)


def _out_of_fold_scores(pooled: jax.Array, fold: jax.Array, fold_stats: dict) -> jax.Array:
    """Surprisal ``[B, M]`` of each row under the other fold's density."""
    scores = jax.vmap(lambda f: embedding_surprisal(pooled, jax.tree.map(lambda s: s[f], fold_stats)))(
        jnp.arange(FOLDS))  # [F, B, M]
    other = (fold + 1) % FOLDS
    return jnp.take_along_axis(scores, other[None, :, None], axis=0)[0]


def _densities(stats: GaussianStats, shrinkage: float, rank: int | None) -> tuple[dict, dict]:
    """The densities of each fold (leaves ``[F, M, ...]``) and of both folds together (``[M, ...]``)
    from the per-fold sums ``[F, M, ...]``."""
    with_whole = jax.tree.map(lambda x: jnp.concatenate([x, jnp.sum(x, axis=0, keepdims=True)]), stats)
    fit = jax.vmap(jax.vmap(functools.partial(fit_gaussian_density, shrinkage=shrinkage, rank=rank)))
    density = fit(with_whole)
    entries = {"means": density.means, "log_prior": density.log_prior, "precision": density.precision,
               "log_det_cov": density.log_det_cov}
    return ({k: v[:FOLDS] for k, v in entries.items()}, {k: v[FOLDS] for k, v in entries.items()})


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _fit_and_calibrate(shrinkage: float, rank: int | None, quantile: float, stats: GaussianStats,
                       encodings: tuple) -> dict:
    """Steps 1 and 2 of the module docstring in one program (op by op, they compiled dozens of
    small ones): the densities from the per-fold sums, the out-of-fold scores of the kept
    ``encodings`` (``((pooled [B, M, D], use [B, M], fold [B]), ...)``, one entry per batch) and
    their calibration; returns the ``reliability_stats`` entries."""
    fold_densities, whole = _densities(stats, shrinkage, rank)
    pooled, use, fold = (jnp.concatenate(parts) for parts in zip(*encodings))
    calibration = fit_calibration(_out_of_fold_scores(pooled, fold, fold_densities), quantile=quantile, weight=use)
    return dict(whole, location=calibration.location, scale=calibration.scale, threshold=calibration.threshold)


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
        for padding rows); called once. Global (sharded) arrays are fine.
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

    total, kept = None, []
    for batch, valid in limited():
        pooled, use, label, fold = _encodings(model, params, batch, valid)
        part = jax.tree.map(lambda x: np.asarray(to_host(x)),
                            _fold_stats(stats_classes(spec), pooled, use, label, fold))
        total = part if total is None else jax.tree.map(np.add, total, part)  # summed on the host
        kept.append((pooled, use, fold))
    if total is None:
        raise ValueError("the statistics pass got no training batch")
    counts = total.count.sum(axis=-1)  # [F, M]
    names = spec.modality_names
    for m, name in enumerate(names):
        if counts[:, m].min() < 2:
            raise ValueError(f"the statistics pass saw fewer than 2 usable examples of modality {name!r} "
                             f"in a fold (counts {counts[:, m].tolist()}); raise model.reliability.fit_examples")
    fitted = _fit_and_calibrate(spec.reliability.shrinkage, spec.reliability.rank or None,
                                spec.reliability.quantile, total, tuple(kept))
    return {"estimator": {k: jnp.asarray(v, jnp.float32) for k, v in fitted.items()}}


def with_stats(variables: dict, stats: dict) -> dict:
    """``variables`` with the ``reliability_stats`` collection replaced by ``stats``."""
    return {**variables, STATS: stats}
