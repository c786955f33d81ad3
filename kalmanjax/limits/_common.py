r"""What the limits share: the observation-function type, noise and learning rates.

The limits are stated for a general (possibly nonlinear) observation
:math:`y_t = h(\theta, u_t) + v_t` with token Jacobian
:math:`J_t = \partial h / \partial\theta` at the running mean. They linearise it
with the library's one convention (:mod:`kalmanjax.steps.linearize`), through
:func:`kalmanjax.ekf_update`; this module only validates ``h``, the state and the
shapes a noise covariance or a learning rate may take.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core import checks
from ..steps.linearize import linearize

__all__ = [
    "ObservationFn",
    "apply_preconditioner",
    "as_matrix",
    "check_state",
    "checked",
    "value_and_jacobian",
]

#: ``h(theta, inputs) -> (obs,)``: the observation function of every limit.
ObservationFn = Callable[[Any, Any], jax.Array]

_STATE_HINT = "flatten parameter pytrees, or use the optax bridges"


def check_state(theta: Any, owner: str) -> tuple[int, Any]:
    """Raise unless ``theta`` is a floating vector; return ``(state, dtype)``."""
    return checks.check_mean(theta, owner, name="the state (mean)", hint=_STATE_HINT)


def checked(h: ObservationFn, owner: str) -> ObservationFn:
    """``h`` with its output checked to be a vector of the state's dtype."""

    def fn(theta: jax.Array, inputs: Any) -> jax.Array:
        pred = h(theta, inputs)
        checks.check_fn_output(
            pred,
            None,
            "h(theta, inputs)",
            "(obs,)",
            jnp.result_type(theta),
            owner,
            ref="the state",
        )
        return pred

    return fn


def value_and_jacobian(
    h: ObservationFn, theta: jax.Array, inputs: Any, owner: str
) -> tuple[jax.Array, jax.Array]:
    """``(h(theta, inputs), J)`` with ``J = dh/dtheta`` of shape ``(obs, state)``.

    One forward-mode pass (:func:`kalmanjax.linearize`, ``state`` JVPs).
    """
    return linearize(checked(h, owner), theta, inputs)


def as_matrix(x: Any, n: int, dtype: Any, name: str, owner: str) -> jax.Array:
    """A scalar, a ``(n,)`` diagonal or a ``(n, n)`` matrix as an ``(n, n)`` matrix."""
    shape = np.shape(x)
    if shape != () and jnp.result_type(x) != dtype:
        raise TypeError(
            f"{owner}: {name} has dtype {jnp.result_type(x)} but the state is "
            f"{dtype} (dtype in = dtype out)"
        )
    x = jnp.asarray(x, dtype)
    if shape == ():
        return x * jnp.eye(n, dtype=dtype)
    if shape == (n,):
        return jnp.diag(x)
    if shape == (n, n):
        return x
    raise ValueError(
        f"{owner}: {name} must be a scalar, a ({n},) diagonal or a ({n}, {n}) "
        f"matrix, got shape {shape}"
    )


def apply_preconditioner(
    pre: Any, flat: Float[Array, " param"], owner: str
) -> Float[Array, " param"]:
    r""":math:`P g` for a scalar, ``(n,)`` diagonal or ``(n, n)`` matrix :math:`P`.

    Scalars and diagonals cost :math:`O(n)`; only a full matrix costs
    :math:`O(n^2)`.
    """
    n = flat.shape[0]
    shape = np.shape(pre)
    if shape not in ((), (n,), (n, n)):
        raise ValueError(
            f"{owner}: the learning rate / preconditioner must be a scalar, a ({n},) "
            f"vector or a ({n}, {n}) matrix for {n} parameters, got shape {shape}"
        )
    if shape != () and jnp.result_type(pre) != flat.dtype:
        raise TypeError(
            f"{owner}: the learning rate / preconditioner has dtype "
            f"{jnp.result_type(pre)} but the parameters are {flat.dtype}"
        )
    pre = jnp.asarray(pre, flat.dtype)
    return pre @ flat if len(shape) == 2 else pre * flat
