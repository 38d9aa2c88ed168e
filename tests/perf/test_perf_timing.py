"""Interleaved timings on a fake clock, and paired ratios against numpy on fixed arrays."""

import numpy as np
import pytest
from perflib import FakeClock

from imro_jax.perf import Summary, interleaved_timings, paired_ratio, wall_seconds


def test_interleaved_timings_keeps_rounds_after_warmup_and_shuffles_the_order():
    clock, order = FakeClock(), []
    durations = {"a": iter(range(1, 100)), "b": iter(range(101, 200))}

    def call(name):
        def run():
            order.append(name)
            clock.advance(next(durations[name]))
        return run

    times = interleaved_timings({"a": call("a"), "b": call("b")}, rounds=4, warmup=2, clock=clock)
    # the first two calls of each are warm-up; sample r is the call of round r
    np.testing.assert_array_equal(times["a"], [3, 4, 5, 6])
    np.testing.assert_array_equal(times["b"], [103, 104, 105, 106])
    rounds = [order[i:i + 2] for i in range(0, len(order), 2)]
    assert len(rounds) == 6 and all(sorted(r) == ["a", "b"] for r in rounds)
    assert {tuple(r) for r in rounds} == {("a", "b"), ("b", "a")}  # seed 0 shuffles both ways


def test_interleaved_timings_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rounds >= 1"):
        interleaved_timings({"a": lambda: None}, rounds=0, warmup=0)
    with pytest.raises(ValueError, match="0 calls"):
        interleaved_timings({}, rounds=3, warmup=0)


def test_wall_seconds_reads_the_clock_around_the_call():
    clock = FakeClock()
    assert wall_seconds(lambda: clock.advance(2.5), clock=clock) == 2.5


def test_summary_and_paired_ratio_equal_numpy_on_fixed_arrays():
    a = np.array([1.0, 3.0, 2.0, 8.0, 4.0, 5.0, 7.0])
    b = np.array([2.0, 2.0, 4.0, 4.0, 1.0, 5.0, 3.5])
    ratio = paired_ratio(a, b)
    q1, median, q3 = np.percentile(a / b, [25, 50, 75])
    assert (ratio.q1, ratio.median, ratio.q3, ratio.n) == (q1, median, q3, 7)
    assert ratio.median == 1.5  # ratios 0.5 1.5 0.5 2 4 1 2, sorted 0.5 0.5 1 1.5 2 2 4
    # a paired ratio is not the ratio of the medians
    assert ratio.median != np.median(a) / np.median(b)
    assert Summary.of([1, 2, 3, 4, 5]).fmt(1e3, 0) == "3000 [2000, 4000]"


def test_paired_ratio_needs_one_value_per_round_each():
    with pytest.raises(ValueError, match=r"shapes \(3,\) and \(4,\)"):
        paired_ratio(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        Summary.of([])
