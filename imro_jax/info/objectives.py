"""The MI bounds behind one uniform signature, for training loops that pick a bound by name.

Every objective maps ``(scores [K, K], ema [])`` to ``(estimate, new_ema)``; only MINE uses
the running average, the others pass it through. A uniform signature lets a loop switch
between bounds with ``jax.lax.switch`` (and so ``vmap`` over bounds).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax

from imro_jax.info import bounds

Objective = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def _without_state(bound: Callable[[jax.Array], jax.Array]) -> Objective:
    """Wraps a stateless bound into the ``(scores, ema) -> (estimate, ema)`` signature."""

    def objective(scores: jax.Array, ema: jax.Array) -> tuple[jax.Array, jax.Array]:
        return bound(scores), ema

    return objective


OBJECTIVES: dict[str, Objective] = {
    "infonce": _without_state(bounds.infonce_lower_bound),
    "nwj": _without_state(bounds.nwj_lower_bound),
    "tuba": _without_state(bounds.tuba_lower_bound),  # constant baseline log a = 0
    "dv": _without_state(bounds.dv_lower_bound),
    "js": _without_state(bounds.js_lower_bound),
    "smile": _without_state(bounds.smile_lower_bound),  # tau = 5
    "mine": bounds.mine_lower_bound,  # EMA decay 0.99
}


def get_objective(name: str) -> Objective:
    """Returns the objective of bound ``name`` (one of :data:`OBJECTIVES`).

    Raises:
      ValueError: for an unknown name.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"unknown bound {name!r}; expected one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


def switch_objective(names: Sequence[str]) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """Returns ``f(index, scores, ema)`` evaluating bound ``names[index]`` (traceable index).

    Under ``vmap`` over ``index`` every bound is evaluated and the right one selected, so one
    compiled training step can train one critic per bound in parallel.
    """
    branches = [get_objective(name) for name in names]

    def objective(index: jax.Array, scores: jax.Array, ema: jax.Array):
        return jax.lax.switch(index, branches, scores, ema)

    return objective
