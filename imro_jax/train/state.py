"""The train state pytree and its creation, already sharded over the mesh."""

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from imro_jax.train import partitioning

InitFn = Callable[[jax.Array, dict], Any]  # (rng, example_batch) -> {"params": boxed, **other collections}
PARAMS = "params"


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue bit-for-bit (besides the data iterator state).

    Attributes:
        step: int32[] train steps taken (= batches consumed, skipped ones included).
        params: parameter tree (float32 master copy), sharded by the logical-axis rules.
        opt_state: Optax state; moment estimates sharded like their parameters.
        rng: uint32[key] raw key data; the step key is `fold_in(rng, step)`.
        skipped: int32[] steps whose update was skipped by the non-finite guard.
        model_state: the model's other variable collections (fitted statistics such as
            ``reliability_stats``), replicated, never trained; ``{}`` for models without any.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    skipped: jax.Array
    model_state: Any

    def variables(self) -> dict:
        """``{"params": params, **model_state}``: what ``model.apply`` takes."""
        return {PARAMS: self.params, **self.model_state}


def _example_rows(example_batch: dict, rows: int = 2) -> dict:
    """The first `rows` examples of a batch: enough for shape inference, small as a constant."""
    return jax.tree.map(lambda x: np.asarray(x)[:rows], example_batch)


def _init_state(init_fn: InitFn, optimizer: optax.GradientTransformation, example_batch: dict,
                seed: jax.Array) -> tuple[TrainState, Any]:
    """Pure initialisation: returns (state, boxed params); run under `eval_shape` or `jit`."""
    params_rng, state_rng = jax.random.split(jax.random.key(seed))
    variables = dict(init_fn(params_rng, example_batch))
    if PARAMS not in variables:
        raise ValueError(f"init_fn must return Flax variables {{'params': ..., ...}}; got keys {sorted(variables)}")
    boxed = variables.pop(PARAMS)
    params = nn.unbox(boxed)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        rng=jax.random.key_data(state_rng),
        skipped=jnp.zeros((), jnp.int32),
        model_state=nn.unbox(variables),
    )
    return state, boxed


def train_state_shardings(
    init_fn: InitFn,
    optimizer: optax.GradientTransformation,
    example_batch: dict,
    mesh: Mesh,
    rules: partitioning.LogicalRules,
) -> tuple[TrainState, TrainState]:
    """Abstract train state and its `NamedSharding` tree, without allocating anything.

    Returns:
        `(abstract_state, shardings)`: `abstract_state` leaves are `jax.ShapeDtypeStruct`s that
        carry their sharding (a restore target for Orbax); `shardings` has the same structure.
    """
    example = _example_rows(example_batch)
    abstract, abstract_boxed = jax.eval_shape(
        lambda: _init_state(init_fn, optimizer, example, jnp.uint32(0))
    )
    param_specs = partitioning.param_partition_specs(abstract_boxed, rules, mesh)
    specs = TrainState(
        step=jax.sharding.PartitionSpec(),
        params=param_specs,
        opt_state=partitioning.optimizer_state_specs(
            abstract.opt_state, abstract.params, param_specs
        ),
        rng=jax.sharding.PartitionSpec(),
        skipped=jax.sharding.PartitionSpec(),
        model_state=jax.tree.map(lambda _: jax.sharding.PartitionSpec(), abstract.model_state),
    )
    shardings = partitioning.named_shardings(mesh, specs)
    abstract = jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        abstract,
        shardings,
    )
    return abstract, shardings


def make_initializer(
    init_fn: InitFn,
    optimizer: optax.GradientTransformation,
    example_batch: dict,
    shardings: TrainState,
) -> Callable[[int], TrainState]:
    """Compiles `seed -> TrainState` with `out_shardings`, so state is born sharded.

    One `jax.jit(init, out_shardings=shardings)`: every device computes only its own shards, so
    no parameter is ever materialised whole on one device. The seed is a traced argument (one
    compilation serves every seed).

    Args:
        init_fn: `(rng, example_batch) -> {"params": params, **collections}`, params with
            `nn.LogicallyPartitioned` leaves.
        optimizer: the Optax chain.
        example_batch: a numpy batch (only its first rows are used, for shapes).
        shardings: from `train_state_shardings`.
    """
    example = _example_rows(example_batch)
    init = jax.jit(
        lambda seed: _init_state(init_fn, optimizer, example, seed)[0], out_shardings=shardings
    )
    return lambda seed: init(jnp.asarray(seed, jnp.uint32))


def create_train_state(
    init_fn: InitFn,
    optimizer: optax.GradientTransformation,
    example_batch: dict,
    seed: int,
    shardings: TrainState,
) -> TrainState:
    """Initialises params and optimizer state for `seed` directly into their shardings."""
    return make_initializer(init_fn, optimizer, example_batch, shardings)(seed)
