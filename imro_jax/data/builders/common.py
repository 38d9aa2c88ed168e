"""Pieces every imro-jax TFDS builder shares: array features and the TensorFlow-free build call."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle as tfds_shuffle

FILE_FORMAT = "array_record"  # random access, read by tfds.data_source + grain, no TensorFlow


def array_feature(shape: tuple[int, ...], dtype, doc: str) -> tfds.features.Tensor:
    """A fixed-shape tensor stored as raw bytes (no int64 upcast), documented with ``doc``."""
    return tfds.features.Tensor(
        shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES, doc=doc
    )


def scalar_feature(dtype, doc: str) -> tfds.features.Scalar:
    """A documented scalar feature."""
    return tfds.features.Scalar(dtype=dtype, doc=doc)


# TFDS keeps a split's write-shuffle buffer in memory up to 1 GB, then spills it to temporary
# bucket files through ``tf.io.gfile``, which needs TensorFlow. Our builders must build without
# TensorFlow, so the buffer stays in memory up to this size (peak host memory ~ largest split).
# TFDS has no public setting for it. ``DatasetInfo(disable_shuffling=True)`` does not avoid it:
# in tensorflow-datasets 4.9.10 (the newest release) a generator-based build still goes through
# ``shuffle.Shuffler``, which only sorts by the example key instead of its hash and spills the same
# way (checked: a disable_shuffling build past the limit fails with "No module named
# 'tensorflow'"); it would also reorder every stored split. Only Beam's ``nondeterministic_order``
# writer skips the Shuffler, and Beam is a far larger dependency than this scoped, restored setting.
IN_MEMORY_SHUFFLE_BYTES = 64 << 30


@contextlib.contextmanager
def _in_memory_shuffle(limit_bytes: int = IN_MEMORY_SHUFFLE_BYTES) -> Iterator[None]:
    """Raises TFDS's in-memory shuffle limit to ``limit_bytes`` while the context is active."""
    previous = tfds_shuffle.MAX_MEM_BUFFER_SIZE
    tfds_shuffle.MAX_MEM_BUFFER_SIZE = max(previous, limit_bytes)
    try:
        yield
    finally:
        tfds_shuffle.MAX_MEM_BUFFER_SIZE = previous


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
    with _in_memory_shuffle():  # splits over 1 GB (imro_synth/default) would need TensorFlow
        builder.download_and_prepare(file_format=FILE_FORMAT, download_config=config)

