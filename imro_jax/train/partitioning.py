"""Logical-axis rules -> `NamedSharding`s for parameters, optimizer state and batches.

The model annotates every parameter with logical axis names ("embed", "mlp", "heads", ...) via
`flax.linen.with_logical_partitioning`; the config maps those names to mesh axes with ordered
rules `((logical, mesh_axis_or_None), ...)` (first free mesh axis wins, as in flax/MaxText). The
FSDP option appends `("embed", "data")`, so large parameters are also sharded over the data axis.
A dimension that a mesh axis does not divide evenly is replicated instead (XLA requires even
tiling), which keeps small parameters (biases of odd size, few classes) valid on any mesh.
"""

import logging
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

FSDP_RULE = ("embed", "data")


def logical_axis_rules(rules: Sequence[Sequence], *, fsdp: bool) -> LogicalRules:
    """Returns the config's rules as a tuple of pairs, with the FSDP rule appended if asked.

    Args:
        rules: `((logical_name, mesh_axis | None), ...)` from `config.mesh.rules`.
        fsdp: shard "embed" parameter dimensions over "data" as well (ZeRO-3 style).
    """
    pairs = tuple((str(name), None if axis is None else axis) for name, axis in rules)
    pairs = tuple(
        (name, tuple(axis) if isinstance(axis, (list, tuple)) else axis) for name, axis in pairs
    )
    return pairs + (FSDP_RULE,) if fsdp else pairs


def _mesh_axes_size(mesh: Mesh, axes) -> int:
    if axes is None:
        return 1
    names = (axes,) if isinstance(axes, str) else axes
    return math.prod(mesh.shape[name] for name in names)


def mesh_partition_spec(
    logical_names: Sequence[str | None] | None,
    shape: Sequence[int],
    rules: LogicalRules,
    mesh: Mesh,
) -> PartitionSpec:
    """Maps one array's logical axis names to a mesh `PartitionSpec` valid for its shape.

    Args:
        logical_names: one name (or None) per dimension; None for an unannotated array.
        shape: the array shape.
        rules: ordered `(logical, mesh_axes)` pairs.
        mesh: the mesh (for axis sizes).

    Returns:
        The flax rule assignment, with any mesh axis that does not divide its dimension dropped.
    """
    if logical_names is None:
        return PartitionSpec()
    if len(logical_names) != len(shape):
        raise ValueError(
            f"logical axis names {tuple(logical_names)} do not match array shape {tuple(shape)}"
        )
    axes = nn.logical_to_mesh_axes(tuple(logical_names), rules)
    fitted = [
        mesh_axes if dim % _mesh_axes_size(mesh, mesh_axes) == 0 else None
        for mesh_axes, dim in zip(axes, shape)
    ]
    return PartitionSpec(*fitted)


def _is_box(x) -> bool:
    return isinstance(x, nn.LogicallyPartitioned)


def param_partition_specs(abstract_boxed_params, rules: LogicalRules, mesh: Mesh):
    """Mesh `PartitionSpec`s for a tree of (abstract) logically-partitioned parameters.

    Args:
        abstract_boxed_params: `jax.eval_shape(model.init, ...)["params"]`-like tree whose leaves
            are `nn.LogicallyPartitioned` boxes (unannotated leaves are replicated, with a warning).
        rules: logical-axis rules.
        mesh: the mesh.

    Returns:
        A tree with the structure of the unboxed params and `PartitionSpec` leaves.
    """
    unannotated = []

    def spec(path, leaf):
        if _is_box(leaf):
            return mesh_partition_spec(leaf.names, leaf.value.shape, rules, mesh)
        unannotated.append(jax.tree_util.keystr(path))
        return PartitionSpec()

    specs = jax.tree_util.tree_map_with_path(spec, abstract_boxed_params, is_leaf=_is_box)
    if unannotated:
        logging.warning("parameters without logical axis names (replicated): %s", unannotated)
    return specs


def optimizer_state_specs(abstract_opt_state, abstract_params, param_specs):
    """Gives optimizer-state copies of a parameter (Adam moments, accumulators) its spec.

    A state leaf is a copy of a parameter when its key path ends with that parameter's key path
    and its shape matches; every other leaf (counters, scalars) is replicated. Matching by path
    works for any Optax chain, including `optax.masked` and `optax.MultiSteps`.

    Args:
        abstract_opt_state: `jax.eval_shape(optimizer.init, abstract_params)`.
        abstract_params: unboxed abstract params.
        param_specs: `PartitionSpec` tree with the structure of `abstract_params`.

    Returns:
        A `PartitionSpec` tree with the structure of `abstract_opt_state`.
    """
    by_path = {}
    for (path, leaf), spec in zip(
        jax.tree_util.tree_leaves_with_path(abstract_params),
        jax.tree.leaves(param_specs, is_leaf=lambda x: isinstance(x, PartitionSpec)),
    ):
        by_path[tuple(path)] = (leaf.shape, spec)

    def spec(path, leaf):
        path = tuple(path)
        for start in range(len(path)):
            match = by_path.get(path[start:])
            if match is not None and match[0] == leaf.shape:
                return match[1]
        return PartitionSpec()

    return jax.tree_util.tree_map_with_path(spec, abstract_opt_state)


def named_shardings(mesh: Mesh, specs):
    """Turns a tree of `PartitionSpec`s into `NamedSharding`s on `mesh`."""
    return jax.tree.map(
        lambda spec: NamedSharding(mesh, spec),
        specs,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of every batch leaf: leading (batch) axis over "data", the rest replicated."""
    return NamedSharding(mesh, PartitionSpec("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    """A fully replicated sharding (scalars, metrics, step counters)."""
    return NamedSharding(mesh, PartitionSpec())
