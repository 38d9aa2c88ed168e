"""Grain input pipelines: TFDS array_record source -> per-process numpy batch dicts.

Order of operations (``batched_dataset``)::

    source (random access)                        N records
      -> train: shuffle(seed), reshuffled every epoch, repeated forever
      -> [process_index::process_count]           per-process shard (strided)
      -> map(element_fn)                          stored example -> batch-contract element
      -> batch(batch_size // process_count)       drop_remainder when training
      -> to_iter_dataset(ReadOptions)             threads + prefetch buffer
      -> mp_prefetch(worker_count)                optional worker processes

Sharding is strided over the (shuffled) stream, so with the same ``seed`` on every process the
union of the processes' ``j``-th batches is exactly the ``j``-th global batch of a single-process
pipeline with the global batch size, and the shards are disjoint. For evaluation (no shuffle,
one pass) the shards are disjoint and together cover the split exactly once; shard sizes differ
by at most one, so processes may see a different number of (partial) last batches.

The returned iterator is a ``grain.DatasetIterator``: ``get_state()`` returns a small dict
(JSON-serialisable) and ``set_state(state)`` on a freshly made iterator of the same pipeline
continues with identical batches. ``imro_jax.train.checkpoint.DataStateHandler`` saves it with
Orbax in the layout of ``grain.checkpoint.CheckpointHandler`` (one ``process_i-of-n.json`` per
process) plus a SHA-256 checksum of the state, so that a damaged data state is reported as
corrupt instead of restoring a different position in the stream (grain's handler has no
checksum, and its restore needs the live iterator, which the checkpoint module does not hold).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grain
import jax
import ml_collections
import numpy as np
from absl import flags

from imro_jax.data import datasets


def batched_dataset(
    source: Sequence,
    element_fn: Callable[[dict], dict],
    *,
    batch_size: int,
    train: bool,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    read_threads: int = 4,
    prefetch_buffer_size: int = 64,
    worker_count: int = 0,
) -> grain.IterDataset:
    """Grain dataset of per-process batches from a random-access source.

    Args:
      source: random-access records (``len`` and ``__getitem__``), e.g. a TFDS data source.
      element_fn: record -> batch-contract element (must be picklable when ``worker_count > 0``).
      batch_size: GLOBAL batch size; each process gets ``batch_size // process_count``.
      train: shuffle (reshuffled each epoch), repeat forever and drop the last partial batch;
        otherwise one pass in source order, last batch possibly smaller.
      seed: shuffle seed; must be the same on every process.
      process_index: this process, in ``[0, process_count)``.
      process_count: number of processes (hosts) sharing the data.
      read_threads: threads reading records.
      prefetch_buffer_size: elements read ahead per thread pool.
      worker_count: worker processes for ``map`` and ``batch`` (0: none).

    Returns:
      A ``grain.IterDataset`` of batch dicts of numpy arrays with leading axis
      ``batch_size // process_count``.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    if batch_size % process_count:
        raise ValueError(f"batch_size {batch_size} is not divisible by process_count {process_count}")
    if len(source) == 0:
        raise ValueError("the data source is empty")
    dataset = grain.MapDataset.source(source)
    if train:
        dataset = dataset.shuffle(seed=seed).repeat()
    dataset = dataset[process_index::process_count]
    dataset = dataset.map(element_fn).batch(batch_size // process_count, drop_remainder=train)
    dataset = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_buffer_size)
    )
    if worker_count > 0:
        _ensure_absl_flags_parsed()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return dataset


def _ensure_absl_flags_parsed() -> None:
    """grain 0.2.18's worker start reads an absl flag, which fails outside ``absl.app``; mark the
    flags parsed (keeping their defaults). A later ``absl.app.run`` still parses ``argv``."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_pipeline(
    data_config: ml_collections.ConfigDict,
    *,
    split: str,
    train: bool,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.DatasetIterator:
    """Iterator of per-process batch dicts for one split of a prepared dataset.

    Args:
      data_config: data config (``imro_jax.data.datasets``); the dataset must have been built by
        ``prepare_dataset`` (or ``python -m imro_jax.data.prepare``).
      split: a split of the dataset (e.g. train, validation, test), or a TFDS slice of one
        (e.g. ``"train[:80%]"``: a held-out validation part of a dataset without one).
      train: shuffled infinite stream with full batches, else one ordered pass.
      seed: shuffle seed (same on all processes).
      process_index: this process.
      process_count: number of processes.

    Returns:
      ``grain.DatasetIterator`` yielding ``{modality: array[b, ...], "mask": {m: bool[b]},
      "label": int32[b] | float32[b], "quality": ... (imro_synth), "caption": ... (imro_synth)}``
      with ``b = data_config.batch_size // process_count``; supports ``get_state``/``set_state``.
    """
    builder = datasets.get_builder(data_config)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"{data_config.name}/{data_config.builder_config} is not built in {builder.data_dir}; run "
            f"`python -m imro_jax.data.prepare --dataset {data_config.name} --builder_config "
            f"{data_config.builder_config} --data_dir <DIR>` or imro_jax.data.prepare_dataset first"
        )
    datasets.check_num_classes(data_config, builder)
    if split.split("[", 1)[0] not in builder.info.splits:  # TFDS slices such as "train[:80%]" allowed
        raise ValueError(f"{data_config.name} has splits {sorted(builder.info.splits)}, not {split!r}")
    dataset = batched_dataset(
        builder.as_data_source(split=split),
        datasets.element_fn(data_config),
        batch_size=data_config.batch_size,
        train=train,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        read_threads=data_config.read_threads,
        prefetch_buffer_size=data_config.prefetch_buffer_size,
        worker_count=data_config.worker_count,
    )
    return iter(dataset)


def load_split(data_config: ml_collections.ConfigDict, split: str) -> dict:
    """A whole split in memory as one numpy batch dict (one ordered pass of ``make_pipeline``).

    Args:
      data_config: data config of a prepared dataset (as for :func:`make_pipeline`).
      split: a split or TFDS slice of one.

    Returns:
      The batch dict of every example of the split in order, each leaf ``[N, ...]``.

    Raises:
      ValueError: the split is empty.
    """
    batches = list(make_pipeline(data_config, split=split, train=False, seed=0))
    if not batches:
        raise ValueError(f"split {split!r} of {data_config.name} is empty")
    return jax.tree.map(lambda *xs: np.concatenate(xs), *batches)


def subset_rows(batch: dict, count: int) -> dict:
    """The first ``count`` rows of every leaf of ``batch`` (all of them when it has fewer), as numpy."""
    return jax.tree.map(lambda x: np.asarray(x)[:count], batch)
