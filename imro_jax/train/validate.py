"""Config checks that run before anything compiles: each failure is one `ConfigError` line.

    validate_train_config   ranges of the train / optimizer / checkpoint / data.batch_size keys,
                            the writers and the profiled steps
    validate_layout         the mesh fits the devices and the batch divides over it
    validate_model_data     model spec, dataset name, builder config and data dir (real configs)
    validate_split          `train.eval_split` exists in the prepared dataset

Every message names the key, what was expected and what was given.
"""

import math
import os
import re
from numbers import Integral, Real

import ml_collections

from imro_jax.train import mesh as mesh_lib
from imro_jax.train import profiling, writers
from imro_jax.train.config import ConfigError

BEST_MODES = ("max", "min")
COMPUTE_DTYPES = ("float32", "bfloat16")


def _integer(config, key: str, *, minimum: int, meaning: str = "") -> int:
    section, name = key.split(".")
    value = config[section][name]
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"config key {key!r} expects an integer >= {minimum}{meaning}, "
                          f"got {value!r}")
    return int(value)


def _choice(config, key: str, choices: tuple[str, ...]) -> None:
    section, name = key.split(".")
    if config[section][name] not in choices:
        raise ConfigError(f"config key {key!r} expects one of {choices}, "
                          f"got {config[section][name]!r}")


def _fraction(config, key: str) -> None:
    section, name = key.split(".")
    value = config[section][name]
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"config key {key!r} expects a fraction in [0, 1], got {value!r}")


def validate_train_config(config: ml_collections.ConfigDict) -> None:
    """Checks the keys the generic loop reads (sections train, optimizer, checkpoint, data).

    Raises:
        ConfigError: the first key out of range.
    """
    num_steps = _integer(config, "train.num_steps", minimum=1)
    _integer(config, "train.log_every", minimum=1)
    _integer(config, "train.eval_every", minimum=0, meaning=" (0: never)")
    _integer(config, "train.prefetch", minimum=1)
    _choice(config, "train.compute_dtype", COMPUTE_DTYPES)
    if "writers" in config.train:  # absent from the config.json of runs older than the key
        writers.check_writer_names(config.train.writers)
    if "profile_steps" in config.train:
        profiling.check_profile_steps(config.train.profile_steps, num_steps)
    if "max_skipped_fraction" in config.train:
        _fraction(config, "train.max_skipped_fraction")
    _integer(config, "checkpoint.every_steps", minimum=1)
    _integer(config, "checkpoint.keep_last", minimum=1)
    _choice(config, "checkpoint.best_mode", BEST_MODES)
    _integer(config, "data.batch_size", minimum=1)
    accumulation = _integer(config, "optimizer.accumulation_steps", minimum=1)
    rate = config.optimizer.learning_rate
    if isinstance(rate, bool) or not isinstance(rate, Real) or not (
        math.isfinite(rate) and rate > 0
    ):
        raise ConfigError(f"config key 'optimizer.learning_rate' expects a finite number > 0, "
                          f"got {rate!r}")
    warmup = _integer(config, "optimizer.warmup_steps", minimum=0)
    updates = max(num_steps // accumulation, 1)
    if warmup >= updates:
        raise ConfigError(
            f"config key 'optimizer.warmup_steps' expects fewer warmup updates than the run has "
            f"optimizer updates (train.num_steps={num_steps} // optimizer.accumulation_steps="
            f"{accumulation} = {updates}), got {warmup}"
        )


def validate_layout(config: ml_collections.ConfigDict, num_devices: int, num_processes: int) -> None:
    """Checks that the mesh fits `num_devices` and `data.batch_size` divides over it.

    Raises:
        MeshError: the mesh does not fit the devices.
        ConfigError: the batch does not divide over the processes or the "data" axis.
    """
    data, _ = mesh_lib.resolve_mesh_shape(config.mesh.data, config.mesh.model, num_devices)
    batch_size = int(config.data.batch_size)
    for count, what in ((num_processes, "processes"), (data, "'data' mesh shards")):
        if batch_size % count:
            raise ConfigError(
                f"config key 'data.batch_size' expects a multiple of {count} (the number of "
                f"{what}), got {batch_size}"
            )


def _check_data_dir(path: str) -> None:
    if not path:
        return
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ConfigError(f"config key 'data.data_dir' expects a directory, got {path!r} "
                              "(a file)")
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"config key 'data.data_dir' expects a directory that exists or can be "
                          f"created, got {path!r} ({parent} is not writable)")


def _builder_config_names(data: ml_collections.ConfigDict) -> list[str]:
    from imro_jax.data.datasets import DATASETS

    return sorted(DATASETS[data.name].builder_cls.builder_configs)


def validate_model_data(config: ml_collections.ConfigDict) -> None:
    """Checks the model section and the dataset selection of a real (IMRO) config.

    Raises:
        ConfigError: unknown fusion (or another bad model key), dataset, builder config, or a
            data dir that is not (and cannot become) a directory.
    """
    from imro_jax.data.datasets import DATASETS, validate_data_config
    from imro_jax.models.spec import parse_model_config

    try:
        parse_model_config(config.model)
    except ValueError as error:
        raise ConfigError(" ".join(str(error).split())) from None
    if config.data.name not in DATASETS:
        raise ConfigError(f"config key 'data.name' expects one of {tuple(sorted(DATASETS))}, "
                          f"got {config.data.name!r}")
    try:
        validate_data_config(config.data)
    except ValueError as error:
        raise ConfigError(f"data: {' '.join(str(error).split())}") from None
    names = _builder_config_names(config.data)
    handwritten_resplit = config.data.name == "handwritten" and re.fullmatch(
        r"split_\d+", config.data.builder_config
    )
    if config.data.builder_config not in names and not handwritten_resplit:
        raise ConfigError(f"config key 'data.builder_config' expects one of {tuple(names)} for "
                          f"{config.data.name}, got {config.data.builder_config!r}")
    _check_data_dir(config.data.data_dir)


def validate_split(config: ml_collections.ConfigDict, split: str, key: str) -> None:
    """Checks that `split` exists in the (prepared) dataset of `config.data`.

    Raises:
        ConfigError: naming `key` and the dataset's splits.
    """
    from imro_jax.data.datasets import get_builder

    splits = sorted(get_builder(config.data).info.splits)
    if split not in splits:
        raise ConfigError(f"{key} expects one of {tuple(splits)} for {config.data.name}/"
                          f"{config.data.builder_config}, got {split!r}")
