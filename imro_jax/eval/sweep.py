"""Robustness sweeps: corrupt an evaluation set, run trained models on it, score the outputs.

One sweep applies a named corruption (``imro_jax.data.apply_corruption``) at each level to each
chosen subset of modalities and scores every predictor on the SAME corrupted inputs (the PRNG
key depends only on the level and subset index), optionally also on the oracle input::

    for level l, subset S:           key = fold_in(fold_in(key(seed), l), s)
        x~ = corrupt(x, name, l, S, fraction, key)
        for each method:  metrics[method][l, s]          = scorer(predict(x~), x~)
        for oracle ones:  metrics[method+"+oracle"][l, s] = scorer(predict(mask(x~)), x~)

``mask(x~)`` (:func:`mask_corrupted`) marks every modality that a corruption touched with a
non-zero level as missing: the same trained model told exactly which inputs are bad. It is the
ceiling a per-sample reliability mechanism can reach by switching modalities off (at level 0
nothing is masked, so the oracle equals the clean model there).

Curves are summarised over subsets by the mean (MGP protocol: mean over all C(6, 3) choices of
noisy views) and then by the MultiBench relative and effective robustness
(:mod:`imro_jax.eval.robustness`), with the level index ``i / 10`` as the MultiBench level.

:func:`rcml_conflictive` builds RCML's conflictive test set (noise on a few samples, then one view
of 40% of the samples from a class-(y+1) prototype) for :func:`score_predictors`.

Predictors are plain functions ``inputs -> {name: np.ndarray}``; :func:`model_predictor` and
:func:`caption_predictor` build them from an ``imro_jax.models`` model and its variables.
Everything here runs on the host except the jitted forward passes and corruptions.

References:
  MGP (Jung et al., NeurIPS 2022), RCML (Xu et al., AAAI 2024), MultiBench (Liang et al., 2021);
  protocols in ``docs/protocols.md`` sections 2 and 4.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from imro_jax import batch as batch_lib
from imro_jax.data import apply_corruption
from imro_jax.data.corruptions import gaussian_noise, identity_level, select_samples
from imro_jax.eval.affect import mean_absolute_error, pearson_corr
from imro_jax.eval.metrics import classification_report
from imro_jax.eval.robustness import effective_robustness, relative_robustness

PredictFn = Callable[[dict], dict[str, np.ndarray]]
Scorer = Callable[[dict[str, np.ndarray], dict], dict[str, float]]
ORACLE_SUFFIX = "+oracle"


# ----------------------------------------------------------------------------- subsets


def modality_subsets(modalities: Sequence[str], size: int) -> list[tuple[str, ...]]:
    """All ``C(M, size)`` subsets of ``size`` modalities, each sorted, in lexicographic order.

    Args:
      modalities: modality names (duplicates are an error).
      size: subset size in ``[1, M]``.

    Returns:
      List of name tuples; e.g. 20 triples for the six Handwritten views.
    """
    names = sorted(modalities)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate modality names in {list(modalities)}")
    if not 1 <= size <= len(names):
        raise ValueError(f"subset size must be in [1, {len(names)}], got {size}")
    return list(itertools.combinations(names, size))


def proper_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset that leaves at least one modality out (sizes 1 .. M-1), by size.

    Used for "every missing-modality pattern": removing all modalities leaves no prediction.
    """
    names = sorted(modalities)
    return [s for k in range(1, len(names)) for s in modality_subsets(names, k)]


# ----------------------------------------------------------------------------- corruption


def corrupt(
    batch: dict,
    name: str,
    level: float,
    modalities: Sequence[str],
    *,
    key: jax.Array,
    fraction: float = 1.0,
    num_classes: int | None = None,
) -> dict:
    """``imro_jax.data.apply_corruption`` on a host batch, with numpy arrays back.

    Args:
      batch: batch dict (numpy or jax arrays, leading axis ``[batch]``).
      name: corruption name (``imro_jax.data.CORRUPTIONS``).
      level: its level (std, probability, SNR in dB; a factor on ``fraction`` for missing and
        conflict).
      modalities: the modalities to corrupt (conflict: the candidates, one drawn per sample).
      key: PRNG key.
      fraction: fraction of samples corrupted.
      num_classes: K, required by ``conflict``.

    Returns:
      The corrupted batch (numpy leaves) with its ``corruption`` record.
    """
    out = apply_corruption(
        batch, name, float(level), modalities=tuple(modalities), fraction=fraction, key=key,
        num_classes=num_classes,
    )
    return jax.tree.map(np.asarray, out)


def corrupted_mask(batch: dict) -> dict[str, np.ndarray]:
    """Per modality, bool ``[batch]``: touched by a recorded corruption at a level that changes
    the input (not its identity level, :func:`imro_jax.data.corruptions.identity_level`)."""
    hit = {m: np.zeros(np.shape(batch[batch_lib.LABEL])[0], bool) for m in batch_lib.modality_names(batch)}
    for name, record in batch.get(batch_lib.CORRUPTION, {}).items():
        unchanged = identity_level(name)
        for m, applied in record["applied"].items():
            changes = True if unchanged is None else np.asarray(record["level"][m]) != unchanged
            hit[m] |= np.asarray(applied, bool) & changes
    return hit


def mask_corrupted(batch: dict) -> dict:
    """The oracle input: every corrupted modality (non-zero level) marked missing and zeroed.

    Args:
      batch: a batch carrying a ``corruption`` record (``imro_jax.data.apply_corruption``).

    Returns:
      A copy with ``mask[m] &= ~hit[m]`` and ``x[m] = 0`` where hit (see :func:`corrupted_mask`).
    """
    hit = corrupted_mask(batch)
    out = dict(batch)
    out[batch_lib.MASK] = {m: np.asarray(v, bool) for m, v in batch[batch_lib.MASK].items()}
    for m, rows in hit.items():
        x = np.asarray(batch[m])
        out[m] = np.where(rows.reshape((-1,) + (1,) * (x.ndim - 1)), np.zeros((), x.dtype), x)
        out[batch_lib.MASK][m] = out[batch_lib.MASK][m] & ~rows
    return out


# ----------------------------------------------------------------------------- predictors


def model_inputs(batch: dict) -> dict:
    """The keys a model reads at test time: the modalities and ``mask`` (no label, no record)."""
    return {k: batch[k] for k in (*batch_lib.modality_names(batch), batch_lib.MASK)}


def _batched(fn: Callable[[dict], dict], inputs: dict, chunk_size: int) -> dict[str, np.ndarray]:
    """Runs ``fn`` on fixed-size chunks (the last one padded with its last row), concatenated."""
    size = int(np.shape(jax.tree.leaves(inputs)[0])[0])
    outputs = []
    for start in range(0, size, chunk_size):
        rows = np.minimum(np.arange(start, start + chunk_size), size - 1)
        chunk = jax.tree.map(lambda x: np.asarray(x)[rows], inputs)
        outputs.append(jax.device_get(fn(chunk)))
    merged = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    return {k: v[:size] for k, v in merged.items()}


def model_predictor(model: Any, variables: Any, *, chunk_size: int = 256) -> PredictFn:
    """Eval-mode forward pass of an ``imro_jax.models`` model as a :data:`PredictFn`.

    Args:
      model: the Flax module (``imro_jax.models.build_model``).
      variables: ``{"params": ...}``.
      chunk_size: samples per jitted call (one compilation; the last chunk is padded).

    Returns:
      ``predict(batch) -> {"logits": [B, C], "reliability": [B, M], "present": bool[B, M],
      "valid": bool[B]}`` (numpy); modalities in sorted name order.
    """

    @jax.jit
    def forward(inputs):
        out = model.apply(variables, inputs, train=False)
        return {"logits": out.logits, "reliability": out.reliability, "present": out.present, "valid": out.valid}

    return lambda batch: _batched(forward, model_inputs(batch), chunk_size)


def caption_predictor(model: Any, variables: Any, *, chunk_size: int = 256) -> PredictFn:
    """Greedy captions (``imro_jax.models.generate``) as a :data:`PredictFn`: ``{"tokens": int[B, L]}``."""
    from imro_jax.models import generate  # models is optional for the rest of this module

    forward = jax.jit(lambda inputs: {"tokens": generate(model, variables, inputs)})
    return lambda batch: _batched(forward, model_inputs(batch), chunk_size)


# ----------------------------------------------------------------------------- scorers


def reliability_means(reliability: np.ndarray, batch: dict) -> dict[str, float]:
    """Mean weight per modality and on corrupted versus untouched (sample, modality) pairs.

    Args:
      reliability: ``[batch, modality]`` weights, modalities in sorted name order.
      batch: the (corrupted) batch, for the names and the corruption record.

    Returns:
      ``{"R/<m>": mean over samples, "R_corrupted": mean over corrupted pairs (NaN if none),
      "R_clean": mean over untouched pairs}``.
    """
    names = batch_lib.modality_names(batch)
    reliability = np.asarray(reliability, np.float64)
    if reliability.shape[1:] != (len(names),):
        raise ValueError(f"reliability must be [batch, {len(names)}] for modalities {names}, got {reliability.shape}")
    hit = np.stack([corrupted_mask(batch)[m] for m in names], axis=1)
    out = {f"R/{m}": float(reliability[:, i].mean()) for i, m in enumerate(names)}
    out["R_corrupted"] = float(reliability[hit].mean()) if hit.any() else float("nan")
    out["R_clean"] = float(reliability[~hit].mean()) if (~hit).any() else float("nan")
    return out


def classification_scorer(outputs: dict[str, np.ndarray], batch: dict, *, num_bins: int = 15) -> dict[str, float]:
    """Accuracy, NLL, ECE(num_bins), confidence AUROC, valid fraction and mean weights."""
    scores = classification_report(outputs["logits"], np.asarray(batch[batch_lib.LABEL]), num_bins)
    return {**scores, **_validity_and_weights(outputs, batch)}


def _validity_and_weights(outputs: dict[str, np.ndarray], batch: dict) -> dict[str, float]:
    """What every scorer adds: the valid fraction and, given ``reliability``, the mean weights."""
    extra = {"valid": float(np.mean(outputs["valid"])) if "valid" in outputs else 1.0}
    if "reliability" in outputs:
        extra.update(reliability_means(outputs["reliability"], batch))
    return extra


def regression_scorer(outputs: dict[str, np.ndarray], batch: dict) -> dict[str, float]:
    """MAE, Pearson correlation, RMSE (target units), valid fraction and mean weights.

    The regression model's prediction is ``outputs["logits"]`` ``[B]`` (the predicted mean).
    """
    predictions, labels = np.asarray(outputs["logits"], np.float64), np.asarray(batch[batch_lib.LABEL], np.float64)
    if predictions.shape != labels.shape or predictions.ndim != 1:
        raise ValueError(f"regression_scorer needs [B] predictions and labels, got {predictions.shape}, {labels.shape}")
    scores = {"mae": mean_absolute_error(predictions, labels), "corr": pearson_corr(predictions, labels),
              "rmse": float(np.sqrt(np.mean((predictions - labels) ** 2)))}
    return {**scores, **_validity_and_weights(outputs, batch)}


def caption_scores(tokens: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Token accuracy and exact match of generated captions.

    ``token_accuracy = mean over target tokens (targets != 0) of [tokens == targets]``;
    ``exact_match = mean over samples of [tokens == targets at every position]`` (0 = padding
    after the caption's end, so a match also needs the caption to stop in time).

    Args:
      tokens: int ``[batch, L]`` generated captions.
      targets: int ``[batch, L']`` reference captions, 0 = padding; the shorter one is
        zero-padded to the longer length.

    Returns:
      ``{"token_accuracy", "exact_match"}``.
    """
    tokens, targets = np.asarray(tokens), np.asarray(targets)
    if tokens.ndim != 2 or targets.ndim != 2 or tokens.shape[0] != targets.shape[0]:
        raise ValueError(f"tokens and targets must be [batch, length] with equal batch, got {tokens.shape}, {targets.shape}")
    length = max(tokens.shape[1], targets.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, length - a.shape[1])))  # noqa: E731
    tokens, targets = pad(tokens), pad(targets)
    real = targets != 0
    if not real.any():
        raise ValueError("targets hold no caption token (all padding)")
    return {
        "token_accuracy": float(np.sum((tokens == targets) & real) / np.sum(real)),
        "exact_match": float(np.mean(np.all(tokens == targets, axis=1))),
    }


def caption_scorer(outputs: dict[str, np.ndarray], batch: dict) -> dict[str, float]:
    """:func:`caption_scores` of ``outputs["tokens"]`` against ``batch["caption"]``."""
    return caption_scores(outputs["tokens"], batch[batch_lib.CAPTION])


# ----------------------------------------------------------------------------- sweeps


@dataclasses.dataclass
class SweepResult:
    """Scores of every method at every (level, subset) point of one corruption sweep.

    Attributes:
      corruption: corruption name.
      levels: ``[L]`` levels.
      subsets: the S modality subsets.
      fraction: fraction of samples corrupted.
      scores: ``{method: {metric: float64[L, S]}}``; oracle methods end in ``"+oracle"``.
    """

    corruption: str
    levels: np.ndarray
    subsets: list[tuple[str, ...]]
    fraction: float
    scores: dict[str, dict[str, np.ndarray]]

    def curve(self, method: str, metric: str) -> np.ndarray:
        """``[L]`` mean over subsets of ``metric`` (NaN entries ignored)."""
        if method not in self.scores or metric not in self.scores[method]:
            known = {m: sorted(v) for m, v in self.scores.items()}
            raise KeyError(f"no {metric!r} for {method!r}; have {known}")
        values = self.scores[method][metric]
        return np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in values])

    def summary(self, metric: str = "accuracy", reference: str | None = None) -> dict[str, dict]:
        """Per method: the mean curve, its relative robustness and (with a reference method,
        MultiBench: late fusion) the effective robustness against the reference's curve."""
        out = {}
        for method in self.scores:
            curve = self.curve(method, metric)
            entry = {"curve": curve.tolist()}
            if len(curve) >= 2:
                entry["relative_robustness"] = relative_robustness(curve)
                if reference is not None:
                    entry["effective_robustness"] = effective_robustness(curve, self.curve(reference, metric))
            out[method] = entry
        return out

    def to_json(self) -> dict:
        """JSON-ready dict (lists, no numpy)."""
        return {
            "corruption": self.corruption,
            "levels": np.asarray(self.levels, float).tolist(),
            "subsets": [list(s) for s in self.subsets],
            "fraction": self.fraction,
            "scores": {m: {k: np.asarray(v).tolist() for k, v in s.items()} for m, s in self.scores.items()},
        }


def score_predictors(
    predictors: Mapping[str, PredictFn],
    batch: dict,
    *,
    oracle: Sequence[str] = (),
    scorer: Scorer = classification_scorer,
) -> dict[str, dict[str, float]]:
    """Scores every predictor on one (possibly corrupted) batch.

    Args:
      predictors: ``{method: predict_fn}``.
      batch: numpy batch dict with ``label`` (or ``caption``) and, for the oracle, a
        ``corruption`` record.
      oracle: methods also scored on :func:`mask_corrupted` inputs, as ``method + "+oracle"``.
      scorer: ``(outputs, batch) -> {metric: float}``; always given the (corrupted) batch.

    Returns:
      ``{method: {metric: float}}``.
    """
    unknown = [m for m in oracle if m not in predictors]
    if unknown:
        raise ValueError(f"oracle methods {unknown} are not among the predictors {sorted(predictors)}")
    scores = {method: scorer(predict(batch), batch) for method, predict in predictors.items()}
    if oracle:
        masked = mask_corrupted(batch)
        scores.update({m + ORACLE_SUFFIX: scorer(predictors[m](masked), batch) for m in oracle})
    return scores


def sweep(
    predictors: Mapping[str, PredictFn],
    batch: dict,
    *,
    corruption: str,
    levels: Sequence[float],
    subsets: Sequence[Sequence[str]],
    fraction: float = 1.0,
    seed: int = 0,
    num_classes: int | None = None,
    oracle: Sequence[str] = (),
    scorer: Scorer = classification_scorer,
) -> SweepResult:
    """Scores each predictor on each corrupted copy of ``batch`` (see the module docstring).

    Args:
      predictors: ``{method: predict_fn}``, e.g. from :func:`model_predictor`.
      batch: the clean evaluation set as one batch dict (numpy), with ``label`` (and
        ``caption`` for the caption scorer).
      corruption: corruption name (``imro_jax.data.CORRUPTIONS``).
      levels: the levels to sweep, in increasing severity.
      subsets: the modality subsets to corrupt (e.g. :func:`modality_subsets`).
      fraction: fraction of samples corrupted at each point.
      seed: corruption seed; every method sees identical corruptions.
      num_classes: K (for ``conflict``).
      oracle: methods also scored on :func:`mask_corrupted` inputs, as ``method + "+oracle"``.
      scorer: ``(outputs, corrupted_batch) -> {metric: float}``.

    Returns:
      :class:`SweepResult`.
    """
    if len(levels) == 0 or len(subsets) == 0:
        raise ValueError(f"need at least one level and one subset, got {list(levels)}, {list(subsets)}")
    subsets = [tuple(s) for s in subsets]
    base = jax.random.key(seed)
    grid = [
        [
            score_predictors(
                predictors,
                corrupt(batch, corruption, level, subset, key=jax.random.fold_in(jax.random.fold_in(base, i), j),
                        fraction=fraction, num_classes=num_classes),
                oracle=oracle, scorer=scorer,
            )
            for j, subset in enumerate(subsets)
        ]
        for i, level in enumerate(levels)
    ]
    first = grid[0][0]
    scores = {
        m: {k: np.array([[point[m][k] for point in row] for row in grid]) for k in first[m]} for m in first
    }
    return SweepResult(corruption, np.asarray(levels, float), subsets, float(fraction), scores)


def class_prototypes(batch: dict, num_classes: int) -> dict:
    """The first sample of each class, as a K-row batch (RCML's conflict donors).

    Raises:
      ValueError: a class has no sample in ``batch``.
    """
    labels = np.asarray(batch[batch_lib.LABEL])
    absent = [c for c in range(num_classes) if not np.any(labels == c)]
    if absent:
        raise ValueError(f"no sample of classes {absent} to serve as conflict prototypes")
    rows = np.array([np.flatnonzero(labels == c)[0] for c in range(num_classes)])
    keys = (*batch_lib.modality_names(batch), batch_lib.MASK, batch_lib.LABEL)
    return jax.tree.map(lambda x: np.asarray(x)[rows], {k: batch[k] for k in keys})


def rcml_conflictive(
    batch: dict,
    *,
    key: jax.Array,
    num_classes: int,
    pool: dict,
    noise_fraction: float = 0.1,
    noise_std: float = 0.5,
    conflict_fraction: float = 0.4,
) -> dict:
    """RCML's conflictive test set (``postprocessing(test_index, addNoise=True, sigma=0.5,
    ratio_noise=0.1, addConflict=True, ratio_conflict=0.4)`` in the RCML code).

    1. Noise: ``round(noise_fraction * B)`` samples; each gets ``k ~ U{0, ..., M-1}`` views,
       drawn without replacement, replaced by ``N(x, noise_std)`` (recorded as ``gaussian``).
    2. Conflict: ``round(conflict_fraction * B)`` samples, drawn independently of step 1; each
       gets ONE view (uniform over all M) replaced by that view of a sample of class
       (y + 1) % K from ``pool`` (``imro_jax.data.apply_corruption(..., "conflict", ...)``; with
       ``pool = class_prototypes(train_batch, K)`` the donor is RCML's fixed per-class prototype).

    Args:
      batch: the clean test set (numpy batch dict with ``label``).
      key: PRNG key.
      num_classes: K.
      pool: conflict donors (a batch dict with the same modalities, ``mask`` and ``label``).
      noise_fraction, noise_std, conflict_fraction: RCML's ratio_noise, sigma, ratio_conflict.

    Returns:
      The corrupted batch (numpy) with ``corruption`` records ``gaussian`` and ``conflict``.

    References:
      Xu et al., "Reliable Conflictive Multi-View Learning", AAAI 2024 (code: ``data.py``).
    """
    names = batch_lib.modality_names(batch)
    size, count = np.shape(batch[batch_lib.LABEL])[0], len(names)
    k_select, k_count, k_views, k_noise, k_conflict = jax.random.split(key, 5)
    selected = select_samples(k_select, size, noise_fraction)  # [B]
    views_per_sample = jax.random.randint(k_count, (size,), 0, count)  # k in {0, ..., M-1}
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(k_views, (size, count)), axis=1), axis=1)
    noisy = np.asarray(selected[:, None] & (rank < views_per_sample[:, None]))  # [B, M]
    out = dict(batch)
    record = {"applied": {}, "level": {}}
    for i, (k, m) in enumerate(zip(jax.random.split(k_noise, count), names)):
        x = np.asarray(batch[m])
        rows = noisy[:, i].reshape((-1,) + (1,) * (x.ndim - 1))
        out[m] = np.where(rows, np.asarray(gaussian_noise(k, jnp.asarray(x), noise_std)), x)
        record["applied"][m] = noisy[:, i]
        record["level"][m] = np.where(noisy[:, i], np.float32(noise_std), np.float32(0.0))
    out[batch_lib.CORRUPTION] = {**batch.get(batch_lib.CORRUPTION, {}), "gaussian": record}
    out = apply_corruption(
        out, "conflict", 1.0, modalities=tuple(names), fraction=conflict_fraction, key=k_conflict,
        num_classes=num_classes, pool=pool,
    )
    return jax.tree.map(np.asarray, out)
