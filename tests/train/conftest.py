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

from imro_jax.train import partitioning
from imro_jax.train.input import to_global_batch
from imro_jax.train.runtime import build_runtime


class Setup:
    """The toy model on one mesh: its `build_runtime` (shardings, jitted init and train step)."""

    def __init__(self, data: int, model: int, fsdp: bool, compute_dtype: str):
        self.config = toy_config()
        self.config.mesh.update(data=data, model=model, fsdp=fsdp)
        self.config.train.compute_dtype = compute_dtype
        self.task = toy_task(self.config)
        self.runtime = build_runtime(self.config, self.task, devices=jax.devices()[: data * model])
        self.mesh, self.shardings, self.step = (
            self.runtime.mesh, self.runtime.shardings, self.runtime.train_step
        )

    def new_state(self, seed: int = 0):
        return self.runtime.new_state(seed)

    def abstract_state(self):
        """The train state as sharded `ShapeDtypeStruct`s (a restore target on this mesh)."""
        return self.runtime.abstract_state

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
