r"""Extended and iterated Kalman filters: the linear steps at a linearisation point.

A nonlinear state-space model

.. math::

    x_t = f(x_{t-1}, u_t) + w_t, \quad w_t \sim N(0, Q) \qquad
    y_t = h(x_t, u_t) + v_t, \quad v_t \sim N(0, R)

(``u_t`` the step's inputs, e.g. a prompt and a position) is filtered by
linearising :math:`f` at the filtered mean and :math:`h` at the predicted mean,

.. math::

    F = \partial f / \partial x, \qquad H = \partial h / \partial x,

and running the linear steps of :mod:`kalmanjax.kalman` (dense, Joseph or square
root, NaN = missing) with :math:`m^- = f(m)` and innovation :math:`y - h(m^-)`.
The Jacobians come from ``jax.jacfwd`` (cost grows with the state size: the right
choice for a small adaptation state) or ``jax.jacrev`` (cost grows with the
output size).

The **iterated** EKF relinearises :math:`h` at the current iterate
:math:`x_i` and conditions the *predicted* belief on :math:`y` again with that
linearisation (it never conditions on the same :math:`y` twice):

.. math::

    x_{i+1} = m^- + K_i \bigl(y - h(x_i) - H_i (m^- - x_i)\bigr),

which is the Gauss-Newton iteration for the MAP estimate
:math:`\arg\min_x \tfrac12\lVert y - h(x)\rVert^2_{R^{-1}}
+ \tfrac12\lVert x - m^-\rVert^2_{(P^-)^{-1}}` (Bell & Cathey 1993); the
covariance and the step's :class:`~kalmanjax.UpdateInfo` come from the last
linearisation. The iteration is undamped: when :math:`h` is strongly nonlinear at
the scale of the posterior (small :math:`R`), its iterates can cycle instead of
converging; the EKF (``num_iter=1``) has no such failure mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from jaxtyping import Array, Float

from . import _checks
from ._base import Filter, Gaussian, SqrtGaussian, UpdateInfo, to_dense, to_sqrt
from ._linalg import LinalgOps, choose_ops
from .categorical import CategoricalObservation, _categorical_update, check_token
from .kalman import FORMS, Form, _predict, _update
from .linearize import METHODS, Method, check_num_iter, iterate_linearization, linearize
from .models import LinearDynamics, LinearObservation, get_obs, resolve

__all__ = [
    "NonlinearDynamics",
    "NonlinearObservation",
    "ekf_predict",
    "ekf_update",
    "extended_kalman_filter",
]


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


# ------------------------------------------------------------------------ checks


def _check_fn_output(value, shape, name, what, dtype, owner):
    if np.shape(value) != tuple(shape):
        raise ValueError(
            f"{owner}: {name} returned shape {np.shape(value)}; expected "
            f"{tuple(shape)} {what}"
        )
    _checks.check_dtype(value, f"the output of {name}", dtype, owner)


# ------------------------------------------------------------------------- steps


def _ekf_predict(belief, dyn, inputs, ops: LinalgOps, method, owner, sym=True):
    if isinstance(dyn, LinearDynamics):
        return _predict(belief, dyn, ops, sym=sym)
    n, dtype = belief.mean.shape[0], belief.mean.dtype
    _checks.check_array(dyn.Q, "dynamics.Q", (n, n), dtype, "(state, state)", owner)
    fx, F = linearize(dyn.fn, belief.mean, inputs, method=method)
    _check_fn_output(fx, (n,), "dynamics.fn", "(state,)", dtype, owner)
    predicted = _predict(belief, LinearDynamics(F=F, Q=dyn.Q), ops, sym=sym)
    return predicted._replace(mean=fx)


def _condition_at(predicted, y, obs_model, point, inputs, ops, joseph, missing, method):
    """Condition ``predicted`` on ``y`` with ``h`` linearised at ``point``."""
    h_point, H = linearize(obs_model.fn, point, inputs, method=method)
    # h(point) + H (m^- - point): the linearisation's prediction at the prior mean
    predicted_obs = h_point + H @ (predicted.mean - point)
    return _update(
        predicted,
        y,
        LinearObservation(H=H, R=obs_model.R),
        ops,
        joseph,
        missing,
        predicted=predicted_obs,
    )


def _ekf_update(
    predicted, y, obs_model, inputs, ops, joseph, missing, method, num_iter, owner
):
    if isinstance(obs_model, LinearObservation):
        return _update(predicted, y, obs_model, ops, joseph, missing)
    dtype = predicted.mean.dtype
    m = np.shape(y)[0]
    h0 = jax.eval_shape(obs_model.fn, predicted.mean, inputs)
    _check_fn_output(h0, (m,), "observation.fn", "(obs,) to match obs", dtype, owner)
    _checks.check_array(
        obs_model.R, "observation.R", (m, m), dtype, "(obs, obs)", owner
    )

    def condition(point):
        return _condition_at(
            predicted, y, obs_model, point, inputs, ops, joseph, missing, method
        )

    return iterate_linearization(condition, predicted.mean, num_iter)


def ekf_predict(
    belief: Gaussian | SqrtGaussian,
    dynamics: NonlinearDynamics | LinearDynamics,
    inputs: Any = None,
    *,
    method: Method = "jacfwd",
    fast: bool | None = None,
) -> Gaussian | SqrtGaussian:
    r"""Propagate a belief through (linearised) dynamics.

    :math:`m^- = f(m)`, :math:`P^- = F P F^\top + Q` with :math:`F = \partial f /
    \partial x` at :math:`m`.

    Args:
        belief: ``Gaussian`` or ``SqrtGaussian`` with mean of shape ``(state,)``.
        dynamics: ``NonlinearDynamics`` (or ``LinearDynamics``, used as it is).
        inputs: passed to ``dynamics.fn`` as its second argument.
        method: ``"jacfwd"`` or ``"jacrev"`` (see :func:`linearize`).
        fast: small-state kernels (see :func:`kalmanjax.predict`).

    Returns:
        The predicted belief, same form and dtype.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.NonlinearDynamics(fn=lambda x, u: x**2, Q=jnp.zeros((1, 1)))
        >>> b = kj.ekf_predict(kj.Gaussian(jnp.array([3.0]), jnp.eye(1)), dyn)
        >>> b.mean.tolist(), b.cov.tolist()
        ([9.0], [[36.0]])
    """
    owner = "kalmanjax.ekf_predict"
    n, _ = _checks.check_belief(belief, owner)
    return _ekf_predict(belief, dynamics, inputs, choose_ops(fast, n), method, owner)


def ekf_update(
    belief: Gaussian | SqrtGaussian,
    obs: Float[Array, " obs"],
    observation: NonlinearObservation | LinearObservation,
    inputs: Any = None,
    *,
    num_iter: int = 1,
    joseph: bool = False,
    missing: bool = True,
    method: Method = "jacfwd",
    fast: bool | None = None,
) -> tuple[Gaussian | SqrtGaussian, UpdateInfo]:
    r"""Condition a belief on ``obs`` through a linearised observation function.

    With :math:`H = \partial h/\partial x` at the predicted mean, the linear update
    of :func:`kalmanjax.update` with innovation :math:`y - h(m^-)`; with
    ``num_iter > 1`` the iterated (Gauss-Newton) update of the module docstring.

    Args:
        belief: the predicted belief, mean of shape ``(state,)``.
        obs: the observation, shape ``(obs,)``; NaN entries are missing.
        observation: ``NonlinearObservation`` with ``fn(x, inputs) -> (obs,)``
            and ``R`` of shape ``(obs, obs)`` (or a ``LinearObservation``).
        inputs: passed to ``observation.fn`` as its second argument.
        num_iter: number of linearisations (1 = EKF; static).
        joseph: Joseph-form covariance update (covariance-form beliefs).
        missing: treat NaN entries of ``obs`` as not observed.
        method: ``"jacfwd"`` or ``"jacrev"`` (see :func:`linearize`).
        fast: small-state kernels (see :func:`kalmanjax.update`).

    Returns:
        ``(belief, info)`` as :func:`kalmanjax.update`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> h = kj.NonlinearObservation(fn=lambda x, u: x**3, R=jnp.eye(1))
        >>> prior = kj.Gaussian(mean=jnp.array([1.0]), cov=jnp.eye(1))
        >>> post, info = kj.ekf_update(prior, jnp.array([1.0]), h)
        >>> print(f"{post.cov[0, 0]:.4f}")  # 1 / (1 + 3^2)
        0.1000
    """
    owner = "kalmanjax.ekf_update"
    check_num_iter(num_iter, owner)
    n, dtype = _checks.check_belief(belief, owner)
    m = _checks.check_vector(obs, "obs", dtype, owner)
    return _ekf_update(
        belief,
        obs,
        observation,
        inputs,
        choose_ops(fast, n, m),
        joseph,
        missing,
        method,
        num_iter,
        owner,
    )


def extended_kalman_filter(
    dynamics: NonlinearDynamics | LinearDynamics | Callable,
    observation: NonlinearObservation | LinearObservation | Callable,
    *,
    form: Form = "dense",
    num_iter: int = 1,
    method: Method = "jacfwd",
    missing: bool = True,
    fast: bool | None = None,
) -> Filter:
    r"""Build the extended (``num_iter=1``) or iterated Kalman filter.

    ``step(belief, inputs)`` linearises the dynamics at the filtered mean and
    predicts, then linearises the observation at the predicted mean (and, with
    ``num_iter > 1``, at each Gauss-Newton iterate) and conditions on
    ``get_obs(inputs)``. The time convention, forms and missing data are those of
    :func:`kalmanjax.kalman_filter`; ``inputs`` is passed to ``fn(x, inputs)``.

    Args:
        dynamics: ``NonlinearDynamics``, ``LinearDynamics`` (e.g. ``F = I, Q = 0``
            for a fixed adaptation state), or a function ``inputs -> model``.
        observation: ``NonlinearObservation``, ``LinearObservation``,
            :class:`~kalmanjax.CategoricalObservation` (the observation is then an
            integer token id per step; ``form`` applies as ``"dense"`` or
            ``"sqrt"``), or a function ``inputs -> model``.
        form: ``"dense"``, ``"joseph"`` or ``"sqrt"``.
        num_iter: linearisations per update (static); 1 is the EKF.
        method: ``"jacfwd"`` or ``"jacrev"``.
        missing: NaN entries of the observations are not observed (default).
        fast: small-state kernels; ``None`` chooses them for sizes <= 8.

    Returns:
        A ``Filter`` whose state is the belief and whose info is an
        :class:`~kalmanjax.UpdateInfo`; run it with :func:`kalmanjax.run`.

    Raises:
        ValueError: on an unknown ``form`` or ``method`` or a bad ``num_iter``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.LinearDynamics(F=jnp.eye(2), Q=jnp.zeros((2, 2)))
        >>> obs = kj.NonlinearObservation(
        ...     fn=lambda x, u: jnp.tanh(u["x"] @ x)[None], R=0.01 * jnp.eye(1)
        ... )
        >>> filt = kj.extended_kalman_filter(dyn, obs, num_iter=3)
        >>> xs = {"obs": jnp.full((5, 1), 0.5), "x": jnp.ones((5, 2))}
        >>> prior = kj.Gaussian(mean=jnp.zeros(2), cov=jnp.eye(2))
        >>> kj.run(filt, prior, xs).states.mean.shape
        (5, 2)
    """
    owner = "extended_kalman_filter"
    if form not in FORMS:
        raise ValueError(f"{owner}: form must be one of {FORMS}, got {form!r}")
    if method not in METHODS:
        raise ValueError(f"{owner}: method must be one of {METHODS}, got {method!r}")
    check_num_iter(num_iter, owner)
    sqrt = form == "sqrt"

    def init(prior):
        _checks.check_belief(prior, f"{owner}.init")
        return to_sqrt(prior) if sqrt else to_dense(prior)

    def step(belief, inputs):
        step_owner = f"{owner}.step"
        n, dtype = _checks.check_belief(belief, step_owner)
        y = get_obs(inputs)
        obs_model = resolve(observation, inputs)
        categorical = isinstance(obs_model, CategoricalObservation)
        if categorical:
            check_token(y, step_owner)
            m = n
        else:
            m = _checks.check_vector(y, "obs", dtype, step_owner)
        ops = choose_ops(fast, n, m)
        dyn = resolve(dynamics, inputs)
        if isinstance(dyn, LinearDynamics):
            _checks.check_dynamics(dyn, n, dtype, step_owner)
        predicted = _ekf_predict(belief, dyn, inputs, ops, method, step_owner, False)
        if categorical:
            return _categorical_update(
                predicted, y, obs_model, inputs, method, num_iter
            )
        if isinstance(obs_model, LinearObservation):
            _checks.check_observation(obs_model, n, dtype, step_owner)
        return _ekf_update(
            predicted,
            y,
            obs_model,
            inputs,
            ops,
            form == "joseph",
            missing,
            method,
            num_iter,
            step_owner,
        )

    return Filter(init=init, step=step)
