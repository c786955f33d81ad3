r"""Model pieces (linear, nonlinear, categorical) and the per-step inputs convention.

Notation (used everywhere in kalmanjax):

.. math::

    x_t = F x_{t-1} + b + w_t, \quad w_t \sim \mathcal N(0, Q)
    \qquad
    y_t = H x_t + d + v_t, \quad v_t \sim \mathcal N(0, R)

with state dimension ``state`` (:math:`x \in \mathbb R^{d}`) and observation
dimension ``obs`` (:math:`y \in \mathbb R^{m}`).

Time-varying models. A filter factory takes each model either as a fixed
``LinearDynamics`` / ``LinearObservation`` or as a function ``inputs -> model``
that is called on every step with that step's slice of ``xs``. Every leaf of ``xs``
carries a leading time axis, so a token-dependent :math:`H_t` is just a leaf of
``xs``::

    xs = {"obs": ys, "x": features}                       # ys: (T, 1), features: (T, d)
    observation = lambda u: LinearObservation(H=u["x"][None, :], R=r)

The observation of a step is ``inputs`` itself when ``inputs`` is an array, else
``inputs["obs"]`` (mappings) or ``inputs.obs`` (NamedTuples); see :func:`get_obs`.

Functions passed as models are hashed by identity when a filter is rebuilt inside
a jitted function; build them once (or close over traced arrays, which is fine).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar

import jax.numpy as jnp
from jaxtyping import Array, Float

from .linalg import nan_unless_psd

__all__ = [
    "CategoricalObservation",
    "DiagonalDynamics",
    "LinearDynamics",
    "LinearObservation",
    "NonlinearDynamics",
    "NonlinearObservation",
    "get_obs",
]


class LinearDynamics(NamedTuple):
    r"""Linear-Gaussian transition :math:`x_t = F x_{t-1} + b + w,\ w \sim N(0, Q)`.

    Attributes:
        F: transition matrix, shape ``(state, state)``.
        Q: process-noise covariance, shape ``(state, state)``, PSD (may be 0).
        b: optional offset, shape ``(state,)``; ``None`` means zero.
    """

    F: Float[Array, "state state"]
    Q: Float[Array, "state state"]
    b: Float[Array, " state"] | None = None


class LinearObservation(NamedTuple):
    r"""Linear-Gaussian observation :math:`y_t = H x_t + d + v,\ v \sim N(0, R)`.

    Attributes:
        H: observation matrix, shape ``(obs, state)``.
        R: observation-noise covariance, shape ``(obs, obs)``, positive definite.
        d: optional offset, shape ``(obs,)``; ``None`` means zero.
    """

    H: Float[Array, "obs state"]
    R: Float[Array, "obs obs"]
    d: Float[Array, " obs"] | None = None


class DiagonalDynamics(NamedTuple):
    r"""Elementwise dynamics :math:`x_t = f \odot x_{t-1} + b + w`.

    :math:`w \sim N(0, \operatorname{diag}(q))`.

    The dynamics of a large adaptation state (identity, a scalar or per-coordinate
    decay, a scalar or diagonal drift), with no ``state x state`` array.

    Attributes:
        F: :math:`f`, shape ``()`` (the same for every coordinate) or ``(state,)``;
            ``1`` is a static state. The low-rank filter needs it nonzero.
        Q: :math:`q`, the process-noise variances, shape ``()`` or ``(state,)``,
            non-negative.
        b: optional offset, shape ``(state,)``.
    """

    F: Float[Array, "*state"]
    Q: Float[Array, "*state"]
    b: Float[Array, " state"] | None = None


class NonlinearDynamics(NamedTuple):
    r"""Transition :math:`x_t = f(x_{t-1}, u_t) + w,\ w \sim N(0, Q)`.

    Attributes:
        fn: ``fn(x, inputs) -> x_next``, ``(state,) -> (state,)``; ``inputs`` is
            the step's slice of ``xs``.
        Q: process-noise covariance, shape ``(state, state)``, PSD (may be 0).
    """

    fn: Callable[[Array, Any], Array]
    Q: Float[Array, "state state"]


class NonlinearObservation(NamedTuple):
    r"""Observation :math:`y_t = h(x_t, u_t) + v,\ v \sim N(0, R)`.

    Attributes:
        fn: ``fn(x, inputs) -> y_pred``, ``(state,) -> (obs,)``.
        R: observation-noise covariance, shape ``(obs, obs)``, positive definite.
    """

    fn: Callable[[Array, Any], Array]
    R: Float[Array, "obs obs"]


class CategoricalObservation(NamedTuple):
    r"""A next-token observation, moment-matched.

    See :mod:`kalmanjax.steps.categorical` for the update;
    :math:`y_t \sim \operatorname{Cat}(\operatorname{softmax}(z(\theta, u_t)))`.

    Attributes:
        fn: ``fn(x, inputs) -> logits``, ``(state,) -> (vocab,)``.
        jitter: :math:`\epsilon` added to the diagonal of :math:`R`.
    """

    fn: Callable[[Array, Any], Array]
    jitter: float = 1e-6


DynamicsLike = LinearDynamics | Callable[[Any], LinearDynamics]
ObservationLike = LinearObservation | Callable[[Any], LinearObservation]


def get_obs(inputs: Any) -> Any:
    """Return the observation held by one step's inputs.

    Args:
        inputs: an array (the observation itself), a mapping with key ``"obs"``
            or an object with attribute ``obs``.

    Returns:
        The observation: a vector ``(obs,)`` for one step's inputs, ``(time,
        obs)`` for a whole sequence's.

    Raises:
        TypeError: if no observation can be found.
    """
    if isinstance(inputs, Mapping):
        if "obs" not in inputs:
            raise TypeError(
                f"step inputs: a mapping must hold the observation under key 'obs'; "
                f"got keys {sorted(inputs)}"
            )
        return inputs["obs"]
    if hasattr(inputs, "obs"):
        return inputs.obs
    if hasattr(inputs, "shape"):
        return inputs
    raise TypeError(
        "step inputs: expected an observation array, a mapping with key 'obs' or "
        f"an object with attribute 'obs'; got {type(inputs).__name__}"
    )


def resolve(model: Any, inputs: Any) -> Any:
    """Return ``model(inputs)`` for a per-step model function, else ``model``."""
    return model(inputs) if callable(model) else model


ModelT = TypeVar("ModelT")


def with_checked_covariance(model: ModelT) -> ModelT:
    """``model`` with its fixed covariance ``Q`` or ``R`` read as ``nan_unless_psd``.

    A covariance that is not positive semi-definite (to rounding) becomes all NaN,
    so every form and path returns NaN for it rather than its own projection. A
    model given as a function of the inputs is returned unchanged: its covariances
    are not checked per step (an eigendecomposition per step); check them with
    :func:`kalmanjax.validate`.
    """
    if callable(model) or not hasattr(model, "_fields"):
        return model
    checked: Any = model
    for name in ("Q", "R"):
        value = getattr(checked, name, None)
        if value is not None:
            checked = checked._replace(**{name: nan_unless_psd(jnp.asarray(value))})
    return checked
