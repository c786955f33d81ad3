r"""The iterated extended Kalman smoother: Gauss-Newton on the whole trajectory.

For :math:`x_0 \sim N(m_0, P_0)`, :math:`x_t = f_t(x_{t-1}) + w_t`,
:math:`y_t = h_t(x_t) + v_t`, the maximum a posteriori trajectory minimises

.. math::

    J(x_{0:T}) = \tfrac12 \|x_0 - m_0\|^2_{P_0^{-1}}
    + \tfrac12 \sum_t \|x_t - f_t(x_{t-1})\|^2_{Q^{-1}}
    + \tfrac12 \sum_t \|y_t - h_t(x_t)\|^2_{R^{-1}}

(observed entries of :math:`y_t` only). One iteration linearises every
:math:`f_t` and :math:`h_t` about the current trajectory :math:`\bar x_{0:T}`,
runs the Kalman filter and RTS smoother on that affine model, and takes the
smoothed means as the Gauss-Newton point: the exact minimiser of the linearised
:math:`J` (Bell 1994). Both the dynamics and the observations are relinearised,
and :math:`x_0` is smoothed too, since :math:`f_1` is linearised at it. With
``parallel=True`` the filter and smoother are the parallel prefix scans
(Yaghoobi et al. 2021).

The undamped iteration can overshoot and cycle far from the solution. With
``line_search=True`` each step from :math:`\bar x` towards the Gauss-Newton
point :math:`x^{GN}` takes the first :math:`\alpha \in \{1, \frac12, \frac14,
\dots\}` that lowers :math:`J`, or stays (:math:`\alpha = 0`), so :math:`J` never
increases; all candidates are evaluated at once.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import cho_factor, cho_solve

from ..core import checks
from ..core.batching import batched, lapack_flops
from ..core.beliefs import Gaussian, SqrtGaussian, to_dense, to_sqrt
from ..core.models import (
    DynamicsLike,
    LinearDynamics,
    LinearObservation,
    NonlinearDynamics,
    NonlinearObservation,
    ObservationLike,
    get_obs,
    resolve,
)
from ..core.scan import Parallel
from ..filters.kalman import kalman_filter
from ..steps.linear import Form
from ..steps.linearize import Method, linearize
from .filtering import run
from .smoothing import rts_smoother

__all__ = ["IteratedSmootherResult", "iterated_extended_smoother"]

#: the step sizes the line search tries, largest first
_STEPS = tuple(0.5**k for k in range(10))


class IteratedSmootherResult(NamedTuple):
    r"""What :func:`iterated_extended_smoother` returns.

    Attributes:
        filtered: filtered beliefs of the last linearised model, ``t = 1..T``.
        smoothed: its smoothed beliefs, ``t = 1..T``; after convergence
            ``smoothed.mean`` is the MAP trajectory and the covariances are the
            Laplace (Gauss-Newton) approximation about it.
        initial: the smoothed belief over :math:`x_0`.
        linearized: the last linearisation, a ``LinearDynamics`` stacked over the
            ``T`` steps (``F (T, state, state)``, ``Q``, ``b (T, state)``): with
            ``filtered`` it is what :func:`kalmanjax.sample_posterior` needs,
            passed as ``dynamics=lambda u: u`` and ``xs=linearized``.
        costs: :math:`J` at the starting trajectory and after each iteration,
            shape ``(num_iters + 1,)``.
    """

    filtered: Gaussian | SqrtGaussian
    smoothed: Gaussian | SqrtGaussian
    initial: Gaussian | SqrtGaussian
    linearized: LinearDynamics
    costs: jax.Array


def iterated_extended_smoother(
    dynamics: DynamicsLike | NonlinearDynamics | Any,
    observation: ObservationLike | NonlinearObservation | Any,
    prior: Gaussian | SqrtGaussian,
    xs: Any,
    *,
    num_iters: int = 10,
    line_search: bool = True,
    init: jax.Array | None = None,
    parallel: Parallel = False,
    form: Form = "joseph",
    method: Method = "jacfwd",
) -> IteratedSmootherResult:
    r"""The MAP trajectory of a nonlinear model by Gauss-Newton (the IEKS).

    Args:
        dynamics: ``NonlinearDynamics`` or ``LinearDynamics``, or a function
            ``inputs -> model`` (as for :func:`kalmanjax.extended_kalman_filter`).
        observation: ``NonlinearObservation`` or ``LinearObservation``, or a
            function ``inputs -> model``.
        prior: the belief over :math:`x_0`.
        xs: per-step inputs with a leading time axis (see :func:`kalmanjax.run`);
            NaN observations are missing.
        num_iters: Gauss-Newton iterations (a ``lax.scan``; a fixed count).
        line_search: backtrack along each Gauss-Newton step so the cost never
            increases (needs :math:`P_0, Q, R` positive definite). Without it,
            the plain IEKS.
        init: the starting trajectory :math:`x_{1:T}`, ``(T, state)`` (e.g. an
            extended smoother's means); default, the prior mean run through the
            dynamics without noise. The start of :math:`x_0` is the prior mean.
        parallel: the parallel filter and smoother in every iteration.
        form: the filter form (see :func:`kalmanjax.kalman_filter`); ``"sqrt"``
            returns ``SqrtGaussian`` beliefs.
        method: the Jacobian method, ``"jacfwd"`` or ``"jacrev"``.

    Returns:
        An :class:`IteratedSmootherResult`.

    Raises:
        ValueError: if ``init`` has the wrong shape, or on model shape mismatches.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.NonlinearDynamics(fn=lambda x, u: jnp.sin(x), Q=0.1 * jnp.eye(1))
        >>> obs = kj.NonlinearObservation(fn=lambda x, u: x**3, R=0.1 * jnp.eye(1))
        >>> prior = kj.Gaussian(mean=jnp.ones(1), cov=jnp.eye(1))
        >>> out = kj.iterated_extended_smoother(dyn, obs, prior, jnp.ones((20, 1)))
        >>> out.smoothed.mean.shape, bool(out.costs[-1] <= out.costs[0])
        ((20, 1), True)
    """
    owner = "iterated_extended_smoother"
    prior_dense = to_dense(prior)
    n, dtype = checks.check_belief(prior_dense, owner)
    num_steps = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if init is None:
        init = _propagate(dynamics, prior_dense.mean, xs)
    elif init.shape != (num_steps, n) or init.dtype != dtype:
        raise ValueError(
            f"{owner}: init must be (T, state) = {(num_steps, n)} in {dtype}, "
            f"got {init.shape} in {init.dtype}"
        )
    nominal = jnp.concatenate([prior_dense.mean[None], init], axis=0)
    sqrt = form == "sqrt"
    start = to_sqrt(prior) if sqrt else prior_dense

    def cost(traj):
        return _map_cost(dynamics, observation, prior_dense, xs, traj)

    def gauss_newton(traj):
        """Filter and smooth the model linearised about ``traj`` (T + 1, state)."""
        lin = _linearize(dynamics, observation, xs, traj, n, method)
        filt = kalman_filter(lambda u: u["dyn"], lambda u: u["obs_model"], form=form)
        inputs = {"obs": get_obs(xs), "dyn": lin[0], "obs_model": lin[1]}
        filtered = run(filt, start, inputs, parallel=parallel).states
        # x_0 too: the prior is its filtered belief, smoothed by step 1's dynamics
        with_prior = jax.tree_util.tree_map(
            lambda a, b: jnp.concatenate([a[None], b], axis=0), start, filtered
        )
        ahead = jax.tree_util.tree_map(
            lambda a: jnp.concatenate([a[:1], a], axis=0), lin[0]
        )
        smoothed = rts_smoother(lambda u: u, with_prior, ahead, parallel=parallel)
        return lin[0], filtered, smoothed

    def iteration(carry, _):
        traj, value = carry
        target = gauss_newton(traj)[2].mean
        if line_search:
            steps = jnp.asarray(_STEPS, dtype)
            trials = traj[None] + steps[:, None, None] * (target - traj)[None]
            values = jax.vmap(cost)(trials)
            better = values < value
            first = jnp.argmax(better)
            take = jnp.any(better)
            traj = jnp.where(take, trials[first], traj)
            value = jnp.where(take, values[first], value)
        else:
            traj, value = target, cost(target)
        return (traj, value), value

    value0 = cost(nominal)
    (traj, _), values = lax.scan(iteration, (nominal, value0), None, length=num_iters)
    linearized, filtered, smoothed = gauss_newton(traj)
    first = jax.tree_util.tree_map(lambda a: a[0], smoothed)
    rest = jax.tree_util.tree_map(lambda a: a[1:], smoothed)
    # the beliefs are those about the final trajectory; its mean is the iterate
    rest = rest._replace(mean=traj[1:])
    first = first._replace(mean=traj[0])
    return IteratedSmootherResult(
        filtered=filtered,
        smoothed=rest,
        initial=first,
        linearized=linearized,
        costs=jnp.concatenate([value0[None], values]),
    )


def _propagate(dynamics, mean0, xs):
    r"""The noise-free path :math:`\bar x_t = f_t(\bar x_{t-1})`, ``(T, state)``."""

    def body(x, inputs):
        x = _dynamics_mean(resolve(dynamics, inputs), x, inputs)
        return x, x

    return lax.scan(body, mean0, xs)[1]


def _dynamics_mean(dyn, x, inputs):
    if isinstance(dyn, NonlinearDynamics):
        return dyn.fn(x, inputs)
    b = 0.0 if dyn.b is None else dyn.b
    return dyn.F @ x + b


def _observation_mean(obs_model, x, inputs):
    if not isinstance(obs_model, NonlinearObservation | LinearObservation):
        raise ValueError(
            "iterated_extended_smoother: the observation must be a "
            "NonlinearObservation or a LinearObservation (its MAP cost is "
            f"Gaussian), got {type(obs_model).__name__}; smooth a "
            "ConditionalMomentObservation with kj.iterated_sigma_point_smoother"
        )
    if isinstance(obs_model, NonlinearObservation):
        return obs_model.fn(x, inputs)
    d = 0.0 if obs_model.d is None else obs_model.d
    return obs_model.H @ x + d


def _linearize(dynamics, observation, xs, traj, n, method):
    """Each step's dynamics about ``traj[t - 1]`` and observation about ``traj[t]``."""

    def one(inputs, before, at):
        dyn, obs_model = resolve(dynamics, inputs), resolve(observation, inputs)
        fx, F = linearize(
            lambda x: _dynamics_mean(dyn, x, inputs), before, method=method
        )
        hx, H = linearize(
            lambda x: _observation_mean(obs_model, x, inputs), at, method=method
        )
        return (
            LinearDynamics(F=F, Q=dyn.Q, b=fx - F @ before),
            LinearObservation(H=H, R=obs_model.R, d=hx - H @ at),
        )

    return batched(one, 0, lapack=False)(xs, traj[:-1], traj[1:])


def _quadratic(residual, cov, observed=None):
    r""":math:`\tfrac12 r^\top C^{-1} r` over the observed entries of ``residual``."""
    if observed is not None:  # C_oo^{-1} on the observed block, nothing elsewhere
        D = jnp.diag(observed.astype(cov.dtype))
        eye = jnp.eye(cov.shape[0], dtype=cov.dtype)
        cov = D @ cov @ D + (eye - D)
        residual = jnp.where(observed, residual, 0.0)
    return 0.5 * residual @ cho_solve(cho_factor(cov, lower=True), residual)


def _map_cost(dynamics, observation, prior, xs, traj):
    """:math:`J(x_{0:T})` of the module docstring; ``traj`` is ``(T + 1, state)``."""
    ys = get_obs(xs)

    def step(inputs, y, before, at):
        dyn, obs_model = resolve(dynamics, inputs), resolve(observation, inputs)
        observed = ~jnp.isnan(y)
        h = _observation_mean(obs_model, at, inputs)
        return _quadratic(at - _dynamics_mean(dyn, before, inputs), dyn.Q) + _quadratic(
            jnp.where(observed, y, 0.0) - h, obs_model.R, observed
        )

    n = traj.shape[1]
    terms = batched(step, lapack_flops(max(n, ys.shape[-1])))(
        xs, ys, traj[:-1], traj[1:]
    )
    return _quadratic(traj[0] - prior.mean, prior.cov) + jnp.sum(terms)
