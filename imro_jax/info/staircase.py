r"""The MI-bound staircase of Poole et al. (2019), Fig. 2: critics trained on correlated Gaussians.

:math:`x \sim N(0, I_d)`, :math:`y = \rho x + \sqrt{1 - \rho^2}\,\epsilon`, so

.. math:: I(X; Y) = -\frac{d}{2} \log(1 - \rho^2) \quad \text{nats},

and the true MI steps through a list of levels, a fresh batch of K samples at every step. One
critic per bound is trained on the same batches: the bounds are vmapped, and each stage is one
jitted ``lax.scan``.

Reference: B. Poole, S. Ozair, A. van den Oord, A. Alemi, G. Tucker, "On Variational Bounds of
Mutual Information", ICML 2019, Sec. 5 and Fig. 2.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from imro_jax.info.critics import make_critic
from imro_jax.info.objectives import switch_objective
from imro_jax.info.training import make_train_step


def mi_to_rho(mi_nats: float, dim: int) -> float:
    """The per-dimension correlation giving ``mi_nats``: rho = sqrt(1 - exp(-2 I / d))."""
    if not mi_nats >= 0 or dim < 1:
        raise ValueError(f"need mi_nats >= 0 and dim >= 1, got mi_nats={mi_nats}, dim={dim}")
    return math.sqrt(1.0 - math.exp(-2.0 * mi_nats / dim))


def sample_correlated_gaussian(key: jax.Array, rho: jax.Array, batch_size: int, dim: int
                               ) -> tuple[jax.Array, jax.Array]:
    """A batch ``x, y: [batch_size, dim]`` with y = rho x + sqrt(1 - rho^2) eps."""
    x_key, noise_key = jax.random.split(key)
    x = jax.random.normal(x_key, (batch_size, dim))
    noise = jax.random.normal(noise_key, (batch_size, dim))
    return x, rho * x + jnp.sqrt(1.0 - rho**2) * noise


def train_staircase(critic_name: str, critic_kwargs: dict, bounds: Sequence[str], mi_levels: Sequence[float], *,
                    steps_per_stage: int, seed: int, learning_rate: float, batch_size: int, dim: int,
                    log: Callable[[str], None] = print) -> np.ndarray:
    """Trains one critic per bound through the staircase (Adam).

    Args:
      critic_name, critic_kwargs: the critic (:func:`~imro_jax.info.critics.make_critic`).
      bounds: objective names (:func:`~imro_jax.info.objectives.switch_objective`).
      mi_levels: the true MI of each stage, nats.
      steps_per_stage: optimisation steps per level.
      seed: initialisation and data seed.
      learning_rate, batch_size, dim: Adam's step size, K and d.
      log: receives one line per finished stage.

    Returns:
      ``[len(mi_levels) * steps_per_stage, len(bounds)]``: each bound's estimate on each step's
      batch, before that step's update (nats).
    """
    critic = make_critic(critic_name, **critic_kwargs)
    optimizer = optax.adam(learning_rate)
    objective = switch_objective(tuple(bounds))
    bound_index = jnp.arange(len(bounds))

    def step_one_bound(index, params, opt_state, ema, x, y):
        step = make_train_step(critic, optimizer, functools.partial(objective, index))
        return step(params, opt_state, ema, x, y)

    step_all_bounds = jax.vmap(step_one_bound, in_axes=(0, 0, 0, 0, None, None))

    @jax.jit
    def run_stage(state, key, rho):
        def body(state, step_key):
            x, y = sample_correlated_gaussian(step_key, rho, batch_size, dim)
            *state, estimates = step_all_bounds(bound_index, *state, x, y)
            return tuple(state), estimates

        return jax.lax.scan(body, state, jax.random.split(key, steps_per_stage))

    init_key, data_key = jax.random.split(jax.random.key(seed))
    dummy = jnp.zeros((batch_size, dim))
    params = jax.vmap(lambda k: critic.init(k, dummy, dummy))(jax.random.split(init_key, len(bounds)))
    state = (params, jax.vmap(optimizer.init)(params), jnp.zeros(len(bounds)))
    estimates = []
    for stage, (mi, stage_key) in enumerate(zip(mi_levels, jax.random.split(data_key, len(mi_levels)))):
        start = time.perf_counter()
        state, stage_estimates = run_stage(state, stage_key, jnp.float32(mi_to_rho(mi, dim)))
        estimates.append(np.asarray(stage_estimates))
        log(f"  {critic_name}: stage {stage + 1}/{len(mi_levels)} (MI {mi:g}) {time.perf_counter() - start:.1f}s")
    return np.concatenate(estimates)


def stage_statistics(estimates: np.ndarray, bounds: Sequence[str], mi_levels: Sequence[float], *,
                     steps_per_stage: int, tail_fraction: float) -> dict[str, list[dict]]:
    """Bias, variance and MSE of each bound over the last ``tail_fraction`` of each stage.

    Args:
      estimates: ``[len(mi_levels) * steps_per_stage, len(bounds)]`` (:func:`train_staircase`).
      bounds, mi_levels, steps_per_stage: as given to :func:`train_staircase`.
      tail_fraction: the share of each stage's last steps the statistics cover (in (0, 1]).

    Returns:
      ``{bound: [{"mi", "bias", "variance", "mse", "non_finite"} per level]}``: bias = mean
      estimate minus the true MI (nats), variance over the tail steps (nats^2), computed on the
      finite estimates (NaN when none is finite); ``non_finite`` counts the others.
    """
    expected = (len(mi_levels) * steps_per_stage, len(bounds))
    if estimates.shape != expected:
        raise ValueError(f"estimates must have shape {expected}, got {estimates.shape}")
    if not 0 < tail_fraction <= 1:
        raise ValueError(f"tail_fraction must be in (0, 1], got {tail_fraction}")
    tail = max(1, int(tail_fraction * steps_per_stage))
    stats = {}
    for b, bound in enumerate(bounds):
        stats[bound] = []
        for stage, mi in enumerate(mi_levels):
            end = (stage + 1) * steps_per_stage
            values = estimates[end - tail:end, b].astype(np.float64)
            finite = values[np.isfinite(values)]
            bias = float(np.mean(finite) - mi) if finite.size else float("nan")
            var = float(np.var(finite)) if finite.size else float("nan")
            stats[bound].append({"mi": mi, "bias": bias, "variance": var, "mse": bias**2 + var,
                                 "non_finite": int(values.size - finite.size)})
    return stats
