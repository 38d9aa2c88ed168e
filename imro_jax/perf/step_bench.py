"""The production train step of a config, ready to time: runtime, state and a device batch.

Every step here is built by `imro_jax.train.runtime.build_runtime`, the function `imro train`
builds its runtime with, on the model functions of `imro_jax.train.model_fns.fixed_batch_task`
(one fixed batch, no datasets): what is timed is the step that trains, by construction.

    bench = build_step_bench("imro", config, synthetic_batch(config.model, 32))
    bench.train()                               # one step, blocks until done
    compiled = bench.compile_train()            # AOT: cost and memory analyses
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from imro_jax.train import input as input_lib
from imro_jax.train import model_fns
from imro_jax.train import runtime as runtime_lib
from imro_jax.train import step as step_lib


def runtime_for(
    config: ml_collections.ConfigDict,
    numpy_batch: dict,
    *,
    devices: Sequence[jax.Device] | None = None,
    loss_fn: Callable | None = None,
) -> runtime_lib.Runtime:
    """`build_runtime` of `config` on the model's `fixed_batch_task` (nothing allocated).

    Args:
        config: full config (model, loss, optimizer, train.num_steps/compute_dtype, mesh).
        numpy_batch: a global batch (numpy), for shapes.
        devices: devices of the ("data", "model") mesh (default: all); `config.mesh` sizes it.
        loss_fn: replaces the model's IMRO loss (e.g. a task-loss-only baseline).
    """
    task = model_fns.fixed_batch_task(config, numpy_batch)
    return runtime_lib.build_runtime(config, task, devices=devices, loss_fn=loss_fn)


def abstract_batch(runtime: runtime_lib.Runtime, numpy_batch: dict) -> dict:
    """`ShapeDtypeStruct`s of a batch on the runtime's mesh (for `lower` without data)."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=runtime.batch_sharding),
        numpy_batch,
    )


def compile_train_abstract(
    config: ml_collections.ConfigDict,
    numpy_batch: dict,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> jax.stages.Compiled:
    """The compiled train step of `config` for `numpy_batch`'s shapes, with nothing allocated.

    For steps too large to run on this machine: the executable's memory and cost analyses
    (`memory_bytes`, `imro_jax.perf.xla_flops`) are those of the step that would run.
    """
    runtime = runtime_for(config, numpy_batch, devices=devices)
    return runtime.lower_train(runtime.abstract_state, abstract_batch(runtime, numpy_batch)).compile()


def host_initial_state(abstract_state: Any, seed: int) -> Any:
    """A `TrainState` drawn on the host and placed in its shardings (no compilation).

    Parameters named `*bias` are 0, LayerNorm `scale`s 1, every other parameter N(0, 0.02^2);
    optimizer state, step, skipped count and model state are 0, and the key data is
    `[0, ..., 0, seed]`. Benchmarks time the step, not the initialiser: this saves one
    compilation per model, and every process and device count draws the same values for the
    same seed.

    Args:
        abstract_state: a `TrainState` of sharded `ShapeDtypeStruct`s (`Runtime.abstract_state`).
        seed: numpy seed of the parameters.
    """
    rng = np.random.default_rng(seed)

    def put(value, leaf):
        return jax.device_put(np.asarray(value, dtype=leaf.dtype), leaf.sharding)

    def param(path, leaf):
        name = str(getattr(path[-1], "key", getattr(path[-1], "name", "")))
        if name.endswith("bias"):
            return put(np.zeros(leaf.shape), leaf)
        if name == "scale":
            return put(np.ones(leaf.shape), leaf)
        return put(0.02 * rng.standard_normal(leaf.shape), leaf)

    def zeros(leaf):
        return put(np.zeros(leaf.shape), leaf)

    key_data = np.zeros(abstract_state.rng.shape)
    key_data[-1] = seed
    return abstract_state.replace(
        step=zeros(abstract_state.step),
        params=jax.tree_util.tree_map_with_path(param, abstract_state.params),
        opt_state=jax.tree.map(zeros, abstract_state.opt_state),
        rng=put(key_data, abstract_state.rng),
        skipped=zeros(abstract_state.skipped),
        model_state=jax.tree.map(zeros, abstract_state.model_state),
    )


def memory_bytes(compiled: jax.stages.Compiled) -> int:
    """Bytes a compiled executable holds: arguments + temporaries + outputs - aliased (donated).

    (XLA:CPU's `peak_memory_in_bytes` counts only the arguments, so it is not used.)
    """
    stats = compiled.memory_analysis()
    return int(stats.argument_size_in_bytes + stats.temp_size_in_bytes
               + stats.output_size_in_bytes - stats.alias_size_in_bytes)


@dataclasses.dataclass
class StepBench:
    """One config's jitted train step, forward pass and inference, with state and a device batch.

    Every method blocks until its result is ready, so it can be timed as it is.

    Attributes:
        name: label in tables.
        config: the config.
        runtime: the config's `Runtime` (mesh, shardings, the production train step).
        train_step: `runtime.train_step`, or its AOT-compiled executable after `compile_train`.
        batch: global device batch (sharded over "data").
        state: current `TrainState` (replaced by every `train()` call: the step donates it).
        forward: jitted `(params, batch, rng, step) -> loss` (train-mode forward and loss only).
        infer: the production eval step `(variables, batch) -> outputs` (eval mode).
    """

    name: str
    config: ml_collections.ConfigDict
    runtime: runtime_lib.Runtime
    train_step: Callable
    batch: dict
    state: Any
    forward: Callable
    infer: Callable

    def train(self) -> dict:
        """One train step; returns its metrics after the step finished."""
        self.state, metrics = self.train_step(self.state, self.batch)
        jax.block_until_ready((self.state, metrics))
        return metrics

    def forward_loss(self) -> jax.Array:
        """Forward pass and loss only (no gradient)."""
        rng = jax.random.fold_in(jax.random.wrap_key_data(self.state.rng), 0)
        return jax.block_until_ready(self.forward(self.state.params, self.batch, rng, self.state.step))

    def inference(self) -> Any:
        """Eval-mode outputs (logits and the per-modality reliability)."""
        return jax.block_until_ready(self.infer(self.state.variables(), self.batch))

    def statistics_pass(self, examples: int) -> Callable[[], Any] | None:
        """The task's statistics pass (`fit_model_state`) over `ceil(examples / B)` copies of the batch.

        The pass the loop makes over the training split after training, on a dataset of at least
        `examples` examples (`model.reliability.fit_examples`).

        Returns:
            A call that runs the whole pass and blocks until the fitted state is ready, or None
            where the model has no statistics to fit (H is not the surprisal).
        """
        fit = self.runtime.task.fit_model_state
        if fit is None:
            return None
        size = jax.tree.leaves(self.batch)[0].shape[0]  # B, the rows of the bench's batch
        batches = [(self.batch, jnp.ones(size, bool))] * math.ceil(examples / size)
        variables = self.state.variables()
        return lambda: jax.block_until_ready(fit(variables, lambda: batches))

    def compile_train(self) -> jax.stages.Compiled:
        """Compiles the train step ahead of time and uses that executable from now on.

        Returns:
            The `jax.stages.Compiled` (cost and memory analyses).
        """
        compiled = self.runtime.lower_train(self.state, self.batch).compile()
        self.train_step = compiled
        return compiled


def build_step_bench(
    name: str,
    config: ml_collections.ConfigDict,
    numpy_batch: dict,
    *,
    devices: Sequence[jax.Device] | None = None,
    loss_fn: Callable | None = None,
) -> StepBench:
    """`runtime_for` plus a host-drawn state (`host_initial_state`, no compilation) and the batch on the mesh.

    Args:
        name: label.
        config, numpy_batch, devices, loss_fn: as for `runtime_for`.
    """
    runtime = runtime_for(config, numpy_batch, devices=devices, loss_fn=loss_fn)
    state = host_initial_state(runtime.abstract_state, config.seed)
    batch = input_lib.to_global_batch(numpy_batch, runtime.batch_sharding)
    loss = runtime.loss_fn
    forward = step_lib.under_mesh(jax.jit(lambda p, b, r, s: loss(p, b, r, s)[0]), runtime.mesh, runtime.rules)
    return StepBench(
        name=name, config=config, runtime=runtime, train_step=runtime.train_step, batch=batch,
        state=state, forward=forward, infer=runtime.eval_step(runtime.task.eval_fn),
    )
