r"""Natural gradient as the Q = 0 (extended) Kalman filter (claim 6).

With :math:`Q = 0` and :math:`F = I` the information form of the filter is
:math:`\Lambda_t = \Lambda_{t-1} + J_t^\top R^{-1} J_t = \Sigma_0^{-1} +
\sum_{s \le t} J_s^\top R^{-1} J_s` and the gain is :math:`K_t = \Lambda_t^{-1}
J_t^\top R^{-1}`, so the mean moves by

.. math::

    m_t = m_{t-1} + \Lambda_t^{-1} J_t^\top R^{-1} e_t
        = m_{t-1} - \frac1t F_t^{-1} \nabla \ell_t(m_{t-1}),
    \qquad F_t = \Lambda_t / t,

with :math:`\ell_t(\theta) = \tfrac12 |y_t - h(\theta, u_t)|^2_{R^{-1}}`: online
natural gradient with the Gauss-Newton (Fisher) estimate :math:`F_t`, step
:math:`1/t` and damping :math:`\Sigma_0^{-1}/t`. For a linear :math:`h` this is
an identity; for a nonlinear one it holds exactly for the *extended* filter,
whose :math:`J_t` is taken at the running mean, i.e. at the running NGD iterate
(Ollivier 2017). It is exact, not a limit: the tests check it to ~1e-10 in
float64 against a NumPy NGD recursion.

Freezing the preconditioner instead, :math:`P^- = \eta F^{-1}` at every step,
gives the frozen-covariance filter whose :math:`\eta |J|^2_{F^{-1}} \to 0` limit
is fixed-step natural gradient :math:`\theta - \eta F^{-1}\nabla\ell_t`
(:func:`fixed_natural_gradient_filter`; its gap path,
:func:`~kalmanjax.limits.natural_gradient_gap_path`, is in
:mod:`kalmanjax.limits.gaps`).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jaxtyping import ArrayLike, Float

from ..core.filter import Filter
from ._common import ObservationFn
from ._filters import linearized_filter
from .gradient_descent import gd_limit_filter

__all__ = [
    "fixed_natural_gradient_filter",
    "natural_gradient_filter",
]


def natural_gradient_filter(h: ObservationFn, noise_cov: Any) -> Filter:
    r"""The Q = 0 extended Kalman filter, whose mean is online natural gradient.

    Static state (:math:`F = I`, :math:`Q = 0`); each step linearises ``h`` at
    the current mean (``jax.jacfwd``) and conditions with
    :func:`kalmanjax.update`. The means equal the iterates of
    :func:`~kalmanjax.limits.natural_gradient_transformation` started at
    :math:`m_0` with damping :math:`\Sigma_0^{-1}`, and the covariance is
    :math:`\Sigma_t = (t F_t)^{-1}`.

    Args:
        h: ``h(theta, inputs) -> (obs,)``.
        noise_cov: :math:`R` (scalar, ``(obs,)`` or ``(obs, obs)``).

    Returns:
        A :class:`kalmanjax.Filter` over ``Gaussian`` beliefs.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> h = lambda th, u: jnp.tanh(u["x"] @ th)[None]
        >>> xs = {"obs": jnp.full((5, 1), 0.5), "x": jnp.ones((5, 2))}
        >>> prior = kj.Gaussian(mean=jnp.zeros(2), cov=jnp.eye(2))
        >>> out = kj.run(natural_gradient_filter(h, 0.1), prior, xs)
        >>> [round(v, 3) for v in out.final.mean.tolist()]
        [0.263, 0.263]
    """
    return linearized_filter(
        h, noise_cov, frozen=False, owner="natural_gradient_filter"
    )


def fixed_natural_gradient_filter(
    h: ObservationFn, learning_rate: Any, fisher: Float[ArrayLike, "state state"]
) -> Filter:
    r"""Fixed-step natural gradient :math:`m + \eta F^{-1} J^\top e` per token.

    The frozen-preconditioner limit: :func:`~kalmanjax.limits.gd_limit_filter`
    with the matrix learning rate :math:`\eta F^{-1}` (one solve when built).

    Args:
        h: ``h(theta, inputs) -> (obs,)``.
        learning_rate: the scalar :math:`\eta`.
        fisher: :math:`F`, positive definite, shape ``(k, k)``.

    Returns:
        A :class:`kalmanjax.Filter` whose state is the mean vector.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> h = lambda th, u: u["x"] @ th
        >>> F = jnp.diag(jnp.array([1.0, 4.0]))
        >>> filt = fixed_natural_gradient_filter(h, 0.5, F)
        >>> xs = {"obs": jnp.ones((1, 1)), "x": jnp.ones((1, 1, 2))}
        >>> kj.run(filt, jnp.zeros(2), xs).final.tolist()
        [0.5, 0.125]
    """
    F = jnp.asarray(fisher)
    pre = learning_rate * jnp.linalg.solve(F, jnp.eye(F.shape[0], dtype=F.dtype))
    return gd_limit_filter(h, pre)
