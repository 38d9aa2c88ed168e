"""Multi-process start-up: `jax.distributed.initialize` from the config or the environment.

`config.mesh.num_processes` chooses:
  1    one process (laptop, Colab, a single multi-GPU/TPU host): nothing to initialise.
  0    let JAX detect the cluster (Cloud TPU pods, SLURM, Open MPI, Kubernetes) and, where it
       cannot, read JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID.
  N>1  explicit: `mesh.coordinator_address` ("host:port" of process 0) and `mesh.process_id`
       (the environment variables above fill whichever is left empty / negative).
Cross-process collectives are XLA's (ICI/DCN on TPU, NCCL on GPU, gloo on CPU); we add none.
"""

import os

import jax
import ml_collections

from imro_jax.train.config import ConfigError


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value else None


def initialize(mesh_config: ml_collections.ConfigDict) -> None:
    """Joins the multi-process job described by `mesh_config` (call before any JAX computation).

    Args:
        mesh_config: `config.mesh` with num_processes, coordinator_address, process_id.

    Raises:
        ValueError: N > 1 processes without a coordinator address or a process id.
    """
    if jax.distributed.is_initialized():
        return
    num_processes = int(mesh_config.num_processes)
    if num_processes == 1:
        return
    if num_processes == 0:
        num = _env_int("JAX_NUM_PROCESSES")
        jax.distributed.initialize(
            coordinator_address=mesh_config.coordinator_address or None,
            num_processes=num,
            process_id=_env_int("JAX_PROCESS_ID") if num else None,
        )
        return
    address = mesh_config.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    process_id = int(mesh_config.process_id)
    if process_id < 0:
        process_id = _env_int("JAX_PROCESS_ID")
    if not address or process_id is None:
        raise ConfigError(
            f"mesh.num_processes={num_processes} needs mesh.coordinator_address (host:port) and "
            "mesh.process_id (or JAX_COORDINATOR_ADDRESS / JAX_PROCESS_ID)"
        )
    jax.distributed.initialize(
        coordinator_address=address, num_processes=num_processes, process_id=process_id
    )
