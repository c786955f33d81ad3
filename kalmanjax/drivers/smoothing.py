r"""Smoothing drivers: the RTS smoother over filtered beliefs, and filter + smoother.

:func:`rts_smoother` runs the backward kernels of :mod:`kalmanjax.steps.backward`
over a filtered sequence, sequentially (``lax.scan``, reverse) or as a reverse
parallel prefix scan (:func:`~kalmanjax.core.scan.prefix_scan`; ``parallel`` as
for :func:`kalmanjax.run`).
:func:`kalman_smoother` is :func:`kalmanjax.kalman_filter`, :func:`kalmanjax.run`
and :func:`rts_smoother` in one call. :func:`sample_posterior` draws whole paths
from the smoothing distribution with the same backward kernels (FFBS). The time
convention: smoothing ``states[k]`` uses the dynamics of ``xs[k + 1]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ..core import checks
from ..core.batching import batched, lapack_flops
from ..core.beliefs import Gaussian, SqrtGaussian
from ..core.linalg import GENERAL, LinalgOps, choose_ops, compact
from ..core.models import (
    DynamicsLike,
    LinearDynamics,
    NonlinearDynamics,
    ObservationLike,
    resolve,
    with_checked_covariance,
)
from ..core.scan import Parallel, ScanMethod, prefix_scan, scan_method
from ..filters.kalman import kalman_filter
from ..steps.associative import combine_kernels
from ..steps.backward import BackwardKernel, apply_kernel, backward_kernel
from ..steps.linear import Form
from ..steps.linearize import Method
from ..steps.nonlinear import linearize_about
from ..steps.sigma_points import SigmaPointRule
from .filtering import run

__all__ = [
    "SmootherResult",
    "kalman_smoother",
    "lag_one_covariances",
    "rts_smoother",
    "sample_posterior",
]

#: what a backward pass accepts: the filters' dynamics, linear or nonlinear
BackwardDynamics = (
    DynamicsLike
    | NonlinearDynamics
    | Callable[[Any], LinearDynamics | NonlinearDynamics]
)


def rts_smoother(
    dynamics: BackwardDynamics,
    filtered: Gaussian | SqrtGaussian,
    xs: Any = None,
    *,
    parallel: Parallel = False,
    fast: bool | None = None,
    method: Method | SigmaPointRule = "jacfwd",
) -> Gaussian | SqrtGaussian:
    r"""Backward RTS pass over filtered beliefs stacked on a leading time axis.

    With ``NonlinearDynamics`` (after :func:`kalmanjax.extended_kalman_filter`)
    this is the extended RTS smoother: each step's dynamics are linearised at
    the filtered mean :math:`m_t`, where the EKF linearised them to predict.

    Args:
        dynamics: the ``LinearDynamics`` or ``NonlinearDynamics`` used by the
            filter, or the same function ``inputs -> dynamics``.
        filtered: the filtered beliefs for :math:`t = 1..T`, mean ``(T, state)``
            (``run(...).states``). A ``SqrtGaussian`` selects the square-root form.
        xs: the filter's per-step inputs; needed when ``dynamics`` is a function.
        parallel: combine the backward kernels with a reverse prefix scan, for
            accelerators (``True``/``"blocked"`` or ``"tree"``, as for
            :func:`kalmanjax.run`).
        fast: elementwise small-state kernels (``None``: when ``state <= 8``).
        method: how nonlinear dynamics are linearised: ``"jacfwd"`` or
            ``"jacrev"`` (at the filtered means: the extended RTS smoother), or
            the :class:`~kalmanjax.SigmaPointRule` of a
            :func:`kalmanjax.sigma_point_kalman_filter` (under the filtered
            beliefs: its RTS smoother).

    Returns:
        The smoothed beliefs :math:`p(x_t \mid y_{1:T})`, same type and shapes as
        ``filtered`` (for ``T = 0``, the empty ``filtered`` itself).

    Raises:
        ValueError: if ``dynamics`` is a function and ``xs`` is missing, or on
            shape mismatches.
    """
    owner = "rts_smoother"
    setup = _backward_setup(owner, dynamics, filtered, xs)
    if setup is None or filtered.mean.shape[0] == 1:  # T = 0 smooths to itself
        return filtered
    dynamics, next_inputs, chol_q = setup
    last = jax.tree_util.tree_map(lambda a: a[-1], filtered)
    head = jax.tree_util.tree_map(lambda a: a[:-1], filtered)
    ops = choose_ops(fast, filtered.mean.shape[1])
    if parallel:
        scan = scan_method(parallel)
        return _parallel_rts(dynamics, filtered, next_inputs, ops, chol_q, method, scan)

    def body(smoothed_next, step_in):
        filt, inputs = step_in
        kernel = _step_kernel(dynamics, filt, inputs, ops, chol_q, owner, method)
        smoothed = apply_kernel(kernel, smoothed_next, ops)
        return smoothed, smoothed

    _, smoothed = lax.scan(body, last, (head, next_inputs), reverse=True)
    return jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a, b[None]], axis=0), smoothed, last
    )


def _backward_setup(owner: str, dynamics, filtered, xs):
    """Check a backward pass's arguments; ``None`` for ``T = 0``.

    Returns ``(dynamics, next_inputs, chol_q)``: the dynamics (a fixed model read
    as the filter reads it), the inputs of steps ``2..T`` (for a model function)
    and a factor of a fixed ``Q`` for the square-root form.
    """
    if filtered.mean.ndim != 2:
        raise ValueError(
            f"{owner}: filtered.mean must have shape (T, state), got "
            f"{filtered.mean.shape}"
        )
    num_steps, n = filtered.mean.shape
    if num_steps == 0:
        return None
    checks.check_belief(jax.tree_util.tree_map(lambda a: a[-1], filtered), owner)
    chol_q = None
    if callable(dynamics):
        if xs is None:
            raise ValueError(f"{owner}: dynamics is a function of the inputs; pass xs")
        next_inputs = jax.tree_util.tree_map(lambda a: a[1:], xs)
    else:
        next_inputs = None
        if isinstance(dynamics, NonlinearDynamics):
            checks.check_array(
                dynamics.Q,
                "dynamics.Q",
                (n, n),
                filtered.mean.dtype,
                "(state, state)",
                owner,
            )
        else:
            checks.check_dynamics(dynamics, n, filtered.mean.dtype, owner)
        dynamics = with_checked_covariance(dynamics)  # as the filters read it
        if isinstance(filtered, SqrtGaussian):
            chol_q = GENERAL.psd_cholesky(dynamics.Q)
    return dynamics, next_inputs, chol_q


def _step_kernel(dynamics, filt, inputs, ops, chol_q, owner, method):
    r"""The backward kernel of one step, from the dynamics of the step after it.

    Nonlinear dynamics are linearised at the filtered mean :math:`m_t`, as the
    extended Kalman filter predicts: :math:`F = \partial f / \partial x` at
    :math:`m_t` and :math:`b = f(m_t) - F m_t`, so the kernel predicts
    :math:`f(m_t)` (the extended RTS smoother). With a sigma-point rule,
    :math:`(F, b, Q + \Omega)` is the statistical linear regression of :math:`f`
    under the filtered belief, as the sigma-point filters predict (the
    unscented / cubature / Gauss-Hermite RTS smoother).
    """
    dyn = resolve(dynamics, inputs)
    n, dtype = filt.mean.shape[0], filt.mean.dtype
    if isinstance(dyn, NonlinearDynamics):
        fx, F, omega = linearize_about(dyn.fn, filt, inputs, method, ops, owner)
        Q = dyn.Q
        if omega is not None:  # the statistical regression's residual noise
            Q, chol_q = Q + omega, None
        dyn = LinearDynamics(F=F, Q=Q, b=fx - ops.matmul(F, filt.mean))
    checks.check_dynamics(dyn, n, dtype, owner)
    return backward_kernel(filt, dyn, ops, chol_q)


def sample_posterior(
    key: jax.Array,
    dynamics: BackwardDynamics,
    filtered: Gaussian | SqrtGaussian,
    xs: Any = None,
    *,
    parallel: Parallel = False,
    fast: bool | None = None,
    method: Method | SigmaPointRule = "jacfwd",
) -> jax.Array:
    r"""One draw of the whole path :math:`x_{1:T} \sim p(x_{1:T} \mid y_{1:T})`.

    Forward filtering, backward sampling: :math:`x_T` from the last filtered
    belief, then :math:`x_t \sim p(x_t \mid x_{t+1}, y_{1:t}) = N(G_t x_{t+1} +
    g_t, \Lambda_t)`, the RTS backward kernel
    (:class:`~kalmanjax.steps.backward.BackwardKernel`). In square-root form
    (``filtered`` a ``SqrtGaussian``) the kernel's factor of :math:`\Lambda_t`
    comes from one QR, with no covariance formed; in covariance form
    :math:`\Lambda_t` is factored by a PSD Cholesky that accepts a singular
    matrix. Neither adds jitter. ``parallel`` composes the affine maps
    :math:`x_t = G_t x_{t+1} + (g_t + L_t z_t)` with a reverse
    prefix scan (as for :func:`kalmanjax.run`); with the same ``key`` both
    paths draw the same sample. ``jax.vmap`` over keys draws many.

    Args:
        key: a JAX PRNG key.
        dynamics: as for :func:`rts_smoother`.
        filtered: the filtered beliefs, mean ``(T, state)`` (``run(...).states``).
        xs: the filter's per-step inputs; needed when ``dynamics`` is a function.
        parallel: the reverse parallel scan instead of the sequential one.
        fast: elementwise small-state kernels (``None``: when ``state <= 8``).
        method: as for :func:`rts_smoother`; nonlinear dynamics sample the
            model linearised about the filtered beliefs (the EKF's, or a
            sigma-point filter's).

    Returns:
        ``(T, state)``, in the beliefs' dtype.

    Raises:
        ValueError: as :func:`rts_smoother`.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.LinearDynamics(F=jnp.eye(1), Q=jnp.eye(1))
        >>> obs = kj.LinearObservation(H=jnp.eye(1), R=jnp.eye(1))
        >>> prior = kj.Gaussian(mean=jnp.zeros(1), cov=jnp.eye(1))
        >>> out = kj.run(kj.kalman_filter(dyn, obs), prior, jnp.ones((5, 1)))
        >>> kj.sample_posterior(jax.random.key(0), dyn, out.states).shape
        (5, 1)
    """
    owner = "sample_posterior"
    setup = _backward_setup(owner, dynamics, filtered, xs)
    num_steps, n = filtered.mean.shape
    dtype = filtered.mean.dtype
    if setup is None:
        return jnp.zeros((0, n), dtype)
    dynamics, next_inputs, chol_q = setup
    sqrt = isinstance(filtered, SqrtGaussian)
    ops = choose_ops(fast, n)
    z = jax.random.normal(key, (num_steps, n), dtype)

    def factor(cond):
        return cond if sqrt else ops.psd_cholesky(cond)

    last_cov = filtered.chol[-1] if sqrt else filtered.cov[-1]
    x_last = filtered.mean[-1] + ops.matmul(factor(last_cov), z[-1])
    if num_steps == 1:
        return x_last[None]
    head = jax.tree_util.tree_map(lambda a: a[:-1], filtered)

    def kernel(filt, inputs):
        return _step_kernel(dynamics, filt, inputs, ops, chol_q, owner, method)

    if parallel:
        kernels = batched(kernel, lapack_flops(n), lapack=ops is GENERAL)(
            head, next_inputs
        )
        noise = batched(
            lambda c, e: ops.matmul(factor(c), e),
            lapack_flops(n),
            lapack=ops is GENERAL,
        )(kernels.cond, z[:-1])
        gains = jnp.concatenate([kernels.gain, jnp.zeros((1, n, n), dtype)])
        offsets = jnp.concatenate([kernels.offset + noise, x_last[None]])

        def compose(later, earlier):  # x_t = G x_{t+1} + c, through t+1..T
            (g2, c2), (g1, c1) = later, earlier
            return ops.matmul(g1, g2), ops.matmul(g1, c2) + c1

        return prefix_scan(
            batched(compose, 0, lapack=False),
            (gains, offsets),
            reverse=True,
            method=scan_method(parallel),
        )[1]

    def body(x_next, step_in):
        filt, inputs, e = step_in
        k = kernel(filt, inputs)
        x = ops.matmul(k.gain, x_next) + k.offset + ops.matmul(factor(k.cond), e)
        return x, x

    _, path = lax.scan(body, x_last, (head, next_inputs, z[:-1]), reverse=True)
    return jnp.concatenate([path, x_last[None]], axis=0)


def lag_one_covariances(
    dynamics: BackwardDynamics,
    filtered: Gaussian | SqrtGaussian,
    smoothed: Gaussian | SqrtGaussian,
    xs: Any = None,
    *,
    fast: bool | None = None,
    method: Method | SigmaPointRule = "jacfwd",
) -> jax.Array:
    r"""The smoother's lag-one cross-covariances, what EM needs beside its marginals.

    :math:`\operatorname{Cov}(x_{t+1}, x_t \mid y_{1:T}) = P^s_{t+1} G_t^\top`,
    with :math:`G_t` the RTS gain of step :math:`t` (the backward kernel's).

    Args:
        dynamics: as for :func:`rts_smoother`.
        filtered: the filtered beliefs, mean ``(T, state)``.
        smoothed: ``rts_smoother(dynamics, filtered, xs)``, the same shapes.
        xs: the filter's per-step inputs; needed when ``dynamics`` is a function.
        fast: elementwise small-state kernels (``None``: when ``state <= 8``).
        method: as for :func:`rts_smoother`.

    Returns:
        ``(T - 1, state, state)``; entry ``k`` is the covariance of
        ``states[k + 1]`` with ``states[k]`` (for ``T <= 1``, an empty array).

    Raises:
        ValueError: as :func:`rts_smoother`, or if ``smoothed`` and ``filtered``
            differ in shape.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.LinearDynamics(F=jnp.eye(1), Q=jnp.eye(1))
        >>> obs = kj.LinearObservation(H=jnp.eye(1), R=jnp.eye(1))
        >>> prior = kj.Gaussian(mean=jnp.zeros(1), cov=jnp.eye(1))
        >>> out = kj.kalman_smoother(dyn, obs, prior, jnp.ones((4, 1)))
        >>> kj.lag_one_covariances(dyn, out.filtered, out.smoothed).shape
        (3, 1, 1)
    """
    owner = "lag_one_covariances"
    if smoothed.mean.shape != filtered.mean.shape:
        raise ValueError(
            f"{owner}: smoothed.mean must have the shape of filtered.mean "
            f"{filtered.mean.shape}, got {smoothed.mean.shape}"
        )
    setup = _backward_setup(owner, dynamics, filtered, xs)
    num_steps, n = filtered.mean.shape
    if setup is None or num_steps == 1:
        return jnp.zeros((max(num_steps - 1, 0), n, n), filtered.mean.dtype)
    dynamics, next_inputs, chol_q = setup
    ops = choose_ops(fast, n)
    head = jax.tree_util.tree_map(lambda a: a[:-1], filtered)
    gains = batched(
        lambda f, u: _step_kernel(dynamics, f, u, ops, chol_q, owner, method).gain,
        lapack_flops(n),
        lapack=ops is GENERAL,
    )(head, next_inputs)
    cov = smoothed.cov[1:]  # a SqrtGaussian forms L L^T
    return cov @ jnp.swapaxes(gains, -1, -2)


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
    parallel: Parallel = False,
    update_first: bool = False,
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
        update_first: ``xs[0]`` observes the prior's state, whose smoothed belief
            is then ``smoothed[0]`` (see :func:`kalmanjax.run`).
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
    result = run(filt, prior, xs, parallel=parallel, update_first=update_first)
    smoothed = rts_smoother(dynamics, result.states, xs, parallel=parallel, fast=fast)
    return SmootherResult(
        filtered=result.states,
        smoothed=smoothed,
        log_marginal_likelihood=jnp.sum(result.infos.log_likelihood),
    )


def _parallel_rts(
    dynamics, filtered, next_inputs, ops: LinalgOps, chol_q, method, scan: ScanMethod
):
    """The RTS smoother as a reverse parallel scan of the backward kernels."""
    sqrt = isinstance(filtered, SqrtGaussian)
    n = filtered.mean.shape[1]
    head = jax.tree_util.tree_map(lambda a: a[:-1], filtered)

    def vmapped(fn):
        return batched(fn, lapack_flops(n), lapack=ops is GENERAL)

    kernels = vmapped(
        lambda f, u: _step_kernel(dynamics, f, u, ops, chol_q, "rts_smoother", method)
    )(head, next_inputs)
    # the last step has no successor: x_T | y_1:T is its filtered belief
    last = BackwardKernel(
        gain=jnp.zeros((1, n, n), filtered.mean.dtype),
        offset=filtered.mean[-1:],
        cond=(filtered.chol if sqrt else filtered.cov)[-1:],
    )
    kernels = jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a, b], axis=0), kernels, last
    )
    out = prefix_scan(
        vmapped(
            lambda later, earlier: combine_kernels(later, earlier, compact(ops), sqrt)
        ),
        kernels,
        reverse=True,
        method=scan,
    )
    return (SqrtGaussian if sqrt else Gaussian)(out.offset, out.cond)
