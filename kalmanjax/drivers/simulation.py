r"""Sampling from a state-space model, and forecasting from a belief.

The time convention is :func:`kalmanjax.run`'s: :math:`x_0` is drawn from the
prior, and step :math:`t = 1..T` consumes ``xs[t-1]``, moving
:math:`x_t = f(x_{t-1}) + w_t` (:math:`F x_{t-1} + b` for linear dynamics) and
emitting :math:`y_t = h(x_t) + v_t` (:math:`H x_t + d`), :math:`w_t \sim N(0,
Q)`, :math:`v_t \sim N(0, R)`. So ``run(filter, prior, simulate(...).observations)``
filters what was simulated, step for step.

Models are given as filters take them: a fixed ``LinearDynamics`` /
``NonlinearDynamics`` / ``LinearObservation`` / ``NonlinearObservation``, or a
function ``inputs -> model`` called on each step's slice of ``xs``; a nonlinear
model's ``fn(x, inputs)`` receives that slice too.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float

from ..core import checks
from ..core.beliefs import Gaussian, SqrtGaussian, to_dense
from ..core.linalg import GENERAL, mT, symmetrize
from ..core.models import (
    LinearDynamics,
    LinearObservation,
    NonlinearDynamics,
    NonlinearObservation,
    resolve,
)
from ..steps.linear import zeros_if_none
from ..steps.linearize import Method, linearize
from ..steps.nonlinear import nonlinear_predict

__all__ = ["Forecast", "Simulation", "forecast", "simulate"]


class Simulation(NamedTuple):
    """A sampled path and its observations.

    Attributes:
        initial: :math:`x_0`, shape ``(state,)``.
        states: :math:`x_1..x_T`, shape ``(T, state)``.
        observations: :math:`y_1..y_T`, shape ``(T, obs)``; NaN where ``mask``
            is False (kalmanjax's missing data).
    """

    initial: Float[Array, " state"]
    states: Float[Array, "time state"]
    observations: Float[Array, "time obs"]


class Forecast(NamedTuple):
    r"""Predictive moments ``k`` steps ahead of a belief.

    Attributes:
        states: :math:`p(x_{t+j} \mid \cdot)` for ``j = 1..k``, the belief's
            form stacked on a leading axis (mean ``(k, state)``).
        observations: :math:`p(y_{t+j} \mid \cdot)`, a ``Gaussian`` with mean
            ``(k, obs)`` and covariance ``(k, obs, obs)``.
    """

    states: Any
    observations: Any


def _steps(xs: Any, num_steps: int | None, owner: str) -> int:
    leaves = jax.tree_util.tree_leaves(xs)
    if not leaves:
        if num_steps is None:
            raise ValueError(f"{owner}: give xs (per-step inputs) or num_steps")
        if num_steps < 0:
            raise ValueError(f"{owner}: num_steps must be >= 0, got {num_steps}")
        return num_steps
    T = leaves[0].shape[0]
    if num_steps is not None and num_steps != T:
        raise ValueError(
            f"{owner}: num_steps = {num_steps} but xs has a time axis of length {T}"
        )
    return T


def _noise_factor(cov: Array) -> Array:
    """A lower factor of a PSD covariance that may be singular (``Q = 0``)."""
    return GENERAL.psd_cholesky(symmetrize(cov))


def _mean_of_dynamics(dyn, x, inputs, owner):
    n = x.shape[0]
    if isinstance(dyn, NonlinearDynamics):
        checks.check_array(
            dyn.Q, "dynamics.Q", (n, n), x.dtype, "(state, state)", owner
        )
        fx = dyn.fn(x, inputs)
        checks.check_fn_output(fx, (n,), "dynamics.fn", "(state,)", x.dtype, owner)
        return fx
    if isinstance(dyn, LinearDynamics):
        checks.check_dynamics(dyn, n, x.dtype, owner)
        return dyn.F @ x + zeros_if_none(dyn.b, n, x.dtype)
    raise TypeError(
        f"{owner}: dynamics must be a LinearDynamics or NonlinearDynamics (or a "
        f"function of the step's inputs returning one), got {type(dyn).__name__}"
    )


def _mean_of_observation(obs, x, inputs, owner):
    if isinstance(obs, NonlinearObservation):
        hx = obs.fn(x, inputs)
        checks.check_fn_output(hx, None, "observation.fn", "(obs,)", x.dtype, owner)
        m = hx.shape[0]
        checks.check_array(obs.R, "observation.R", (m, m), x.dtype, "(obs, obs)", owner)
        return hx
    if isinstance(obs, LinearObservation):
        m = checks.check_observation(obs, x.shape[0], x.dtype, owner)
        return obs.H @ x + zeros_if_none(obs.d, m, x.dtype)
    raise TypeError(
        f"{owner}: observation must be a LinearObservation or NonlinearObservation "
        f"(or a function of the step's inputs returning one), got "
        f"{type(obs).__name__}"
    )


def simulate(
    key: Array,
    prior: Any,
    dynamics: Any,
    observation: Any,
    xs: Any = None,
    *,
    num_steps: int | None = None,
    mask: ArrayLike | None = None,
) -> Simulation:
    r"""Draw :math:`x_0 \sim` ``prior``, then :math:`x_{1:T}` and :math:`y_{1:T}`.

    Args:
        key: a JAX PRNG key; the same key gives the same draw.
        prior: the belief over :math:`x_0` (``Gaussian``, ``SqrtGaussian`` or
            a structured form, read densely); a singular covariance is fine.
        dynamics: ``LinearDynamics`` or ``NonlinearDynamics``, or a function of
            the step's inputs returning one.
        observation: ``LinearObservation`` or ``NonlinearObservation``, or a
            function of the step's inputs returning one.
        xs: per-step inputs (every leaf with a leading time axis ``T``), passed to
            the model functions; ``None`` with ``num_steps`` for a model that
            needs none.
        num_steps: ``T`` when ``xs`` is ``None``.
        mask: ``(T,)`` or ``(T, obs)`` booleans, True where observed; elsewhere
            the observation is NaN, which every filter reads as missing.

    Returns:
        A :class:`Simulation` in the prior's dtype.

    Raises:
        ValueError: without ``xs`` or ``num_steps``, on a ``mask`` whose shape is
            neither ``(T,)`` nor ``(T, obs)``, or on a model whose shapes or
            dtype do not match the prior's (at trace time).
        TypeError: on a model of another kind (e.g. ``DiagonalDynamics``).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.LinearDynamics(F=jnp.eye(2), Q=0.1 * jnp.eye(2))
        >>> obs = kj.LinearObservation(H=jnp.ones((1, 2)), R=jnp.eye(1))
        >>> prior = kj.Gaussian(jnp.zeros(2), jnp.eye(2))
        >>> sim = kj.simulate(jax.random.key(0), prior, dyn, obs, num_steps=5)
        >>> sim.states.shape, sim.observations.shape
        ((5, 2), (5, 1))
        >>> out = kj.run(kj.kalman_filter(dyn, obs), prior, sim.observations)
    """
    owner = "kalmanjax.simulate"
    n, dtype = checks.check_belief(prior, owner)
    T = _steps(xs, num_steps, owner)
    start = to_dense(prior) if not isinstance(prior, SqrtGaussian) else prior
    chol0 = start.chol if isinstance(start, SqrtGaussian) else _noise_factor(start.cov)
    k0, k_steps = jax.random.split(key)
    x0 = start.mean + chol0 @ jax.random.normal(k0, (n,), dtype)
    keys = jax.random.split(k_steps, T)

    def body(x, step):
        k, inputs = step
        kw, kv = jax.random.split(k)
        dyn = resolve(dynamics, inputs)
        x = _mean_of_dynamics(dyn, x, inputs, owner)
        x = x + _noise_factor(dyn.Q) @ jax.random.normal(kw, (n,), dtype)
        obs = resolve(observation, inputs)
        mean_y = _mean_of_observation(obs, x, inputs, owner)
        m = mean_y.shape[0]
        y = mean_y + _noise_factor(obs.R) @ jax.random.normal(kv, (m,), dtype)
        return x, (x, y)

    _, (states, ys) = lax.scan(body, x0, (keys, xs), length=T)
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        if mask.shape not in ((T,), ys.shape):
            raise ValueError(
                f"{owner}: mask must have shape ({T},) or {tuple(ys.shape)}, "
                f"got {tuple(mask.shape)}"
            )
        if mask.ndim == 1:
            mask = mask[:, None]
        ys = jnp.where(mask, ys, jnp.nan)
    return Simulation(initial=x0, states=states, observations=ys)


def forecast(
    belief: Any,
    dynamics: Any,
    observation: Any,
    xs: Any = None,
    *,
    num_steps: int | None = None,
    method: Method = "jacfwd",
) -> Forecast:
    r"""The predictive moments of the next ``k`` states and observations.

    From a belief over :math:`x_t` (e.g. ``run(...).final``), with no further
    observations: :math:`m_{t+j} = F m_{t+j-1} + b`, :math:`P_{t+j} = F P F^\top
    + Q`, and for the observations :math:`H m_{t+j} + d`, :math:`H P_{t+j} H^\top
    + R`. Nonlinear models are linearised at the predicted mean, as the EKF
    does (:math:`f(m)`, :math:`J P J^\top + Q`; :math:`h(m)`, :math:`J P J^\top
    + R`): a first-order approximation, exact for linear models.

    Args:
        belief: a ``Gaussian`` or ``SqrtGaussian`` over :math:`x_t`.
        dynamics: as :func:`simulate` takes it.
        observation: as :func:`simulate` takes it.
        xs: per-step inputs of the forecast steps (leading axis ``k``), or
            ``None`` with ``num_steps``.
        num_steps: ``k`` when ``xs`` is ``None``.
        method: the Jacobian method of the nonlinear models (``"jacfwd"`` or
            ``"jacrev"``).

    Returns:
        A :class:`Forecast`; the states keep the belief's form, the observations
        are a ``Gaussian``; the belief's dtype.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.LinearDynamics(F=2.0 * jnp.eye(1), Q=jnp.eye(1))
        >>> obs = kj.LinearObservation(H=jnp.eye(1), R=jnp.eye(1))
        >>> f = kj.forecast(kj.Gaussian(jnp.ones(1), jnp.eye(1)), dyn, obs, num_steps=2)
        >>> f.states.mean[:, 0].tolist(), f.states.cov[:, 0, 0].tolist()
        ([2.0, 4.0], [5.0, 21.0])
        >>> f.observations.cov[:, 0, 0].tolist()
        [6.0, 22.0]
    """
    owner = "kalmanjax.forecast"
    checks.check_belief(belief, owner)
    if not isinstance(belief, SqrtGaussian):
        belief = to_dense(belief)
    T = _steps(xs, num_steps, owner)
    ops = GENERAL

    def body(b, inputs):
        dyn = resolve(dynamics, inputs)
        b = nonlinear_predict(b, dyn, inputs, ops, method, owner)
        obs = resolve(observation, inputs)
        cov = b.cov if not isinstance(b, SqrtGaussian) else b.chol @ mT(b.chol)
        if isinstance(obs, NonlinearObservation):
            mean_y, H = linearize(obs.fn, b.mean, inputs, method=method)
        else:
            mean_y = _mean_of_observation(obs, b.mean, inputs, owner)
            H = obs.H
        cov_y = symmetrize(H @ cov @ mT(H) + obs.R)
        return b, (b, mean_y, cov_y)

    _, (states, mean_y, cov_y) = lax.scan(body, belief, xs, length=T)
    return Forecast(states=states, observations=Gaussian(mean=mean_y, cov=cov_y))
