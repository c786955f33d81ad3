r"""Associative elements and their combines: Kalman filtering and RTS smoothing.

The filter follows Sarkka & Garcia-Fernandez (2021): step :math:`t` becomes the
element :math:`(A, b, C, \eta, J)` of the conditional
:math:`p(x_t \mid x_{t-1}, y_t) = N(A x_{t-1} + b, C)` and of the likelihood
:math:`p(y_t \mid x_{t-1}) \propto N_I(x_{t-1}; \eta, J)`, and an associative
operator combines two consecutive elements, so all filtered marginals come out of
one prefix scan with span :math:`O(\log T)`. The square-root version carries
Cholesky-type factors :math:`C = U U^\top`, :math:`J = Z Z^\top` and combines them with
QR triangularisations only (after Yaghoobi et al. 2022; derived here with the
Woodbury identity :math:`(I + C J)^{-1} = I - U (I + \Phi\Phi^\top)^{-1} \Phi Z^\top`,
:math:`\Phi = U^\top Z`). Every result depends on the factors only through
:math:`U U^\top` and :math:`Z Z^\top`, so the combined factors are differentiated
with :func:`~kalmanjax.core.linalg.gram_factor`, exact also for the rank-deficient
:math:`Z` of the early elements (the QR derivative is NaN there).

The log-likelihood, information gain and innovations are not carried through the
scan: once the filtered marginals are known, every step's prediction is known, and
one ``vmap`` of the sequential update over all steps gives exactly the sequential
quantities (this also avoids the large-initial-mean error seen in a peer's parallel
likelihood, dynamax #423). The smoother combines the per-step backward kernels
:math:`(G, g, \Lambda)` of :mod:`kalmanjax.steps.backward` with a reverse scan
(:func:`combine_kernels`).

This module holds the per-step math only: :func:`filter_element` builds one
element, :func:`combine_dense` / :func:`combine_sqrt` combine two; the filters
layer assembles them into an :class:`~kalmanjax.AssociativeForm` and the drivers
run the prefix scan (:mod:`kalmanjax.core.scan`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..core.linalg import LinalgOps, gram_factor, mT, symmetrize
from ..core.models import LinearObservation
from .backward import BackwardKernel
from .linear import observation_arrays

__all__ = [
    "FilterElement",
    "combine_dense",
    "combine_kernels",
    "combine_sqrt",
    "filter_element",
]


class FilterElement(NamedTuple):
    r"""One step of the filter as an associative element.

    :math:`p(x_t \mid x_{t-1}, y_t) = N(A x_{t-1} + b, C)` and
    :math:`p(y_t \mid x_{t-1}) \propto N_I(x_{t-1}; \eta, J)`.

    Attributes:
        A: shape ``(state, state)``.
        b: shape ``(state,)``.
        C: the covariance, or its factor :math:`U` in square-root form,
            ``(state, state)``.
        eta: shape ``(state,)``.
        J: the information, or a factor :math:`Z` (square, not necessarily
            triangular) in square-root form, ``(state, state)``.
    """

    A: jax.Array
    b: jax.Array
    C: jax.Array
    eta: jax.Array
    J: jax.Array


def filter_element(
    mean_pred, cov_pred, F, obs_model: LinearObservation, y, ops, missing, sqrt
):
    """Condition ``N(F x + mean_pred, cov_pred)`` (a factor in sqrt form) on ``y``.

    Returns the element of step t given x_{t-1}; for the first step pass ``F = 0``
    and the predicted prior moments.
    """
    n = mean_pred.shape[0]
    dtype = mean_pred.dtype
    y, H, R, d, _ = observation_arrays(y, obs_model, dtype, missing)
    m = H.shape[0]
    e = y - ops.matmul(H, mean_pred) - d
    HF = ops.matmul(H, F)
    if sqrt:
        top = jnp.concatenate([ops.psd_cholesky(R), ops.matmul(H, cov_pred)], axis=1)
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
    if not sqrt:
        J = ops.matmul(mT(V), V)
    elif m <= n:  # V^T, padded square, is a factor of J: no QR (nor its derivative,
        J = jnp.concatenate([mT(V), jnp.zeros((n, n - m), dtype)], axis=1)  # singular)
    else:
        J = gram_factor(ops, mT(V))
    return FilterElement(
        A=F - ops.matmul(K, HF), b=mean_pred + ops.matmul(K, e), C=C, eta=eta, J=J
    )


def combine_dense(
    first: FilterElement, second: FilterElement, ops: LinalgOps
) -> FilterElement:
    r"""Combine two consecutive elements (covariance form): ``first`` is earlier.

    With :math:`M = I + C_1 J_2`,

    .. math::

        A = A_2 M^{-1} A_1,\quad b = A_2 M^{-1} (b_1 + C_1 \eta_2) + b_2,\quad
        C = A_2 M^{-1} C_1 A_2^\top + C_2,

        \eta = A_1^\top (I + J_2 C_1)^{-1} (\eta_2 - J_2 b_1) + \eta_1,\quad
        J = A_1^\top (I + J_2 C_1)^{-1} J_2 A_1 + J_1.

    One solve with :math:`M` serves all five: by the push-through identity
    :math:`(I + J_2 C_1)^{-1} J_2 = J_2 M^{-1}` and
    :math:`(I + J_2 C_1)^{-1} = I - J_2 M^{-1} C_1`.
    """
    A1, b1, C1, eta1, J1 = first
    A2, b2, C2, eta2, J2 = second
    n = b1.shape[0]
    eye = jnp.eye(n, dtype=b1.dtype)
    M = eye + ops.matmul(C1, J2)
    rhs = jnp.concatenate([A1, (b1 + ops.matmul(C1, eta2))[:, None], C1], axis=1)
    x = ops.solve(M, rhs)  # M^{-1} [A1, b1 + C1 eta2, C1]
    MA1, MC1 = x[:, :n], x[:, n + 1 :]
    v = eta2 - ops.matmul(J2, b1)
    w = v - ops.matmul(J2, ops.matmul(MC1, v))  # (I + J2 C1)^{-1} v
    return FilterElement(
        A=ops.matmul(A2, MA1),
        b=ops.matmul(A2, x[:, n]) + b2,
        C=symmetrize(ops.matmul(ops.matmul(A2, MC1), mT(A2)) + C2),
        eta=ops.matmul(mT(A1), w) + eta1,
        J=symmetrize(ops.matmul(mT(A1), ops.matmul(J2, MA1)) + J1),
    )


def combine_sqrt(
    first: FilterElement, second: FilterElement, ops: LinalgOps
) -> FilterElement:
    """Combine two consecutive elements (square-root form, QR only)."""
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
    return FilterElement(
        A=ops.matmul(A2, MA1),
        b=ops.matmul(A2, Mb) + b2,
        C=gram_factor(ops, jnp.concatenate([ops.matmul(A2, U1L), U2], axis=1)),
        eta=ops.matmul(mT(A1), Nw) + eta1,
        J=gram_factor(ops, jnp.concatenate([ops.matmul(mT(A1), Z2L), Z1], axis=1)),
    )


def combine_kernels(
    later: BackwardKernel, earlier: BackwardKernel, ops: LinalgOps, sqrt: bool
) -> BackwardKernel:
    """Combine two backward kernels for a reverse scan.

    ``later`` already spans :math:`t+1..T`; ``earlier`` is the kernel of step
    :math:`t`. ``sqrt`` selects factors (``cond`` a lower-triangular factor).
    """
    G1, g1, c1 = earlier
    G2, g2, c2 = later
    if sqrt:
        cond = ops.tria(jnp.concatenate([ops.matmul(G1, c2), c1], axis=1))
    else:
        cond = symmetrize(ops.matmul(ops.matmul(G1, c2), mT(G1)) + c1)
    return BackwardKernel(
        gain=ops.matmul(G1, G2), offset=ops.matmul(G1, g2) + g1, cond=cond
    )
