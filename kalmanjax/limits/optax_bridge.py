r"""Bridges to optax: the limits as ``GradientTransformation``\ s, and the reverse.

Limits as transformations (they consume gradients, as every optax optimiser does):

* :func:`gd_limit_transformation`: the gradient-descent limit,
  :math:`u = -\eta\, g` (a scalar :math:`\eta` is exactly ``optax.sgd(eta)``), or
  with a per-coordinate :math:`\eta` (a diagonal prior covariance over
  :math:`r`: Meta-SGD) or a matrix (fixed-step natural gradient,
  :math:`\eta F^{-1}`);
* :func:`natural_gradient_transformation`: online natural gradient with the
  Gauss-Newton/Fisher estimate :math:`F_t = (\Sigma_0^{-1} + \sum_{s \le t}
  J_s^\top R^{-1} J_s)/t` and step :math:`1/t`: with the gradient of
  :math:`\ell_t(\theta) = \tfrac12 |y_t - h(\theta, u_t)|^2_{R^{-1}}` it moves the
  parameters exactly as the Q = 0 extended Kalman filter moves its mean.

Filters as transformations (they need the step's data, not only a gradient):

* :func:`frozen_filter_transformation`: the frozen-covariance Kalman step, the
  point on the path whose limit is SGD (or, with zero noise, Kaczmarz);
* :func:`kalman_transformation`: the full (extended) Kalman filter over the
  parameters, with its belief in the optimiser state.

The data reach them through optax's extra-arguments mechanism: their ``update``
is ``update(updates, state, params, *, inputs)``, where ``inputs`` is the step's
inputs pytree (the observation under ``"obs"``, plus what ``h`` reads), and
``h(params, inputs)`` returns the predicted observation of shape ``(obs,)``.
Parameters may be any pytree: it is flattened with ``ravel_pytree``. The gradient
argument is ignored by the filter transformations (a Kalman step conditions on the
data itself), so they drop into a loop that computes one::

    tx = kalman_transformation(h, noise_cov=r, prior_cov=tau2)
    state = tx.init(params)
    for inputs in stream:
        grads = jax.grad(loss)(params, inputs)
        updates, state = tx.update(grads, state, params, inputs=inputs)
        params = optax.apply_updates(params, updates)

This module needs ``optax`` (an optional dependency of kalmanjax).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import cho_factor, cho_solve

from ..core.beliefs import Gaussian
from ..core.models import LinearDynamics
from ..steps.linear import predict
from ._common import ObservationFn, apply_preconditioner, as_matrix, value_and_jacobian
from ._filters import linearized_filter

__all__ = [
    "KalmanTransformationState",
    "NaturalGradientState",
    "frozen_filter_transformation",
    "gd_limit_transformation",
    "kalman_transformation",
    "natural_gradient_transformation",
    "precondition",
]


def _flatten(params: Any, owner: str) -> tuple[jax.Array, Any]:
    if params is None:
        raise ValueError(f"{owner}: update needs params (the current parameters)")
    flat, unravel = ravel_pytree(params)
    if not jnp.issubdtype(flat.dtype, jnp.floating):
        raise TypeError(f"{owner}: parameters must be floating, got {flat.dtype}")
    return flat, unravel


def _require_inputs(inputs: Any, owner: str) -> None:
    if inputs is None:
        raise TypeError(
            f"{owner}: update needs the step's data as the keyword argument inputs "
            "(update(grads, state, params, inputs=inputs))"
        )


def _flat_h(h: ObservationFn, unravel: Any) -> ObservationFn:
    return lambda theta, inputs: h(unravel(theta), inputs)


def precondition(matrix: Any) -> optax.GradientTransformation:
    r"""Stateless transformation :math:`u \mapsto P u` on the flattened updates.

    Args:
        matrix: :math:`P`: a scalar, a vector (diagonal) or a matrix over the
            flattened parameters.

    Returns:
        An ``optax.GradientTransformation``; chain it before ``optax.sgd(eta)``
        for preconditioned SGD :math:`\theta - \eta P g`.

    Examples:
        >>> import jax.numpy as jnp, optax
        >>> tx = precondition(jnp.array([1.0, 2.0]))
        >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0].tolist()
        [1.0, 2.0]
    """
    return _preconditioned(matrix, 1.0, "precondition")


def gd_limit_transformation(learning_rate: Any) -> optax.GradientTransformation:
    r"""The gradient-descent limit of the frozen-covariance filter, as optax.

    :math:`u = -\eta\, g`: with :math:`P^- = \sigma^2 I` and :math:`R = r I` the
    Kalman gain tends to :math:`\eta J^\top` with :math:`\eta = \sigma^2 / r`, and
    :math:`J^\top e = -\nabla \tfrac12 |y - h|^2`. A scalar :math:`\eta` gives
    exactly ``optax.sgd(eta)``; a vector :math:`\eta_i = (\Sigma_0)_{ii} / r` is
    the per-coordinate learning rate of Meta-SGD; a matrix :math:`\eta F^{-1}` is
    fixed-step natural gradient. Costs :math:`O(k)` per step (scalar or vector).

    Args:
        learning_rate: :math:`\eta`: scalar, ``(k,)`` or ``(k, k)`` over the
            flattened parameters.

    Returns:
        A stateless ``optax.GradientTransformation``.

    Examples:
        >>> import jax.numpy as jnp
        >>> tx = gd_limit_transformation(0.1)
        >>> u, _ = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
        >>> [round(v, 4) for v in u.tolist()]
        [-0.1, -0.1]
    """
    return _preconditioned(learning_rate, -1.0, "gd_limit_transformation")


def _preconditioned(
    matrix: Any, sign: float, owner: str
) -> optax.GradientTransformation:
    r"""``optax.stateless`` :math:`u \mapsto \pm P u` on the flattened updates."""

    def scale(updates: Any, params: Any) -> Any:
        del params
        flat, unravel = ravel_pytree(updates)
        return unravel(sign * apply_preconditioner(matrix, flat, owner))

    return optax.stateless(scale)


def frozen_filter_transformation(
    h: ObservationFn, prior_cov: Any, noise_cov: Any = 1.0
) -> optax.GradientTransformationExtraArgs:
    r"""The frozen-covariance Kalman step over the parameters, as optax.

    Every step conditions :math:`\mathcal N(\theta, P)` (the same :math:`P`
    each time) on the step's observation through ``h`` linearised at
    :math:`\theta`, and moves the parameters to the posterior mean:
    :math:`u = P J^\top (J P J^\top + R)^{-1} (y - h(\theta))`. With
    :math:`P = \eta r I`, :math:`R = r I` and :math:`\eta |J|^2 \to 0` it tends to
    ``optax.sgd(eta)``; with :math:`R = 0` and :math:`P = I` it is the Kaczmarz
    (normalised-LMS) step.

    Args:
        h: ``h(params, inputs) -> (obs,)``.
        prior_cov: :math:`P` over the flattened parameters (scalar, ``(k,)`` or
            ``(k, k)``).
        noise_cov: :math:`R` (scalar, ``(obs,)`` or ``(obs, obs)``).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs
        ``params`` and the keyword ``inputs``. The gradient is ignored.

    Examples:
        >>> import jax.numpy as jnp
        >>> h = lambda th, u: u["x"] @ th
        >>> tx = frozen_filter_transformation(h, prior_cov=1.0, noise_cov=1.0)
        >>> inputs = {"obs": jnp.array([2.0]), "x": jnp.array([[1.0, 1.0]])}
        >>> u, _ = tx.update(None, tx.init(jnp.zeros(2)), jnp.zeros(2), inputs=inputs)
        >>> [round(v, 4) for v in u.tolist()]
        [0.6667, 0.6667]
    """
    owner = "frozen_filter_transformation"

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, *, inputs=None, **extra):
        del updates, extra
        _require_inputs(inputs, owner)
        flat, unravel = _flatten(params, owner)
        P = as_matrix(prior_cov, flat.shape[0], flat.dtype, "prior_cov", owner)
        filt = linearized_filter(
            _flat_h(h, unravel), noise_cov, frozen=True, owner=owner
        )
        post, _ = filt.step(Gaussian(mean=flat, cov=P), inputs)
        return unravel(post.mean - flat), state

    return optax.GradientTransformationExtraArgs(init, update)


class NaturalGradientState(NamedTuple):
    r"""State of :func:`natural_gradient_transformation`.

    Attributes:
        information: :math:`\Lambda_t = \Sigma_0^{-1} + \sum_{s \le t} J_s^\top
            R^{-1} J_s = t F_t`, shape ``(k, k)``.
        count: :math:`t`, the number of steps taken, shape ``()``.
    """

    information: jax.Array
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]


def natural_gradient_transformation(
    h: ObservationFn, noise_cov: Any, prior_cov: Any
) -> optax.GradientTransformationExtraArgs:
    r"""Online natural gradient with a Gauss-Newton/Fisher preconditioner.

    At step :math:`t` with Jacobian :math:`J_t = \partial h/\partial\theta` at the
    current parameters:

    .. math::

        F_t = \frac1t\Big(\Sigma_0^{-1} + \sum_{s \le t} J_s^\top R^{-1} J_s\Big),
        \qquad u_t = -\frac1t F_t^{-1} g_t,

    i.e. step size :math:`1/t` and damping :math:`\Sigma_0^{-1}/t`. Fed
    :math:`g_t = \nabla \tfrac12 |y_t - h(\theta, u_t)|^2_{R^{-1}}` it reproduces
    the mean of the Q = 0 extended Kalman filter exactly (Ollivier 2017); see
    :func:`kalmanjax.limits.natural_gradient_filter`. Each step solves with the
    :math:`k \times k` Fisher estimate (Cholesky, :math:`O(k^3)`); the Kalman form
    of the same recursion costs :math:`O(k^2 p)`.

    Args:
        h: ``h(params, inputs) -> (obs,)``.
        noise_cov: :math:`R` (scalar, ``(obs,)`` or ``(obs, obs)``).
        prior_cov: :math:`\Sigma_0` over the flattened parameters (scalar,
            ``(k,)`` or ``(k, k)``), positive definite.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with state
        :class:`NaturalGradientState`; ``update`` needs ``params`` and the
        keyword ``inputs``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> h = lambda th, u: u["x"] @ th
        >>> tx = natural_gradient_transformation(h, noise_cov=1.0, prior_cov=1.0)
        >>> inputs = {"obs": jnp.array([2.0]), "x": jnp.array([[1.0, 1.0]])}
        >>> loss = lambda th: 0.5 * jnp.sum((inputs["obs"] - h(th, inputs)) ** 2)
        >>> theta = jnp.zeros(2)
        >>> u, state = tx.update(jax.grad(loss)(theta), tx.init(theta), theta,
        ...                      inputs=inputs)
        >>> [round(v, 4) for v in u.tolist()], int(state.count)
        ([0.6667, 0.6667], 1)

    References:
        Y. Ollivier, "Online natural gradient as a Kalman filter", Electron. J.
        Statist. 12 (2018), arXiv:1703.00209.
    """
    owner = "natural_gradient_transformation"

    def init(params):
        flat, _ = _flatten(params, owner)
        n, dtype = flat.shape[0], flat.dtype
        S0 = as_matrix(prior_cov, n, dtype, "prior_cov", owner)
        info0 = cho_solve(cho_factor(S0, lower=True), jnp.eye(n, dtype=dtype))
        return NaturalGradientState(information=info0, count=jnp.zeros((), dtype))

    def update(updates, state, params=None, *, inputs=None, **extra):
        _require_inputs(inputs, owner)
        del extra
        flat, unravel = _flatten(params, owner)
        g, _ = ravel_pytree(updates)
        _, J = value_and_jacobian(_flat_h(h, unravel), flat, inputs, owner)
        R = as_matrix(noise_cov, J.shape[0], flat.dtype, "noise_cov", owner)
        info = state.information + J.T @ cho_solve(cho_factor(R, lower=True), J)
        count = state.count + 1
        fisher = info / count  # F_t = Lambda_t / t
        step = cho_solve(cho_factor(fisher, lower=True), g) / count
        return unravel(-step), NaturalGradientState(information=info, count=count)

    return optax.GradientTransformationExtraArgs(init, update)


class KalmanTransformationState(NamedTuple):
    r"""State of :func:`kalman_transformation`.

    Attributes:
        belief: the filter's ``Gaussian`` belief over the flattened parameters.
        log_likelihood: :math:`\log p(y_{1:t})` accumulated so far, shape ``()``.
    """

    belief: Gaussian
    log_likelihood: jax.Array


def kalman_transformation(
    h: ObservationFn, noise_cov: Any, prior_cov: Any, process_cov: Any = None
) -> optax.GradientTransformationExtraArgs:
    r"""An (extended) Kalman filter over the parameters, usable as an optimiser.

    ``init(params)`` sets the belief :math:`\mathcal N(\theta_0, \Sigma_0)`;
    every ``update`` predicts with :math:`F = I` and ``process_cov`` (if any),
    linearises ``h`` at the predicted mean (``jax.jacfwd``), conditions with
    :func:`kalmanjax.update` and returns the move to the new posterior mean, so
    that ``optax.apply_updates`` lands on the filter's mean. The gradient is
    ignored, and so are the values of ``params`` except to compute that move: the
    belief lives in the state (chaining another transformation after this one
    moves the parameters away from the filter's mean, and the filter does not
    see it). Costs :math:`O(k^2)` memory for :math:`k` parameters.

    Args:
        h: ``h(params, inputs) -> (obs,)``.
        noise_cov: :math:`R` (scalar, ``(obs,)`` or ``(obs, obs)``).
        prior_cov: :math:`\Sigma_0` (scalar, ``(k,)`` or ``(k, k)``).
        process_cov: :math:`Q` (same forms) or ``None`` for a static parameter.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with state
        :class:`KalmanTransformationState`.

    Examples:
        >>> import jax.numpy as jnp
        >>> h = lambda th, u: u["x"] @ th
        >>> tx = kalman_transformation(h, noise_cov=1.0, prior_cov=1.0)
        >>> inputs = {"obs": jnp.array([2.0]), "x": jnp.array([[1.0, 1.0]])}
        >>> u, s = tx.update(None, tx.init(jnp.zeros(2)), jnp.zeros(2), inputs=inputs)
        >>> [round(v, 4) for v in u.tolist()]
        [0.6667, 0.6667]
        >>> [round(v, 4) for v in s.belief.cov[0].tolist()]
        [0.6667, -0.3333]
    """
    owner = "kalman_transformation"

    def init(params):
        flat, _ = _flatten(params, owner)
        n, dtype = flat.shape[0], flat.dtype
        S0 = as_matrix(prior_cov, n, dtype, "prior_cov", owner)
        return KalmanTransformationState(
            belief=Gaussian(mean=flat, cov=S0), log_likelihood=jnp.zeros((), dtype)
        )

    def update(updates, state, params=None, *, inputs=None, **extra):
        del updates, extra
        _require_inputs(inputs, owner)
        flat, unravel = _flatten(params, owner)
        belief = state.belief
        n, dtype = flat.shape[0], flat.dtype
        if process_cov is not None:
            Q = as_matrix(process_cov, n, dtype, "process_cov", owner)
            belief = predict(belief, LinearDynamics(F=jnp.eye(n, dtype=dtype), Q=Q))
        filt = linearized_filter(
            _flat_h(h, unravel), noise_cov, frozen=False, owner=owner
        )
        post, info = filt.step(belief, inputs)
        new_state = KalmanTransformationState(
            belief=post, log_likelihood=state.log_likelihood + info.log_likelihood
        )
        return unravel(post.mean - flat), new_state

    return optax.GradientTransformationExtraArgs(init, update)
