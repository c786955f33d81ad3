r"""Observability: the information a window of tokens holds, and the bounds it gives.

The windowed Gramian :math:`G_{t,N} = \sum_{s=t-N+1}^{t} H_s^\top R_s^{-1} H_s`
(:func:`observability_gramian`; :math:`F = I`) measures what the last :math:`N`
tokens pin down; uniform observability is :math:`G_{t,N} \succeq \alpha I`. The
covariance it leaves, :math:`(\Sigma_0^{-1} + G)^{-1}`
(:func:`gramian_covariance_bound`), is :math:`\Sigma_t` itself for the
cumulative Gramian and :math:`Q = 0`, an upper bound for a window, and a lower
bound when :math:`Q \succ 0`; the upper bound for :math:`Q \succeq 0` is the
window least-squares estimator's error covariance
(:func:`windowed_covariance_bound`).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular
from jaxtyping import Array, Float

from ..core.checks import no_type_check
from ..core.linalg import mT, symmetrize
from .arrays import per_matrix
from .information import token_information_matrices

__all__ = [
    "gramian_covariance_bound",
    "observability_gramian",
    "windowed_covariance_bound",
]


@no_type_check
def observability_gramian(
    H_seq: Float[Array, "time obs state"],
    R: Float[Array, "*time obs obs"],
    window: int | None = None,
) -> Float[Array, "time state state"]:
    r"""Windowed observability (information) Gramian of the last ``window`` tokens.

    :math:`G_{t,N} = \sum_{s=t-N+1}^{t} H_s^\top R_s^{-1} H_s`.

    This is the Gramian for :math:`F = I` (a fixed or random-walk task state,
    the in-context setting). For a general invertible :math:`F` the Gramian of
    the window refers each token back to :math:`x_t`:
    :math:`\sum_s \Phi_{s,t}^\top H_s^\top R_s^{-1} H_s \Phi_{s,t}` with
    :math:`\Phi_{s,t} = F^{-(t-s)}`; pass ``H_s \Phi_{s,t}`` as ``H_seq`` to get it.
    The system is uniformly observable over windows of :math:`N` tokens when
    :math:`G_{t,N} \succeq \alpha I` for all :math:`t \ge N`; the smallest
    eigenvalue (``jnp.linalg.eigvalsh(G)[..., 0]``) is that :math:`\alpha`.

    Args:
        H_seq: the observation matrices (token Jacobians), ``(T, obs, state)``.
        R: the noise covariance, ``(obs, obs)`` or ``(T, obs, obs)``.
        window: :math:`N`, the number of tokens summed (static); ``None`` sums all
            tokens so far (the cumulative Gramian :math:`G_t`). For
            :math:`t < N` the window holds the :math:`t` tokens there are.

    Returns:
        :math:`G_{t,N}` for :math:`t = 1..T`, shape ``(T, state, state)``.

    Raises:
        ValueError: on a non-positive window or shapes that do not fit.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> H = jnp.ones((5, 1, 1))
        >>> kd.observability_gramian(H, jnp.eye(1), window=2)[:, 0, 0].tolist()
        [1.0, 2.0, 2.0, 2.0, 2.0]
    """
    J = token_information_matrices(H_seq, R)
    if window is None:
        return jnp.cumsum(J, axis=0)
    if not isinstance(window, int) or window < 1:
        raise ValueError(
            f"observability_gramian: window must be a positive int or None, "
            f"got {window!r}"
        )
    return _window_sum(J, window)


def _window_sum(J: Array, window: int) -> Array:
    """Sum over the last ``window`` entries along axis 0 (zero padding in front)."""
    return lax.reduce_window(
        J,
        jnp.zeros((), J.dtype),
        lax.add,
        window_dimensions=(window, 1, 1),
        window_strides=(1, 1, 1),
        padding=((window - 1, 0), (0, 0), (0, 0)),
    )


def gramian_covariance_bound(
    prior_cov: Float[Array, "state state"], gramian: Float[Array, "*batch state state"]
) -> Float[Array, "*batch state state"]:
    r"""The covariance the information G leaves: :math:`(\Sigma_0^{-1} + G)^{-1}`.

    With :math:`F = I` and :math:`Q = 0`, and :math:`G = G_t` the cumulative
    Gramian, this *is* the filtered covariance: :math:`\Sigma_t^{-1} =
    \Sigma_0^{-1} + G_t` (information form). With a windowed Gramian
    :math:`G_{t,N} \preceq G_t` it is an upper bound on :math:`\Sigma_t` (still
    :math:`Q = 0`). With :math:`Q \succ 0` and the cumulative Gramian it is a
    *lower* bound (process noise only adds uncertainty); the upper bound for
    :math:`Q \succ 0` is :func:`windowed_covariance_bound`.

    Args:
        prior_cov: :math:`\Sigma_0`, ``(state, state)``, positive definite.
        gramian: :math:`G`, ``(..., state, state)``.

    Returns:
        Shape ``(..., state, state)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> kd.gramian_covariance_bound(jnp.eye(1), 3.0 * jnp.eye(1)).tolist()
        [[0.25]]
    """
    prior_cov = jnp.asarray(prior_cov)
    eye = jnp.eye(prior_cov.shape[-1], dtype=prior_cov.dtype)
    prior_prec = jnp.linalg.solve(prior_cov, eye)
    gramian = jnp.asarray(gramian)

    def one(g):
        chol = jnp.linalg.cholesky(symmetrize(prior_prec + g))
        inv_chol = solve_triangular(chol, eye, lower=True)
        return mT(inv_chol) @ inv_chol

    if gramian.ndim == 2:
        return one(gramian)
    return per_matrix(one, gramian)


@no_type_check
def windowed_covariance_bound(
    H_seq: Float[Array, "time obs state"],
    R: Float[Array, "*time obs obs"],
    Q: Float[Array, "state state"],
    window: int,
) -> Float[Array, "time state state"]:
    r"""An upper bound on :math:`\Sigma_t` from the last ``window`` tokens (F = I).

    For any :math:`Q \succeq 0`: uniform observability implies a bounded covariance.

    The filter's :math:`\Sigma_t` is the smallest error covariance of any
    estimator of :math:`x_t` from the data, so it is at most that of the
    window's least-squares estimator :math:`\hat x_t = G^{-1}\sum_s H_s^\top
    R_s^{-1} y_s` (:math:`G = G_{t,N}`). Writing :math:`x_s = x_t -
    \sum_{k=s+1}^{t} w_k`, that estimator's error covariance is

    .. math::

        \Sigma_t \preceq G^{-1} + G^{-1}\Big(\sum_{j=1}^{N-1} B_j Q B_j\Big) G^{-1},
        \qquad B_j = G_{t-N+j,\,j}

    (:math:`B_j` the Gramian of the window's first :math:`j` tokens). It needs
    :math:`G_{t,N} \succ 0` (returns non-finite values where :math:`G` is
    singular), does not depend on the prior and, for :math:`Q = 0`, reduces to
    :math:`G_{t,N}^{-1}`. For :math:`t < N` the window holds the first
    :math:`t` tokens (still a valid bound).

    Args:
        H_seq: observation matrices ``(T, obs, state)``.
        R: noise covariance ``(obs, obs)`` or ``(T, obs, obs)``.
        Q: process-noise covariance ``(state, state)`` (random-walk state, F = I).
        window: :math:`N` (static).

    Returns:
        The bound for :math:`t = 1..T`, shape ``(T, state, state)``.

    Raises:
        ValueError: on a non-positive window or shapes that do not fit.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> H = jnp.ones((4, 1, 1))
        >>> b = kd.windowed_covariance_bound(H, jnp.eye(1), 0.5 * jnp.eye(1), 2)
        >>> b[:, 0, 0].tolist()  # 1/2 + (1 * 0.5 * 1) / 4 from t = 2 on
        [1.0, 0.625, 0.625, 0.625]
    """
    if not isinstance(window, int) or window < 1:
        raise ValueError(
            f"windowed_covariance_bound: window must be a positive int, got {window!r}"
        )
    J = token_information_matrices(H_seq, R)
    T, n, _ = J.shape
    Q = jnp.asarray(Q)
    if Q.shape != (n, n):
        raise ValueError(
            f"windowed_covariance_bound: Q must have shape ({n}, {n}), got {Q.shape}"
        )
    G = _window_sum(J, window)
    noise = jnp.zeros_like(G)
    for j in range(1, window):
        # B_j at time t is the Gramian of window j ending at t - N + j (shift by N - j)
        B = _window_sum(J, j)
        shift = window - j
        B = jnp.concatenate([jnp.zeros((shift, n, n), J.dtype), B[: T - shift]], 0)
        noise = noise + B @ Q @ B
    eye = jnp.eye(n, dtype=J.dtype)

    def one(g, c):
        g_inv = jnp.linalg.solve(g, eye)
        return symmetrize(g_inv + g_inv @ c @ g_inv)

    return per_matrix(one, G, noise)
