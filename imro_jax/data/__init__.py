"""Data: TFDS builders (array_record, no TensorFlow), grain pipelines, corruptions.

Data flows one way: builder -> pipeline -> batch dict (``imro_jax.batch``) -> model.

  prepare_dataset(data_config)                       build the TFDS dataset if missing
  make_pipeline(data_config, *, split, train, seed,  grain iterator of per-process batch dicts
                process_index=0, process_count=1)    with get_state() / set_state()
  load_split(data_config, split)                     a whole split as one numpy batch dict
  apply_corruption(batch, name, level, *, modalities, fraction, key, ...)
                                                     seeded, recorded, jit-able corruptions
  default_data_config(name, **overrides)             the data-config schema of each dataset

Datasets: ``imro_synth`` (synthetic tri-modal, known quality), ``handwritten`` (UCI Multiple
Features, 6 views), ``cmu_mosi`` / ``cmu_mosei`` (MulT aligned features, manual download).
Command line: ``python -m imro_jax.data.prepare --dataset NAME --data_dir DIR``.
"""

from imro_jax.data import builders
from imro_jax.data.corruptions import CORRUPTIONS, apply_corruption
from imro_jax.data.datasets import (
    DATASETS,
    default_data_config,
    get_builder,
    prepare_dataset,
    resplit_configs,
    validate_data_config,
)
from imro_jax.data.pickle_safe import UnsafePickleError, restricted_load, restricted_loads
from imro_jax.data.pipeline import batched_dataset, load_split, make_pipeline, subset_rows

__all__ = [
    "CORRUPTIONS",
    "DATASETS",
    "UnsafePickleError",
    "apply_corruption",
    "batched_dataset",
    "builders",
    "default_data_config",
    "get_builder",
    "load_split",
    "make_pipeline",
    "prepare_dataset",
    "resplit_configs",
    "restricted_load",
    "restricted_loads",
    "subset_rows",
    "validate_data_config",
]
