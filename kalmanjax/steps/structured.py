r"""Steps for structured covariances: diagonal, and low-rank-plus-diagonal precision.

Both forms filter states too large for a ``state x state`` matrix (an adapter of
:math:`k = 10^4..10^6` coordinates). With :math:`p` observed outputs, an
observation matrix :math:`H` of shape ``(obs, state)`` and ``r`` the rank:

**Diagonal** (:class:`~kalmanjax.DiagonalGaussian`, the fully decoupled EKF):
the predict and update are the dense ones followed by keeping the diagonal,

.. math::

    v^- = f^2 \odot v + q, \qquad
    S = H \operatorname{diag}(v^-) H^\top + R, \qquad
    m = m^- + v^- \odot H^\top S^{-1} e, \qquad
    v = v^- - \operatorname{diag}(W^\top W),\ W = L_S^{-1} H \operatorname{diag}(v^-),

in :math:`O(k p^2)`; the mean update is the dense one for the diagonal prior. A
general ``LinearDynamics`` predicts :math:`v^- = (F \odot F) v +
\operatorname{diag}(Q)` (:math:`O(k^2)`).

**Low rank** (:class:`~kalmanjax.LowRankGaussian`, after LoFi, Chang et al.
2023): the precision :math:`\Lambda = D + W W^\top`. The predict is exact for
elementwise dynamics: with :math:`D' = D / f^2` and :math:`W' = W / f` (the
precision of :math:`f \odot x`) and :math:`g = 1 + q \odot u'`,

.. math::

    \Lambda^- = (\Lambda'^{-1} + \operatorname{diag}(q))^{-1}
    = \operatorname{diag}(u' / g) + W^- W^{-\top}, \quad
    W^- = \operatorname{diag}(1/g)\, W' L_M^{-\top}, \quad
    M = I + W'^\top \operatorname{diag}(q / g) W'

(Woodbury twice; :math:`O(k r^2)`). The update adds the information
:math:`H^\top R^{-1} H` as :math:`p` new columns, :math:`\tilde W = [W^-,\
H^\top L_R^{-\top}]`, which is exact, and the mean and likelihood use the
predictive covariance through Woodbury. Then :math:`\tilde W` is truncated back
to rank ``r``: the ``r`` leading left singular directions are kept, and the
diagonal of the discarded part :math:`W_d W_d^\top` is added to :math:`D`, so the
posterior precision keeps its exact diagonal (LoFi's choice); the truncation
drops only the discarded off-diagonal precision. With ``rank >= state`` nothing
is dropped and the filter equals the dense one.

Missing data (NaN entries of ``y``) are dropped exactly as in
:mod:`kalmanjax.steps.linear` (:func:`~kalmanjax.steps.linear.observation_arrays`):
a missing dimension adds no information. ``R`` must be positive definite here
(the precision form has no noise-free observation).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from ..core.beliefs import DiagonalGaussian, LowRankGaussian
from ..core.filter import UpdateInfo
from ..core.linalg import logdet_from_chol, mT, symmetrize
from ..core.models import DiagonalDynamics, LinearDynamics, LinearObservation
from .linear import LOG_2PI, observation_arrays, zeros_if_none

__all__ = [
    "diagonal_predict",
    "diagonal_update",
    "low_rank_predict",
    "low_rank_update",
    "truncate_factor",
]


def _lower_solve(chol, b):
    return solve_triangular(chol, b, lower=True)


def _info(chol_s, z, chol_r, num_observed, innovation, innovation_cov):
    logdet_s = logdet_from_chol(chol_s)
    return UpdateInfo(
        log_likelihood=-0.5 * (jnp.sum(z * z) + logdet_s + num_observed * LOG_2PI),
        information_gain=0.5 * (logdet_s - logdet_from_chol(chol_r)),
        innovation=innovation,
        innovation_cov=innovation_cov,
    )


def _elementwise(dyn: DiagonalDynamics, n: int, dtype):
    F = jnp.broadcast_to(jnp.asarray(dyn.F, dtype), (n,))
    Q = jnp.broadcast_to(jnp.asarray(dyn.Q, dtype), (n,))
    return F, Q


# ----------------------------------------------------------------------- diagonal


def diagonal_predict(
    belief: DiagonalGaussian, dyn: DiagonalDynamics | LinearDynamics
) -> DiagonalGaussian:
    r"""Predict a diagonal belief: :math:`m^- = f \odot m + b`, :math:`v^- = f^2 v + q`.

    For a ``LinearDynamics``, the diagonal of :math:`F P F^\top + Q`.
    """
    n, dtype = belief.mean.shape[0], belief.mean.dtype
    if isinstance(dyn, LinearDynamics):
        mean = dyn.F @ belief.mean
        var = (dyn.F * dyn.F) @ belief.var + jnp.diagonal(dyn.Q)
    else:
        F, Q = _elementwise(dyn, n, dtype)
        mean, var = F * belief.mean, F * F * belief.var + Q
    return DiagonalGaussian(mean=mean + zeros_if_none(dyn.b, n, dtype), var=var)


def diagonal_update(
    belief: DiagonalGaussian, obs, model: LinearObservation, missing: bool
) -> tuple[DiagonalGaussian, UpdateInfo]:
    """Condition a diagonal belief on ``y = H x + d + v`` and keep the diagonal."""
    dtype = belief.mean.dtype
    y, H, R, d, num_observed = observation_arrays(obs, model, dtype, missing)
    innovation = y - H @ belief.mean - d
    HP = H * belief.var[None, :]  # (obs, state)
    innovation_cov = symmetrize(HP @ mT(H) + R)
    chol_s = jnp.linalg.cholesky(innovation_cov)
    z = _lower_solve(chol_s, innovation)
    W = _lower_solve(chol_s, HP)
    # the exact posterior variances are >= 0; rounding below 0 is clamped there
    var = jnp.maximum(belief.var - jnp.sum(W * W, axis=0), 0.0)
    new = DiagonalGaussian(mean=belief.mean + mT(W) @ z, var=var)
    chol_r = jnp.linalg.cholesky(R)
    return new, _info(chol_s, z, chol_r, num_observed, innovation, innovation_cov)


# ----------------------------------------------------------------------- low rank


def low_rank_predict(belief: LowRankGaussian, dyn: DiagonalDynamics) -> LowRankGaussian:
    r"""The exact predict of a low-rank precision through elementwise dynamics."""
    n, dtype = belief.mean.shape[0], belief.mean.dtype
    F, Q = _elementwise(dyn, n, dtype)
    u = belief.precision_diag / (F * F)  # the precision of f * x
    W = belief.precision_factor / F[:, None]
    g = 1.0 + Q * u
    rank = W.shape[1]
    M = jnp.eye(rank, dtype=dtype) + mT(W) @ ((Q / g)[:, None] * W)
    factor = mT(_lower_solve(jnp.linalg.cholesky(symmetrize(M)), mT(W / g[:, None])))
    mean = F * belief.mean + zeros_if_none(dyn.b, n, dtype)
    return LowRankGaussian(mean=mean, precision_diag=u / g, precision_factor=factor)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def truncate_factor(wide, rank: int):
    r"""``(W, fold)``: the ``rank`` leading directions of ``wide`` and what is folded.

    ``wide`` is :math:`\tilde W`, ``(state, c)`` with ``c > rank``. With the
    eigendecomposition :math:`\tilde W^\top \tilde W = V \Lambda V^\top`
    (descending), ``W = wide @ V[:, :rank]`` and ``fold`` is the diagonal of the
    rest, ``sum((wide @ V[:, rank:])**2, axis=1)``, so :math:`W W^\top +
    \operatorname{diag}(\text{fold})` has the diagonal of :math:`\tilde W
    \tilde W^\top`. Cost :math:`O(\text{state}\, c^2)`. Differentiated through
    the kept subspace only (the filter uses :math:`W W^\top`, not :math:`W`), so
    repeated singular values within the kept or within the dropped block have a
    finite derivative; a tie across the boundary has none and contributes 0.
    """
    kept, dropped, _, _ = _split(wide, rank)
    return kept, jnp.sum(dropped * dropped, axis=1)


def _split(wide, rank):
    gram = symmetrize(mT(wide) @ wide)
    w, V = jnp.linalg.eigh(gram)  # ascending
    w, V = w[::-1], V[:, ::-1]
    return wide @ V[:, :rank], wide @ V[:, rank:], w, V


@truncate_factor.defjvp
def _truncate_jvp(rank, primals, tangents):
    (wide,), (dwide,) = primals, tangents
    kept, dropped, w, V = _split(wide, rank)
    Vk, Vd = V[:, :rank], V[:, rank:]
    dgram = mT(dwide) @ wide + mT(wide) @ dwide
    gap = w[None, :rank] - w[rank:, None]  # (dropped, kept): lambda_i - lambda_j
    safe = jnp.where(gap > 0, gap, 1.0)
    mix = jnp.where(gap > 0, (mT(Vd) @ dgram @ Vk) / safe, 0.0)
    dkept = dwide @ Vk + dropped @ mix
    ddropped = dwide @ Vd - kept @ mT(mix)
    out = (kept, jnp.sum(dropped * dropped, axis=1))
    return out, (dkept, 2.0 * jnp.sum(dropped * ddropped, axis=1))


def low_rank_update(
    belief: LowRankGaussian, obs, model: LinearObservation, missing: bool
) -> tuple[LowRankGaussian, UpdateInfo]:
    """Condition a low-rank precision belief on ``y = H x + d + v``, then truncate."""
    dtype = belief.mean.dtype
    y, H, R, d, num_observed = observation_arrays(obs, model, dtype, missing)
    u, W = belief.precision_diag, belief.precision_factor
    rank = W.shape[1]
    innovation = y - H @ belief.mean - d
    # P^- X = X / u - A C^{-1} A^T X with A = W / u, C = I + W^T A (Woodbury)
    A = W / u[:, None]
    chol_c = jnp.linalg.cholesky(symmetrize(jnp.eye(rank, dtype=dtype) + mT(W) @ A))
    AtHt = mT(A) @ mT(H)
    PHt = mT(H) / u[:, None] - A @ jax.scipy.linalg.cho_solve((chol_c, True), AtHt)
    innovation_cov = symmetrize(H @ PHt + R)
    chol_s = jnp.linalg.cholesky(innovation_cov)
    z = _lower_solve(chol_s, innovation)
    mean = belief.mean + PHt @ solve_triangular(chol_s, z, lower=True, trans="T")
    # the information H^T R^{-1} H as obs new columns, then back to rank r
    chol_r = jnp.linalg.cholesky(R)
    wide = jnp.concatenate([W, mT(_lower_solve(chol_r, H))], axis=1)
    factor, fold = truncate_factor(wide, rank)
    new = LowRankGaussian(mean=mean, precision_diag=u + fold, precision_factor=factor)
    return new, _info(chol_s, z, chol_r, num_observed, innovation, innovation_cov)
