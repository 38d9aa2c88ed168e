"""Side-by-side wall-clock timings on a noisy machine: interleaved rounds and paired ratios.

Protocol: every variant is timed in the same process, once per round, in a freshly shuffled
order each round, after warm-up rounds that are not kept. A call counts as finished when it
returns, so each call must block on its result (`jax.block_until_ready`). Two variants are
compared per round, by the ratio of their two samples of that round,

    ratio_r = t_a[r] / t_b[r],        r = 0 .. rounds - 1,

which cancels the machine's load as far as it is the same within one round, and a sample is
summarised by its median and interquartile range (robust to the outliers of a shared machine).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np


def wall_seconds(call: Callable[[], Any], *, clock: Callable[[], float] = time.perf_counter) -> float:
    """Wall seconds of one `call()` (which must block until its work is done)."""
    start = clock()
    call()
    return clock() - start


def interleaved_timings(
    calls: Mapping[Hashable, Callable[[], Any]],
    *,
    rounds: int,
    warmup: int,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[Hashable, np.ndarray]:
    """Times every call once per round, in a shuffled order each round, after `warmup` rounds.

    Args:
        calls: `{name: call}`; each `call()` runs one sample and blocks until it is done.
        rounds: kept rounds (>= 1).
        warmup: rounds run first and discarded (compilation, caches; >= 0).
        seed: seed of the per-round shuffle.
        clock: seconds counter (`time.perf_counter`; a fake clock in tests).

    Returns:
        `{name: float64[rounds]}` wall seconds; index r of every array is the same round.

    Raises:
        ValueError: no calls, `rounds < 1` or `warmup < 0`.
    """
    if not calls or rounds < 1 or warmup < 0:
        raise ValueError(f"need calls, rounds >= 1 and warmup >= 0; got {len(calls)} calls, "
                         f"rounds={rounds}, warmup={warmup}")
    order = list(calls)
    shuffle = random.Random(seed)
    samples = {name: np.zeros(rounds) for name in order}
    for r in range(-warmup, rounds):
        shuffle.shuffle(order)
        for name in order:
            seconds = wall_seconds(calls[name], clock=clock)
            if r >= 0:
                samples[name][r] = seconds
    return samples


@dataclasses.dataclass(frozen=True)
class Summary:
    """Median and quartiles (numpy's linear interpolation) of a sample of `n` values."""

    median: float
    q1: float
    q3: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray) -> Summary:
        """The summary of `values` (a non-empty 1-D sample)."""
        values = np.asarray(values, np.float64)
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"expected a non-empty 1-D sample, got shape {values.shape}")
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        return cls(float(median), float(q1), float(q3), len(values))

    def fmt(self, scale: float = 1.0, digits: int = 3) -> str:
        """`"median [q1, q3]"` of the values times `scale` (e.g. 1e3: seconds as ms).

        >>> Summary.of([1.0, 2.0, 3.0, 4.0, 5.0]).fmt(digits=1)
        '3.0 [2.0, 4.0]'
        """
        return (f"{self.median * scale:.{digits}f} "
                f"[{self.q1 * scale:.{digits}f}, {self.q3 * scale:.{digits}f}]")


def paired_ratio(numerator: Sequence[float] | np.ndarray, denominator: Sequence[float] | np.ndarray) -> Summary:
    """Summary of the per-round ratios `numerator[r] / denominator[r]` (two samples of one run).

    Args:
        numerator, denominator: `float[rounds]`, e.g. two values of `interleaved_timings`.

    Raises:
        ValueError: the two samples have different shapes (they must come from the same rounds).
    """
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    if numerator.shape != denominator.shape:
        raise ValueError(f"paired samples must have one value per round each, got shapes "
                         f"{numerator.shape} and {denominator.shape}")
    return Summary.of(numerator / denominator)
