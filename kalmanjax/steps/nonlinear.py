r"""Extended and iterated Kalman steps: the linear steps at a linearisation point.

A nonlinear state-space model

.. math::

    x_t = f(x_{t-1}, u_t) + w_t, \quad w_t \sim N(0, Q) \qquad
    y_t = h(x_t, u_t) + v_t, \quad v_t \sim N(0, R)

(``u_t`` the step's inputs, e.g. a prompt and a position) is filtered by
linearising :math:`f` at the filtered mean and :math:`h` at the predicted mean,

.. math::

    F = \partial f / \partial x, \qquad H = \partial h / \partial x,

and running the linear steps of :mod:`kalmanjax.steps.linear` (dense, Joseph or square
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

from typing import Any

import jax
import numpy as np
from jaxtyping import Array, Float

from ..core import checks
from ..core.beliefs import Gaussian, SqrtGaussian
from ..core.filter import UpdateInfo
from ..core.likelihoods import ConditionalMomentObservation
from ..core.linalg import LinalgOps, choose_ops
from ..core.models import (
    LinearDynamics,
    LinearObservation,
    NonlinearDynamics,
    NonlinearObservation,
)
from .linear import linear_predict, linear_update
from .linearize import Method, iterate_linearization, linearize, linearized_prediction
from .sigma_points import SigmaPointRule, expectation, slr

__all__ = [
    "conditional_noise",
    "ekf_predict",
    "ekf_update",
    "linearize_about",
    "nonlinear_predict",
    "nonlinear_update",
]


# ------------------------------------------------------------------------- steps


def linearize_about(fn, belief, inputs, method, ops: LinalgOps, owner: str):
    r"""``fn(x, inputs)`` linearised about ``belief``: ``(value, jacobian, omega)``.

    A Jacobian ``method`` (``"jacfwd"``, ``"jacrev"``) expands at the mean:
    :math:`(g(m), \partial g / \partial x, None)`. A
    :class:`~kalmanjax.SigmaPointRule` gives the statistical linear regression
    :math:`(\bar g, A, \Omega)` under the whole belief
    (:mod:`kalmanjax.steps.sigma_points`). Either way the model predicts
    ``value + jacobian @ (x - mean)`` with extra noise ``omega``.
    """
    if isinstance(method, SigmaPointRule):
        return slr(lambda x: fn(x, inputs), belief, method, ops, owner)
    value, jac = linearize(fn, belief.mean, inputs, method=method)
    return value, jac, None


def _plus(cov, omega):
    return cov if omega is None else cov + omega


def nonlinear_predict(belief, dyn, inputs, ops: LinalgOps, method, owner, sym=True):
    """:func:`ekf_predict` with ``ops`` chosen by the caller (checks ``fn`` only).

    ``method`` is a Jacobian method or a sigma-point rule (:func:`linearize_about`).
    """
    if isinstance(dyn, LinearDynamics):
        return linear_predict(belief, dyn, ops, sym=sym)
    n, dtype = belief.mean.shape[0], belief.mean.dtype
    checks.check_array(dyn.Q, "dynamics.Q", (n, n), dtype, "(state, state)", owner)
    fx, F, omega = linearize_about(dyn.fn, belief, inputs, method, ops, owner)
    checks.check_fn_output(fx, (n,), "dynamics.fn", "(state,)", dtype, owner)
    model = LinearDynamics(F=F, Q=_plus(dyn.Q, omega))
    return linear_predict(belief, model, ops, sym=sym)._replace(mean=fx)


def conditional_noise(cov_fn, about, inputs, method, ops: LinalgOps):
    r"""The noise :math:`R` of a conditional-moments observation about ``about``.

    :math:`\Sigma(m)` for a Taylor expansion at the mean, :math:`E[\Sigma(x)]`
    under the belief for a sigma-point rule
    (:class:`~kalmanjax.ConditionalMomentObservation`).
    """
    if isinstance(method, SigmaPointRule):
        return expectation(lambda x: cov_fn(x, inputs), about, method, ops)
    return cov_fn(about.mean, inputs)


def _condition_at(predicted, y, fn, noise, about, inputs, ops, joseph, missing, method):
    """Condition ``predicted`` on ``y`` with ``h = fn`` linearised about ``about``.

    ``noise(about)`` is the observation noise there (``R``, or a conditional
    covariance).
    """
    h, H, omega = linearize_about(fn, about, inputs, method, ops, "update")
    predicted_obs = linearized_prediction(h, H, about.mean, predicted.mean)
    return linear_update(
        predicted,
        y,
        LinearObservation(H=H, R=_plus(noise(about), omega)),
        ops,
        joseph,
        missing,
        predicted=predicted_obs,
    )


def nonlinear_update(
    predicted, y, obs_model, inputs, ops, joseph, missing, method, num_iter, owner
):
    """:func:`ekf_update` with ``ops`` chosen by the caller (checks ``fn``, ``R``).

    ``obs_model`` is a ``LinearObservation``, a ``NonlinearObservation`` or a
    :class:`~kalmanjax.ConditionalMomentObservation`.
    """
    if isinstance(obs_model, LinearObservation):
        return linear_update(predicted, y, obs_model, ops, joseph, missing)
    dtype = predicted.mean.dtype
    m = np.shape(y)[0]
    moments = isinstance(obs_model, ConditionalMomentObservation)
    fn = obs_model.mean if moments else obs_model.fn
    name = "observation.mean" if moments else "observation.fn"
    h0 = jax.eval_shape(fn, predicted.mean, inputs)
    checks.check_fn_output(h0, (m,), name, "(obs,) to match obs", dtype, owner)
    if moments:
        r0 = jax.eval_shape(obs_model.cov, predicted.mean, inputs)
        checks.check_fn_output(
            r0, (m, m), "observation.cov", "(obs, obs)", dtype, owner
        )
    else:
        checks.check_array(
            obs_model.R, "observation.R", (m, m), dtype, "(obs, obs)", owner
        )

    def noise(about):
        if moments:
            return conditional_noise(obs_model.cov, about, inputs, method, ops)
        return obs_model.R

    def condition(about):
        return _condition_at(
            predicted, y, fn, noise, about, inputs, ops, joseph, missing, method
        )

    # the IEKF relinearises at each posterior mean, posterior linearisation
    # (a sigma-point rule) under each whole posterior
    return iterate_linearization(condition, predicted, num_iter)


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
    n, _ = checks.check_belief(belief, owner)
    return nonlinear_predict(
        belief, dynamics, inputs, choose_ops(fast, n), method, owner
    )


def ekf_update(
    belief: Gaussian | SqrtGaussian,
    obs: Float[Array, " obs"],
    observation: NonlinearObservation
    | LinearObservation
    | ConditionalMomentObservation,
    inputs: Any = None,
    *,
    num_iter: int = 1,
    joseph: bool = True,
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
            and ``R`` of shape ``(obs, obs)``, a ``LinearObservation``, or a
            :class:`~kalmanjax.ConditionalMomentObservation` (``H`` from its
            mean, ``R`` its covariance at the point).
        inputs: passed to ``observation.fn`` as its second argument.
        num_iter: number of linearisations (1 = EKF; static).
        joseph: Joseph-form covariance update (covariance-form beliefs; default).
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
    checks.check_num_iter(num_iter, owner)
    n, dtype = checks.check_belief(belief, owner)
    m = checks.check_vector(obs, "obs", dtype, owner)
    return nonlinear_update(
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
