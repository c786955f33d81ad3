r"""Temporally parallel Kalman filtering and RTS smoothing (``lax.associative_scan``).

The filter follows Sarkka & Garcia-Fernandez (2021): step :math:`t` becomes the
element :math:`(A, b, C, \eta, J)` of the conditional
:math:`p(x_t \mid x_{t-1}, y_t) = N(A x_{t-1} + b, C)` and of the likelihood
:math:`p(y_t \mid x_{t-1}) \propto N_I(x_{t-1}; \eta, J)`, and an associative
operator combines two consecutive elements, so all filtered marginals come out of
one prefix scan with span :math:`O(\log T)`. The square-root version carries
Cholesky-type factors :math:`C = U U^\top`, :math:`J = Z Z^\top` and combines them with
QR triangularisations only (after Yaghoobi et al. 2022; derived here with the
Woodbury identity :math:`(I + C J)^{-1} = I - U (I + \Phi\Phi^\top)^{-1} \Phi Z^\top`,
:math:`\Phi = U^\top Z`).

The log-likelihood, information gain and innovations are not carried through the
scan: once the filtered marginals are known, every step's prediction is known, and
one ``vmap`` of the sequential update over all steps gives exactly the sequential
quantities (this also avoids the large-initial-mean error seen in a peer's parallel
likelihood, dynamax #423). The smoother combines the per-step backward kernels
:math:`(G, g, \Lambda)` of :mod:`kalmanjax.smoothing` with a reverse scan.

Conventions, models, missing data (NaN) and the ``missing=`` switch are those of
the sequential filter; the results agree with it to rounding.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from . import _checks
from ._base import FilterResult, Gaussian, SqrtGaussian, to_dense, to_sqrt
from ._linalg import GENERAL, LinalgOps, mT, symmetrize
from .kalman import _mask_missing, _predict, _update, _zeros_if_none
from .models import LinearDynamics, LinearObservation, get_obs, resolve
from .smoothing import BackwardKernel, backward_kernel

__all__ = ["parallel_filter", "parallel_smoother"]


class _Element(NamedTuple):
    A: jax.Array  # (state, state)
    b: jax.Array  # (state,)
    C: jax.Array  # (state, state): covariance, or its factor U in square-root form
    eta: jax.Array  # (state,)
    J: jax.Array  # (state, state): information, or its factor Z in square-root form


# ---------------------------------------------------------- batched LAPACK guard

#: jaxlib's CPU LAPACK kernels (seen in 0.10.2) split a batched call whose batch x
#: cost reaches 200,000 flops into chunks on XLA's CPU thread pool and block a pool
#: thread until they finish; two such calls at once on a 2-thread pool deadlock.
#: Below this many flops per call a batch is never split.
_LAPACK_SPLIT_FLOPS = 200_000


def _batched(fn, ops: LinalgOps, n: int, in_axes=0):
    """``jax.vmap(fn, in_axes)``, except on CPU with the LAPACK kernels.

    There the batch is mapped in chunks (``lax.map``) small enough that no LAPACK
    call is split across the thread pool, so the parallel path cannot deadlock
    (at a cost in speed on CPU, where the sequential filter is faster anyway).
    The elementwise small-state kernels call no LAPACK and are always vmapped.
    """
    if ops is not GENERAL or jax.default_backend() != "cpu":
        return jax.vmap(fn, in_axes=in_axes)
    # ~4 n^3 flops per item: an LU or Cholesky with O(n) right-hand sides
    chunk = max(1, _LAPACK_SPLIT_FLOPS // (4 * n**3 + 1) - 1)

    def mapped(*args):
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
        batched = [a for a, ax in zip(args, axes, strict=True) if ax is not None]

        def one(items):
            it = iter(items)
            full = [
                next(it) if ax is not None else a
                for a, ax in zip(args, axes, strict=True)
            ]
            return fn(*full)

        return lax.map(one, batched, batch_size=chunk)

    return mapped


# ------------------------------------------------------------------- elements


def _element(
    mean_pred, cov_pred, F, obs_model: LinearObservation, y, ops, missing, sqrt
):
    """Condition ``N(F x + mean_pred, cov_pred)`` (a factor in sqrt form) on ``y``.

    Returns the element of step t given x_{t-1}; for the first step pass ``F = 0``
    and the predicted prior moments.
    """
    n = mean_pred.shape[0]
    dtype = mean_pred.dtype
    if missing:
        y, H, R, d, _ = _mask_missing(y, obs_model, dtype)
    else:
        H, R = obs_model.H, obs_model.R
        d = _zeros_if_none(obs_model.d, H.shape[0], dtype)
    m = H.shape[0]
    e = y - ops.matmul(H, mean_pred) - d
    HF = ops.matmul(H, F)
    if sqrt:
        top = jnp.concatenate([ops.cholesky(R), ops.matmul(H, cov_pred)], axis=1)
        bottom = jnp.concatenate([jnp.zeros((n, m), dtype), cov_pred], axis=1)
        tri = ops.tria(jnp.concatenate([top, bottom], axis=0))
        chol_s, gain_factor, U = tri[:m, :m], tri[m:, :m], tri[m:, m:]
        K = mT(ops.solve_lower_t(chol_s, mT(gain_factor)))
        C = U
    else:
        HP = ops.matmul(H, cov_pred)
        chol_s = ops.cholesky(ops.matmul(HP, mT(H)) + R)
        W = ops.solve_lower(chol_s, HP)
        K = mT(ops.solve_lower_t(chol_s, W))
        C = symmetrize(cov_pred - ops.matmul(mT(W), W))
    V = ops.solve_lower(chol_s, HF)  # L_S^{-1} H F
    eta = ops.matmul(mT(V), ops.solve_lower(chol_s, e))
    J = ops.tria(mT(V)) if sqrt else ops.matmul(mT(V), V)
    return _Element(
        A=F - ops.matmul(K, HF), b=mean_pred + ops.matmul(K, e), C=C, eta=eta, J=J
    )


def _combine_dense(first: _Element, second: _Element, ops: LinalgOps) -> _Element:
    A1, b1, C1, eta1, J1 = first
    A2, b2, C2, eta2, J2 = second
    n = b1.shape[0]
    eye = jnp.eye(n, dtype=b1.dtype)
    M = eye + ops.matmul(C1, J2)  # (I + C1 J2); its transpose is I + J2 C1
    rhs = jnp.concatenate([A1, (b1 + ops.matmul(C1, eta2))[:, None], C1], axis=1)
    x = ops.solve(M, rhs)
    xt = ops.solve(
        mT(M),
        jnp.concatenate(
            [(eta2 - ops.matmul(J2, b1))[:, None], ops.matmul(J2, A1)], axis=1
        ),
    )
    return _Element(
        A=ops.matmul(A2, x[:, :n]),
        b=ops.matmul(A2, x[:, n]) + b2,
        C=symmetrize(ops.matmul(ops.matmul(A2, x[:, n + 1 :]), mT(A2)) + C2),
        eta=ops.matmul(mT(A1), xt[:, 0]) + eta1,
        J=symmetrize(ops.matmul(mT(A1), xt[:, 1:]) + J1),
    )


def _combine_sqrt(first: _Element, second: _Element, ops: LinalgOps) -> _Element:
    A1, b1, U1, eta1, Z1 = first
    A2, b2, U2, eta2, Z2 = second
    n = b1.shape[0]
    eye = jnp.eye(n, dtype=b1.dtype)
    Phi = ops.matmul(mT(U1), Z2)
    L1 = ops.tria(jnp.concatenate([Phi, eye], axis=1))  # L1 L1^T = I + Phi Phi^T
    L2 = ops.tria(jnp.concatenate([mT(Phi), eye], axis=1))  # = I + Phi^T Phi

    def inv1(v):  # (I + Phi Phi^T)^{-1} v
        return ops.solve_lower_t(L1, ops.solve_lower(L1, v))

    # M = (I + C1 J2)^{-1} = I - U1 (I + Phi Phi^T)^{-1} Phi Z2^T
    Z2t = mT(Z2)
    MA1 = A1 - ops.matmul(U1, inv1(ops.matmul(Phi, ops.matmul(Z2t, A1))))
    Mb = b1 + ops.matmul(
        U1, inv1(ops.matmul(mT(U1), eta2) - ops.matmul(Phi, ops.matmul(Z2t, b1)))
    )
    U1L = mT(ops.solve_lower(L1, mT(U1)))  # U1 L1^{-T}
    # (I + J2 C1)^{-1} = M^T = I - Z2 Phi^T (I + Phi Phi^T)^{-1} U1^T
    w = eta2 - ops.matmul(Z2, ops.matmul(Z2t, b1))
    Nw = w - ops.matmul(Z2, ops.matmul(mT(Phi), inv1(ops.matmul(mT(U1), w))))
    Z2L = mT(ops.solve_lower(L2, Z2t))  # Z2 L2^{-T}
    return _Element(
        A=ops.matmul(A2, MA1),
        b=ops.matmul(A2, Mb) + b2,
        C=ops.tria(jnp.concatenate([ops.matmul(A2, U1L), U2], axis=1)),
        eta=ops.matmul(mT(A1), Nw) + eta1,
        J=ops.tria(jnp.concatenate([ops.matmul(mT(A1), Z2L), Z1], axis=1)),
    )


# ---------------------------------------------------------------------- filter


def _per_step(model, xs):
    """Return ``(model values, vmap axis)`` for a model.

    Stacked over time if ``model`` is a function of the inputs, else the fixed model
    itself with axis ``None`` (never copied T times).
    """
    if callable(model):
        return jax.vmap(lambda u: resolve(model, u))(xs), 0
    return model, None


def _at(tree, axis, t):
    return tree if axis is None else jax.tree_util.tree_map(lambda a: a[t], tree)


def parallel_filter(
    dynamics,
    observation,
    prior: Gaussian | SqrtGaussian,
    xs: Any,
    *,
    form: str = "dense",
    missing: bool = True,
    ops: LinalgOps = GENERAL,
) -> FilterResult:
    r"""Filter with a parallel prefix scan; same results as the sequential filter.

    Prefer ``run(kalman_filter(...), prior, xs, parallel=True)``, which calls this.

    Args:
        dynamics: ``LinearDynamics`` or a function of the per-step inputs.
        observation: ``LinearObservation`` or a function of the per-step inputs.
        prior: the belief over :math:`x_0` (before the first transition).
        xs: per-step inputs with a leading time axis (see :func:`kalmanjax.run`).
        form: ``"dense"``, ``"joseph"`` (dense scan, Joseph update for the
            reported step) or ``"sqrt"``.
        missing: NaN observations are missing (see
            :func:`kalmanjax.kalman_filter`).
        ops: the linear-algebra implementation (``kalmanjax._linalg``).

    Returns:
        A :class:`FilterResult` as from :func:`kalmanjax.run`.
    """
    sqrt = form == "sqrt"
    owner = "parallel_filter"
    n, dtype = _checks.check_belief(prior, owner)
    obs = get_obs(xs)
    dyn, dyn_axis = _per_step(dynamics, xs)
    obs_model, obs_axis = _per_step(observation, xs)
    first_dyn, first_obs = _at(dyn, dyn_axis, 0), _at(obs_model, obs_axis, 0)
    _checks.check_dynamics(first_dyn, n, dtype, owner)
    m = _checks.check_observation(first_obs, n, dtype, owner)
    _checks.check_obs(obs[0], m, dtype, owner)
    axes = (dyn_axis, obs_axis, 0)

    prior = to_sqrt(prior) if sqrt else to_dense(prior)

    def generic(d_t: LinearDynamics, o_t: LinearObservation, y_t):
        offset = _zeros_if_none(d_t.b, n, dtype)
        noise = ops.psd_cholesky(d_t.Q) if sqrt else d_t.Q
        return _element(offset, noise, d_t.F, o_t, y_t, ops, missing, sqrt)

    elements = _batched(generic, ops, n, in_axes=axes)(dyn, obs_model, obs)
    # the first step conditions the predicted prior instead: A = 0, eta = 0, J = 0
    predicted0 = _predict(prior, first_dyn, ops)
    cov0 = predicted0.chol if sqrt else predicted0.cov
    zero = jnp.zeros((n, n), dtype)
    first = _element(predicted0.mean, cov0, zero, first_obs, obs[0], ops, missing, sqrt)
    first = first._replace(eta=jnp.zeros((n,), dtype), J=zero)
    elements = jax.tree_util.tree_map(lambda a, f: a.at[0].set(f), elements, first)

    combine = _combine_sqrt if sqrt else _combine_dense
    scanned = lax.associative_scan(
        _batched(lambda e1, e2: combine(_Element(*e1), _Element(*e2), ops), ops, n),
        tuple(elements),
    )
    filtered = (SqrtGaussian if sqrt else Gaussian)(scanned[1], scanned[2])

    # every step's prediction is now known: one vmapped sequential update gives the
    # filtered beliefs and the infos exactly as the sequential filter defines them
    previous = jax.tree_util.tree_map(
        lambda p, f: jnp.concatenate([p[None], f[:-1]], axis=0), prior, filtered
    )

    def step(belief, d_t, o_t, y_t):
        predicted = _predict(belief, d_t, ops, sym=False)
        return _update(predicted, y_t, o_t, ops, form == "joseph", missing)

    states, infos = _batched(step, ops, n, in_axes=(0, *axes))(
        previous, dyn, obs_model, obs
    )
    final = jax.tree_util.tree_map(lambda a: a[-1], states)
    return FilterResult(final=final, states=states, infos=infos)


# -------------------------------------------------------------------- smoother


def parallel_smoother(
    dynamics,
    filtered: Gaussian | SqrtGaussian,
    xs: Any = None,
    *,
    ops: LinalgOps = GENERAL,
) -> Gaussian | SqrtGaussian:
    r"""RTS smoothing with a reverse parallel scan of the backward kernels.

    Prefer ``rts_smoother(..., parallel=True)``, which calls this. Arguments and
    result as for :func:`kalmanjax.rts_smoother`.
    """
    sqrt = isinstance(filtered, SqrtGaussian)
    num_steps, n = filtered.mean.shape
    if num_steps == 1:
        return filtered
    head = jax.tree_util.tree_map(lambda a: a[:-1], filtered)
    if callable(dynamics):
        next_inputs = jax.tree_util.tree_map(lambda a: a[1:], xs)
        kernels = _batched(
            lambda f, u: backward_kernel(f, resolve(dynamics, u), ops), ops, n
        )(head, next_inputs)
    else:
        chol_q = GENERAL.psd_cholesky(dynamics.Q) if sqrt else None
        kernels = _batched(lambda f: backward_kernel(f, dynamics, ops, chol_q), ops, n)(
            head
        )
    # the last step has no successor: x_T | y_1:T is its filtered belief
    last = BackwardKernel(
        gain=jnp.zeros((1, n, n), filtered.mean.dtype),
        offset=filtered.mean[-1:],
        cond=(filtered.chol if sqrt else filtered.cov)[-1:],
    )
    kernels = jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a, b], axis=0), kernels, last
    )

    def combine(later: BackwardKernel, earlier: BackwardKernel) -> BackwardKernel:
        # reverse scan: ``later`` already spans t+1..T, ``earlier`` is step t
        G1, g1, c1 = earlier
        G2, g2, c2 = later
        if sqrt:
            cond = ops.tria(jnp.concatenate([ops.matmul(G1, c2), c1], axis=1))
        else:
            cond = symmetrize(ops.matmul(ops.matmul(G1, c2), mT(G1)) + c1)
        return BackwardKernel(
            gain=ops.matmul(G1, G2), offset=ops.matmul(G1, g2) + g1, cond=cond
        )

    out = lax.associative_scan(
        _batched(
            lambda a, b: tuple(combine(BackwardKernel(*a), BackwardKernel(*b))), ops, n
        ),
        tuple(kernels),
        reverse=True,
    )
    return (SqrtGaussian if sqrt else Gaussian)(out[1], out[2])
