r"""A categorical (next-token) observation, moment-matched, in :math:`O(V k^2)`.

The observation is a token :math:`y_t \in \{0, \dots, V-1\}`, read as the one-hot
vector :math:`e_{y_t}` with predicted mean and covariance under
:math:`\operatorname{softmax}(z(\theta))` (:math:`z` the logits, a function of the
state :math:`\theta \in \mathbb R^k`):

.. math::

    p = \operatorname{softmax}(z(\theta)), \qquad
    R = \operatorname{diag}(p) - p p^\top + \epsilon I, \qquad
    H = \partial p / \partial\theta = (\operatorname{diag}(p) - p p^\top)\,
        \partial z / \partial\theta .

The Gaussian update with these moments is computed in information form, never
forming a :math:`V \times V` matrix:

.. math::

    M = H^\top R^{-1} H, \quad g = H^\top R^{-1} e, \quad
    P_+ = (P^{-1} + M)^{-1} = P - P M (I + P M)^{-1} P, \quad
    m_+ = m^- + P_+ g,

with :math:`R^{-1}` applied by Sherman-Morrison (:math:`R` is diagonal minus rank
one), so the cost is :math:`O(V k^2)` time and :math:`O(V k)` memory. The
log-likelihood and information gain use the matrix determinant lemma,
:math:`\log\det S = \log\det R + \log\det(I + PM)` and
:math:`e^\top S^{-1} e = e^\top R^{-1} e - g^\top P_+ g` (Woodbury). They are those
of the moment-matched Gaussian, not of the categorical distribution: use
:math:`\log p_{y_t}` for the latter. The jitter :math:`\epsilon` regularises the
direction :math:`\mathbf 1`, in which :math:`\operatorname{diag}(p) - pp^\top` is
singular (``H`` and ``e`` have no component along it).

A token id outside ``0..V-1`` (negative, or ``>= V``) is not observed: the belief
is unchanged and the step's infos are zero, as for a missing observation. The
logits must be a floating vector of the state's dtype (checked at trace time).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Shaped

from ..core import checks
from ..core.beliefs import Gaussian, SqrtGaussian
from ..core.filter import UpdateInfo
from ..core.linalg import GENERAL, logdet_from_chol, mT, symmetrize
from ..core.models import CategoricalObservation
from .linear import LOG_2PI
from .linearize import Method, iterate_linearization, linearize, linearized_prediction

__all__ = [
    "categorical_condition",
    "categorical_update",
    "inverse_noise",
    "noise_precision",
]


def noise_precision(p: Float[Array, " vocab"], jitter: Float[Array, ""]):
    r"""``(a, u, c)`` with :math:`R^{-1} = \operatorname{diag}(a) + u u^\top / c`.

    For :math:`R = \operatorname{diag}(p) - p p^\top + \epsilon I` (Sherman-Morrison;
    both terms are positive semi-definite, so ``[diag(sqrt(a)), u / sqrt(c)]`` is a
    factor of :math:`R^{-1}`).
    """
    a = 1.0 / (p + jitter)
    u = p * a
    c = jitter * jnp.sum(u)  # = 1 - p^T D^{-1} p (sum p = 1), without cancellation
    return a, u, c


def inverse_noise(p: Float[Array, " vocab"], jitter: Float[Array, ""]):
    """``apply(v) = R^{-1} v`` and ``log det R`` for ``R = diag(p) - p p^T + eps I``."""
    a, u, c = noise_precision(p, jitter)

    def apply(v):
        if v.ndim == 1:
            return a * v + u * (u @ v) / c
        return a[:, None] * v + jnp.outer(u, u @ v) / c

    return apply, jnp.sum(jnp.log(p + jitter)) + jnp.log(c)


def _condition_at(predicted, token, model, point, inputs, method):
    dtype = predicted.mean.dtype
    logits, jz = linearize(model.fn, point, inputs, method=method)
    p = jax.nn.softmax(logits)
    jp = p[:, None] * (jz - (p @ jz)[None, :])  # (diag p - p p^T) dz/dtheta
    mean_obs = linearized_prediction(p, jp, point, predicted.mean)
    innovation = jax.nn.one_hot(token, p.shape[0], dtype=dtype) - mean_obs
    r_inv, logdet_r = inverse_noise(p, jnp.asarray(model.jitter, dtype))
    r_inv_h = r_inv(jp)
    M = mT(jp) @ r_inv_h
    g = mT(r_inv_h) @ innovation
    k = predicted.mean.shape[0]
    eye = jnp.eye(k, dtype=dtype)
    if isinstance(predicted, SqrtGaussian):
        L = predicted.chol
        chol_b = GENERAL.cholesky(symmetrize(eye + mT(L) @ M @ L))
        X = GENERAL.solve_lower(chol_b, mT(L))  # P_+ = X^T X
        mean = predicted.mean + mT(X) @ (X @ g)
        posterior = SqrtGaussian(mean=mean, chol=GENERAL.tria(mT(X)))
        logdet_b = logdet_from_chol(chol_b)
        quad = jnp.sum((X @ g) ** 2)
    else:
        P = predicted.cov
        B = eye + P @ M
        P_post = symmetrize(P - P @ M @ GENERAL.solve(B, P))
        mean = predicted.mean + P_post @ g
        posterior = Gaussian(mean=mean, cov=P_post)
        logdet_b = jnp.linalg.slogdet(B)[1]
        quad = g @ P_post @ g
    e_r_e = innovation @ r_inv(innovation)
    vocab = p.shape[0]
    info = UpdateInfo(
        log_likelihood=-0.5 * (e_r_e - quad + logdet_r + logdet_b + vocab * LOG_2PI),
        information_gain=0.5 * logdet_b,
        innovation=innovation,
        innovation_cov=None,
    )
    return posterior, info


def categorical_condition(
    predicted, token, model, inputs, method, num_iter, owner="categorical_update"
):
    """:func:`categorical_update` without the belief checks (the EKF's step).

    Checks the logits' shape and dtype (at trace time) and treats a token id
    outside ``0..vocab-1`` as missing.
    """
    logits = jax.eval_shape(model.fn, predicted.mean, inputs)
    checks.check_fn_output(
        logits, None, "observation.fn", "(vocab,)", predicted.mean.dtype, owner
    )
    posterior, info = iterate_linearization(
        lambda about: _condition_at(
            predicted, token, model, about.mean, inputs, method
        ),
        predicted,
        num_iter,
    )
    observed = (token >= 0) & (token < logits.shape[0])
    unchanged_info = jax.tree_util.tree_map(jnp.zeros_like, info)
    return jax.tree_util.tree_map(
        lambda new, old: jnp.where(observed, new, old),
        (posterior, info),
        (predicted, unchanged_info),
    )


def categorical_update(
    belief: Gaussian | SqrtGaussian,
    token: Shaped[ArrayLike, ""],
    observation: CategoricalObservation,
    inputs: Any = None,
    *,
    num_iter: int = 1,
    method: Method = "jacfwd",
) -> tuple[Gaussian | SqrtGaussian, UpdateInfo]:
    r"""Condition a belief on one observed token (moment-matched, Woodbury form).

    Args:
        belief: the predicted belief over :math:`\theta`, mean of shape ``(state,)``.
        token: the observed token id, an integer scalar; an id outside
            ``0..vocab-1`` is missing (the belief is unchanged).
        observation: a :class:`CategoricalObservation` with ``fn(x, inputs)``
            returning logits of shape ``(vocab,)``.
        inputs: passed to ``observation.fn``.
        num_iter: linearisations (1 = EKF; more = iterated, conditioning once).
        method: ``"jacfwd"`` or ``"jacrev"`` for :math:`\partial z/\partial\theta`.

    Returns:
        ``(belief, info)``; ``info.innovation`` is :math:`e_y - p` of shape
        ``(vocab,)`` and ``info.innovation_cov`` is ``None`` (it is never formed).

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> W = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])  # 3 tokens, k = 2
        >>> obs = kj.CategoricalObservation(fn=lambda th, u: W @ th)
        >>> prior = kj.Gaussian(mean=jnp.zeros(2), cov=jnp.eye(2))
        >>> post, info = kj.categorical_update(prior, jnp.array(0), obs)
        >>> bool(post.mean[0] > 0), bool(jnp.trace(post.cov) < 2.0)
        (True, True)
    """
    owner = "kalmanjax.categorical_update"
    checks.check_num_iter(num_iter, owner)
    checks.check_belief(belief, owner)
    checks.check_token(token, owner)
    return categorical_condition(
        belief, token, observation, inputs, method, num_iter, owner
    )
