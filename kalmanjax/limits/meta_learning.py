r"""Meta-learning as empirical Bayes over tasks (claim 6).

Across tasks :math:`i = 1..N` the prior :math:`(m_0, \Sigma_0)` and the noise
:math:`(Q, R)` of the filter are hyper-parameters; maximising the summed log
marginal likelihood :math:`\sum_i \log p(y^{(i)}_{1:T})` (type-II maximum
likelihood, :func:`kalmanjax.log_marginal_likelihood` under ``jax.vmap``) learns
them, here with ``optax.adam`` (:func:`~kalmanjax.limits.fit_meta_prior`, in
:mod:`kalmanjax.limits.meta_fit`: the one part that needs optax). As :math:`N` grows the
learned :math:`\Sigma_0` approaches the covariance of the task distribution; with
informative prompts it is as good as the sample covariance of the (unseen) true
task vectors, the best any estimator can do.

The optimisers meta-learning builds are GD limits of this filter:

* one gradient-descent-limit step from :math:`m_0` on a task's support set
  (:func:`adapt`) with :math:`\Sigma_0 = \sigma^2 I`, :math:`R = rI` is the MAML
  inner step :math:`m_0 - \alpha \nabla L_{\rm task}(m_0)`, :math:`\alpha =
  \sigma^2/r`;
* with a diagonal :math:`\Sigma_0` the step has a per-coordinate learning rate
  :math:`\alpha_j = (\Sigma_0)_{jj}/r` (:func:`meta_sgd_learning_rates`): a
  learned diagonal prior covariance *is* Meta-SGD's learned learning-rate vector.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Real

from ..core.beliefs import Gaussian
from ..core.filter import Filter
from ..core.models import get_obs
from ..drivers.filtering import log_marginal_likelihood
from ..filters.regression import regression_design, regression_filter
from ._common import ObservationFn
from .gradient_descent import gd_limit_filter

__all__ = [
    "MetaParams",
    "adapt",
    "init_meta_params",
    "meta_log_likelihood",
    "meta_prior",
    "meta_sgd_learning_rates",
]


class MetaParams(NamedTuple):
    r"""Unconstrained hyper-parameters of the task prior and the noise.

    Attributes:
        mean: :math:`m_0`, shape ``(k,)``.
        scale: a ``(k, k)`` matrix whose lower triangle, with its diagonal
            exponentiated, is the Cholesky factor of :math:`\Sigma_0`; or a
            ``(k,)`` vector of :math:`\log (\Sigma_0)_{jj}` (diagonal prior).
        log_noise_var: :math:`\log r` (:math:`R = rI`), shape ``()``.
        log_process_var: :math:`\log q` (:math:`Q = qI`), shape ``()``; ``-inf``
            (the default) means :math:`Q = 0`.
    """

    mean: Float[Array, " state"]
    scale: Float[Array, "state state"] | Float[Array, " state"]
    log_noise_var: Float[Array, ""]
    log_process_var: Float[Array, ""]


def init_meta_params(
    dim: int,
    *,
    diagonal: bool = False,
    prior_var: float = 1.0,
    noise_var: float = 1.0,
    process_var: float = 0.0,
    dtype: Any = None,
) -> MetaParams:
    r"""Initial hyper-parameters: :math:`m_0 = 0`, :math:`\Sigma_0 = \tau^2 I`.

    Args:
        dim: the state dimension :math:`k`.
        diagonal: parameterise :math:`\Sigma_0` by its log-diagonal (else by a
            Cholesky factor).
        prior_var: :math:`\tau^2`.
        noise_var: :math:`r`.
        process_var: :math:`q` (0: a static task, :math:`Q = 0`).
        dtype: the floating dtype (default: JAX's default float).

    Returns:
        A :class:`MetaParams`.

    Examples:
        >>> p = init_meta_params(2, diagonal=True, prior_var=2.0)
        >>> meta_prior(p).cov.tolist()
        [[2.0, 0.0], [0.0, 2.0]]
    """
    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    log_tau2 = np.log(prior_var)
    if diagonal:
        scale = jnp.full((dim,), log_tau2, dtype)
    else:  # exp(diag) = tau, so L L^T = tau^2 I
        scale = 0.5 * log_tau2 * jnp.eye(dim, dtype=dtype)
    return MetaParams(
        mean=jnp.zeros(dim, dtype),
        scale=scale,
        log_noise_var=jnp.asarray(np.log(noise_var), dtype),
        log_process_var=jnp.asarray(
            -np.inf if process_var == 0 else np.log(process_var), dtype
        ),
    )


def meta_prior(params: MetaParams) -> Gaussian:
    r"""The prior :math:`\mathcal N(m_0, \Sigma_0)` the hyper-parameters encode."""
    if params.scale.ndim == 1:
        return Gaussian(mean=params.mean, cov=jnp.diag(jnp.exp(params.scale)))
    L = jnp.tril(params.scale, -1) + jnp.diag(jnp.exp(jnp.diagonal(params.scale)))
    return Gaussian(mean=params.mean, cov=L @ L.T)


def _task_filter(params: MetaParams, design: Any) -> Filter:
    """The tasks' regression filter with the hyper-parameters' noise."""
    return regression_filter(
        params.mean.shape[0],
        jnp.exp(params.log_noise_var),
        jnp.exp(params.log_process_var),
        dtype=params.mean.dtype,
        design=design,
    )


def meta_log_likelihood(
    params: MetaParams, xs: Any, *, design: Any = None
) -> Float[Array, ""]:
    r""":math:`\sum_i \log p(y^{(i)}_{1:T} \mid m_0, \Sigma_0, Q, R)` over tasks.

    The tasks are linear-Gaussian: :math:`y_t = H_t \theta + v_t` with
    :math:`H_t` = ``design(inputs)`` (default: ``inputs["x"]`` as one row).

    Args:
        params: the hyper-parameters.
        xs: per-step inputs with leading axes ``(tasks, T)``; ``xs["obs"]`` of
            shape ``(tasks, T, obs)``.
        design: ``inputs -> H`` of shape ``(obs, k)``; default ``inputs["x"]``
            (a ``(k,)`` row or an ``(obs, k)`` matrix).

    Returns:
        The summed log marginal likelihood (scalar).

    Examples:
        >>> import jax.numpy as jnp
        >>> xs = {"obs": jnp.zeros((3, 4, 1)), "x": jnp.ones((3, 4, 2))}
        >>> meta_log_likelihood(init_meta_params(2), xs).shape
        ()
    """
    design = regression_design if design is None else design
    filt = _task_filter(params, design)
    prior = meta_prior(params)
    per_task = jax.vmap(lambda task: log_marginal_likelihood(filt, prior, task))(xs)
    return jnp.sum(per_task)


def meta_sgd_learning_rates(
    prior: Gaussian, noise_var: Real[ArrayLike, ""]
) -> Float[Array, " state"]:
    r"""Per-coordinate learning rates :math:`\alpha_j = (\Sigma_0)_{jj} / r`.

    In the GD limit a diagonal prior covariance is a learning-rate vector
    (Meta-SGD); only the diagonal of ``prior.cov`` is used.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> cov = jnp.diag(jnp.array([0.2, 0.4]))
        >>> prior = kj.Gaussian(mean=jnp.zeros(2), cov=cov)
        >>> [round(v, 4) for v in meta_sgd_learning_rates(prior, 2.0).tolist()]
        [0.1, 0.2]
    """
    return jnp.diagonal(prior.cov) / noise_var


def adapt(
    h: ObservationFn,
    prior_mean: ArrayLike,
    support: Any,
    learning_rate: Any,
) -> Float[Array, " state"]:
    r"""One gradient-descent-limit step from :math:`m_0` on a whole support set.

    The support set's tokens are stacked into one observation
    (:math:`y = (y_1, ..., y_n)`, :math:`h_{\rm all}(\theta) = (h(\theta, u_1),
    ..., h(\theta, u_n))`) and :func:`~kalmanjax.limits.gd_limit_filter` takes one
    step: :math:`m_0 + \alpha J_{\rm all}^\top e = m_0 - \alpha \nabla
    L_{\rm task}(m_0)` with :math:`L_{\rm task} = \tfrac12 \sum_j |y_j -
    h(\theta, u_j)|^2`. A scalar :math:`\alpha = \sigma^2/r` is the MAML inner
    step; :math:`\alpha` = :func:`meta_sgd_learning_rates` is Meta-SGD's.

    Args:
        h: ``h(theta, inputs) -> (obs,)`` for one token.
        prior_mean: :math:`m_0`, shape ``(k,)``.
        support: the support tokens' inputs, leading axis ``n``; ``"obs"`` of
            shape ``(n, obs)``.
        learning_rate: :math:`\alpha`: scalar, ``(k,)`` or ``(k, k)``.

    Returns:
        The adapted parameters, shape ``(k,)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> h = lambda th, u: u["x"] @ th
        >>> support = {"obs": jnp.ones((2, 1)), "x": jnp.ones((2, 1, 2))}
        >>> [round(v, 4) for v in adapt(h, jnp.zeros(2), support, 0.1).tolist()]
        [0.2, 0.2]
    """
    m0 = jnp.asarray(prior_mean)

    def h_all(theta, inputs):
        return jax.vmap(lambda u: h(theta, u))(inputs["support"]).reshape(-1)

    stacked = {"obs": jnp.reshape(get_obs(support), -1), "support": support}
    new, _ = gd_limit_filter(h_all, learning_rate).step(m0, stacked)
    return new
