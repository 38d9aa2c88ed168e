"""The compile counter counts jit cache misses, per function, and only while it is active."""

import jax
import jax.numpy as jnp
import pytest

from imro_jax.perf import CompileCounter


def test_compile_counter_counts_a_known_number_of_compilations():
    def scaled_sine(x):
        return jnp.sin(x) * 3.0

    def other(x):
        return x + 1

    f, g = jax.jit(scaled_sine), jax.jit(other)
    with CompileCounter() as counter:
        f(jnp.ones(3))
        f(jnp.ones(3) * 2)  # same shape and dtype: cached
        f(jnp.ones(4))  # new shape: compiles
        f(jnp.ones(4, jnp.int32))  # new dtype: compiles
        g(jnp.ones(3))
    f(jnp.ones(5))  # after the block: not counted
    assert counter.count("scaled_sine") == 3
    assert counter.count("other") == 1
    assert counter.count("scaled_sine") + counter.count("other") <= counter.count()
    assert counter.seconds("compile", "scaled_sine") > 0
    assert counter.seconds("trace", "scaled_sine") > 0
    with pytest.raises(ValueError, match="phase must be one of"):
        counter.seconds("link")
