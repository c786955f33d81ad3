r"""Scale-out: many independent sequences sharded across devices (and hosts).

Filtering a batch of independent sequences is embarrassingly parallel over the batch
axis. :func:`batch_map` is ``jax.vmap`` over that axis with the batch split across
the devices of a mesh by ``jax.shard_map``: each device filters its own sequences
with no communication, and the results are ``jax.Array`` s sharded the same way.
The work per device is exactly that of ``vmap`` on its shard, so the results equal
the single-device ones.

Single host::

    filt = kj.kalman_filter(dynamics, observation)
    lml = jax.jit(kj.batch_map(lambda y: kj.log_marginal_likelihood(filt, prior, y)))
    values = lml(ys)  # ys: (batch, T, obs), batch divisible by the device count

Multiple hosts (one process per host, the same program on each)::

    jax.distributed.initialize()  # coordinator address etc. from the environment
    mesh = jax.make_mesh((jax.device_count(),), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    # each process loads only its own sequences: (batch / process_count, T, obs)
    ys = jax.make_array_from_process_local_data(sharding, local_ys)
    values = jax.jit(kj.batch_map(fn, mesh=mesh))(ys)
    # values is sharded like ys; each process reads its part with
    # values.addressable_shards, or gathers with
    # jax.experimental.multihost_utils.process_allgather(values)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["batch_map", "batch_mesh", "shard_batch"]


def batch_mesh(axis_name: str = "batch", devices: Any = None) -> Mesh:
    """A one-dimensional mesh over ``devices`` (default: all devices, all hosts)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), (axis_name,), devices=devices)


def shard_batch(tree: Any, mesh: Mesh | None = None, axis_name: str = "batch") -> Any:
    """Place every leaf of ``tree`` with its leading (batch) axis split across ``mesh``.

    Args:
        tree: arrays with a common leading batch axis, divisible by the mesh size.
        mesh: a mesh with axis ``axis_name`` (default: :func:`batch_mesh`).
        axis_name: the mesh axis to split the batch over.

    Returns:
        The same tree as sharded ``jax.Array`` s (single host only; across hosts
        use ``jax.make_array_from_process_local_data``, see the module docstring).
    """
    mesh = batch_mesh(axis_name) if mesh is None else mesh
    _check_divisible(tree, mesh, axis_name, "shard_batch")
    sharding = NamedSharding(mesh, PartitionSpec(axis_name))
    return jax.device_put(tree, sharding)


def batch_map(
    fn: Callable[..., Any], *, mesh: Mesh | None = None, axis_name: str = "batch"
) -> Callable[..., Any]:
    """``jax.vmap(fn)`` over a leading batch axis, sharded across devices.

    Args:
        fn: a function of one sequence's arrays (every positional argument is
            batched along its leading axis; close over what is shared, such as the
            model and the prior).
        mesh: a mesh with axis ``axis_name`` (default: all devices, see
            :func:`batch_mesh`).
        axis_name: the mesh axis the batch is split over.

    Returns:
        A function of batched arguments whose outputs have a leading batch axis,
        sharded over ``axis_name``. Jit it (the library never jits for you). The
        batch must be divisible by the number of devices on ``axis_name``;
        arguments need not come from :func:`shard_batch` (they are resharded).
    """
    spec = PartitionSpec(axis_name)

    def sharded(*args):
        m = batch_mesh(axis_name) if mesh is None else mesh
        _check_divisible(args, m, axis_name, "batch_map")
        # arguments not placed with shard_batch (a plain array, or one sharded
        # otherwise) are resharded to the batch split here, eagerly or under jit
        target = NamedSharding(m, spec)
        args = jax.tree_util.tree_map(lambda a: jax.reshard(a, target), args)
        local = jax.shard_map(
            jax.vmap(fn), mesh=m, in_specs=spec, out_specs=spec, check_vma=False
        )
        return local(*args)

    return sharded


def _check_divisible(tree: Any, mesh: Mesh, axis_name: str, owner: str) -> None:
    if axis_name not in mesh.shape:
        raise ValueError(
            f"{owner}: the mesh has axes {tuple(mesh.shape)}, not {axis_name!r}"
        )
    size = mesh.shape[axis_name]
    for leaf in jax.tree_util.tree_leaves(tree):
        batch = leaf.shape[0] if leaf.ndim else None
        if batch is None or batch % size:
            raise ValueError(
                f"{owner}: every argument needs a leading batch axis divisible by "
                f"the {size} devices on mesh axis {axis_name!r}; got shape "
                f"{tuple(leaf.shape)}"
            )
