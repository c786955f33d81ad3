r"""Sigma-point Kalman filters (UKF, CKF, GHKF) and posterior linearisation (IPLF).

Each step linearises the dynamics by statistical linear regression under the
filtered belief and the observation under the predicted belief
(:mod:`kalmanjax.steps.sigma_points`), then applies the linear steps with the
regression's residual covariance added to :math:`Q` and :math:`R`:

.. math::

    m^- = E[f(x)], \quad P^- = \operatorname{Cov}(f(x)) + Q, \qquad
    x \sim N(m, P)

    \hat y = E[h(x)], \quad S = \operatorname{Cov}(h(x)) + R, \quad
    K = \operatorname{Cov}(x, h(x)) S^{-1}, \qquad x \sim N(m^-, P^-)

(the unscented, cubature or Gauss-Hermite filter, by the rule). With
``num_iter > 1`` the update relinearises :math:`h` under the current posterior
and conditions the *predicted* belief again (iterated posterior linearisation,
Garcia-Fernandez et al. 2015; the sigma-point counterpart of the IEKF).
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.filter import Filter
from ..core.likelihoods import ConditionalMomentObservation
from ..core.models import (
    LinearDynamics,
    LinearObservation,
    NonlinearDynamics,
    NonlinearObservation,
)
from ..steps.linear import Form
from ..steps.sigma_points import SigmaPointRule, default_rule
from .extended import linearized_filter

__all__ = ["sigma_point_kalman_filter"]


def sigma_point_kalman_filter(
    dynamics: NonlinearDynamics | LinearDynamics | Callable,
    observation: NonlinearObservation
    | LinearObservation
    | ConditionalMomentObservation
    | Callable,
    *,
    rule: SigmaPointRule | None = None,
    form: Form = "joseph",
    num_iter: int = 1,
    missing: bool = True,
    fast: bool | None = None,
) -> Filter:
    r"""Build a sigma-point Kalman filter (``num_iter=1``) or the IPLF.

    The time convention, forms, missing data and ``inputs`` are those of
    :func:`kalmanjax.extended_kalman_filter`; only the linearisation differs.
    Linear models pass through unchanged, so on a linear model every rule is
    the Kalman filter. Smooth with :func:`kalmanjax.rts_smoother` and the same
    ``rule`` (the unscented / cubature / Gauss-Hermite RTS smoother).

    Args:
        dynamics: ``NonlinearDynamics`` or ``LinearDynamics``, or a function
            ``inputs -> model``.
        observation: ``NonlinearObservation``, ``LinearObservation``, a
            :class:`~kalmanjax.ConditionalMomentObservation` (e.g.
            :func:`kalmanjax.bernoulli_likelihood`; the SLR of its mean, and
            :math:`E[\Sigma(x)]` as noise), or a function ``inputs -> model``.
        rule: :func:`kalmanjax.unscented` (default), :func:`kalmanjax.cubature`
            or :func:`kalmanjax.gauss_hermite`.
        form: ``"joseph"`` (default), ``"dense"`` or ``"sqrt"``; the square-root
            form draws its sigma points from the belief's factor.
        num_iter: linearisations per update (static); 1 is the plain filter.
        missing: NaN entries of the observations are not observed (default).
        fast: small-state kernels; ``None`` chooses them for sizes <= 8.

    Returns:
        A ``Filter`` whose state is the belief and whose info is an
        :class:`~kalmanjax.UpdateInfo` (its information gain is that of the
        linearised model, :math:`\tfrac12\log\det S - \tfrac12\log\det
        (R + \Omega)`).

    Raises:
        ValueError: on an unknown ``form``, a bad ``num_iter``, or a ``rule``
            that is not a :class:`~kalmanjax.SigmaPointRule`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.NonlinearDynamics(fn=lambda x, u: jnp.sin(x), Q=0.1 * jnp.eye(1))
        >>> obs = kj.NonlinearObservation(fn=lambda x, u: x**2, R=0.1 * jnp.eye(1))
        >>> filt = kj.sigma_point_kalman_filter(dyn, obs, rule=kj.cubature())
        >>> prior = kj.Gaussian(mean=jnp.ones(1), cov=jnp.eye(1))
        >>> kj.run(filt, prior, jnp.ones((5, 1))).states.mean.shape
        (5, 1)
    """
    owner = "sigma_point_kalman_filter"
    rule = default_rule(rule, owner)
    return linearized_filter(
        owner, dynamics, observation, form, num_iter, rule, missing, fast
    )
