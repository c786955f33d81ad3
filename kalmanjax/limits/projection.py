r"""The noise-free limit :math:`R \to 0`: projection, Kaczmarz, minimum norm.

With :math:`R = 0` the Kalman step no longer averages, it *projects*:

.. math::

    m \leftarrow m + P J^\top (J P J^\top)^{-1} (y - h(m)), \qquad
    P \leftarrow P - P J^\top (J P J^\top)^{-1} J P,

the new mean is the :math:`P^{-1}`-closest point to :math:`m` that fits the token
exactly, and the new covariance is singular: it is :math:`P` restricted to the
directions the token did not observe (rank :math:`d - p` for a :math:`p`-row
:math:`J`; after :math:`T` tokens of a linear model rank :math:`d - Tp`).

* Frozen covariance :math:`P = I` (``frozen=True``): the Kaczmarz step
  :math:`m + x (y - x^\top m) / |x|^2`, i.e. normalised LMS with step 1. With
  :math:`R = rI` the step is NLMS with regulariser :math:`r/\sigma^2`.
* Propagated covariance from :math:`\Sigma_0 = I`, :math:`m_0 = 0` on a linear
  model :math:`y = X\theta` with :math:`T p \le d` independent rows: after the
  last token the mean is the minimum-norm interpolant :math:`X^+ y` (in general
  :math:`m_0 + \Sigma_0 X^\top (X \Sigma_0 X^\top)^{-1}(y - X m_0)`) and the
  covariance is :math:`I - X^+ X`, the projector onto the null space of :math:`X`.

The filter with :math:`R = rI` differs from the limit by :math:`O(r)` (order 1 in
:math:`r / \lambda_{\min}(X \Sigma_0 X^\top)`): its mean is Bayesian ridge,
:math:`X^\top (X X^\top + rI)^{-1} y`, and the :math:`Tp` collapsed eigenvalues
of its covariance are :math:`r / (s_i^2 + r)`. Beyond :math:`Tp = d` a
noise-free model of inconsistent data has no solution (:math:`JPJ^\top` becomes
singular); the limit is only defined while the tokens are consistent.
"""

from __future__ import annotations

from ..core.filter import Filter
from ._common import ObservationFn
from ._filters import linearized_filter

__all__ = ["projection_filter"]


def projection_filter(h: ObservationFn, *, frozen: bool = False) -> Filter:
    r"""The noise-free (:math:`R = 0`) filter: each token is a hard constraint.

    Built from :func:`kalmanjax.update` with :math:`R = 0` on ``h`` linearised at
    the mean (``jax.jacfwd``); :math:`F = I`, :math:`Q = 0`.

    Args:
        h: ``h(theta, inputs) -> (obs,)``.
        frozen: keep the prior covariance at every step (Kaczmarz / NLMS with
            :math:`P = I`) instead of propagating it (the cumulative projection).

    Returns:
        A :class:`kalmanjax.Filter` over ``Gaussian`` beliefs; its
        ``information_gain`` is :math:`+\infty` (a noise-free token).

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> h = lambda th, u: u["x"] @ th
        >>> xs = {"obs": jnp.array([[1.0], [2.0]]),
        ...       "x": jnp.array([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]])}
        >>> prior = kj.Gaussian(mean=jnp.zeros(3), cov=jnp.eye(3))
        >>> out = kj.run(projection_filter(h), prior, xs)
        >>> out.final.mean.tolist(), out.final.cov.diagonal().tolist()
        ([1.0, 2.0, 0.0], [0.0, 0.0, 1.0])
    """
    return linearized_filter(
        h, 0.0, frozen=frozen, owner="projection_filter", noise_free=True
    )
