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

Memory: inside a filter step the predicted factor stays an
:class:`ImplicitFactor` (:math:`\operatorname{diag}(s) W B` with the new columns
appended, never formed), read through ``r x r`` blocks, ``state``-vectors and
weighted Gram matrices summed over row blocks (:func:`weighted_gram`); the only
``(state, r)`` array a step writes is its output, so its temporary memory is
:math:`O(k (p + 1))` beside the belief (``benchmarks/bench_structured.py``,
section ``network``).

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
from typing import NamedTuple, cast

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jaxtyping import Array

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
    "GRAM_BLOCK",
    "ImplicitFactor",
    "diagonal_categorical_update",
    "diagonal_predict",
    "diagonal_update",
    "jacobian_by_vjps",
    "leading_subspace",
    "low_rank_categorical_update",
    "low_rank_predict",
    "low_rank_update",
    "truncate_factor",
    "weighted_gram",
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


#: rows per block of :func:`weighted_gram` (its only ``(block, r)`` temporary)
GRAM_BLOCK = 8192


def weighted_gram(W, a):
    r"""The weighted Gram :math:`W^\top \operatorname{diag}(a) W`, ``(r, r)``.

    ``W`` is ``(state, r)`` and ``a`` ``(state,)``.

    Summed over blocks of :data:`GRAM_BLOCK` rows, so that no ``(state, r)``
    temporary (the scaled ``W``) is formed; :math:`O(\text{state}\, r^2)`.
    """
    k, r = W.shape

    def block(Wb, ab):
        return mT(Wb * ab[:, None]) @ Wb

    blocks = k // GRAM_BLOCK
    if blocks <= 1:
        return block(W, a)

    def body(i, acc):
        start = i * GRAM_BLOCK
        Wb = jax.lax.dynamic_slice_in_dim(W, start, GRAM_BLOCK)
        return acc + block(Wb, jax.lax.dynamic_slice_in_dim(a, start, GRAM_BLOCK))

    gram = jax.lax.fori_loop(0, blocks, body, jnp.zeros((r, r), W.dtype))
    tail = blocks * GRAM_BLOCK
    return gram if tail == k else gram + block(W[tail:], a[tail:])


def _scale_rows(s, X):
    return s * X if X.ndim == 1 else s[:, None] * X


class ImplicitFactor(NamedTuple):
    r"""The factor :math:`[\operatorname{diag}(s)\, W B,\ E]`, never formed.

    The predict rotates and rescales a belief's factor (``B``, ``s``) and the
    update appends the observation's information columns (``E``); keeping the
    product implicit lets the update read it through ``r x r`` blocks,
    ``state``-vectors and ``(state, columns)`` products only, so a filter step
    holds no ``(state, r)`` temporary beside its input and output. ``dense()``
    forms it.

    Attributes:
        W: ``(state, r)``.
        B: ``(r, r)``.
        s: ``(state,)``.
        E: ``(state, c)`` appended columns, or ``None``.
    """

    W: Array
    B: Array
    s: Array
    E: Array | None = None

    @classmethod
    def of(cls, W) -> ImplicitFactor:
        """A formed factor ``W`` (``B = I``, ``s = 1``)."""
        if isinstance(W, ImplicitFactor):
            return W
        k, r = W.shape
        return cls(W, jnp.eye(r, dtype=W.dtype), jnp.ones((k,), W.dtype))

    @property
    def width(self) -> int:
        """The number of columns, ``r + c``."""
        return self.B.shape[1] + (0 if self.E is None else self.E.shape[1])

    def extended(self, E) -> ImplicitFactor:
        """This factor with the columns ``E`` (``(state, c)``) appended."""
        if self.E is not None:
            E = jnp.concatenate([self.E, E], axis=1)
        return self._replace(E=E)

    def times(self, z):
        """The factor times ``z`` (``(width,)`` or ``(width, m)``)."""
        r = self.B.shape[1]
        out = _scale_rows(self.s, self.W @ (self.B @ z[:r]))
        return out if self.E is None else out + self.E @ z[r:]

    def t_times(self, X):
        """The factor's transpose times ``X`` (``(state,)`` or ``(state, m)``)."""
        out = mT(self.B) @ (mT(self.W) @ _scale_rows(self.s, X))
        if self.E is None:
            return out
        return jnp.concatenate([out, mT(self.E) @ X], axis=0)

    def gram(self, a):
        r"""The weighted Gram :math:`F^\top \operatorname{diag}(a) F` of this factor."""
        top = mT(self.B) @ weighted_gram(self.W, a * self.s * self.s) @ self.B
        if self.E is None:
            return top
        cross = self.t_times(_scale_rows(a, self.E))[: self.B.shape[1]]
        bottom = mT(self.E) @ _scale_rows(a, self.E)
        return jnp.block([[top, cross], [mT(cross), bottom]])

    def dense(self):
        """The ``(state, width)`` factor."""
        out = _scale_rows(self.s, self.W @ self.B)
        return out if self.E is None else jnp.concatenate([out, self.E], axis=1)


def _woodbury(u, factor: ImplicitFactor):
    r"""``(apply, chol)`` of a precision :math:`D + F F^\top` (Woodbury).

    ``apply(x)`` is :math:`(D + F F^\top)^{-1} x` and ``chol`` the Cholesky
    factor of :math:`C = I + F^\top D^{-1} F` (so :math:`\log\det C` is
    :math:`\log\det(D + F F^\top) - \log\det D`), in :math:`O(\text{state}\,
    w^2)` for ``w`` columns.
    """
    w = factor.width
    chol_c = jnp.linalg.cholesky(
        symmetrize(jnp.eye(w, dtype=u.dtype) + factor.gram(1.0 / u))
    )

    def apply(x):
        scaled = _scale_rows(1.0 / u, x)
        inner = jax.scipy.linalg.cho_solve((chol_c, True), factor.t_times(scaled))
        return scaled - _scale_rows(1.0 / u, factor.times(inner))

    return apply, chol_c


def low_rank_predict(
    belief: LowRankGaussian, dyn: DiagonalDynamics, *, implicit: bool = False
) -> LowRankGaussian:
    r"""The exact predict of a low-rank precision through elementwise dynamics.

    With ``implicit=True`` the predicted factor is an :class:`ImplicitFactor`
    (``diag(1 / (g f)) W L_M^{-T}``, not formed), which :func:`low_rank_update`
    and :func:`low_rank_categorical_update` read without forming it.
    """
    n, dtype = belief.mean.shape[0], belief.mean.dtype
    F, Q = _elementwise(dyn, n, dtype)
    u = belief.precision_diag / (F * F)  # the precision of f * x
    g = 1.0 + Q * u
    W = belief.precision_factor
    rank = W.shape[1]
    # M = I + W'^T diag(q / g) W' with W' = W / f
    M = jnp.eye(rank, dtype=dtype) + weighted_gram(W, Q / (g * F * F))
    chol_m = jnp.linalg.cholesky(symmetrize(M))
    B = mT(_lower_solve(chol_m, jnp.eye(rank, dtype=dtype)))  # L_M^{-T}
    factor = ImplicitFactor(W, B, 1.0 / (g * F))
    mean = F * belief.mean + zeros_if_none(dyn.b, n, dtype)
    return LowRankGaussian(
        mean=mean,
        precision_diag=u / g,
        # implicit: the update steps read the factor (typed as the array it stands for)
        precision_factor=cast(Array, factor) if implicit else factor.dense(),
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def leading_subspace(gram, rank: int):
    r"""``(V_kept, V_dropped)``: the eigenvectors of ``gram``, largest ``rank`` first.

    ``gram`` is symmetric ``(c, c)``. Differentiated as the subspaces, not the
    vectors: the derivative mixes kept and dropped directions only, with
    :math:`(V_d^\top\, dG\, V_k) / (\lambda_k - \lambda_d)`, which is all a
    product :math:`F V_k V_k^\top F^\top` depends on. Repeated eigenvalues
    within the kept or within the dropped block have a finite derivative; a tie
    across the boundary has none and contributes 0.
    """
    w, V = jnp.linalg.eigh(symmetrize(gram))  # ascending
    V = V[:, ::-1]
    return V[:, :rank], V[:, rank:]


@leading_subspace.defjvp
def _leading_subspace_jvp(rank, primals, tangents):
    (gram,), (dgram,) = primals, tangents
    w, V = jnp.linalg.eigh(symmetrize(gram))
    w, V = w[::-1], V[:, ::-1]
    Vk, Vd = V[:, :rank], V[:, rank:]
    gap = w[None, :rank] - w[rank:, None]  # (dropped, kept): lambda_k - lambda_d
    safe = jnp.where(gap > 0, gap, 1.0)
    mix = jnp.where(gap > 0, (mT(Vd) @ symmetrize(dgram) @ Vk) / safe, 0.0)
    return (Vk, Vd), (Vd @ mix, -Vk @ mT(mix))


def _truncate(wide: ImplicitFactor, rank: int):
    """``(W, fold)`` of :func:`truncate_factor` for an implicit ``wide``."""
    kept, dropped = leading_subspace(wide.gram(jnp.ones_like(wide.s)), rank)
    fold = jnp.sum(jnp.square(wide.times(dropped)), axis=1)
    return wide.times(kept), fold


def truncate_factor(wide, rank: int):
    r"""``(W, fold)``: the ``rank`` leading directions of ``wide`` and what is folded.

    ``wide`` is :math:`\tilde W`, ``(state, c)`` with ``c > rank``. With the
    eigendecomposition :math:`\tilde W^\top \tilde W = V \Lambda V^\top`
    (descending), ``W = wide @ V[:, :rank]`` and ``fold`` is the diagonal of the
    rest, ``sum((wide @ V[:, rank:])**2, axis=1)``, so :math:`W W^\top +
    \operatorname{diag}(\text{fold})` has the diagonal of :math:`\tilde W
    \tilde W^\top`. Cost :math:`O(\text{state}\, c^2)`; differentiated through
    the kept subspace (:func:`leading_subspace`).
    """
    return _truncate(ImplicitFactor.of(wide), rank)


def low_rank_update(
    belief: LowRankGaussian, obs, model: LinearObservation, missing: bool
) -> tuple[LowRankGaussian, UpdateInfo]:
    """Condition a low-rank precision belief on ``y = H x + d + v``, then truncate.

    The belief's factor may be an :class:`ImplicitFactor` (a predict's).
    """
    dtype = belief.mean.dtype
    y, H, R, d, num_observed = observation_arrays(obs, model, dtype, missing)
    u, factor = belief.precision_diag, ImplicitFactor.of(belief.precision_factor)
    innovation = y - H @ belief.mean - d
    PHt = _woodbury(u, factor)[0](mT(H))  # P^- H^T
    innovation_cov = symmetrize(H @ PHt + R)
    chol_s = jnp.linalg.cholesky(innovation_cov)
    z = _lower_solve(chol_s, innovation)
    mean = belief.mean + PHt @ solve_triangular(chol_s, z, lower=True, trans="T")
    # the information H^T R^{-1} H as obs new columns, then back to rank r
    chol_r = jnp.linalg.cholesky(R)
    wide = factor.extended(mT(_lower_solve(chol_r, H)))
    kept, fold = _truncate(wide, factor.B.shape[1])
    new = LowRankGaussian(mean=mean, precision_diag=u + fold, precision_factor=kept)
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
    missing: it adds no information (the columns and the score are zero, so the
    precision and mean are unchanged up to rounding) and its infos are zero. The
    belief's factor may be an :class:`ImplicitFactor` (a predict's).
    """
    u, factor = belief.precision_diag, ImplicitFactor.of(belief.precision_factor)
    columns, score, log_p, moments = _token_information(
        belief, token, model, inputs, fisher
    )
    vocab = jax.eval_shape(model.fn, belief.mean, inputs).shape[0]
    observed = ((token >= 0) & (token < vocab)).astype(u.dtype)
    wide = factor.extended(observed * columns)
    solve, chol_c = _woodbury(u, wide)
    step = solve(observed * score)
    rank = factor.B.shape[1]
    # log det(I + P^- H^T R^-1 H): C's determinant over that of its leading block
    logdet_b = logdet_from_chol(chol_c) - logdet_from_chol(chol_c[:rank, :rank])
    kept, fold = _truncate(wide, rank)
    new = LowRankGaussian(belief.mean + step, u + fold, kept)
    info = _categorical_info(observed * score @ step, logdet_b, log_p, moments, u.dtype)
    info = jax.tree_util.tree_map(lambda a: jnp.where(observed > 0, a, 0.0), info)
    return new, info


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
