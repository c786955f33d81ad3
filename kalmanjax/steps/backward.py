r"""Backward kernels of Rauch-Tung-Striebel smoothing (covariance and square root).

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

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..core.beliefs import Gaussian, SqrtGaussian
from ..core.linalg import (
    LinalgOps,
    factor_of_sum,
    mT,
    skip_zero_pivots,
    symmetrize,
)
from ..core.models import LinearDynamics

__all__ = ["BackwardKernel", "apply_kernel", "backward_kernel", "smooth_step"]


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
        Q = symmetrize(dyn.Q)
        if chol_q is None:
            chol_q = ops.psd_cholesky(Q)
        # the factor of [[P^-, F P], [P F^T, P]] = [[Q, 0], [0, 0]] + [F L; L][.]^T
        joint = jnp.concatenate([ops.matmul(F, L), L], axis=0)
        noise = jnp.zeros((2 * n, 2 * n), L.dtype).at[:n, :n].set(Q)
        noise_factor = jnp.concatenate([chol_q, jnp.zeros((n, n), L.dtype)], axis=0)
        tri = factor_of_sum(ops, joint, noise, noise_factor)
        chol_pred, g_factor, cond = tri[:n, :n], tri[n:, :n], tri[n:, n:]
        # G' L_pred^{-1}, on the range of a singular L_pred (a deterministic state)
        gain = mT(ops.solve_lower_t(*skip_zero_pivots(chol_pred, mT(g_factor))))
    else:
        P = filtered.cov
        FP = ops.matmul(F, P)
        cov_pred = ops.matmul(FP, mT(F)) + symmetrize(dyn.Q)
        # P^- may be singular (a deterministic state component): G is then
        # P F^T (P^-)^+ on its range, any generalised inverse giving the same kernel
        chol_pred = ops.psd_cholesky(cov_pred)
        half = ops.solve_lower(*skip_zero_pivots(chol_pred, FP))
        gain = mT(ops.solve_lower_t(*skip_zero_pivots(chol_pred, half)))
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


def smooth_step(filtered, smoothed_next, dyn: LinearDynamics, ops: LinalgOps, chol_q):
    r"""One backward step: :math:`p(x_t \mid y_{1:T})` from the step after it.

    ``filtered`` is :math:`p(x_t \mid y_{1:t})` and ``dyn`` the dynamics of step
    :math:`t+1`; ``chol_q`` an optional precomputed factor of its ``Q``.
    """
    return apply_kernel(backward_kernel(filtered, dyn, ops, chol_q), smoothed_next, ops)
