"""Fixtures for the training-system tests: the toy task on meshes, compiled once per session.

XLA compilation dominates these tests on CPU, so identical programs are compiled once: `Setup`s
are cached per configuration, and a persistent compilation cache (a temporary directory, also
passed to the subprocess tests through `trainlib.subprocess_env`) lets separate runs of the same train
step (the in-process loop, the killed and resumed subprocess) reuse one executable.
"""

import functools

import jax
import pytest
import trainlib  # noqa: F401  (sets the session-wide persistent compilation cache)
from toy import ToyIterator, toy_config, toy_task

from imro_jax.train import mesh as mesh_lib
from imro_jax.train import optim, partitioning, precision
from imro_jax.train import state as state_lib
from imro_jax.train import step as step_lib
from imro_jax.train.input import to_global_batch

@functools.cache
def _initializer(data: int, model: int, fsdp: bool):
    """(mesh, rules, optimizer, schedule, shardings, jitted init) shared by `Setup`s."""
    config = toy_config()
    task = toy_task(config)
    mesh = mesh_lib.make_mesh(data, model, devices=jax.devices()[: data * model])
    rules = partitioning.logical_axis_rules(config.mesh.rules, fsdp=fsdp)
    optimizer, schedule = optim.make_optimizer(config.optimizer, config.train.num_steps)
    example = task.example_batch()
    _, shardings = state_lib.train_state_shardings(task.init_fn, optimizer, example, mesh, rules)
    init = state_lib.make_initializer(task.init_fn, optimizer, example, shardings)
    return mesh, rules, optimizer, schedule, shardings, init


class Setup:
    """The toy model on one mesh: shardings, a jitted init and a jitted train step."""

    def __init__(self, data: int, model: int, fsdp: bool, compute_dtype: str):
        self.config = toy_config()
        self.task = toy_task(self.config)
        self.mesh, self.rules, self.optimizer, self.schedule, self.shardings, self._init = (
            _initializer(data, model, fsdp)
        )
        loss_fn = precision.with_compute_dtype(
            self.task.loss_fn, precision.compute_dtype(compute_dtype)
        )
        self.step = step_lib.make_train_step(
            loss_fn, self.optimizer, self.schedule, accumulation_steps=1,
            state_shardings=self.shardings, mesh=self.mesh,
        )

    def new_state(self, seed: int = 0):
        return self._init(seed)

    def abstract_state(self):
        """The train state as sharded `ShapeDtypeStruct`s (a restore target on this mesh)."""
        shapes = jax.eval_shape(self._init, 0)
        return jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, self.shardings
        )

    def global_batch(self, local: dict) -> dict:
        return to_global_batch(local, partitioning.batch_sharding(self.mesh))

    def run(self, num_steps: int, seed: int = 0) -> tuple[list[float], object]:
        """Trains `num_steps` on the toy stream; returns (losses, final state)."""
        state = self.new_state(seed)
        batches = ToyIterator(0, self.config.data.batch_size)
        losses = []
        for _ in range(num_steps):
            state, metrics = self.step(state, self.global_batch(next(batches)))
            losses.append(float(metrics["loss"]))
        return losses, state


@functools.cache
def _setup(data: int, model: int, fsdp: bool, compute_dtype: str) -> Setup:
    return Setup(data, model, fsdp, compute_dtype)


@pytest.fixture(scope="session")
def setup():
    """`setup(data=8, model=1, fsdp=False, compute_dtype="float32")`, cached per configuration."""

    def get(data=8, model=1, fsdp=False, compute_dtype="float32") -> Setup:
        return _setup(data, model, fsdp, compute_dtype)

    return get
