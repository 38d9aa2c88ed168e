"""The evaluation protocols of the experiments, as library functions.

Each protocol scores a dict of predictors (name -> ``batch -> {"logits", "reliability", ...}``,
see :func:`imro_jax.eval.sweep.model_predictor`) on a test batch under a fixed, seeded set of
conditions. The experiment scripts (``experiments/handwritten.py``, ``synth.py``,
``ablations.py``) only train, call these and write tables, so two scripts that evaluate the same
way share one function instead of importing each other.

* :func:`handwritten_protocol`: UCI Handwritten, the RCML conflictive test (Xu et al., AAAI 2024,
  code protocol), conflict alone, the MGP Gaussian-noise sweep on 3 of the 6 views (all or every
  ``subset_stride``-th of the C(6, 3) = 20 triples) and the other corruption kinds of
  :data:`HANDWRITTEN_KINDS`, each with the oracle of every method (the corrupted views masked).
* :func:`modality_protocol`: ``imro_synth``, noise on each modality alone at increasing levels,
  every missing-modality pattern, conflict (one modality of every sample from a class-(y+1)
  donor) and the harder corruptions of :data:`SYNTH_KINDS`; :func:`synth_eval_split` loads the
  samples it scores and :func:`modality_headline` reads one number per condition out of it.

The protocols are described with their sources in ``docs/protocols.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np

from imro_jax.data import load_split, prepare_dataset, subset_rows
from imro_jax.data.builders.handwritten import NUM_CLASSES as HANDWRITTEN_CLASSES
from imro_jax.data.builders.handwritten import VIEWS as HANDWRITTEN_VIEWS
from imro_jax.data.synth import MODALITIES as SYNTH_MODALITIES
from imro_jax.data.synth import quality_matrix
from imro_jax.eval import sweep as sw

# Corruption kinds beyond Gaussian noise, each on 3 of the 6 Handwritten views (the noise
# sweep's triples): column name -> (imro_jax.data.corruptions name, level).
HANDWRITTEN_KINDS = {
    "noise@0.05": ("gaussian", 0.05),  # small noise
    "feature_dropout@0.5": ("feature_dropout", 0.5),  # half of the features zeroed
    "shuffle": ("shuffle", 1.0),  # the features of each view permuted within the sample
    "misaligned": ("misaligned", 1.0),  # the views taken from another, random test sample
    "stuck@0.5": ("stuck", 0.5),  # a constant sensor (features in [0, 1] after min-max scaling)
}

# Harder corruptions of imro_synth, one modality at a time: column -> (modality, corruption,
# level); see imro_jax.data.corruptions for what each level means.
SYNTH_KINDS = {
    "vision blur@2": ("vision", "blur", 2.0),  # Gaussian blur, std 2 pixels
    "vision occlusion@0.5": ("vision", "occlusion", 0.5),  # a zeroed square, half the side
    "audio clipping@0.1": ("audio", "clipping", 0.1),  # hard clipping at 10% of the peak
    "audio babble@0": ("audio", "babble", 0.0),  # 4 other samples' audio mixed in at 0 dB SNR
    "text word_dropout@0.5": ("text", "word_dropout", 0.5),  # half the words removed
    "text token_shuffle@1": ("text", "token_shuffle", 1.0),  # the words of every sample shuffled
}
# imro_synth noise per modality: modality -> (corruption, levels); the first level is clean.
SYNTH_NOISE = {"text": ("blank", [0.0, 0.25, 0.5, 0.75, 1.0]),
               "vision": ("gaussian", [0.0, 0.1, 0.3, 1.0, 3.0]),
               "audio": ("gaussian", [0.0, 0.03, 0.1, 0.3, 1.0])}
# Two levels per modality (clean, then std / blanked fraction 1): the experiments' --quick runs.
SYNTH_NOISE_QUICK = {"text": ("blank", [0.0, 1.0]), "vision": ("gaussian", [0.0, 1.0]),
                     "audio": ("gaussian", [0.0, 1.0])}
SYNTH_TRAIN_STEPS = 1000  # train steps of the imro_synth experiments' runs (batch 32)

Predictors = Mapping[str, Callable[[dict], dict]]


def handwritten_protocol(predictors: Predictors, test: dict, train: dict, *, seed: int,
                         sigmas: Sequence[float], subset_stride: int = 1) -> dict:
    """All test-time numbers of one seed's Handwritten models.

    Args:
        predictors: method name -> predictor.
        test: the test split as one batch (views ``view0`` ... ``view5``, ``label``).
        train: the training split as one batch (its class prototypes are the RCML donors).
        seed: the seed of every corruption draw (the experiments pass the training seed).
        sigmas: the Gaussian noise levels of the MGP sweep (std, features in [0, 1]).
        subset_stride: use every ``subset_stride``-th of the 20 view triples.

    Returns:
        ``{"clean", "conflictive", "conflict_only"}``: per predictor (and ``<name>+oracle``) its
        scores; ``"noise"``: the :class:`imro_jax.eval.sweep.SweepResult` of the noise sweep;
        ``"kinds"``: column of :data:`HANDWRITTEN_KINDS` -> name (and oracle) -> ``{"accuracy"}``.
    """
    methods = list(predictors)
    key = jax.random.key(10_000 + seed)
    rcml = sw.rcml_conflictive(test, key=key, num_classes=HANDWRITTEN_CLASSES,
                               pool=sw.class_prototypes(train, HANDWRITTEN_CLASSES))
    conflict = sw.corrupt(test, "conflict", 1.0, HANDWRITTEN_VIEWS, key=jax.random.fold_in(key, 1), fraction=0.4,
                          num_classes=HANDWRITTEN_CLASSES)
    subsets = sw.modality_subsets(HANDWRITTEN_VIEWS, 3)[::subset_stride]
    noise = sw.sweep(predictors, test, corruption="gaussian", levels=list(sigmas), subsets=subsets, seed=seed,
                     oracle=methods)
    names = [*methods, *(m + sw.ORACLE_SUFFIX for m in methods)]
    kinds = {}
    for column, (corruption, level) in HANDWRITTEN_KINDS.items():
        result = sw.sweep(predictors, test, corruption=corruption, levels=[level], subsets=subsets, seed=seed,
                          oracle=methods)
        kinds[column] = {name: {"accuracy": float(result.curve(name, "accuracy")[0])} for name in names}
    return {
        "clean": sw.score_predictors(predictors, test),
        "conflictive": sw.score_predictors(predictors, rcml, oracle=methods),
        "conflict_only": sw.score_predictors(predictors, conflict, oracle=methods),
        "noise": noise,
        "kinds": kinds,
    }


def modality_protocol(predictors: Predictors, test: dict, *, noise: Mapping[str, tuple[str, Sequence[float]]],
                      seed: int, scorer: Callable = sw.classification_scorer, oracle: Sequence[str] = (),
                      num_classes: int, kinds: bool = True, modalities: Sequence[str] = SYNTH_MODALITIES,
                      classes: np.ndarray | None = None) -> dict:
    """Noise per modality, missing patterns, conflict and (``kinds``) the corruptions of
    :data:`SYNTH_KINDS` for one set of ``imro_synth`` predictors.

    Args:
        predictors: name -> predictor.
        test: the test batch.
        noise: modality -> (corruption, levels), e.g. :data:`SYNTH_NOISE`.
        seed: the seed of every corruption draw.
        scorer: ``imro_jax.eval.sweep.classification_scorer`` or ``caption_scorer``.
        oracle: the names whose oracle (the corrupted modality masked) is scored too.
        num_classes: the number of classes (the conflict donors are of class y + 1).
        kinds: also score :data:`SYNTH_KINDS`.
        modalities: the modality names, sorted.
        classes: int ``[B]`` the class of each test sample, for the conflict donors when
            ``test["label"]`` is not the class (a regression target): the donors are then of class
            ``classes + 1`` and the scored label stays the target.

    Returns:
        ``{"kinds": column -> scores, "clean": scores, "noise": modality -> SweepResult,
        "missing": SweepResult over every proper subset, "conflict": scores}``.
    """
    key = jax.random.key(20_000 + seed)
    noise_results = {
        m: sw.sweep(predictors, test, corruption=name, levels=levels, subsets=[(m,)], seed=seed + 31 * i,
                    oracle=oracle, scorer=scorer)
        for i, (m, (name, levels)) in enumerate(sorted(noise.items()))
    }
    missing = sw.sweep(predictors, test, corruption="missing", levels=[1.0], subsets=sw.proper_subsets(modalities),
                       seed=seed, scorer=scorer)
    by_class = test if classes is None else _with_labels(test, classes)
    conflicted = sw.corrupt(by_class, "conflict", 1.0, modalities, key=key, fraction=1.0, num_classes=num_classes)
    if classes is not None:
        conflicted = {**conflicted, "label": test["label"]}
    scored_kinds = {}
    for i, (column, (modality, name, level)) in enumerate(SYNTH_KINDS.items() if kinds else ()):
        corrupted = sw.corrupt(test, name, level, (modality,), key=jax.random.fold_in(key, 100 + i))
        scored_kinds[column] = sw.score_predictors(predictors, corrupted, oracle=oracle, scorer=scorer)
    return {
        "kinds": scored_kinds,
        "clean": sw.score_predictors(predictors, test, scorer=scorer),
        "noise": noise_results,
        "missing": missing,
        "conflict": sw.score_predictors(predictors, conflicted, oracle=oracle, scorer=scorer),
    }


def synth_eval_split(data_config, split: str, count: int, class_data_config=None) -> tuple[dict, np.ndarray]:
    """The first ``count`` samples of an ``imro_synth`` split and the class of each.

    A regression builder config holds the samples of its classification config plus the
    continuous score in ``label``; the classes, the key of :func:`modality_protocol`'s conflict
    donors, are then read from ``class_data_config`` (the classification builder config of the
    same samples), after checking that it holds the same samples (equal quality matrices). Both
    are built first if they are not yet (``imro_jax.data.prepare_dataset``).

    Args:
        data_config: the ``data`` section of the scored config.
        split: ``"validation"`` (model selection) or ``"test"``.
        count: how many samples (the first ones of the split).
        class_data_config: the ``data`` section of the classification config of the same
            samples; None when ``data_config`` is a classification config.

    Returns:
        ``(batch, classes int [count])``.

    Raises:
        RuntimeError: the two configs' splits hold other samples.
    """
    prepare_dataset(data_config)
    batch = subset_rows(load_split(data_config, split), count)
    if class_data_config is None:
        return batch, np.asarray(batch["label"])
    prepare_dataset(class_data_config)
    by_class = subset_rows(load_split(class_data_config, split), count)
    if not np.array_equal(quality_matrix(by_class), quality_matrix(batch)):
        raise RuntimeError(f"{class_data_config.builder_config} and {data_config.builder_config} {split} splits "
                           "hold other samples")
    return batch, np.asarray(by_class["label"])


def modality_headline(result: dict, method: str, metric: str) -> dict[str, float]:
    """One number per condition of a :func:`modality_protocol` result, for one method: the
    columns that the experiments' summaries and the model selection read.

    Args:
        result: one seed's :func:`modality_protocol` output.
        method: a predictor name of it.
        metric: the scorer's metric, e.g. ``"accuracy"`` or ``"mae"``.

    Returns:
        ``clean``; ``missing`` (mean over the missing-modality patterns); ``conflict``;
        ``noise:<modality>@<last level>`` (``%g``) per modality; each :data:`SYNTH_KINDS` column;
        and, where the method's oracle was scored, ``conflict``, the noise and the kinds columns
        again with the ``+oracle`` suffix. Unscaled (accuracy as a fraction).
    """
    row = {"clean": float(result["clean"][method][metric]),
           "missing": float(np.mean(result["missing"].scores[method][metric]))}
    names = [method] + ([method + sw.ORACLE_SUFFIX] if method + sw.ORACLE_SUFFIX in result["conflict"] else [])
    for name in names:
        suffix = name[len(method):]
        row["conflict" + suffix] = float(result["conflict"][name][metric])
        for modality, sweep_result in sorted(result["noise"].items()):
            level = sweep_result.levels[-1]
            row[f"noise:{modality}@{level:g}{suffix}"] = float(sweep_result.curve(name, metric)[-1])
        for column, scores in result["kinds"].items():
            row[column + suffix] = float(scores[name][metric])
    return row


def _with_labels(test: dict, classes: np.ndarray) -> dict:
    classes = np.asarray(classes)
    if classes.shape != np.shape(test["label"]) or not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"classes must be int [{len(test['label'])}], got {classes.dtype} {classes.shape}")
    return {**test, "label": classes}
