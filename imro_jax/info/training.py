"""Critic training and held-out evaluation shared by :func:`estimate_mi` and the MI benchmark.

Pure functions over explicit pytrees (params, Optax state, MINE moving average).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from imro_jax.info.objectives import Objective

PyTree = Any


def make_train_step(
    critic: nn.Module, optimizer: optax.GradientTransformation, objective: Objective
) -> Callable[..., tuple[PyTree, PyTree, jax.Array, jax.Array]]:
    """Returns one gradient-ascent step on a bound.

    The step maps ``(params, opt_state, ema, x [K, d_x], y [K, d_y])`` to
    ``(params, opt_state, new_ema, estimate)``, where ``estimate`` is the bound on this batch
    before the update. Pure, so it can be jitted, scanned and vmapped (e.g. over bounds by
    passing an objective built with :func:`~imro_jax.info.objectives.switch_objective` and
    ``functools.partial``).
    """

    def loss_fn(params, ema, x, y):
        estimate, new_ema = objective(critic.apply(params, x, y), ema)
        return -estimate, (estimate, new_ema)

    def step(params, opt_state, ema, x, y):
        grads, (estimate, new_ema) = jax.grad(loss_fn, has_aux=True)(params, ema, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, new_ema, estimate

    return step


def critic_scores(
    critic: nn.Module, params: PyTree, x: jax.Array, y: jax.Array, row_block: int = 128
) -> jax.Array:
    """Scores ``[K_x, K_y]`` of all pairs, computed ``row_block`` rows of x at a time.

    Keeps the memory of pair-wise critics (ConcatCritic) at ``row_block * K_y`` pairs.
    """
    num_x = x.shape[0]
    block = min(row_block, num_x)
    num_blocks = -(-num_x // block)
    padded = jnp.pad(x, ((0, num_blocks * block - num_x), (0, 0)))
    blocks = padded.reshape(num_blocks, block, x.shape[-1])
    scores = jax.lax.map(lambda rows: critic.apply(params, rows, y), blocks)
    return scores.reshape(num_blocks * block, y.shape[0])[:num_x]


def held_out_estimate(
    critic: nn.Module,
    params: PyTree,
    objective: Objective,
    x: jax.Array,
    y: jax.Array,
    num_chunks: int,
) -> jax.Array:
    """Mean of the bound over ``num_chunks`` disjoint held-out batches of ``n // num_chunks``.

    Each batch uses all of its ``K^2`` pairs (K positives, K(K - 1) negatives). Samples beyond
    ``num_chunks * K`` are dropped.
    """
    size = x.shape[0] // num_chunks
    x_chunks = x[: num_chunks * size].reshape(num_chunks, size, x.shape[-1])
    y_chunks = y[: num_chunks * size].reshape(num_chunks, size, y.shape[-1])

    def chunk_estimate(chunk):
        x_chunk, y_chunk = chunk
        scores = critic_scores(critic, params, x_chunk, y_chunk)
        return objective(scores, jnp.zeros((), scores.dtype))[0]

    return jnp.mean(jax.lax.map(chunk_estimate, (x_chunks, y_chunks)))
