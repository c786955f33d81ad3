r"""Linearisation of a function at a point: its value and Jacobian in one pass.

The building block of the extended and iterated Kalman updates
(:mod:`kalmanjax.steps.nonlinear`), of the categorical token update
(:mod:`kalmanjax.steps.categorical`) and of the degenerate limits
(:mod:`kalmanjax.limits`).

One convention for every linearised observation: :math:`h` linearised at a point
:math:`x_i` predicts :math:`h(x_i) + H (m^- - x_i)` for the predicted mean
:math:`m^-` (:func:`linearized_prediction`); at :math:`x_i = m^-` that is
:math:`h(m^-)` itself, never :math:`H m^- + (h(m^-) - H m^-)`, which loses the
digits of :math:`h(m^-)` to cancellation when :math:`|H m^-|` is large.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import jax
from jax import lax
from jaxtyping import Array, Float

__all__ = ["METHODS", "iterate_linearization", "linearize", "linearized_prediction"]

if TYPE_CHECKING:
    Method = Literal["jacfwd", "jacrev"]
else:  # checked by linearize itself, with a message naming the choices
    Method = str
#: The Jacobian methods :func:`linearize` accepts.
METHODS = ("jacfwd", "jacrev")


def linearize(
    fn: Callable[..., Array],
    x: Float[Array, " state"],
    *args: Any,
    method: Method = "jacfwd",
) -> tuple[Array, Array]:
    r"""Evaluate ``fn(x, *args)`` and its Jacobian in ``x`` in one pass.

    Args:
        fn: a function of ``x`` (and of ``args``, held fixed).
        x: the linearisation point, shape ``(state,)``.
        *args: further arguments of ``fn``.
        method: ``"jacfwd"`` (forward mode: one tangent per state dimension; the
            default, right for a small state) or ``"jacrev"`` (reverse mode: one
            cotangent per output; for a large state and few outputs).

    Returns:
        ``(value, jacobian)`` with ``jacobian`` of shape ``value.shape + (state,)``.

    Raises:
        ValueError: on an unknown ``method``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> fn = lambda x: jnp.sin(x) * x[0]
        >>> value, jac = kj.linearize(fn, jnp.array([0.0, 1.0]))
        >>> print(jac.round(4))
        [[0.     0.    ]
         [0.8415 0.    ]]
    """
    if method not in METHODS:
        raise ValueError(f"linearize: method must be one of {METHODS}, got {method!r}")

    def with_value(z):
        value = fn(z, *args)
        return value, value

    jac_fn = jax.jacfwd if method == "jacfwd" else jax.jacrev
    jac, value = jac_fn(with_value, has_aux=True)(x)
    return value, jac


def iterate_linearization(
    condition_at: Callable[[Any], tuple[Any, Any]], start: Any, num_iter: int
) -> tuple[Any, Any]:
    """Condition about ``start``, then ``num_iter - 1`` times about the last posterior.

    ``condition_at(about) -> (posterior, info)`` must condition the same predicted
    belief on the same observation with the model linearised about ``about`` (a
    belief: at its mean for a Taylor expansion, under all of it for a sigma-point
    rule), so the observation enters once however many iterations run
    (Gauss-Newton; posterior linearisation).
    """
    posterior, info = condition_at(start)
    if num_iter > 1:
        posterior, info = lax.fori_loop(
            1, num_iter, lambda _, carry: condition_at(carry[0]), (posterior, info)
        )
    return posterior, info


def linearized_prediction(
    value: Array, jacobian: Array, point: Array, mean: Array
) -> Array:
    r"""The prediction :math:`h(x_i) + H (m - x_i)` of ``h`` linearised at ``point``.

    Args:
        value: :math:`h(x_i)`, shape ``(obs,)``.
        jacobian: :math:`H = \partial h / \partial x` at :math:`x_i`,
            shape ``(obs, state)``.
        point: :math:`x_i`, shape ``(state,)``.
        mean: :math:`m`, shape ``(state,)``.

    Returns:
        Shape ``(obs,)``; exactly ``value`` when ``point`` equals ``mean``.
    """
    return value + jacobian @ (mean - point)
