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


class BackwardKernel(NamedTuple):
    r"""The smoothing kernel of one step.

    :math:`p(x_t \mid x_{t+1}, y_{1:t}) = N(G x_{t+1} + g, \Lambda)`.

    Attributes:
        gain: :math:`G = P_t F^\top (P^-_{t+1})^{-1}`, shape ``(state, state)``.
        offset: :math:`g = m_t - G m^-_{t+1}`, shape ``(state,)``.
        cond: :math:`\Lambda = P_t - G P^-_{t+1} G^\top` (covariance form) or its
            lower-triangular factor (square-root form), shape ``(state, state)``.
    """

    gain: jax.Array
    offset: jax.Array
    cond: jax.Array


def backward_kernel(filtered, dyn: LinearDynamics, ops: LinalgOps, chol_q=None):
    r"""The :class:`BackwardKernel` of a filtered belief and the next step's dynamics.

    A ``SqrtGaussian`` gives the factor of :math:`\Lambda` from one QR of
    :math:`\begin{bmatrix} F L & L_Q \\ L & 0 \end{bmatrix}`, whose
    triangular factor is
    :math:`\begin{bmatrix} L^- & 0 \\ G L^- & L_\Lambda \end{bmatrix}`.
    """
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
        chol_pred, g_factor, cond = tri[:n, :n], tri[n:, :n], tri[n:, n:]
        gain = mT(ops.solve_lower_t(chol_pred, mT(g_factor)))  # G' L_pred^{-1}
    else:
        P = filtered.cov
        FP = ops.matmul(F, P)
        cov_pred = ops.matmul(FP, mT(F)) + dyn.Q  # Cholesky reads one triangle
        chol_pred = ops.cholesky(cov_pred)
        gain = mT(ops.solve_lower_t(chol_pred, ops.solve_lower(chol_pred, FP)))
        cond = symmetrize(P - ops.matmul(gain, FP))  # P - G P^- G^T = P - G F P
    offset = filtered.mean - ops.matmul(gain, mean_pred)
    return BackwardKernel(gain=gain, offset=offset, cond=cond)


def apply_kernel(kernel: BackwardKernel, smoothed_next, ops: LinalgOps):
    """Push the smoothed belief over the next state through the kernel."""
    G = kernel.gain
    mean = ops.matmul(G, smoothed_next.mean) + kernel.offset
    if isinstance(smoothed_next, SqrtGaussian):
        factor = jnp.concatenate([ops.matmul(G, smoothed_next.chol), kernel.cond], 1)
        return SqrtGaussian(mean=mean, chol=ops.tria(factor))
    cov = ops.matmul(ops.matmul(G, smoothed_next.cov), mT(G)) + kernel.cond
    return Gaussian(mean=mean, cov=symmetrize(cov))


def _smooth_step(filtered, smoothed_next, dyn: LinearDynamics, ops: LinalgOps, chol_q):
    return apply_kernel(backward_kernel(filtered, dyn, ops, chol_q), smoothed_next, ops)


def rts_smoother(
    dynamics: DynamicsLike,
    filtered: Gaussian | SqrtGaussian,
    xs: Any = None,
    *,
    parallel: bool = False,
    fast: bool | None = None,
) -> Gaussian | SqrtGaussian:
    r"""Backward RTS pass over filtered beliefs stacked on a leading time axis.

    Args:
        dynamics: the ``LinearDynamics`` used by the filter, or the same function
            ``inputs -> LinearDynamics``.
        filtered: the filtered beliefs for :math:`t = 1..T`, mean ``(T, state)``
            (``run(...).states``). A ``SqrtGaussian`` selects the square-root form.
        xs: the filter's per-step inputs; needed when ``dynamics`` is a function.
        parallel: combine the backward kernels with a reverse
            ``lax.associative_scan`` (span :math:`O(\log T)`, for accelerators).
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
    if parallel:
        from .parallel import parallel_smoother  # noqa: PLC0415  (imports this module)

        return parallel_smoother(dynamics, filtered, xs, ops=ops)

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
    parallel: bool = False,
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
        parallel: use the temporally parallel filter and smoother.
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
    result = run(filt, prior, xs, parallel=parallel)
    smoothed = rts_smoother(dynamics, result.states, xs, parallel=parallel, fast=fast)
    return SmootherResult(
        filtered=result.states,
        smoothed=smoothed,
        log_marginal_likelihood=jnp.sum(result.infos.log_likelihood),
    )
