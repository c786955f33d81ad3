r"""Information: what tokens tell about the state, in nats.

:math:`\Delta I_t = \tfrac12\log\det S_t - \tfrac12\log\det R_t` (:math:`S_t =
H_t\Sigma_{t-1}H_t^\top + R_t`, the innovation covariance) is the mutual
information between the state and token :math:`t` given the earlier ones; its
running sum :math:`I_t` (:func:`cumulative_information`) is the information in
:math:`y_{1:t}`, and with :math:`Q = 0` equals :math:`\tfrac12\log\det\Sigma_0 -
\tfrac12\log\det\Sigma_t` (:func:`information_from_covariances`).
:math:`\Delta I` needs no observed value (:func:`token_information`,
:func:`condition_covariance`, :func:`duplicated_token_information`), and
:math:`J_t = H_t^\top R_t^{-1} H_t` is a token's information matrix
(:func:`token_information_matrices`): :math:`\Sigma_t^{-1} = \Sigma_0^{-1} +
\sum_{s \le t} J_s` when :math:`Q = 0`.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular
from jaxtyping import Array, Float

from ..core.checks import no_type_check
from ..core.filter import UpdateInfo
from ..core.linalg import mT, symmetrize
from .arrays import per_matrix
from .collapse import covariance_logdet

__all__ = [
    "condition_covariance",
    "cumulative_information",
    "duplicated_token_information",
    "information_from_covariances",
    "token_information",
    "token_information_matrices",
]


def cumulative_information(infos: Any, axis: int = 0) -> Float[Array, "*batch"]:
    r"""Cumulative information :math:`I_t = \sum_{s \le t} \Delta I_s` (nats).

    :math:`\Delta I_s = \tfrac12\log\det S_s - \tfrac12\log\det R_s` is the mutual
    information between the state and token :math:`s` given the earlier tokens,
    so :math:`I_t` is the information in :math:`y_{1:t}` (chain rule). With
    :math:`Q = 0` it equals
    :math:`\tfrac12\log\det\Sigma_0 - \tfrac12\log\det\Sigma_t`
    (:func:`information_from_covariances`).

    Args:
        infos: stacked :class:`~kalmanjax.UpdateInfo` (``information_gain`` of
            shape ``(T, ...)``) or the gains themselves.
        axis: the time axis.

    Returns:
        The running sums, same shape as the gains.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> kj.diagnostics.cumulative_information(jnp.array([0.5, 0.25])).tolist()
        [0.5, 0.75]
    """
    gains = infos.information_gain if isinstance(infos, UpdateInfo) else infos
    return jnp.cumsum(jnp.asarray(gains), axis=axis)


def information_from_covariances(prior: Any, beliefs: Any) -> Float[Array, "*batch"]:
    r""":math:`\tfrac12\log\det\Sigma_0 - \tfrac12\log\det\Sigma_t` (nats).

    The information the data carried about the state, read off the covariances;
    equal to :func:`cumulative_information` when :math:`Q = 0` (with
    :math:`Q > 0` the covariance also grows between tokens and the two differ).

    Args:
        prior: the prior belief (or covariance ``(state, state)``).
        beliefs: stacked beliefs (or covariances ``(..., state, state)``).

    Returns:
        Shape ``(...)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> float(kd.information_from_covariances(jnp.eye(1), 0.25 * jnp.eye(1)))
        0.6931471824645996
    """
    return 0.5 * (covariance_logdet(prior) - covariance_logdet(beliefs))


def token_information(
    cov: Float[Array, "state state"],
    H: Float[Array, "obs state"],
    R: Float[Array, "obs obs"],
) -> Float[Array, ""]:
    r"""Information one token would add (nats), before its value is seen.

    :math:`\Delta I = \tfrac12\log\det(H\Sigma H^\top + R) - \tfrac12\log\det R`.

    Needs no observed value: the information a token carries about a Gaussian
    state depends only on where it looks (:math:`H`), which is what makes
    information-ordered prompt selection possible (:func:`greedy_token_order`).

    Args:
        cov: the current covariance :math:`\Sigma`, ``(state, state)``.
        H: the token's observation matrix, ``(obs, state)``.
        R: its noise covariance, ``(obs, obs)``.

    Returns:
        A scalar.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> g = kd.token_information(jnp.eye(2), jnp.ones((1, 2)), jnp.eye(1))
        >>> round(float(g), 4)  # 1/2 log 3
        0.5493
    """
    S = H @ cov @ mT(H) + R
    return 0.5 * (covariance_logdet(symmetrize(S)) - covariance_logdet(R))


def condition_covariance(
    cov: Float[Array, "state state"],
    H: Float[Array, "obs state"],
    R: Float[Array, "obs obs"],
) -> Float[Array, "state state"]:
    r"""The covariance after conditioning on one token (no data needed).

    :math:`\Sigma' = \Sigma - \Sigma H^\top S^{-1} H\Sigma` with :math:`S =
    H\Sigma H^\top + R`, computed as :math:`\Sigma - W^\top W`, :math:`W =
    C^{-1} H\Sigma` for the Cholesky factor :math:`C C^\top = S`.

    Args:
        cov: the covariance :math:`\Sigma`, ``(state, state)``.
        H: the token's observation matrix, ``(obs, state)``.
        R: its noise covariance, ``(obs, obs)``.

    Returns:
        :math:`\Sigma'`, shape ``(state, state)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax.diagnostics.information import condition_covariance
        >>> condition_covariance(jnp.eye(1), jnp.eye(1), jnp.eye(1)).tolist()
        [[0.5]]
    """
    HP = H @ cov
    S = symmetrize(HP @ mT(H) + R)
    chol = jnp.linalg.cholesky(S)
    W = solve_triangular(chol, HP, lower=True)
    return symmetrize(cov - mT(W) @ W)


def duplicated_token_information(
    cov: Float[Array, "state state"],
    H: Float[Array, "obs state"],
    R: Float[Array, "obs obs"],
    copies: int,
) -> Float[Array, " batch"]:
    r"""The information each successive copy of one token adds, as a filter counts it.

    The filter treats every copy as an independent measurement, so copy
    :math:`k` adds :math:`\tfrac12\log\det(H\Sigma_{k-1}H^\top + R) -
    \tfrac12\log\det R`; for a scalar token with prior variance :math:`v` along
    it, copy :math:`k` adds :math:`\tfrac12\log\frac{r + k v}{r + (k-1) v}`,
    at most :math:`\tfrac12\log 2` nats from the second copy on however
    informative the first was. A literal duplicate (same :math:`x` and the same
    :math:`y`, hence the same noise) carries *no* new information about the
    state: what the filter adds for it is double counting (it becomes
    over-confident; see the calibration experiment).

    Args:
        cov: the covariance before the first copy, ``(state, state)``.
        H: the token's observation matrix, ``(obs, state)``.
        R: its noise covariance, ``(obs, obs)``.
        copies: how many copies (static).

    Returns:
        The gains, shape ``(copies,)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> g = kd.duplicated_token_information(
        ...     jnp.eye(1), jnp.eye(1), 0.01 * jnp.eye(1), 3)
        >>> [round(float(v), 3) for v in g]  # 1/2 log 101, 1/2 log(201/101), ...
        [2.308, 0.344, 0.202]
    """

    def body(c, _):
        return condition_covariance(c, H, R), token_information(c, H, R)

    _, gains = lax.scan(body, cov, None, length=copies)
    return gains


@no_type_check
def token_information_matrices(
    H_seq: Float[Array, "time obs state"], R: Float[Array, "*time obs obs"]
) -> Float[Array, "time state state"]:
    r"""Per-token information :math:`J_t = H_t^\top R_t^{-1} H_t`.

    Args:
        H_seq: the observation matrices (token Jacobians), ``(T, obs, state)``.
        R: the noise covariance, ``(obs, obs)`` or per token ``(T, obs, obs)``.

    Returns:
        Shape ``(T, state, state)``.

    Raises:
        ValueError: on shapes that do not fit.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> J = kd.token_information_matrices(jnp.ones((4, 1, 2)), 0.5 * jnp.eye(1))
        >>> J.shape, J[0].round(4).tolist()
        ((4, 2, 2), [[2.0, 2.0], [2.0, 2.0]])
    """
    H_seq = jnp.asarray(H_seq)
    R = jnp.asarray(R)
    if H_seq.ndim != 3:
        raise ValueError(
            "token_information_matrices: H_seq must have shape (T, obs, state), "
            f"got {H_seq.shape}"
        )
    T, m, _ = H_seq.shape
    if R.shape not in ((m, m), (T, m, m)):
        raise ValueError(
            f"token_information_matrices: R must have shape ({m}, {m}) or "
            f"({T}, {m}, {m}) for H_seq of shape {H_seq.shape}, got {R.shape}"
        )
    R = jnp.broadcast_to(R, (T, m, m))

    def one(r, h):
        w = solve_triangular(jnp.linalg.cholesky(r), h, lower=True)
        return mT(w) @ w

    return per_matrix(one, R, H_seq)
