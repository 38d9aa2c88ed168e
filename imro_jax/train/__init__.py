"""Training: device mesh, logical sharding, Optax, the jitted SPMD step, Orbax checkpoints, loops.

    config = load_config("experiments/configs/trimodal.py", ["--config.train.num_steps=100"])
    initialize_distributed(config.mesh)         # multi-process jobs only; before any JAX work
    train(config, "runs/tri", model_task(config))
    evaluate_checkpoint(config, "runs/tri", model_task(config), "test")

`model_task` (the IMRO model + datasets) is imported from `imro_jax.train.model_task`, so the
generic pieces here do not depend on `imro_jax.models` / `imro_jax.data`.
"""

from imro_jax.train.checkpoint import (
    CheckpointError,
    Checkpointer,
    IncompatibleCheckpointError,
    fingerprint,
)
from imro_jax.train.config import ConfigError, apply_override, load_config, with_overrides
from imro_jax.train.distributed import initialize as initialize_distributed
from imro_jax.train.guard import InvalidDataError, TrainingError
from imro_jax.train.input import Prefetcher, to_global_batch
from imro_jax.train.loop import Run, evaluate, evaluate_checkpoint, train
from imro_jax.train.mesh import MeshError, make_mesh, resolve_mesh_shape
from imro_jax.train.optim import decay_mask, make_optimizer
from imro_jax.train.partitioning import batch_sharding, logical_axis_rules, mesh_partition_spec
from imro_jax.train.precision import with_compute_dtype
from imro_jax.train.preemption import Preempted
from imro_jax.train.runtime import Runtime, build_runtime
from imro_jax.train.state import TrainState, create_train_state, train_state_shardings
from imro_jax.train.step import make_eval_step, make_train_step, train_step
from imro_jax.train.task import Task
from imro_jax.train.workdir import WorkdirError

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "ConfigError",
    "IncompatibleCheckpointError",
    "InvalidDataError",
    "MeshError",
    "Preempted",
    "Prefetcher",
    "Run",
    "Runtime",
    "Task",
    "TrainState",
    "TrainingError",
    "WorkdirError",
    "apply_override",
    "batch_sharding",
    "build_runtime",
    "create_train_state",
    "decay_mask",
    "evaluate",
    "evaluate_checkpoint",
    "fingerprint",
    "initialize_distributed",
    "load_config",
    "logical_axis_rules",
    "make_eval_step",
    "make_mesh",
    "make_optimizer",
    "make_train_step",
    "mesh_partition_spec",
    "resolve_mesh_shape",
    "train",
    "train_state_shardings",
    "train_step",
    "with_compute_dtype",
    "with_overrides",
]
