r"""The extended and iterated Kalman filters as a ``Filter``.

Each step linearises the dynamics at the filtered mean and the observation at the
predicted mean (and, iterated, at each Gauss-Newton iterate), then applies the
linear steps; the math is in :mod:`kalmanjax.steps.nonlinear` and, for next-token
observations, :mod:`kalmanjax.steps.categorical`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..core import checks
from ..core.beliefs import to_dense, to_sqrt
from ..core.filter import Filter
from ..core.likelihoods import ConditionalMomentObservation
from ..core.linalg import choose_ops
from ..core.models import (
    CategoricalObservation,
    LinearDynamics,
    LinearObservation,
    NonlinearDynamics,
    NonlinearObservation,
    get_obs,
    resolve,
    with_checked_covariance,
)
from ..steps.categorical import categorical_condition
from ..steps.linear import FORMS, Form
from ..steps.linearize import METHODS, Method
from ..steps.nonlinear import nonlinear_predict, nonlinear_update
from ..steps.sigma_points import SigmaPointRule

__all__ = ["extended_kalman_filter"]


def extended_kalman_filter(
    dynamics: NonlinearDynamics | LinearDynamics | Callable,
    observation: NonlinearObservation
    | LinearObservation
    | CategoricalObservation
    | ConditionalMomentObservation
    | Callable,
    *,
    form: Form = "joseph",
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
            integer token id per step; the covariance forms update as one,
            ``"sqrt"`` keeps factors), a
            :class:`~kalmanjax.ConditionalMomentObservation` (e.g.
            :func:`kalmanjax.poisson_likelihood`: ``H`` from its mean, ``R`` its
            covariance at the predicted mean; the CMGF), or a function
            ``inputs -> model``.
        form: ``"joseph"`` (default), ``"dense"`` or ``"sqrt"`` (see
            :func:`kalmanjax.kalman_filter`).
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
    if method not in METHODS:
        raise ValueError(f"{owner}: method must be one of {METHODS}, got {method!r}")
    return linearized_filter(
        owner, dynamics, observation, form, num_iter, method, missing, fast
    )


def linearized_filter(
    owner: str,
    dynamics,
    observation,
    form: Form,
    num_iter: int,
    method: Method | SigmaPointRule,
    missing: bool,
    fast: bool | None,
) -> Filter:
    """The filter of :func:`extended_kalman_filter` for any linearisation.

    ``method`` is a Jacobian method (the EKF / IEKF) or a sigma-point rule (the
    sigma-point filters and posterior linearisation,
    :func:`kalmanjax.sigma_point_kalman_filter`).
    """
    if form not in FORMS:
        raise ValueError(f"{owner}: form must be one of {FORMS}, got {form!r}")
    checks.check_num_iter(num_iter, owner)
    sqrt = form == "sqrt"
    dynamics = with_checked_covariance(dynamics)  # as kalman_filter reads them
    observation = with_checked_covariance(observation)

    def init(prior):
        _, prior_dtype = checks.check_belief(prior, f"{owner}.init")
        if sqrt:
            checks.check_lapack_dtype(prior_dtype, f"{owner}.init")
        return to_sqrt(prior) if sqrt else to_dense(prior)

    def advance(belief, inputs, step_owner, predict=True):
        n, dtype = checks.check_belief(belief, step_owner)
        y = get_obs(inputs)
        obs_model = resolve(observation, inputs)
        categorical = isinstance(obs_model, CategoricalObservation)
        if categorical:
            if isinstance(method, SigmaPointRule):
                raise ValueError(
                    f"{step_owner}: a CategoricalObservation is linearised by "
                    "Taylor expansion only (extended_kalman_filter)"
                )
            checks.check_token(y, step_owner)
            m = n
        else:
            m = checks.check_vector(y, "obs", dtype, step_owner)
        ops = choose_ops(fast, n, m)
        predicted = belief
        if predict:
            dyn = resolve(dynamics, inputs)
            if isinstance(dyn, LinearDynamics):
                checks.check_dynamics(dyn, n, dtype, step_owner)
            predicted = nonlinear_predict(
                belief, dyn, inputs, ops, method, step_owner, False
            )
        if categorical:
            return categorical_condition(
                predicted, y, obs_model, inputs, method, num_iter, step_owner
            )
        if isinstance(obs_model, LinearObservation):
            checks.check_observation(obs_model, n, dtype, step_owner)
        return nonlinear_update(
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

    def step(belief, inputs):
        return advance(belief, inputs, f"{owner}.step")

    def update(belief, inputs):
        return advance(belief, inputs, f"{owner}.update", predict=False)

    return Filter(init=init, step=step, update=update)
