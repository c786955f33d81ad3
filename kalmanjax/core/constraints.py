r"""Parameter constraints as reparametrisations, for fitting by gradient.

A :class:`Constraint` maps an unconstrained array :math:`u` to a constrained
value :math:`\theta = \text{forward}(u)` and back (``inverse``); an optimiser
then moves :math:`u` freely and :math:`\theta` stays feasible:

* :func:`real`: :math:`\theta = u`;
* :func:`positive`: :math:`\theta = \operatorname{softplus}(u)` elementwise
  (variances, rates);
* :func:`bounded`: :math:`\theta = a + (b - a)\,\sigma(u)` elementwise, in
  :math:`(a, b)` (a stable AR coefficient in :math:`(-1, 1)`, a probability);
* :func:`psd`: a ``(n, n)`` :math:`u` to :math:`L L^\top`, with :math:`L` the
  lower triangle of :math:`u` and the softplus of its diagonal (covariances,
  positive definite; the upper triangle of :math:`u` is unused).

softplus rather than ``exp`` keeps the gradient bounded for large :math:`u`.
:func:`constrain` and :func:`unconstrain` apply a tree of constraints to a tree
of parameters (a ``None`` leaf, or a key missing from a dict, is :func:`real`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "Constraint",
    "bounded",
    "constrain",
    "positive",
    "psd",
    "real",
    "unconstrain",
]


@dataclasses.dataclass(frozen=True)
class Constraint:
    """A bijection between unconstrained arrays and a constrained set.

    A pytree node with no leaves (it is static under ``jax.jit``, so a tree of
    constraints can be passed as a traced argument); in a tree of constraints
    each ``Constraint`` applies to every array of the matching subtree of
    parameters.

    Attributes:
        name: what the set is, for messages.
        forward: unconstrained array -> constrained array (same shape).
        inverse: constrained array -> unconstrained array (same shape).
    """

    name: str
    forward: Callable[[jax.Array], jax.Array]
    inverse: Callable[[jax.Array], jax.Array]


jax.tree_util.register_pytree_node(Constraint, lambda c: ((), c), lambda c, _: c)


def _identity(x: jax.Array) -> jax.Array:
    return x


def _softplus_inverse(x: jax.Array) -> jax.Array:
    r""":math:`\log(e^x - 1) = x + \log(1 - e^{-x})`, stable for large ``x``."""
    return x + jnp.log(-jnp.expm1(-x))


def real() -> Constraint:
    """No constraint: the identity."""
    return Constraint("real", _identity, _identity)


def positive() -> Constraint:
    r"""Positive entries: :math:`\theta = \log(1 + e^u)` elementwise."""
    return Constraint("positive", jax.nn.softplus, _softplus_inverse)


def bounded(low: float, high: float) -> Constraint:
    r"""Entries in :math:`(a, b)`: :math:`\theta = a + (b - a)\,\sigma(u)`.

    Args:
        low: :math:`a`.
        high: :math:`b > a`.

    Raises:
        ValueError: if ``high <= low``.
    """
    if not high > low:
        raise ValueError(f"bounded: high must exceed low, got ({low}, {high})")

    def forward(u):
        return low + (high - low) * jax.nn.sigmoid(u)

    def inverse(x):
        p = (x - low) / (high - low)
        return jnp.log(p) - jnp.log1p(-p)

    return Constraint(f"bounded({low}, {high})", forward, inverse)


def psd() -> Constraint:
    r"""Positive definite ``(n, n)`` matrices: :math:`u \mapsto L L^\top`.

    :math:`L` is the strict lower triangle of :math:`u` plus the softplus of its
    diagonal; the inverse takes the Cholesky factor of :math:`\theta`.
    """
    return Constraint("psd", _psd_forward, _psd_inverse)


def _psd_forward(u: jax.Array) -> jax.Array:
    L = jnp.tril(u, -1) + jnp.diag(jax.nn.softplus(jnp.diagonal(u)))
    return L @ L.T


def _psd_inverse(x: jax.Array) -> jax.Array:
    L = jnp.linalg.cholesky(x)
    return jnp.tril(L, -1) + jnp.diag(_softplus_inverse(jnp.diagonal(L)))


def _pair(constraints: Any, params: Any, owner: str) -> Any:
    """``constraints`` completed to the structure of ``params`` (``None`` = real)."""
    if constraints is None:
        return jax.tree_util.tree_map(lambda _: None, params)
    if isinstance(constraints, Constraint):
        return constraints
    if isinstance(constraints, Mapping) and isinstance(params, Mapping):
        unknown = sorted(set(constraints) - set(params), key=str)
        if unknown:
            raise ValueError(
                f"{owner}: constraints name keys the parameters lack: {unknown}; "
                f"the parameters have {sorted(params, key=str)}"
            )
        return {k: _pair(constraints.get(k), v, owner) for k, v in params.items()}
    return constraints


def _apply(constraints, params, direction: str, owner: str):
    paired = _pair(constraints, params, owner)
    is_leaf = lambda c: c is None or isinstance(c, Constraint)  # noqa: E731

    def one(c, subtree):
        if c is None:
            return subtree
        if not isinstance(c, Constraint):
            raise ValueError(
                f"{owner}: constraints must hold Constraint or None leaves, got "
                f"{type(c).__name__}"
            )
        fn = c.forward if direction == "forward" else c.inverse
        return jax.tree_util.tree_map(fn, subtree)

    try:
        return jax.tree_util.tree_map(one, paired, params, is_leaf=is_leaf)
    except ValueError as err:
        if str(err).startswith(owner):
            raise
        raise ValueError(
            f"{owner}: constraints must follow the structure of the parameters "
            f"({jax.tree_util.tree_structure(params)}): {err}"
        ) from None


def constrain(constraints: Any, unconstrained: Any) -> Any:
    """Map a tree of unconstrained arrays to parameters, leaf by leaf.

    Args:
        constraints: a tree of :class:`Constraint` (or ``None``) that is a prefix
            of ``unconstrained``'s structure; a dict may leave keys out.
            ``None``: no constraints.
        unconstrained: the tree of arrays an optimiser moves.

    Returns:
        The constrained tree, the structure of ``unconstrained``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import constraints as C
        >>> C.constrain({"q": C.positive()}, {"q": jnp.zeros(1), "F": jnp.ones(1)})
        {'F': Array([1.], dtype=float32), 'q': Array([0.6931472], dtype=float32)}
    """
    return _apply(constraints, unconstrained, "forward", "constrain")


def unconstrain(constraints: Any, params: Any) -> Any:
    """The inverse of :func:`constrain`: parameters to unconstrained arrays.

    Args:
        constraints: as for :func:`constrain`.
        params: a tree of feasible parameters.

    Returns:
        The unconstrained tree (``inf`` or NaN where a parameter is infeasible,
        e.g. a variance of 0).
    """
    return _apply(constraints, params, "inverse", "unconstrain")
