r"""Smoothing drivers: the RTS smoother over filtered beliefs, and filter + smoother.

:func:`rts_smoother` runs the backward kernels of :mod:`kalmanjax.steps.backward`
over a filtered sequence, sequentially (``lax.scan``, reverse) or as a reverse
parallel prefix scan (``lax.associative_scan``, span :math:`O(\log T)`).
:func:`kalman_smoother` is :func:`kalmanjax.kalman_filter`, :func:`kalmanjax.run`
and :func:`rts_smoother` in one call. The time convention: smoothing
``states[k]`` uses the dynamics of ``xs[k + 1]``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ..core import checks
from ..core.batching import batched, lapack_flops
from ..core.beliefs import Gaussian, SqrtGaussian
from ..core.linalg import GENERAL, LinalgOps, choose_ops
from ..core.models import (
    DynamicsLike,
    ObservationLike,
    resolve,
    with_checked_covariance,
)
from ..filters.kalman import kalman_filter
from ..steps.associative import combine_kernels
from ..steps.backward import BackwardKernel, backward_kernel, smooth_step
from ..steps.linear import Form
from .filtering import run

__all__ = ["SmootherResult", "kalman_smoother", "rts_smoother"]


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
        ``filtered`` (for ``T = 0``, the empty ``filtered`` itself).

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
    if num_steps == 0:  # nothing was observed: the empty sequence smooths to itself
        return filtered
    last = jax.tree_util.tree_map(lambda a: a[-1], filtered)
    checks.check_belief(last, owner)
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
        checks.check_dynamics(dynamics, n, dtype, owner)
        dynamics = with_checked_covariance(dynamics)  # as kalman_filter reads it
        if isinstance(filtered, SqrtGaussian):
            chol_q = GENERAL.psd_cholesky(dynamics.Q)
    ops = choose_ops(fast, n)
    if parallel:
        return _parallel_rts(dynamics, filtered, next_inputs, ops, chol_q)

    def body(smoothed_next, step_in):
        filt, inputs = step_in
        dyn = resolve(dynamics, inputs)
        checks.check_dynamics(dyn, n, dtype, owner)
        smoothed = smooth_step(filt, smoothed_next, dyn, ops, chol_q)
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
    form: Form = "joseph",
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
        form: ``"joseph"`` (default), ``"dense"`` or ``"sqrt"`` (the smoother
            follows: the covariance-form smoother for the first two).
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


def _parallel_rts(dynamics, filtered, next_inputs, ops: LinalgOps, chol_q):
    """The RTS smoother as a reverse parallel scan of the backward kernels."""
    sqrt = isinstance(filtered, SqrtGaussian)
    n = filtered.mean.shape[1]
    head = jax.tree_util.tree_map(lambda a: a[:-1], filtered)

    def vmapped(fn):
        return batched(fn, lapack_flops(n), lapack=ops is GENERAL)

    if callable(dynamics):
        kernels = vmapped(lambda f, u: backward_kernel(f, resolve(dynamics, u), ops))(
            head, next_inputs
        )
    else:
        kernels = vmapped(lambda f: backward_kernel(f, dynamics, ops, chol_q))(head)
    # the last step has no successor: x_T | y_1:T is its filtered belief
    last = BackwardKernel(
        gain=jnp.zeros((1, n, n), filtered.mean.dtype),
        offset=filtered.mean[-1:],
        cond=(filtered.chol if sqrt else filtered.cov)[-1:],
    )
    kernels = jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a, b], axis=0), kernels, last
    )
    out = lax.associative_scan(
        vmapped(lambda later, earlier: combine_kernels(later, earlier, ops, sqrt)),
        kernels,
        reverse=True,
    )
    return (SqrtGaussian if sqrt else Gaussian)(out.offset, out.cond)
