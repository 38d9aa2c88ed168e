"""How fast an input iterator delivers batches, and how long a training loop waits on it.

The loop consumes one batch per step; the input keeps up when the iterator's sustained rate
(examples/s, `pull_batches`) is above the step's, and the honest test on a machine where both
share the cores is the loop itself: the seconds each `next()` blocks before a step
(`input_waits`), as a share of the loop's wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np


def pull_batches(iterator: Iterator[dict], batches: int, *,
                 clock: Callable[[], float] = time.perf_counter) -> tuple[float, int, int]:
    """Pulls `batches` batch dicts from `iterator`.

    Args:
        iterator: yields batch dicts whose leaves are `[batch, ...]` arrays.
        batches: how many to pull (>= 0).
        clock: seconds counter.

    Returns:
        `(seconds, examples, nbytes)`: wall seconds of the pulls, examples (leading axis of each
        batch's first leaf) and bytes of every leaf, summed over the batches.
    """
    if batches < 0:
        raise ValueError(f"batches must be >= 0, got {batches}")
    examples = nbytes = 0
    start = clock()
    for _ in range(batches):
        leaves = jax.tree.leaves(next(iterator))
        examples += np.shape(leaves[0])[0]
        nbytes += sum(np.asarray(leaf).nbytes for leaf in leaves)
    return clock() - start, examples, nbytes


def input_waits(batches: Iterator[Any], step: Callable[[Any], Any], steps: int, *, skip: int = 2,
                clock: Callable[[], float] = time.perf_counter) -> tuple[np.ndarray, float]:
    """Runs `step(next(batches))` `skip + steps` times; times the `next()` calls of the last `steps`.

    Args:
        batches: the loop's input (e.g. an `imro_jax.train.input.Prefetcher`).
        step: consumes one item and blocks until done (e.g. a train step).
        steps: measured steps (>= 1).
        skip: first steps not measured (the iterator's start-up, compilation).
        clock: seconds counter.

    Returns:
        `(waits, wall)`: `float64[steps]` seconds blocked in each `next()`, and the wall seconds of
        the measured steps (their waits included); `waits.sum() / wall` is the input stall.
    """
    if steps < 1 or skip < 0:
        raise ValueError(f"need steps >= 1 and skip >= 0, got steps={steps}, skip={skip}")
    for _ in range(skip):
        step(next(batches))
    waits = np.zeros(steps)
    start = clock()
    for i in range(steps):
        before = clock()
        item = next(batches)
        waits[i] = clock() - before
        step(item)
    return waits, clock() - start
