"""The datasets imro-jax knows, their data-config schema, and ``prepare_dataset``.

A data config (``config.data`` in ``experiments/configs/*.py``) selects a TFDS builder and its
config and sets the input pipeline:

  common keys:
    name                  imro_synth | handwritten | cmu_mosi | cmu_mosei
    builder_config        TFDS builder config (imro_synth: small | default, and
                          small_regression | default_regression with a float score label;
                          handwritten: split_<seed>; cmu_*: aligned)
    data_dir              TFDS data dir; "" = TFDS default ($TFDS_DATA_DIR or ~/tensorflow_datasets)
    batch_size            global batch size, divided over processes
    num_classes           must match the dataset (1 for a regression label: cmu_* "score",
                          imro_synth *_regression)
    worker_count          grain worker processes (0 = read in the calling process)
    read_threads          grain ReadOptions.num_threads
    prefetch_buffer_size  grain ReadOptions.prefetch_buffer_size
  handwritten: manual_dir (optional UCI files), num_resplits (k seeded re-splits split_0..k-1)
  cmu_mosi / cmu_mosei: manual_dir (the pickle), label (score | class2 | class7)

``default_data_config(name)`` returns the full schema with defaults; ``validate_data_config``
rejects missing or unknown keys with a message naming them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import ml_collections
import tensorflow_datasets as tfds

from imro_jax.data.builders import cmu_affect, handwritten, imro_synth
from imro_jax.data.builders.common import download_and_prepare

COMMON_DEFAULTS = dict(
    builder_config="",
    data_dir="",
    batch_size=32,
    num_classes=0,
    worker_count=0,
    read_threads=4,
    prefetch_buffer_size=64,
    train_split="train",  # the split (or TFDS slice, "train[:80%]") the trainer reads as train
)


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """How a data config maps to a builder and to batch-contract elements."""

    builder_cls: type
    defaults: dict  # dataset-specific keys and overrides of COMMON_DEFAULTS
    element_fn: Callable[[ml_collections.ConfigDict], Callable[[dict], dict]]
    num_classes: Callable[[ml_collections.ConfigDict, tfds.core.DatasetBuilder], int]


def _cmu_num_classes(config, builder) -> int:
    del builder
    return {"score": 1, "class2": 2, "class7": 7}[config.label]


DATASETS: dict[str, DatasetEntry] = {
    "imro_synth": DatasetEntry(
        builder_cls=imro_synth.ImroSynth,
        defaults=dict(builder_config="default", num_classes=4),
        element_fn=lambda config: imro_synth.to_batch_element,
        num_classes=lambda config, builder: imro_synth.num_outputs(builder.builder_config),
    ),
    "handwritten": DatasetEntry(
        builder_cls=handwritten.Handwritten,
        defaults=dict(
            builder_config=handwritten.split_config_name(handwritten.FIXED_SPLIT_SEED),
            batch_size=64,
            num_classes=handwritten.NUM_CLASSES,
            manual_dir="",
            num_resplits=10,
        ),
        element_fn=lambda config: handwritten.to_batch_element,
        num_classes=lambda config, builder: handwritten.NUM_CLASSES,
    ),
    **{
        builder_cls.name: DatasetEntry(
            builder_cls=builder_cls,
            defaults=dict(builder_config="aligned", num_classes=1, manual_dir="", label="score"),
            element_fn=lambda config: cmu_affect.batch_element_fn(config.label),
            num_classes=_cmu_num_classes,
        )
        for builder_cls in (cmu_affect.CmuMosi, cmu_affect.CmuMosei)
    },
}


def default_data_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """The complete data config of dataset ``name`` with its defaults, updated by ``overrides``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    config = ml_collections.ConfigDict({"name": name, **COMMON_DEFAULTS, **DATASETS[name].defaults})
    config.update(overrides)
    validate_data_config(config)
    return config


def validate_data_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming missing/unknown keys or invalid values of a data config."""
    if "name" not in config or config.name not in DATASETS:
        given = config.name if "name" in config else None
        raise ValueError(f"data config name must be one of {sorted(DATASETS)}, got {given!r}")
    expected = {"name", *COMMON_DEFAULTS, *DATASETS[config.name].defaults}
    given = set(config.keys())
    if given != expected:
        raise ValueError(
            f"data config for {config.name}: missing keys {sorted(expected - given)}, "
            f"unknown keys {sorted(given - expected)}"
        )
    if config.batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {config.batch_size}")
    if config.worker_count < 0 or config.read_threads <= 0 or config.prefetch_buffer_size <= 0:
        raise ValueError(
            "need worker_count >= 0, read_threads > 0, prefetch_buffer_size > 0; got "
            f"{config.worker_count}, {config.read_threads}, {config.prefetch_buffer_size}"
        )
    if "label" in config and config.label not in cmu_affect.LABEL_KINDS:
        raise ValueError(f"label must be one of {cmu_affect.LABEL_KINDS}, got {config.label!r}")


def _builder_config(name: str, config_name: str):
    """The builder config to request: a name, or a new ``HandwrittenConfig`` for unlisted seeds."""
    match = re.fullmatch(r"split_(\d+)", config_name)
    if name == "handwritten" and match and int(match.group(1)) >= handwritten.NUM_PREDEFINED_SPLITS:
        seed = int(match.group(1))
        return handwritten.HandwrittenConfig(
            name=config_name, description=f"re-split, seed {seed}", split_seed=seed
        )
    return config_name


def get_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """The TFDS builder selected by a data config (not built; see ``prepare_dataset``)."""
    validate_data_config(config)
    entry = DATASETS[config.name]
    return entry.builder_cls(
        config=_builder_config(config.name, config.builder_config), data_dir=config.data_dir or None
    )


def prepare_dataset(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """Builds the dataset of a data config as array_record if it is not built yet.

    Runs without TensorFlow. In multi-host jobs call it on one process and wait (a barrier)
    before the others read.

    Args:
      config: data config (see the module docstring).

    Returns:
      The prepared builder (``builder.info`` holds splits, features and metadata).

    Raises:
      ValueError: bad config, or ``num_classes`` disagrees with the dataset.
      FileNotFoundError: manual source files missing (the message says what to download).
    """
    builder = get_builder(config)
    download_and_prepare(builder, config.manual_dir if "manual_dir" in config else "")
    check_num_classes(config, builder)
    return builder


def check_num_classes(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder) -> None:
    """Raises ValueError if ``config.num_classes`` disagrees with the dataset."""
    actual = DATASETS[config.name].num_classes(config, builder)
    if config.num_classes != actual:
        raise ValueError(
            f"data config num_classes={config.num_classes} but {config.name}/{config.builder_config}"
            f" has {actual}"
        )


def resplit_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
    """handwritten: copies of ``config`` for the seeded re-splits ``split_0 .. split_{k-1}``."""
    if config.name != "handwritten":
        raise ValueError(f"re-splits exist for handwritten only, not {config.name}")
    out = []
    for seed in range(config.num_resplits):
        copy = ml_collections.ConfigDict(config.to_dict())
        copy.builder_config = handwritten.split_config_name(seed)
        out.append(copy)
    return out


def element_fn(config: ml_collections.ConfigDict) -> Callable[[dict], dict]:
    """Stored TFDS example -> batch-contract element (no batch axis) for this data config."""
    return DATASETS[config.name].element_fn(config)
