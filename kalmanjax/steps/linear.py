r"""Linear Kalman steps: predict and update in dense, Joseph and square-root forms.

One step of the filter is predict, then update:

.. math::

    m^- = F m + b, \qquad P^- = F P F^\top + Q

    e = y - (H m^- + d), \quad S = H P^- H^\top + R, \quad
    K = P^- H^\top S^{-1}

    m = m^- + K e, \qquad P = P^- - K S K^\top
    \quad\text{or (Joseph)}\quad (I - K H) P^- (I - K H)^\top + K R K^\top

The square-root form carries :math:`P = L L^\top` and never forms :math:`P`: the
predict triangularises :math:`[F L,\ L_Q]` and the update triangularises
:math:`\begin{bmatrix} L_R & H L \\ 0 & L \end{bmatrix}` (QR), with no inverse.

The Joseph covariance is computed in :math:`O(\text{obs}\cdot\text{state}^2)` as
:math:`A P^- - (A P^- H^\top - K R) K^\top` with
:math:`A P^- = (I - KH) P^- = P^- - K S K^\top`: algebraically the textbook form.
The correction :math:`A P^- H^\top - K R` vanishes in exact arithmetic; computed,
it carries the rounding error of :math:`A P^-` in the observed directions, where
:math:`P^- - KSK^\top` cancels, and removes it. It is the default: in float32
:math:`P^- - KSK^\top` alone loses definiteness on ill-conditioned models.

Singular covariances: ``Q``, ``R`` and the prior covariance need only be positive
semi-definite (each is read as :math:`(A + A^\top)/2` on every path). A singular
``R`` is a noise-free observation; the information gain
:math:`\tfrac12 \log\det S - \tfrac12 \log\det R` is then ``+inf``.

Missing data: NaN entries of ``y`` are not observed. Their rows of :math:`H` and
:math:`d` are zeroed and their rows and columns of :math:`R` replaced by the
identity, which gives exactly the update that drops those dimensions, with static
shapes and finite gradients; a fully missing ``y`` leaves the belief unchanged.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import jax.numpy as jnp

from ..core import checks
from ..core.beliefs import Gaussian, SqrtGaussian
from ..core.filter import UpdateInfo
from ..core.linalg import (
    LinalgOps,
    choose_ops,
    factor_of_sum,
    logdet_from_chol,
    mT,
    symmetrize,
)
from ..core.models import LinearDynamics, LinearObservation

__all__ = [
    "FORMS",
    "LOG_2PI",
    "linear_predict",
    "linear_update",
    "observation_arrays",
    "predict",
    "update",
    "zeros_if_none",
]

if TYPE_CHECKING:
    Form = Literal["dense", "joseph", "sqrt"]
else:  # checked by the factories themselves, with a message naming the choices
    Form = str
#: The covariance forms :func:`kalman_filter` accepts.
FORMS = ("dense", "joseph", "sqrt")

#: :math:`\log 2\pi`, the constant of a Gaussian log-density.
LOG_2PI = math.log(2.0 * math.pi)


def zeros_if_none(v, n, dtype):
    """``v``, or a zero vector of length ``n`` when ``v`` is None (an absent offset)."""
    return jnp.zeros((n,), dtype) if v is None else v


# ------------------------------------------------------------------------ predict


def linear_predict(
    belief, dyn: LinearDynamics, ops: LinalgOps, chol_q=None, sym: bool = True
):
    """:func:`predict` without the checks, with ``ops`` chosen by the caller.

    ``chol_q`` is a precomputed factor of ``Q`` (square-root form); ``sym=False``
    skips the symmetrisation when an update follows and symmetrises anyway.
    """
    F = dyn.F
    mean = ops.matmul(F, belief.mean)
    if dyn.b is not None:
        mean = mean + dyn.b
    if isinstance(belief, SqrtGaussian):
        Q = symmetrize(dyn.Q)
        if chol_q is None:
            chol_q = ops.psd_cholesky(Q)
        chol = factor_of_sum(ops, ops.matmul(F, belief.chol), Q, chol_q)
        return SqrtGaussian(mean=mean, chol=chol)
    cov = ops.matmul(ops.matmul(F, belief.cov), mT(F)) + symmetrize(dyn.Q)
    # inside a filter step the update symmetrises once; at d = 128 every extra
    # d x d symmetrisation cost ~10% of the step
    return Gaussian(mean=mean, cov=symmetrize(cov) if sym else cov)


def predict(
    belief: Gaussian | SqrtGaussian,
    dynamics: LinearDynamics,
    *,
    fast: bool | None = None,
) -> Gaussian | SqrtGaussian:
    r"""Propagate a belief through linear dynamics.

    :math:`m^- = Fm + b` and :math:`P^- = FPF^\top + Q`.

    Args:
        belief: a ``Gaussian`` (covariance form) or ``SqrtGaussian`` (the result
            keeps the form), mean of shape ``(state,)``.
        dynamics: ``LinearDynamics`` with ``F, Q`` of shape ``(state, state)``.
        fast: use the elementwise small-state kernels; ``None`` chooses them when
            ``state <= 8``.

    Returns:
        The predicted belief, same form and dtype.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> b = kj.Gaussian(mean=jnp.ones(2), cov=jnp.eye(2))
        >>> dyn = kj.LinearDynamics(F=2.0 * jnp.eye(2), Q=jnp.eye(2))
        >>> kj.predict(b, dyn).cov.diagonal().tolist()
        [5.0, 5.0]
    """
    owner = "kalmanjax.predict"
    n, dtype = checks.check_belief(belief, owner)
    checks.check_dynamics(dynamics, n, dtype, owner)
    return linear_predict(belief, dynamics, choose_ops(fast, n))


# ------------------------------------------------------------------------- update


def observation_arrays(obs, model: LinearObservation, dtype, missing: bool):
    r"""``(y, H, R, d, num_observed)`` of one observation, as every path reads them.

    ``R`` is read as :math:`(R + R^\top)/2` (one answer for a slightly asymmetric
    input on every path). With ``missing``, NaN dimensions are zeroed out so the
    update equals dropping them: their rows of ``H`` and ``d`` are zero, their
    rows and columns of ``R`` the identity, and ``y`` is 0 there.
    """
    m = model.H.shape[0]
    R = symmetrize(model.R)
    if not missing:
        return obs, model.H, R, zeros_if_none(model.d, m, dtype), m
    observed = ~jnp.isnan(obs)
    y = jnp.where(observed, obs, 0.0).astype(dtype)
    H = jnp.where(observed[:, None], model.H, 0.0).astype(dtype)
    d = jnp.where(observed, zeros_if_none(model.d, m, dtype), 0.0).astype(dtype)
    both = observed[:, None] & observed[None, :]
    R = jnp.where(both, R, jnp.eye(m, dtype=dtype)).astype(dtype)
    num_observed = jnp.sum(observed).astype(dtype)
    return y, H, R, d, num_observed


def linear_update(
    belief,
    obs,
    model: LinearObservation,
    ops: LinalgOps,
    joseph: bool,
    missing: bool,
    predicted=None,
):
    """:func:`update` without the checks, with ``ops`` chosen by the caller.

    ``predicted`` (if given) replaces :math:`H m^- + d` as the predicted
    observation: a linearised model passes its own prediction, e.g.
    :math:`h(x_i) + H (m^- - x_i)` (see :mod:`kalmanjax.steps.linearize`).
    """
    dtype = belief.mean.dtype
    y, H, R, d, num_observed = observation_arrays(obs, model, dtype, missing)
    # R may be singular (a noise-free observation): its factor then has a zero
    # column, the square-root update stays exact and the information gain is +inf
    chol_r = ops.psd_cholesky(R)
    if predicted is None:
        innovation = y - ops.matmul(H, belief.mean) - d
    else:
        innovation = y - (
            jnp.where(jnp.isnan(obs), 0.0, predicted) if missing else predicted
        )

    if isinstance(belief, SqrtGaussian):
        (m, n), L = H.shape, belief.chol
        # the factor of [[S, H P], [P H^T, P]] = [[R, 0], [0, 0]] + [H L; L][H L; L]^T
        joint = jnp.concatenate([ops.matmul(H, L), L], axis=0)
        noise = jnp.zeros((m + n, m + n), dtype).at[:m, :m].set(R)
        noise_factor = jnp.concatenate([chol_r, jnp.zeros((n, m), dtype)], axis=0)
        tri = factor_of_sum(ops, joint, noise, noise_factor)
        chol_s, gain_factor, chol_new = tri[:m, :m], tri[m:, :m], tri[m:, m:]
        z = ops.solve_lower(chol_s, innovation)
        new = SqrtGaussian(mean=belief.mean + ops.matmul(gain_factor, z), chol=chol_new)
        innovation_cov = ops.matmul(chol_s, mT(chol_s))
    else:
        P = belief.cov
        HP = ops.matmul(H, P)
        innovation_cov = symmetrize(ops.matmul(HP, mT(H)) + R)
        chol_s = ops.cholesky(innovation_cov)
        # z = L_S^{-1} e and W = L_S^{-1} H P (K = W^T L_S^{-T}) in two solves, so
        # that W, and with it the covariance, depends on the data only through
        # the model: under vmap over sequences the covariance recursion stays
        # unbatched (one solve on [e, HP] would batch it)
        W = ops.solve_lower(chol_s, HP)
        z = ops.solve_lower(chol_s, innovation)
        mean = belief.mean + ops.matmul(mT(W), z)
        if joseph:
            # (I - KH) P (I - KH)^T + K R K^T in O(obs state^2): with
            # AP = (I - KH) P = P - W^T W it is AP - (AP H^T - K R) K^T. The
            # correction is ~0 in exact arithmetic; computed, it removes the
            # rounding error of AP in the observed directions, where P - W^T W
            # cancels (so the result stays positive semi-definite in float32).
            # AP H^T - K R is one product, [AP, K] [H^T; -R]
            K = mT(ops.solve_lower_t(chol_s, W))
            AP = P - ops.matmul(mT(W), W)
            correction = ops.matmul(
                jnp.concatenate([AP, K], 1), jnp.concatenate([mT(H), -R], 0)
            )
            cov = AP - ops.matmul(correction, mT(K))
        else:
            cov = P - ops.matmul(mT(W), W)
        new = Gaussian(mean=mean, cov=symmetrize(cov))

    logdet_s = logdet_from_chol(chol_s)
    info = UpdateInfo(
        log_likelihood=-0.5 * (jnp.sum(z * z) + logdet_s + num_observed * LOG_2PI),
        information_gain=0.5 * (logdet_s - logdet_from_chol(chol_r)),
        innovation=innovation,
        innovation_cov=innovation_cov,
    )
    return new, info


def update(
    belief: Gaussian | SqrtGaussian,
    obs,
    observation: LinearObservation,
    *,
    joseph: bool = True,
    missing: bool = True,
    fast: bool | None = None,
) -> tuple[Gaussian | SqrtGaussian, UpdateInfo]:
    r"""Condition a belief on one observation :math:`y = Hx + d + v`.

    Args:
        belief: the predicted belief (``Gaussian`` or ``SqrtGaussian``; the result
            keeps the form), mean of shape ``(state,)``.
        obs: the observation, shape ``(obs,)``; NaN entries are missing.
        observation: ``LinearObservation`` with ``H`` of shape ``(obs, state)`` and
            positive semi-definite ``R`` of shape ``(obs, obs)`` (``R = 0`` is a
            noise-free observation: exact in every form, with
            ``information_gain = +inf``; ``S = HPH^T + R`` must be definite).
        joseph: for a covariance-form belief, the Joseph update
            :math:`(I-KH)P(I-KH)^\top + KRK^\top` (default; positive
            semi-definite to rounding) rather than :math:`P - KSK^\top`.
        missing: treat NaN entries of ``obs`` as not observed (default). With
            ``False`` a NaN propagates into the result.
        fast: use the elementwise small-state kernels; ``None`` chooses them when
            ``state`` and ``obs`` are at most 8.

    Returns:
        ``(belief, info)``: the posterior belief and an :class:`UpdateInfo`.

    Raises:
        ValueError: on shapes that do not match the belief.
        TypeError: on mixed dtypes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> prior = kj.Gaussian(mean=jnp.zeros(1), cov=jnp.eye(1))
        >>> obs_model = kj.LinearObservation(H=jnp.eye(1), R=jnp.eye(1))
        >>> post, info = kj.update(prior, jnp.array([2.0]), obs_model)
        >>> post.mean.round(4).tolist(), post.cov.round(4).tolist()
        ([1.0], [[0.5]])
    """
    owner = "kalmanjax.update"
    n, dtype = checks.check_belief(belief, owner)
    m = checks.check_observation(observation, n, dtype, owner)
    checks.check_obs(obs, m, dtype, owner)
    return linear_update(
        belief, obs, observation, choose_ops(fast, n, m), joseph, missing
    )
