"""The train and eval steps: each one `jax.jit` with explicit shardings (SPMD over the mesh).

    rng_t          = fold_in(state.rng, t)
    (L, m), g      = value_and_grad(loss_fn)(params, batch, rng_t, t)
    u, opt'        = optimizer.update(g, opt, params)
    ok             = isfinite(L) and isfinite(||g||_2) and isfinite(||u||_2)   (non-finite guard)
                     and m["valid_fraction"] > 0 (when the loss reports it: a batch without a
                     valid sample is no step)
    params, opt    = (params + u, opt') if ok else unchanged (so the schedule does not advance)
    skipped       += not ok ;  step += 1

The state is donated (updated in place on device). Given the logical-axis `rules`, the jitted
step is traced and run under `jax.set_mesh(mesh)` and `flax.linen.logical_axis_rules(rules)`,
so the model's activation constraints (`imro_jax.models.layers.constrain`, e.g.
`[batch, length, embed] -> ("data", None, None)`) become real `with_sharding_constraint`s;
without rules they are no-ops and XLA's sharding propagation alone lays out activations.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import Mesh

from imro_jax.train import partitioning
from imro_jax.train.state import TrainState

# (params, batch, rng, step) -> (loss, metrics)
LossFn = Callable[[Any, dict, jax.Array, jax.Array], tuple[jax.Array, dict]]
EvalFn = Callable[[Any, dict], dict]  # (params, batch) -> metrics
VALID_FRACTION = "valid_fraction"  # optional loss metric: share of the batch's valid samples


def train_step(
    state: TrainState,
    batch: dict,
    *,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    accumulation_steps: int,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimisation step with the non-finite guard (pure; jit it with `make_train_step`).

    Args:
        state: the current train state.
        batch: global batch dict, leading axis `[batch, ...]`.
        loss_fn: `(params, batch, rng, step) -> (scalar loss, metrics dict of scalars)`; `step`
            is the int32[] number of steps taken before this one.
        optimizer: the Optax chain (already gradient-accumulating if `accumulation_steps > 1`).
        schedule: learning-rate schedule (for the logged `lr`).
        accumulation_steps: micro-steps per optimizer update.

    Returns:
        `(new_state, metrics)`; metrics add `loss`, `grad_norm` (before clipping),
        `update_norm` (of the update applied), `lr`, `skipped` (total) and `finite` (1.0 if
        this step was applied). A step is skipped (parameters, optimizer state and schedule
        unchanged) when the loss, the gradient or the update is non-finite, or when the loss
        reports `valid_fraction == 0` (no valid sample in the batch).
    """
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch, rng, state.step
    )
    grad_norm = optax.tree.norm(grads)
    updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    update_norm = optax.tree.norm(updates)

    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(update_norm)
    if VALID_FRACTION in metrics:
        finite = finite & (metrics[VALID_FRACTION] > 0)
    keep_if_finite = functools.partial(jax.tree.map, lambda new, old: jnp.where(finite, new, old))
    skipped = state.skipped + jnp.logical_not(finite).astype(jnp.int32)
    num_updates = (state.step - state.skipped) // accumulation_steps
    new_state = state.replace(
        step=state.step + 1,
        params=keep_if_finite(new_params, state.params),
        opt_state=keep_if_finite(new_opt_state, state.opt_state),
        skipped=skipped,
    )
    metrics = dict(
        metrics,
        loss=loss,
        grad_norm=grad_norm,
        update_norm=update_norm,
        lr=jnp.asarray(schedule(num_updates), jnp.float32),
        skipped=skipped,
        finite=finite.astype(jnp.float32),
    )
    return new_state, metrics


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    accumulation_steps: int,
    state_shardings: TrainState,
    mesh: Mesh,
    rules: partitioning.LogicalRules | None = None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Jits `train_step` with explicit in/out shardings and the state donated.

    Args:
        rules: the logical-axis rules; when given, the model's activation sharding constraints
            are applied (see `under_mesh`), otherwise they are no-ops.

    Returns:
        `step(state, batch) -> (state, metrics)`; `batch` leaves are global arrays sharded
        `[batch -> "data"]` (see `imro_jax.train.input`); metrics are replicated scalars.
    """
    step = functools.partial(
        train_step,
        loss_fn=loss_fn,
        optimizer=optimizer,
        schedule=schedule,
        accumulation_steps=accumulation_steps,
    )
    jitted = jax.jit(
        step,
        in_shardings=(state_shardings, partitioning.batch_sharding(mesh)),
        out_shardings=(state_shardings, partitioning.replicated(mesh)),
        donate_argnums=0,
    )
    return under_mesh(jitted, mesh, rules)


def make_eval_step(
    eval_fn: EvalFn,
    *,
    params_shardings: Any,
    mesh: Mesh,
    rules: partitioning.LogicalRules | None = None,
) -> Callable[[Any, dict], dict]:
    """Jits `eval_fn(variables, batch) -> metrics` over the mesh (variables not donated).

    `params_shardings` are the shardings of the whole `variables` tree.

    Metric leaves with a leading batch axis stay sharded over "data"; scalars are replicated.
    `rules` as in `make_train_step`.
    """
    jitted = jax.jit(eval_fn, in_shardings=(params_shardings, partitioning.batch_sharding(mesh)))
    return under_mesh(jitted, mesh, rules)


def under_mesh(fn: Callable, mesh: Mesh, rules: partitioning.LogicalRules | None) -> Callable:
    """Calls (and so traces) `fn` under `jax.set_mesh(mesh)` and the logical-axis `rules`.

    This is what turns `nn.with_logical_constraint` in a model into sharding constraints.
    Returns `fn` unchanged when `rules` is None.
    """
    if rules is None:
        return fn

    @functools.wraps(fn)
    def call(*args):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return fn(*args)

    return call

