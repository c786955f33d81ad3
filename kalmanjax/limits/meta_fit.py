r"""Type-II maximum likelihood of the task prior with ``optax.adam`` (needs optax).

:func:`fit_meta_prior` maximises :func:`~kalmanjax.limits.meta_log_likelihood`
(:mod:`kalmanjax.limits.meta_learning`) over :class:`MetaParams` by full-batch
Adam in one ``lax.scan``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..core.beliefs import Gaussian
from ..core.models import get_obs
from ._common import check_state
from .meta_learning import MetaParams, meta_log_likelihood, meta_prior

__all__ = ["MetaFit", "fit_meta_prior"]


class MetaFit(NamedTuple):
    r"""What :func:`fit_meta_prior` returns.

    Attributes:
        params: the fitted :class:`MetaParams`.
        prior: the fitted prior ``Gaussian`` :math:`(m_0, \Sigma_0)`.
        noise_var: the fitted :math:`r`.
        process_var: the fitted :math:`q` (0 when not learned).
        losses: the negative log-likelihood per observed number at every step,
            shape ``(steps,)``.
    """

    params: MetaParams
    prior: Gaussian
    noise_var: jax.Array
    process_var: jax.Array
    losses: jax.Array


def fit_meta_prior(
    xs: Any,
    init: MetaParams,
    *,
    steps: int = 500,
    learning_rate: float = 0.05,
    learn_noise: bool = True,
    learn_process_noise: bool = False,
    design: Any = None,
) -> MetaFit:
    r"""Learn :math:`(m_0, \Sigma_0, r[, q])` by type-II maximum likelihood.

    Minimises :math:`-\frac{1}{n}\sum_i \log p(y^{(i)}_{1:T})` (:math:`n` the
    number of observed, non-NaN, entries; tasks padded with NaN add nothing) with
    ``optax.adam(learning_rate)`` for ``steps`` full-batch steps (one
    ``lax.scan``; jit the call for speed).

    Args:
        xs: the tasks' per-step inputs, leading axes ``(tasks, T)`` (see
            :func:`meta_log_likelihood`).
        init: the starting :class:`MetaParams` (:func:`init_meta_params`); a
            ``(k,)`` ``scale`` fits a diagonal :math:`\Sigma_0`.
        steps: optimisation steps.
        learning_rate: Adam's step size.
        learn_noise: also learn :math:`r` (else keep ``init``'s).
        learn_process_noise: also learn :math:`q` (``init`` must then have a
            finite ``log_process_var``).
        design: ``inputs -> H`` (see :func:`meta_log_likelihood`).

    Returns:
        A :class:`MetaFit`.

    Examples:
        >>> import jax
        >>> from kalmanjax.limits import init_meta_params
        >>> xs = {"obs": jax.random.normal(jax.random.key(0), (8, 4, 1)),
        ...       "x": jax.random.normal(jax.random.key(1), (8, 4, 2))}
        >>> fit = fit_meta_prior(xs, init_meta_params(2), steps=5)
        >>> fit.prior.cov.shape, fit.losses.shape
        ((2, 2), (5,))
    """
    owner = "fit_meta_prior"
    obs = get_obs(xs)
    if np.ndim(obs) != 3:
        raise ValueError(
            f"{owner}: xs['obs'] must have shape (tasks, T, obs), got {np.shape(obs)}"
        )
    check_state(init.mean, owner)
    if learn_process_noise and not np.isfinite(np.asarray(init.log_process_var)):
        raise ValueError(
            f"{owner}: learn_process_noise=True needs a finite initial "
            "log_process_var (init_meta_params(..., process_var=q > 0))"
        )
    # per observed number (NaN = missing; a task padded with NaN adds nothing)
    num = jnp.maximum(jnp.sum(~jnp.isnan(obs)), 1).astype(init.mean.dtype)
    keep = (True, True, learn_noise, learn_process_noise)  # per MetaParams field

    def masked(tree: MetaParams) -> MetaParams:
        return MetaParams(
            *(x if k else jnp.zeros_like(x) for x, k in zip(tree, keep, strict=True))
        )

    def loss(params):
        return -meta_log_likelihood(params, xs, design=design) / num

    tx = optax.adam(learning_rate)

    def body(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(loss)(params)
        grads = masked(grads)
        # optax.adam raises its step count (int32) to a float power, which JAX's
        # strict dtype promotion rejects; allow standard promotion for that call
        with jax.numpy_dtype_promotion("standard"):
            updates, state = tx.update(grads, state, params)
        updates = masked(cast(MetaParams, updates))
        return (cast(MetaParams, optax.apply_updates(params, updates)), state), value

    (params, _), losses = jax.lax.scan(body, (init, tx.init(init)), None, length=steps)
    return MetaFit(
        params=params,
        prior=meta_prior(params),
        noise_var=jnp.exp(params.log_noise_var),
        process_var=jnp.exp(params.log_process_var),
        losses=losses,
    )
