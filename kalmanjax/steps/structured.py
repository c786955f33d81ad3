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

**Categorical observations** (a token :math:`y`, logits :math:`z(\theta)`, see
:mod:`kalmanjax.steps.categorical`) add their information as columns too: with
``fisher="exact"`` the moment-matched :math:`J_p^\top R^{-1} J_p` (``V + 1``
columns from :math:`R^{-1} = \operatorname{diag}(a) + u u^\top / c`, ``V`` reverse
passes, :math:`O(k V^2)`), the same update as the dense forms'; with
``fisher="observed"`` the observed-token Fisher :math:`s s^\top`,
:math:`s = \nabla_\theta \log p_y`, one column from one reverse pass, whose cost
does not grow with ``V`` beyond the forward pass (an approximation: the expected
Fisher :math:`J_z^\top (\operatorname{diag} p - p p^\top) J_z` replaced by its
one-sample estimate at the observed token). In both the mean moves by
:math:`(\Lambda^- + H^\top R^{-1} H)^{-1} s'` with :math:`s' = H^\top R^{-1} e`,
which is :math:`s` when :math:`R` has no jitter.

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
from ..core.models import (
    CategoricalObservation,
    DiagonalDynamics,
    LinearDynamics,
    LinearObservation,
)
from .categorical import noise_precision
from .linear import LOG_2PI, observation_arrays, zeros_if_none

__all__ = [
    "FISHERS",
    "diagonal_categorical_update",
    "diagonal_predict",
    "diagonal_update",
    "jacobian_by_vjps",
    "low_rank_categorical_update",
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


def jacobian_by_vjps(fn, x):
    """``(fn(x), d fn / dx)``: one forward pass and one reverse pass per output.

    The Jacobian has shape ``(outputs, state)``: for a large state and few
    outputs it costs ``outputs`` backward passes and never a ``state x state``
    intermediate.
    """
    value, vjp = jax.vjp(fn, x)
    (jac,) = jax.vmap(vjp)(jnp.eye(value.shape[0], dtype=value.dtype))
    return value, jac


def _woodbury(u, W):
    r"""``(apply, logdet)`` of a precision :math:`D + W W^\top` (Woodbury).

    ``apply(x)`` is :math:`(D + W W^\top)^{-1} x` and ``logdet`` is
    :math:`\log\det(I + W^\top D^{-1} W)`, in :math:`O(\text{state}\, r^2)`.
    """
    A = W / u[:, None]
    chol_c = jnp.linalg.cholesky(
        symmetrize(jnp.eye(W.shape[1], dtype=W.dtype) + mT(W) @ A)
    )

    def apply(x):
        scaled = x / (u if x.ndim == 1 else u[:, None])
        return scaled - A @ jax.scipy.linalg.cho_solve((chol_c, True), mT(A) @ x)

    return apply, logdet_from_chol(chol_c)


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
    PHt = _woodbury(u, W)[0](mT(H))  # P^- H^T
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


# -------------------------------------------------------------------- categorical

#: How the categorical update measures the information of a token.
FISHERS = ("exact", "observed")


def _token_information(belief, token, model, inputs, fisher):
    r"""``(columns, score, log p_y, moments)`` of one token at the predicted mean.

    ``columns`` (``(state, c)``) factor the information :math:`H^\top R^{-1} H`
    the update adds: with ``fisher="exact"`` the moment-matched one,
    :math:`J_p^\top R^{-1} J_p` (:math:`J_p = (\operatorname{diag} p - p p^\top)
    \partial z/\partial\theta`, one reverse pass per token of the vocabulary,
    ``c = vocab + 1``); with ``"observed"`` the observed-token Fisher
    :math:`s s^\top`, :math:`s = \partial \log p_y / \partial\theta` (one reverse
    pass, ``c = 1``, cost independent of the vocabulary beyond the forward pass).
    ``score`` is :math:`H^\top R^{-1} e`, the vector the mean update multiplies by
    the posterior covariance (:math:`s` itself for ``"observed"``).
    """
    dtype = belief.mean.dtype
    fn = lambda x: model.fn(x, inputs)
    if fisher == "observed":
        logits, vjp = jax.vjp(fn, belief.mean)
        p = jax.nn.softmax(logits)
        score = vjp(jax.nn.one_hot(token, p.shape[0], dtype=dtype) - p)[0]
        return score[:, None], score, jax.nn.log_softmax(logits)[token], None
    logits, jz = jacobian_by_vjps(fn, belief.mean)
    p = jax.nn.softmax(logits)
    jp = p[:, None] * (jz - (p @ jz)[None, :])  # (vocab, state)
    e = jax.nn.one_hot(token, p.shape[0], dtype=dtype) - p
    a, u, c = noise_precision(p, jnp.asarray(model.jitter, dtype))
    columns = jnp.concatenate(
        [mT(jp) * jnp.sqrt(a)[None, :], (mT(jp) @ u)[:, None] / jnp.sqrt(c)], axis=1
    )
    r_inv_e = a * e + u * (u @ e) / c
    logdet_r = jnp.sum(jnp.log(p + model.jitter)) + jnp.log(c)
    moments = (e @ r_inv_e, logdet_r, p.shape[0])
    return columns, mT(jp) @ r_inv_e, jax.nn.log_softmax(logits)[token], moments


def _categorical_info(quad, logdet_b, log_p, moments, dtype):
    """The step's infos: the moment-matched Gaussian's (exact) or ``log p_y``."""
    if moments is None:  # the observed-token Fisher: the plug-in log-probability
        log_likelihood = log_p
    else:
        e_r_e, logdet_r, vocab = moments
        log_likelihood = -0.5 * (e_r_e - quad + logdet_r + logdet_b + vocab * LOG_2PI)
    return UpdateInfo(
        log_likelihood=jnp.asarray(log_likelihood, dtype),
        information_gain=0.5 * logdet_b,
        innovation=None,
        innovation_cov=None,
    )


def _unless_missing(token, vocab, new, old):
    observed = (token >= 0) & (token < vocab)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(observed, a, b), new, old)


def low_rank_categorical_update(
    belief: LowRankGaussian, token, model: CategoricalObservation, inputs, fisher: str
) -> tuple[LowRankGaussian, UpdateInfo]:
    r"""Condition a low-rank precision belief on one token, then truncate.

    The information of the token (:func:`_token_information`) is added as new
    columns, the mean moves by :math:`(\Lambda^- + H^\top R^{-1} H)^{-1} g`
    (Woodbury, before truncation) and the factor is truncated as in
    :func:`low_rank_update`. With ``fisher="exact"`` this is the moment-matched
    update of :mod:`kalmanjax.steps.categorical` (the same infos); with
    ``"observed"`` the log-likelihood reported is the plug-in
    :math:`\log p_y` at the predicted mean. A token id outside ``0..V-1`` is
    missing (the belief is unchanged, the infos zero).
    """
    u, W = belief.precision_diag, belief.precision_factor
    columns, score, log_p, moments = _token_information(
        belief, token, model, inputs, fisher
    )
    wide = jnp.concatenate([W, columns], axis=1)
    solve, logdet_post = _woodbury(u, wide)
    step = solve(score)
    logdet_b = logdet_post - _woodbury(u, W)[1]  # log det(I + P^- H^T R^-1 H)
    factor, fold = truncate_factor(wide, W.shape[1])
    new = LowRankGaussian(belief.mean + step, u + fold, factor)
    info = _categorical_info(score @ step, logdet_b, log_p, moments, u.dtype)
    zero = jax.tree_util.tree_map(jnp.zeros_like, info)
    vocab = jax.eval_shape(model.fn, belief.mean, inputs).shape[0]
    return _unless_missing(token, vocab, (new, info), (belief, zero))


def diagonal_categorical_update(
    belief: DiagonalGaussian, token, model: CategoricalObservation, inputs, fisher: str
) -> tuple[DiagonalGaussian, UpdateInfo]:
    r"""Condition a diagonal belief on one token and keep the diagonal.

    The posterior is :math:`(\operatorname{diag}(v)^{-1} + H^\top R^{-1} H)^{-1}`
    (Woodbury in the ``c`` information columns, :math:`O(\text{state}\, c^2)`),
    its mean moved by it times :math:`g`, then its diagonal is kept. Infos and
    missing tokens as in :func:`low_rank_categorical_update`.
    """
    v = belief.var
    columns, score, log_p, moments = _token_information(
        belief, token, model, inputs, fisher
    )
    # (V^-1 + C C^T)^{-1} = V - V C (I + C^T V C)^{-1} C^T V, V = diag(v)
    VC = v[:, None] * columns
    chol_b = jnp.linalg.cholesky(
        symmetrize(jnp.eye(columns.shape[1], dtype=v.dtype) + mT(columns) @ VC)
    )
    X = _lower_solve(chol_b, mT(VC))  # (c, state): the posterior is V - X^T X
    step = v * score - mT(X) @ (X @ score)
    var = jnp.maximum(v - jnp.sum(X * X, axis=0), 0.0)
    new = DiagonalGaussian(belief.mean + step, var)
    info = _categorical_info(
        score @ step, logdet_from_chol(chol_b), log_p, moments, v.dtype
    )
    zero = jax.tree_util.tree_map(jnp.zeros_like, info)
    vocab = jax.eval_shape(model.fn, belief.mean, inputs).shape[0]
    return _unless_missing(token, vocab, (new, info), (belief, zero))
