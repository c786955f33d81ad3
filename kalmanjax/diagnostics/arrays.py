r"""Array plumbing shared by the diagnostics: covariances, and per-matrix maps.

:func:`as_covariance` reads :math:`\Sigma` off a belief (``Gaussian.cov``, or
:math:`LL^\top` for a ``SqrtGaussian``) or takes an array of shape
``(..., state, state)`` as it is. :func:`per_matrix` applies a function written
for one matrix :math:`A_i` over the leading batch axes :math:`i`, through the
package's one batching guard (:func:`kalmanjax.core.batching.batched`, costed as
a symmetric eigendecomposition, :math:`10 n^3` flops per matrix).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ..core.batching import batched, lapack_flops
from ..core.beliefs import Gaussian, SqrtGaussian

__all__ = ["as_covariance", "per_matrix"]


def as_covariance(x: Any, name: str, owner: str) -> Array:
    """The covariance(s) held by a belief, or the array itself.

    Args:
        x: a ``Gaussian`` or ``SqrtGaussian`` (its ``cov``), or an array of shape
            ``(..., state, state)``.
        name: the argument's name, for the error message.
        owner: the calling function's name, for the error message.

    Returns:
        The covariance(s), shape ``(..., state, state)``.

    Raises:
        ValueError: when ``x`` is not square in its last two axes.
    """
    if isinstance(x, SqrtGaussian | Gaussian):
        c = x.cov
    else:
        c = jnp.asarray(x)
    if c.ndim < 2 or c.shape[-1] != c.shape[-2]:
        raise ValueError(
            f"{owner}: {name} must be a belief or an array of shape (..., state, "
            f"state), got shape {c.shape}"
        )
    return c


def per_matrix(fn: Callable[..., Any], *arrays: Array) -> Any:
    """Apply ``fn`` (written for one matrix) over the leading axes of ``arrays``.

    The first array sets the batch shape (all axes but its last two) and the
    matrix size ``n`` of the cost model. The batch axes are flattened into one,
    mapped with :func:`kalmanjax.core.batching.batched` (``vmap`` off CPU and for
    small batches; on CPU, ``lax.map`` in chunks too small for jaxlib's LAPACK to
    split across the thread pool, which can deadlock) and restored. Under a
    user's ``vmap`` the chunks grow by the outer batch size, so on CPU map over
    tasks with ``lax.map`` rather than ``vmap``.

    Args:
        fn: a function of one item of each array (the last two axes, or whatever
            follows the batch axes), returning a pytree of arrays.
        *arrays: arrays sharing the batch shape ``(*batch, ...)``; the first has
            shape ``(*batch, n, n)``.

    Returns:
        ``fn``'s outputs with the batch axes in front, ``(*batch, ...)``.
    """
    batch = arrays[0].shape[:-2]
    n = arrays[0].shape[-1]
    size = math.prod(batch)
    flat = [a.reshape((size,) + a.shape[len(batch) :]) for a in arrays]
    out = batched(fn, lapack_flops(n, "eigh"))(*flat)
    return jax.tree_util.tree_map(lambda o: o.reshape(batch + o.shape[1:]), out)
