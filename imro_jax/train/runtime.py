"""The runtime of a run: mesh, rules, optimizer, shardings and the jitted steps, built once.

    mesh, rules          config.mesh (over `devices`, default every device)
    optimizer, schedule  config.optimizer, config.train.num_steps
    abstract_state       TrainState of sharded ShapeDtypeStructs (from task.init_fn, no allocation)
    train_step           jit(train_step, shardings, state donated) of task.loss_fn in
                         config.train.compute_dtype, traced under the mesh and the rules

`imro_jax.train.loop.Run`, the benchmarks (`imro_jax.perf.build_step_bench`) and the test
fixtures all call `build_runtime`, so what a benchmark times and what a test checks is the step
`imro train` runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import optax
from flax import linen as nn

from imro_jax.train import mesh as mesh_lib
from imro_jax.train import optim, partitioning, precision
from imro_jax.train import state as state_lib
from imro_jax.train import step as step_lib
from imro_jax.train.task import Task


@dataclasses.dataclass
class Runtime:
    """Everything a loop, a benchmark or a test needs to run a config's steps.

    Attributes:
        mesh, rules: device mesh and logical-axis rules.
        optimizer, schedule: the Optax chain and its learning-rate schedule.
        example_batch: the numpy batch the shapes come from (`task.example_batch()`).
        abstract_state, shardings: `TrainState` of sharded `ShapeDtypeStruct`s / `NamedSharding`s.
        compute_dtype: `config.train.compute_dtype` as a dtype.
        loss_fn: `task.loss_fn` (or the override) in the compute dtype, what the step differentiates.
        train_step: `(state, batch) -> (state, metrics)`, jitted, state donated, called under the
            mesh and rules.
        jitted: the `jax.jit` object inside `train_step` (`lower`, `_cache_size`).
        task: the task it was built for.
    """

    mesh: jax.sharding.Mesh
    rules: partitioning.LogicalRules
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    example_batch: dict
    abstract_state: state_lib.TrainState
    shardings: state_lib.TrainState
    compute_dtype: Any
    loss_fn: Callable
    train_step: Callable
    jitted: Any
    task: Task

    @property
    def batch_sharding(self) -> jax.sharding.NamedSharding:
        """Sharding of every batch leaf (`[batch, ...] -> "data"`)."""
        return partitioning.batch_sharding(self.mesh)

    def tracing_context(self) -> contextlib.AbstractContextManager:
        """The mesh and rules the steps are traced under (for `lower` and jaxpr inspection)."""
        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(nn.logical_axis_rules(self.rules))
        return stack

    def lower_train(self, state, batch) -> jax.stages.Lowered:
        """`jax.stages.Lowered` of the train step (nothing runs; abstract inputs are fine)."""
        with self.tracing_context():
            return self.jitted.lower(state, batch)

    @functools.cached_property
    def initializer(self) -> Callable[[int], state_lib.TrainState]:
        """`seed -> TrainState`, jitted once with the state's shardings as outputs."""
        return state_lib.make_initializer(self.task.init_fn, self.optimizer, self.example_batch,
                                          self.shardings)

    def new_state(self, seed: int) -> state_lib.TrainState:
        """A freshly initialised train state for `seed`, born in its shardings."""
        return self.initializer(seed)

    def eval_step(self, eval_fn: Callable[[Any, dict], Any]) -> Callable:
        """`eval_fn(variables, batch)` jitted over the mesh under the rules (variables not donated)."""
        return step_lib.make_eval_step(
            eval_fn, params_shardings=self.shardings.variables(), mesh=self.mesh, rules=self.rules
        )


def build_runtime(
    config: ml_collections.ConfigDict,
    task: Task,
    *,
    devices: Sequence[jax.Device] | None = None,
    loss_fn: Callable | None = None,
) -> Runtime:
    """Builds the runtime of `config` for `task` (nothing is allocated or compiled).

    Args:
        config: resolved config (sections mesh, optimizer, train.num_steps/compute_dtype).
        task: supplies `init_fn`, `loss_fn` and `example_batch` (called once, for shapes).
        devices: devices of the ("data", "model") mesh (default: all); `config.mesh` sizes it.
        loss_fn: replaces `task.loss_fn` (a benchmark's task-loss-only baseline).
    """
    mesh = mesh_lib.make_mesh(config.mesh.data, config.mesh.model, devices=devices)
    rules = partitioning.logical_axis_rules(config.mesh.rules, fsdp=config.mesh.fsdp)
    optimizer, schedule = optim.make_optimizer(config.optimizer, config.train.num_steps)
    example_batch = task.example_batch()
    abstract_state, shardings = state_lib.train_state_shardings(
        task.init_fn, optimizer, example_batch, mesh, rules
    )
    dtype = precision.compute_dtype(config.train.compute_dtype)
    loss = precision.with_compute_dtype(loss_fn or task.loss_fn, dtype)
    jitted = step_lib.make_train_step(  # without rules: the jax.jit object itself
        loss, optimizer, schedule, accumulation_steps=config.optimizer.accumulation_steps,
        state_shardings=shardings, mesh=mesh,
    )
    return Runtime(
        mesh=mesh, rules=rules, optimizer=optimizer, schedule=schedule, example_batch=example_batch,
        abstract_state=abstract_state, shardings=shardings, compute_dtype=dtype, loss_fn=loss,
        train_step=step_lib.under_mesh(jitted, mesh, rules), jitted=jitted, task=task,
    )
