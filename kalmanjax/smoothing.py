r"""Rauch-Tung-Striebel smoothing (covariance and square-root forms).

Given filtered beliefs :math:`p(x_t \mid y_{1:t})` for :math:`t = 1..T` (the
``states`` of :func:`kalmanjax.run`), the backward pass returns
:math:`p(x_t \mid y_{1:T})`:

.. math::

    m^-_{t+1} = F m_t + b, \quad P^-_{t+1} = F P_t F^\top + Q, \quad
    G_t = P_t F^\top (P^-_{t+1})^{-1}

    m^s_t = m_t + G_t (m^s_{t+1} - m^-_{t+1}), \quad
    P^s_t = P_t + G_t (P^s_{t+1} - P^-_{t+1}) G_t^\top

where :math:`F, Q, b` are the dynamics of step :math:`t+1`, i.e. those built from
``xs[t]`` (0-based: smoothing ``states[k]`` uses ``xs[k + 1]``). The square-root form
triangularises :math:`\begin{bmatrix} F L_t & L_Q \\ L_t & 0\end{bmatrix}` to get
:math:`L^-`, :math:`G_t` and the factor of :math:`P_t - G_t P^-_{t+1} G_t^\top`
without forming a covariance.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from . import _checks
from ._base import Gaussian, SqrtGaussian
from ._linalg import GENERAL, LinalgOps, choose_ops, mT, symmetrize
from .filtering import run
from .kalman import Form, kalman_filter
from .models import DynamicsLike, LinearDynamics, ObservationLike, resolve

__all__ = ["SmootherResult", "kalman_smoother", "rts_smoother"]


def _smooth_step(filtered, smoothed_next, dyn: LinearDynamics, ops: LinalgOps, chol_q):
    F = dyn.F
    mean_pred = ops.matmul(F, filtered.mean)
    if dyn.b is not None:
        mean_pred = mean_pred + dyn.b
    if isinstance(filtered, SqrtGaussian):
        n = filtered.mean.shape[0]
        L = filtered.chol
        if chol_q is None:
            chol_q = ops.psd_cholesky(dyn.Q)
        top = jnp.concatenate([ops.matmul(F, L), chol_q], axis=1)
        bottom = jnp.concatenate([L, jnp.zeros((n, n), L.dtype)], axis=1)
        tri = ops.tria(jnp.concatenate([top, bottom], axis=0))
        chol_pred, g_factor, chol_cond = tri[:n, :n], tri[n:, :n], tri[n:, n:]
        gain = mT(ops.solve_lower_t(chol_pred, mT(g_factor)))  # G' L_pred^{-1}
        mean = filtered.mean + ops.matmul(gain, smoothed_next.mean - mean_pred)
        chol = ops.tria(
            jnp.concatenate([ops.matmul(gain, smoothed_next.chol), chol_cond], axis=1)
        )
        return SqrtGaussian(mean=mean, chol=chol)
    P = filtered.cov
    FP = ops.matmul(F, P)
    cov_pred = ops.matmul(FP, mT(F)) + dyn.Q  # Cholesky reads one triangle
    chol_pred = ops.cholesky(cov_pred)
    gain = mT(ops.solve_lower_t(chol_pred, ops.solve_lower(chol_pred, FP)))
    mean = filtered.mean + ops.matmul(gain, smoothed_next.mean - mean_pred)
    diff = smoothed_next.cov - cov_pred
    cov = P + ops.matmul(ops.matmul(gain, diff), mT(gain))
    return Gaussian(mean=mean, cov=symmetrize(cov))


def rts_smoother(
    dynamics: DynamicsLike,
    filtered: Gaussian | SqrtGaussian,
    xs: Any = None,
    *,
    fast: bool | None = None,
) -> Gaussian | SqrtGaussian:
    r"""Backward RTS pass over filtered beliefs stacked on a leading time axis.

    Args:
        dynamics: the ``LinearDynamics`` used by the filter, or the same function
            ``inputs -> LinearDynamics``.
        filtered: the filtered beliefs for :math:`t = 1..T`, mean ``(T, state)``
            (``run(...).states``). A ``SqrtGaussian`` selects the square-root form.
        xs: the filter's per-step inputs; needed when ``dynamics`` is a function.
        fast: elementwise small-state kernels (``None``: when ``state <= 8``).

    Returns:
        The smoothed beliefs :math:`p(x_t \mid y_{1:T})`, same type and shapes as
        ``filtered``.

    Raises:
        ValueError: if ``dynamics`` is a function and ``xs`` is missing, or on
            shape mismatches.
    """
    owner = "rts_smoother"
    if filtered.mean.ndim != 2:
        raise ValueError(
            f"{owner}: filtered.mean must have shape (T, state), got "
            f"{filtered.mean.shape}"
        )
    num_steps, n = filtered.mean.shape
    dtype = filtered.mean.dtype
    last = jax.tree_util.tree_map(lambda a: a[-1], filtered)
    _checks.check_belief(last, owner)
    if num_steps == 1:
        return filtered
    head = jax.tree_util.tree_map(lambda a: a[:-1], filtered)
    chol_q = None
    if callable(dynamics):
        if xs is None:
            raise ValueError(f"{owner}: dynamics is a function of the inputs; pass xs")
        next_inputs = jax.tree_util.tree_map(lambda a: a[1:], xs)
    else:
        next_inputs = None
        _checks.check_dynamics(dynamics, n, dtype, owner)
        if isinstance(filtered, SqrtGaussian):
            chol_q = GENERAL.psd_cholesky(dynamics.Q)
    ops = choose_ops(fast, n)

    def body(smoothed_next, step_in):
        filt, inputs = step_in
        dyn = resolve(dynamics, inputs)
        _checks.check_dynamics(dyn, n, dtype, owner)
        smoothed = _smooth_step(filt, smoothed_next, dyn, ops, chol_q)
        return smoothed, smoothed

    _, smoothed = lax.scan(body, last, (head, next_inputs), reverse=True)
    return jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a, b[None]], axis=0), smoothed, last
    )


class SmootherResult(NamedTuple):
    r"""What :func:`kalman_smoother` returns.

    Attributes:
        filtered: filtered beliefs :math:`p(x_t \mid y_{1:t})`, ``t = 1..T``.
        smoothed: smoothed beliefs :math:`p(x_t \mid y_{1:T})`, ``t = 1..T``.
        log_marginal_likelihood: :math:`\log p(y_{1:T})`, shape ``()``.
    """

    filtered: Gaussian | SqrtGaussian
    smoothed: Gaussian | SqrtGaussian
    log_marginal_likelihood: jax.Array


def kalman_smoother(
    dynamics: DynamicsLike,
    observation: ObservationLike,
    prior: Gaussian | SqrtGaussian,
    xs: Any,
    *,
    form: Form = "dense",
    missing: bool = True,
    fast: bool | None = None,
) -> SmootherResult:
    """Kalman filter followed by the RTS smoother, in one call.

    Args:
        dynamics: as for :func:`kalmanjax.kalman_filter`.
        observation: as for :func:`kalmanjax.kalman_filter`.
        prior: the belief over :math:`x_0`.
        xs: per-step inputs with a leading time axis (see :func:`kalmanjax.run`).
        form: ``"dense"``, ``"joseph"`` or ``"sqrt"`` (the smoother follows: the
            covariance-form smoother for the first two).
        missing: NaN observations are missing (see :func:`kalmanjax.kalman_filter`).
        fast: elementwise small-state kernels (``None``: chosen from the shapes).

    Returns:
        A :class:`SmootherResult`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.LinearDynamics(F=jnp.eye(1), Q=jnp.eye(1))
        >>> obs = kj.LinearObservation(H=jnp.eye(1), R=jnp.eye(1))
        >>> prior = kj.Gaussian(mean=jnp.zeros(1), cov=jnp.eye(1))
        >>> out = kj.kalman_smoother(dyn, obs, prior, jnp.ones((5, 1)))
        >>> out.smoothed.mean.shape
        (5, 1)
    """
    filt = kalman_filter(dynamics, observation, form=form, missing=missing, fast=fast)
    result = run(filt, prior, xs)
    smoothed = rts_smoother(dynamics, result.states, xs, fast=fast)
    return SmootherResult(
        filtered=result.states,
        smoothed=smoothed,
        log_marginal_likelihood=jnp.sum(result.infos.log_likelihood),
    )
