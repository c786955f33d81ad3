r"""Private linearisation of an observation function ``h(theta, inputs)``.

The limits are stated for a general (possibly nonlinear) observation
:math:`y_t = h(\theta, u_t) + v_t` with token Jacobian
:math:`J_t = \partial h / \partial\theta` at the running mean. A first-order
expansion :math:`h(\theta) \approx h(m) + J (\theta - m)` turns one step into the
linear-Gaussian :class:`~kalmanjax.LinearObservation` ``(H = J, d = h(m) - J m)``,
which the core :func:`kalmanjax.update` then conditions on exactly; its innovation
is :math:`y - h(m)`. The Jacobian comes from :func:`kalmanjax.linearize`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core.models import LinearObservation
from ..steps.linearize import linearize

ObservationFn = Callable[[Any, Any], jax.Array]


def check_state(theta: Any, owner: str) -> tuple[int, Any]:
    """Raise unless ``theta`` is a floating vector; return ``(state, dtype)``."""
    shape = np.shape(theta)
    if len(shape) != 1:
        raise ValueError(
            f"{owner}: the state (mean) must be a vector of shape (state,), got "
            f"{shape} (flatten parameter pytrees, or use the optax bridges)"
        )
    dtype = jnp.result_type(theta)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{owner}: the state must be floating, got {dtype}")
    return shape[0], dtype


def evaluate(h: ObservationFn, theta: jax.Array, inputs: Any, owner: str) -> jax.Array:
    """``h(theta, inputs)``, checked to be a vector of the state's dtype."""
    pred = h(theta, inputs)
    if len(np.shape(pred)) != 1:
        raise ValueError(
            f"{owner}: h(theta, inputs) must return a vector of shape (obs,), got "
            f"shape {np.shape(pred)}"
        )
    if jnp.result_type(pred) != jnp.result_type(theta):
        raise TypeError(
            f"{owner}: h(theta, inputs) returned dtype {jnp.result_type(pred)} but "
            f"the state is {jnp.result_type(theta)} (dtype in = dtype out)"
        )
    return pred


def value_and_jacobian(
    h: ObservationFn, theta: jax.Array, inputs: Any, owner: str
) -> tuple[jax.Array, jax.Array]:
    """``(h(theta, inputs), J)`` with ``J = dh/dtheta`` of shape ``(obs, state)``.

    One forward-mode pass (:func:`kalmanjax.linearize`, ``state`` JVPs).
    """
    return linearize(lambda th: evaluate(h, th, inputs, owner), theta)


def linearized_observation(
    h: ObservationFn, theta: jax.Array, inputs: Any, noise_cov: Any, owner: str
) -> LinearObservation:
    r"""The observation model of :math:`h` linearised at ``theta``.

    Returns ``LinearObservation(H=J, R=R, d=h(theta) - J theta)`` so that
    :math:`H x + d = h(\theta) + J (x - \theta)`; ``noise_cov`` may be a scalar
    :math:`r` (then :math:`R = r I`), an ``(obs,)`` diagonal or ``(obs, obs)``.
    """
    pred, jac = value_and_jacobian(h, theta, inputs, owner)
    R = as_matrix(noise_cov, pred.shape[0], pred.dtype, "noise_cov", owner)
    return LinearObservation(H=jac, R=R, d=pred - jac @ theta)


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
