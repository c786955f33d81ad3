r"""Non-Gaussian observations given by their conditional moments.

A likelihood :math:`p(y \mid x, u)` enters a Gaussian filter through its first
two conditional moments (the idea of the conditional-moments Gaussian filter,
Tronarp et al. 2018; dynamax's CMGF):

.. math::

    E[y \mid x] = \mu(x), \qquad \operatorname{Cov}[y \mid x] = \Sigma(x),

linearised by a Taylor expansion at a point (:math:`H = \partial\mu/\partial x`,
:math:`R = \Sigma(m)`) or by statistical linear regression under a belief
(:math:`A, \Omega` of :math:`\mu`, :math:`R = E[\Sigma(x)] + \Omega`). A particle
filter uses the exact :math:`\log p(y \mid x, u)` instead. The constructors below
give both for the common cases; every function takes ``(x, inputs)`` like
``NonlinearObservation.fn``, and NaN entries of ``y`` are missing.

- ``poisson_likelihood``: :math:`\mu = \lambda = e^{\eta(x)}`,
  :math:`\Sigma = \operatorname{diag}\lambda`;
- ``bernoulli_likelihood``: :math:`\mu = p = \sigma(\eta(x))`,
  :math:`\Sigma = \operatorname{diag} p(1-p)`;
- ``categorical_likelihood``: :math:`\mu = p = \operatorname{softmax}(z(x))`,
  :math:`\Sigma = \operatorname{diag} p - pp^\top`;
- ``student_t_likelihood``: :math:`\mu = h(x)`,
  :math:`\Sigma = \tfrac{\nu}{\nu - 2} S`

(:math:`\eta`, :math:`z`, :math:`h` the user's functions of the state; a small
``jitter`` is added to the diagonal of :math:`\Sigma` where it can be singular.)
The Gaussian filters' log-likelihoods are then those of the moment-matched
Gaussian, not of :math:`p`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve
from jax.scipy.special import gammaln
from jaxtyping import Array, Float

__all__ = [
    "ConditionalMomentObservation",
    "bernoulli_likelihood",
    "categorical_likelihood",
    "poisson_likelihood",
    "student_t_likelihood",
]

Fn = Callable[[Array, Any], Array]


class ConditionalMomentObservation(NamedTuple):
    r"""An observation given by its conditional mean and covariance.

    Attributes:
        mean: ``mean(x, inputs) -> (obs,)``, :math:`\mu(x)`.
        cov: ``cov(x, inputs) -> (obs, obs)``, :math:`\Sigma(x)`, positive
            definite.
        log_prob: optional ``log_prob(y, x, inputs) -> ()``, the exact
            :math:`\log p(y \mid x)` over the observed (non-NaN) entries of ``y``;
            needed by :func:`kalmanjax.particle_filter` only.
    """

    mean: Fn
    cov: Fn
    log_prob: Callable[[Array, Array, Any], Array] | None = None


def _observed(y):
    return ~jnp.isnan(y)


def _diag_cov(variance, jitter):
    return jnp.diag(variance + jnp.asarray(jitter, variance.dtype))


def poisson_likelihood(
    log_rate: Fn, *, jitter: float = 1e-6
) -> ConditionalMomentObservation:
    r"""Independent counts :math:`y_i \sim \operatorname{Poisson}(e^{\eta_i(x)})`.

    Args:
        log_rate: ``log_rate(x, inputs) -> (obs,)``, :math:`\eta(x)`.
        jitter: added to the variances :math:`\lambda` (a rate that underflows
            would make the noise singular).

    Returns:
        A :class:`ConditionalMomentObservation`; the observations are float
        counts in the state's dtype.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> obs = kj.poisson_likelihood(lambda x, u: x)
        >>> x, y = jnp.array([0.0, 1.0]), jnp.array([1.0, jnp.nan])
        >>> print(f"{obs.log_prob(y, x, None):.4f}")  # log Poisson(1 | 1); y_2 missing
        -1.0000
    """

    def mean(x, inputs):
        return jnp.exp(log_rate(x, inputs))

    def cov(x, inputs):
        return _diag_cov(jnp.exp(log_rate(x, inputs)), jitter)

    def log_prob(y, x, inputs):
        eta = log_rate(x, inputs)
        observed = _observed(y)
        y = jnp.where(observed, y, 0.0)
        terms = y * eta - jnp.exp(eta) - gammaln(y + 1.0)
        return jnp.sum(jnp.where(observed, terms, 0.0))

    return ConditionalMomentObservation(mean=mean, cov=cov, log_prob=log_prob)


def bernoulli_likelihood(
    logit: Fn, *, jitter: float = 1e-6
) -> ConditionalMomentObservation:
    r"""Independent binary :math:`y_i \sim \operatorname{Bernoulli}(\sigma(\eta_i(x)))`.

    Args:
        logit: ``logit(x, inputs) -> (obs,)``, :math:`\eta(x)`.
        jitter: added to the variances :math:`p(1 - p)` (zero when saturated).

    Returns:
        A :class:`ConditionalMomentObservation`; the observations are 0.0 / 1.0.
    """

    def mean(x, inputs):
        return jax.nn.sigmoid(logit(x, inputs))

    def cov(x, inputs):
        p = jax.nn.sigmoid(logit(x, inputs))
        return _diag_cov(p * (1.0 - p), jitter)

    def log_prob(y, x, inputs):
        eta = logit(x, inputs)
        observed = _observed(y)
        y = jnp.where(observed, y, 0.0)
        terms = y * jax.nn.log_sigmoid(eta) + (1.0 - y) * jax.nn.log_sigmoid(-eta)
        return jnp.sum(jnp.where(observed, terms, 0.0))

    return ConditionalMomentObservation(mean=mean, cov=cov, log_prob=log_prob)


def categorical_likelihood(
    logits: Fn, *, jitter: float = 1e-6
) -> ConditionalMomentObservation:
    r"""A one-hot :math:`y \sim \operatorname{Cat}(\operatorname{softmax}(z(x)))`.

    With a Taylor expansion this is the moment-matched update of
    :class:`kalmanjax.CategoricalObservation` (which takes token ids and never
    forms a ``vocab x vocab`` matrix); this form takes the one-hot vector and
    can also be linearised by a sigma-point rule.

    Args:
        logits: ``logits(x, inputs) -> (vocab,)``, :math:`z(x)`.
        jitter: :math:`\epsilon` added to the diagonal of
            :math:`\operatorname{diag} p - pp^\top` (singular along
            :math:`\mathbf 1`).

    Returns:
        A :class:`ConditionalMomentObservation`; the observation is the one-hot
        vector ``(vocab,)``, all NaN when missing.
    """

    def mean(x, inputs):
        return jax.nn.softmax(logits(x, inputs))

    def cov(x, inputs):
        p = jax.nn.softmax(logits(x, inputs))
        return jnp.diag(p + jnp.asarray(jitter, p.dtype)) - jnp.outer(p, p)

    def log_prob(y, x, inputs):
        observed = jnp.all(_observed(y))
        value = jnp.where(observed, y, 0.0) @ jax.nn.log_softmax(logits(x, inputs))
        return jnp.where(observed, value, 0.0)

    return ConditionalMomentObservation(mean=mean, cov=cov, log_prob=log_prob)


def student_t_likelihood(
    fn: Fn, scale: Float[Array, "obs obs"], df: float
) -> ConditionalMomentObservation:
    r""":math:`y = h(x) + v`, :math:`v` multivariate Student-t with scale :math:`S`.

    The conditional covariance is :math:`\tfrac{\nu}{\nu - 2} S`, finite for
    :math:`\nu > 2` only; a Gaussian filter with it is the Kalman filter with
    that inflated noise, while a particle filter sees the heavy tails.

    Args:
        fn: ``fn(x, inputs) -> (obs,)``, :math:`h(x)`.
        scale: the scale matrix :math:`S`, ``(obs, obs)``, positive definite.
        df: the degrees of freedom :math:`\nu > 2`.

    Returns:
        A :class:`ConditionalMomentObservation`.

    Raises:
        ValueError: if ``df <= 2``.
    """
    if not df > 2:
        raise ValueError(
            f"student_t_likelihood: df must be > 2 for the conditional covariance "
            f"to be finite, got {df!r}"
        )

    def cov(x, inputs):
        return (df / (df - 2.0)) * scale

    def log_prob(y, x, inputs):
        observed = _observed(y)
        D = jnp.diag(observed.astype(scale.dtype))
        eye = jnp.eye(scale.shape[0], dtype=scale.dtype)
        S = D @ scale @ D + (eye - D)  # S_oo on the observed block
        r = jnp.where(observed, y - fn(x, inputs), 0.0)
        chol = cho_factor(S, lower=True)
        maha = r @ cho_solve(chol, r)
        k = jnp.sum(observed).astype(scale.dtype)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(chol[0])))
        return (
            gammaln((df + k) / 2.0)
            - gammaln(df / 2.0)
            - 0.5 * k * jnp.log(df * jnp.pi)
            - 0.5 * logdet
            - 0.5 * (df + k) * jnp.log1p(maha / df)
        )

    return ConditionalMomentObservation(mean=fn, cov=cov, log_prob=log_prob)
