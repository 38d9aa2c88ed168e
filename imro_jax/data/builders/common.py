"""Pieces every imro-jax TFDS builder shares: array features and the TensorFlow-free build call."""

from __future__ import annotations

import tensorflow_datasets as tfds

FILE_FORMAT = "array_record"  # random access, read by tfds.data_source + grain, no TensorFlow


def array_feature(shape: tuple[int, ...], dtype, doc: str) -> tfds.features.Tensor:
    """A fixed-shape tensor stored as raw bytes (no int64 upcast), documented with ``doc``."""
    return tfds.features.Tensor(
        shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES, doc=doc
    )


def scalar_feature(dtype, doc: str) -> tfds.features.Scalar:
    """A documented scalar feature."""
    return tfds.features.Scalar(dtype=dtype, doc=doc)


def download_and_prepare(builder: tfds.core.DatasetBuilder, manual_dir: str = "") -> None:
    """Builds ``builder`` as array_record without TensorFlow or Beam (no-op if already built).

    Args:
      builder: a ``tfds.core.GeneratorBasedBuilder`` instance.
      manual_dir: directory with manually downloaded source files; empty for TFDS's default
        ``<data_dir>/downloads/manual``.
    """
    config = tfds.download.DownloadConfig(
        manual_dir=manual_dir or None,
        compute_stats=tfds.download.ComputeStatsMode.SKIP,  # statistics would need TensorFlow
    )
    builder.download_and_prepare(file_format=FILE_FORMAT, download_config=config)

