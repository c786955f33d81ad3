r"""Convergence of the covariance against convergence of the mean.

:math:`t(\varepsilon) = \min\{t : v_t \le \varepsilon v_0\}` (:func:`time_to_eps`)
for any decreasing measure, e.g. :math:`t_\Sigma(\varepsilon)` for
:math:`v_t = \operatorname{tr}\Sigma_t`. For the linear model with :math:`Q = 0`
the mean's error given the inputs is :math:`\mathbb E[m_t - \theta^* \mid X,
\theta^*] = \Sigma_t\Sigma_0^{-1}(m_0 - \theta^*)` (:func:`expected_mean_error`):
the mean forgets its prior error only as fast as :math:`\Sigma_t\Sigma_0^{-1}`
contracts; :func:`mean_time_to_eps` is :math:`t_\mu(\varepsilon)` for
:math:`v_t = |m_t - \theta^*|^2`.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, Real

from ..core.beliefs import Gaussian
from .arrays import as_covariance

__all__ = ["expected_mean_error", "mean_time_to_eps", "time_to_eps"]


def time_to_eps(
    values: Float[Array, " time *batch"],
    initial: Float[ArrayLike, "*batch"],
    eps: Real[ArrayLike, ""],
) -> Int[Array, "*batch"]:
    r"""First token :math:`t` with :math:`v_t \le \varepsilon\, v_0`.

    Args:
        values: :math:`v_t` for :math:`t = 1..T`, shape ``(T, ...)``.
        initial: :math:`v_0`, shape ``(...)``.
        eps: the relative level.

    Returns:
        :math:`t \in 1..T`, or :math:`T + 1` where the level is never reached;
        ``int32`` of shape ``(...)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> int(kd.time_to_eps(jnp.array([0.8, 0.4, 0.05]), 1.0, 0.5))
        2
    """
    values = jnp.asarray(values)
    initial = jnp.broadcast_to(jnp.asarray(initial, values.dtype), values.shape[1:])
    below = values <= eps * initial[None]
    first = jnp.argmax(below, axis=0).astype(jnp.int32) + 1
    return jnp.where(jnp.any(below, axis=0), first, values.shape[0] + 1)


def expected_mean_error(
    beliefs: Any, prior: Gaussian, theta_star: Float[Array, " state"]
) -> Float[Array, "time state"]:
    r"""The mean's expected error given the inputs (linear model, :math:`Q = 0`).

    :math:`\mathbb E[m_t - \theta^* \mid X, \theta^*] =
    \Sigma_t\Sigma_0^{-1}(m_0 - \theta^*)`.

    The mean error's expectation over the observation noise, given the inputs
    and the task. The identity: :math:`m_t = \Sigma_t(\Sigma_0^{-1} m_0 +
    X^\top y / r)` and :math:`\mathbb E[y] = X\theta^*` give :math:`m_t -
    \theta^* = \Sigma_t\Sigma_0^{-1}(m_0 - \theta^*)` exactly on noise-free data;
    the mean can only forget its prior error as fast as
    :math:`\Sigma_t\Sigma_0^{-1}` contracts.

    Args:
        beliefs: stacked filtered beliefs (or covariances ``(T, state, state)``).
        prior: the prior belief :math:`(m_0, \Sigma_0)`.
        theta_star: the true state ``(state,)``.

    Returns:
        Shape ``(T, state)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> prior = kj.Gaussian(mean=jnp.zeros(1), cov=jnp.eye(1))
        >>> covs = jnp.array([[[0.5]], [[0.25]]])
        >>> kj.diagnostics.expected_mean_error(covs, prior, jnp.ones(1)).tolist()
        [[-0.5], [-0.25]]
    """
    covs = as_covariance(beliefs, "beliefs", "expected_mean_error")
    u = jnp.linalg.solve(prior.cov, prior.mean - theta_star)
    return covs @ u


def mean_time_to_eps(
    beliefs: Any,
    prior: Gaussian,
    theta_star: Float[Array, " state"],
    eps: Real[ArrayLike, ""],
) -> Int[Array, ""]:
    r"""The mean's time to epsilon, :math:`t_\mu(\varepsilon)`.

    The first token with :math:`|m_t - \theta^*|^2 \le \varepsilon\,|m_0 -
    \theta^*|^2`; compare :math:`t_\Sigma(\varepsilon)` =
    ``time_to_eps(covariance_trace(beliefs), covariance_trace(prior), eps)``.

    Args:
        beliefs: stacked filtered beliefs, mean ``(T, state)``.
        prior: the prior belief.
        theta_star: the true state ``(state,)``.
        eps: the relative level.

    Returns:
        ``int32`` scalar in ``1..T + 1`` (``T + 1``: not reached).

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> prior = kj.Gaussian(mean=jnp.zeros(1), cov=jnp.eye(1))
        >>> b = kj.Gaussian(mean=jnp.array([[0.5], [0.9]]), cov=jnp.ones((2, 1, 1)))
        >>> int(kj.diagnostics.mean_time_to_eps(b, prior, jnp.ones(1), 0.1))
        2
    """
    target = jnp.broadcast_to(theta_star, beliefs.mean.shape)
    err = jnp.sum((beliefs.mean - target) ** 2, axis=-1)
    err0 = jnp.sum((prior.mean - theta_star) ** 2)
    return time_to_eps(err, err0, eps)
