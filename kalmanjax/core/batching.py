"""The one batching guard: ``vmap``, except where jaxlib's CPU LAPACK can deadlock.

jaxlib's CPU LAPACK kernels (seen in 0.10.2) split a batched call whose batch x
cost reaches :data:`LAPACK_SPLIT_FLOPS` into chunks on XLA's CPU thread pool and
block a pool thread until they finish; two such calls at once on a 2-thread pool
deadlock. :func:`batched` maps such a batch in chunks (``lax.map``) too small to
be split, and is ``jax.vmap`` everywhere else (accelerators, small batches, and
the elementwise small-state kernels, which call no LAPACK).

The cost model is one number per call site: ``flops_per_item``, the LAPACK work of
one item (about :math:`4 n^3` for a Cholesky or LU with :math:`O(n)` right-hand
sides, :math:`10 n^3` for a symmetric eigendecomposition; :func:`lapack_flops`).
Under a user's own ``vmap`` the chunks grow by the outer batch size, so on CPU map
a diagnostic over many tasks with ``lax.map`` rather than ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax import lax

__all__ = ["LAPACK_SPLIT_FLOPS", "batched", "lapack_flops"]

#: Below this many flops per batched LAPACK call a batch is never split.
LAPACK_SPLIT_FLOPS = 200_000


def lapack_flops(n: int, kind: str = "solve") -> int:
    """Flops of one LAPACK factorisation of an ``n x n`` matrix.

    Args:
        n: the matrix size.
        kind: ``"solve"`` (Cholesky / LU with ``O(n)`` right-hand sides, ~4 n^3)
            or ``"eigh"`` (symmetric eigendecomposition, ~10 n^3).

    Returns:
        The flop count used by :func:`batched` to size its chunks.
    """
    factor = {"solve": 4, "eigh": 10}[kind]
    return factor * n**3


def batched(
    fn: Callable[..., Any],
    flops_per_item: int,
    *,
    in_axes: int | None | tuple[int | None, ...] = 0,
    lapack: bool = True,
) -> Callable[..., Any]:
    """``jax.vmap(fn, in_axes)``, mapped in unsplittable chunks on CPU with LAPACK.

    Args:
        fn: the per-item function.
        flops_per_item: the LAPACK work of one item (see :func:`lapack_flops`).
        in_axes: as for ``jax.vmap`` (an int, ``None`` or one per argument).
        lapack: whether ``fn`` calls LAPACK at all; ``False`` (the elementwise
            small-state kernels) always vmaps.

    Returns:
        A function of batched arguments with the outputs stacked on axis 0.
    """
    if not lapack or jax.default_backend() != "cpu":
        return jax.vmap(fn, in_axes=in_axes)
    chunk = max(1, LAPACK_SPLIT_FLOPS // (flops_per_item + 1) - 1)

    def mapped(*args: Any) -> Any:
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
        mapped_args = [a for a, ax in zip(args, axes, strict=True) if ax is not None]
        size = jax.tree_util.tree_leaves(mapped_args)[0].shape[0]
        if size <= chunk:  # too small to be split: one vmapped call
            return jax.vmap(fn, in_axes=in_axes)(*args)

        def one(items: Any) -> Any:
            it = iter(items)
            full = [
                next(it) if ax is not None else a
                for a, ax in zip(args, axes, strict=True)
            ]
            return fn(*full)

        return lax.map(one, mapped_args, batch_size=chunk)

    return mapped
