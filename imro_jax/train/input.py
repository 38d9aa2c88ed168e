"""Per-process numpy batches -> global device arrays, read ahead on a background thread.

Each process reads `batch_size // process_count` examples; `jax.make_array_from_process_local_data`
stitches them into one global array `[batch, ...]` sharded over the "data" mesh axis. The read-ahead
is grain's `ThreadPrefetchDatasetIterator`, which keeps the data iterator's state right after each
batch it pulls, so a checkpoint written after step `t` stores exactly the state that yields batch
`t + 1` on resume, however far ahead the thread has read.
"""

from collections.abc import Iterator
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding


def _check_local_batch(local_batch: dict, sharding: NamedSharding) -> None:
    """Raises a clear error if the per-process batch cannot be laid out on the mesh."""
    leaves = jax.tree_util.tree_leaves_with_path(local_batch)
    if not leaves:
        raise ValueError("empty batch: expected a dict of arrays with a leading batch axis")
    sizes = {
        jax.tree_util.keystr(path): np.shape(x)[0] if np.ndim(x) else None for path, x in leaves
    }
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise ValueError(f"batch leaves must share one leading batch axis, got sizes {sizes}")
    for path, x in leaves:
        if np.asarray(x).dtype.kind not in "biuf":
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(path)} has non-numeric dtype "
                f"{np.asarray(x).dtype}"
            )
    local_size = next(iter(sizes.values()))
    global_size = local_size * jax.process_count()
    data_shards = sharding.mesh.shape["data"]
    if global_size % data_shards:
        raise ValueError(
            f"global batch of {global_size} examples ({local_size} per process x "
            f"{jax.process_count()} processes) cannot be split over {data_shards} 'data' shards; "
            f"make data.batch_size a multiple of {data_shards}"
        )


def to_global_batch(local_batch: dict, sharding: NamedSharding) -> dict:
    """Assembles per-process numpy batches into global `jax.Array`s.

    Args:
        local_batch: this process's batch dict, leaves `[local_batch, ...]`.
        sharding: `NamedSharding(mesh, P("data"))`.

    Returns:
        The same dict with leaves `[local_batch * process_count, ...]`, sharded over "data".
    """
    _check_local_batch(local_batch, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


class Prefetcher:
    """Iterates `(global_batch, data_state_after_batch)` with `depth` batches read ahead.

    Args:
        iterator: a per-process batch iterator with `get_state()` / `set_state()` (grain
            iterators qualify).
        sharding: batch sharding for `to_global_batch`.
        depth: host batches read ahead by the background thread (at least 1).
    """

    def __init__(self, iterator: Iterator[dict], sharding: NamedSharding, depth: int):
        self._batches = grain.experimental.ThreadPrefetchDatasetIterator(iterator, max(int(depth), 1))
        self._sharding = sharding

    def __iter__(self):
        return self

    def __next__(self) -> tuple[dict, Any]:
        local_batch = next(self._batches)  # errors of the reading thread are raised here
        return to_global_batch(local_batch, self._sharding), self._batches.get_state()

    def close(self) -> None:
        """Stops the background thread (batches read ahead are dropped)."""
        self._batches.close()
