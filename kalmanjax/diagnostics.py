r"""Theory instruments: covariance collapse, information, observability, contraction.

Pure functions of stacked beliefs (a leading time axis, as returned in
``kalmanjax.run(...).states``), stacked :class:`~kalmanjax.UpdateInfo` and
sequences of observation matrices (token Jacobians). All of them work under
``jax.jit`` and ``jax.vmap``; shapes and the math are in each docstring. On CPU,
large batches of small matrices are factorised in chunks (``lax.map``) to avoid a
jaxlib thread-pool deadlock; when mapping a diagnostic over many tasks on CPU, use
``jax.lax.map`` over the tasks rather than ``jax.vmap`` (see the experiments).

Notation: :math:`\Sigma_t` is the filtered covariance after token :math:`t`,
:math:`\Sigma_0` the prior's, :math:`H_t` the observation matrix (token
Jacobian, ``(obs, state)``), :math:`R_t` its noise covariance and
:math:`J_t = H_t^\top R_t^{-1} H_t` the information a token carries.

Regimes of contraction (theory.md, item 4), which these functions let one tell
apart:

* :math:`Q = 0`: :math:`\Sigma_t^{-1} = \Sigma_0^{-1} + \sum_{s \le t} J_s`, so with
  i.i.d. tokens :math:`\operatorname{tr}\Sigma_t \sim d\,r / (t\,\mathbb E[x^2])`:
  a :math:`1/t` tail (:func:`tail_exponent`, :func:`inverse_t_ratio`), not an
  exponential one;
* the early collapse phase (:math:`t < d` scalar tokens): the volume
  :math:`\det\Sigma_t` shrinks by :math:`e^{-2\,\Delta I_t}` per token
  (:func:`covariance_logdet`, :func:`fit_exponential_rate`);
* :math:`Q > 0`: geometric convergence towards a floor (``floor=`` in
  :func:`fit_exponential_rate`), and two initial covariances forget their
  difference geometrically in the Riemannian metric (:func:`riccati_distance`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular
from jaxtyping import Array, Float, Int

from .core.batching import LAPACK_SPLIT_FLOPS
from .core.beliefs import Gaussian, SqrtGaussian
from .core.filter import UpdateInfo
from .core.linalg import mT, symmetrize

__all__ = [
    "Calibration",
    "LinearFit",
    "covariance_eigenvalues",
    "covariance_logdet",
    "covariance_trace",
    "cumulative_information",
    "duplicated_token_information",
    "expected_mean_error",
    "fit_exponential_rate",
    "gramian_covariance_bound",
    "greedy_token_order",
    "information_from_covariances",
    "inverse_t_ratio",
    "mean_time_to_eps",
    "mse_calibration",
    "observability_gramian",
    "riccati_distance",
    "tail_exponent",
    "time_to_eps",
    "token_information",
    "token_information_matrices",
    "windowed_covariance_bound",
]


def _cov(x: Any, name: str, owner: str) -> Array:
    """The covariance(s) held by a belief, or the array itself."""
    if isinstance(x, SqrtGaussian | Gaussian):
        c = x.cov
    else:
        c = jnp.asarray(x)
    if c.ndim < 2 or c.shape[-1] != c.shape[-2]:
        raise ValueError(
            f"{owner}: {name} must be a belief or an array of shape (..., state, "
            f"state), got shape {c.shape}"
        )
    return c


def _per_matrix(fn, *arrays: Array) -> Any:
    """Apply ``fn`` (written for one matrix) over the leading axes of ``arrays``.

    The first array sets the batch shape (all axes but its last two). On CPU a
    large batch goes through ``lax.map`` in chunks: jaxlib's CPU LAPACK kernels
    split a big batched call across XLA's thread pool and block a pool thread
    until it finishes, and two such calls at once deadlock a 2-thread pool (see
    :mod:`kalmanjax.parallel`). Elsewhere (and for small batches) it is a
    ``vmap``. Under a user's ``vmap`` the chunks grow by the outer batch size, so
    on CPU map over tasks with ``lax.map`` rather than ``vmap``.
    """
    batch = arrays[0].shape[:-2]
    n = arrays[0].shape[-1]
    size = math.prod(batch)
    flat = [a.reshape((size,) + a.shape[len(batch) :]) for a in arrays]
    # ~10 n^3 flops per matrix (an eigendecomposition) against the split threshold
    chunk = max(1, LAPACK_SPLIT_FLOPS // (10 * n**3 + 1) - 1)
    if jax.default_backend() != "cpu" or size <= chunk:
        out = jax.vmap(fn)(*flat)
    else:
        out = lax.map(lambda xs: fn(*xs), tuple(flat), batch_size=chunk)
    return jax.tree_util.tree_map(lambda o: o.reshape(batch + o.shape[1:]), out)


# ------------------------------------------------------------- covariance collapse


def covariance_trace(beliefs: Any) -> Float[Array, "*batch"]:
    r""":math:`\operatorname{tr}\Sigma_t` for every leading index.

    Args:
        beliefs: a ``Gaussian`` (cov of shape ``(..., state, state)``), a
            ``SqrtGaussian`` (``chol`` of that shape; the trace is
            :math:`\sum_{ij} L_{ij}^2`) or a covariance array.

    Returns:
        Shape ``(...)``, e.g. ``(T,)`` for stacked filtered beliefs.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> b = kj.Gaussian(mean=jnp.zeros((3, 2)), cov=jnp.stack([jnp.eye(2)] * 3))
        >>> kj.diagnostics.covariance_trace(b).tolist()
        [2.0, 2.0, 2.0]
    """
    if isinstance(beliefs, SqrtGaussian):
        return jnp.sum(beliefs.chol * beliefs.chol, axis=(-2, -1))
    c = _cov(beliefs, "beliefs", "covariance_trace")
    return jnp.trace(c, axis1=-2, axis2=-1)


def covariance_logdet(beliefs: Any) -> Float[Array, "*batch"]:
    r""":math:`\log\det\Sigma_t` for every leading index.

    From the Cholesky factor: :math:`2\sum_i \log L_{ii}` (for a ``SqrtGaussian``
    its own factor, else a Cholesky factorisation of the covariance). A singular
    covariance gives ``-inf`` (square-root form) or ``nan`` (covariance form).

    Args:
        beliefs: a ``Gaussian``, ``SqrtGaussian`` or covariance array
            ``(..., state, state)``.

    Returns:
        Shape ``(...)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> b = kj.SqrtGaussian(mean=jnp.zeros(2), chol=2.0 * jnp.eye(2))
        >>> round(float(kj.diagnostics.covariance_logdet(b)), 4)  # log 16
        2.7726
    """
    if isinstance(beliefs, SqrtGaussian):
        chol = beliefs.chol
    else:
        c = _cov(beliefs, "beliefs", "covariance_logdet")
        chol = _per_matrix(jnp.linalg.cholesky, c)
    diag = jnp.abs(jnp.diagonal(chol, axis1=-2, axis2=-1))
    return 2.0 * jnp.sum(jnp.log(diag), axis=-1)


def covariance_eigenvalues(beliefs: Any) -> Float[Array, "*batch state"]:
    r"""Eigenvalues of :math:`\Sigma_t` in ascending order.

    For a ``SqrtGaussian`` they are the squared singular values of :math:`L`
    (accurate down to :math:`\epsilon\,\|L\|^2` rather than
    :math:`\epsilon\,\|\Sigma\|`).

    Args:
        beliefs: a ``Gaussian``, ``SqrtGaussian`` or covariance array
            ``(..., state, state)``.

    Returns:
        Shape ``(..., state)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> c = jnp.diag(jnp.array([3.0, 1.0]))
        >>> kj.diagnostics.covariance_eigenvalues(c).tolist()
        [1.0, 3.0]
    """
    if isinstance(beliefs, SqrtGaussian):
        s = _per_matrix(lambda L: jnp.linalg.svd(L, compute_uv=False), beliefs.chol)
        return jnp.flip(s * s, axis=-1)
    c = _cov(beliefs, "beliefs", "covariance_eigenvalues")
    return _per_matrix(lambda a: jnp.linalg.eigvalsh(symmetrize(a)), c)


# --------------------------------------------------------------------- information


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


def _condition_cov(cov, H, R):
    """The covariance after conditioning on one token (no data needed)."""
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
) -> Float[Array, " copies"]:
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
        return _condition_cov(c, H, R), token_information(c, H, R)

    _, gains = lax.scan(body, cov, None, length=copies)
    return gains


def token_information_matrices(
    H_seq: Float[Array, "T obs state"], R: Float[Array, "*T obs obs"]
) -> Float[Array, "T state state"]:
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

    return _per_matrix(one, R, H_seq)


# -------------------------------------------------------------------- observability


def observability_gramian(
    H_seq: Float[Array, "T obs state"],
    R: Float[Array, "*T obs obs"],
    window: int | None = None,
) -> Float[Array, "T state state"]:
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
    return _per_matrix(one, gramian)


def windowed_covariance_bound(
    H_seq: Float[Array, "T obs state"],
    R: Float[Array, "*T obs obs"],
    Q: Float[Array, "state state"],
    window: int,
) -> Float[Array, "T state state"]:
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

    return _per_matrix(one, G, noise)


# ---------------------------------------------------------------- contraction fits


class LinearFit(NamedTuple):
    """A least-squares line through transformed data.

    Attributes:
        slope: the fitted rate or exponent (see the function that returned it).
        intercept: the fitted intercept.
        r_squared: the fraction of variance the line explains (1 = a perfect
            fit); a poor fit means the assumed law does not describe the data.
    """

    slope: Float[Array, ""]
    intercept: Float[Array, ""]
    r_squared: Float[Array, ""]


def _line(x: Array, y: Array) -> LinearFit:
    xm, ym = jnp.mean(x), jnp.mean(y)
    dx, dy = x - xm, y - ym
    sxx = jnp.sum(dx * dx)
    slope = jnp.sum(dx * dy) / sxx
    resid = dy - slope * dx
    r2 = 1.0 - jnp.sum(resid * resid) / jnp.sum(dy * dy)
    return LinearFit(slope=slope, intercept=ym - slope * xm, r_squared=r2)


def _time_axis(values: Array, t: Any) -> Array:
    if t is None:
        return jnp.arange(1, values.shape[0] + 1, dtype=values.dtype)
    t = jnp.asarray(t, dtype=values.dtype)
    if t.shape != values.shape:
        raise ValueError(
            f"t must have the shape of values {values.shape}, got {t.shape}"
        )
    return t


def fit_exponential_rate(
    values: Float[Array, " T"],
    t: Float[Array, " T"] | None = None,
    *,
    floor: float | Array = 0.0,
    start: int = 0,
    stop: int | None = None,
) -> LinearFit:
    r"""Fit :math:`v_t - v_\infty \approx C e^{-\lambda t}`; return the rate.

    The slope returned is the rate :math:`\lambda`.

    Least squares of :math:`\log(v_t - v_\infty)` on :math:`t` over
    ``values[start:stop]``. :math:`\lambda > 0` means geometric contraction by
    :math:`e^{-\lambda}` per token. Use ``floor`` for convergence towards a
    steady state (:math:`Q > 0`). A 1/t law fitted this way gives a rate that
    drifts with the window and a poor ``r_squared``; compare
    :func:`tail_exponent`.

    Args:
        values: a positive sequence, e.g. :func:`covariance_trace` or
            :func:`riccati_distance` over tokens, shape ``(T,)``.
        t: the token index of each value, ``(T,)``; default ``1..T``.
        floor: :math:`v_\infty`, subtracted first (must lie below the window's
            values).
        start: first index of the window (static).
        stop: one past the last index (static); default the end.

    Returns:
        ``LinearFit(slope=rate, intercept=log C, r_squared)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> v = 2.0 + 3.0 * jnp.exp(-0.5 * jnp.arange(1.0, 21.0))
        >>> round(float(kd.fit_exponential_rate(v, floor=2.0).slope), 4)
        0.5
    """
    values = jnp.asarray(values)
    t = _time_axis(values, t)
    fit = _line(t[start:stop], jnp.log(values[start:stop] - floor))
    return fit._replace(slope=-fit.slope)


def tail_exponent(
    values: Float[Array, " T"],
    t: Float[Array, " T"] | None = None,
    *,
    start: int = 0,
    stop: int | None = None,
) -> LinearFit:
    r"""Log-log slope: fit :math:`v_t \approx C t^{p}` on a window; return :math:`p`.

    With :math:`Q = 0` and i.i.d. tokens :math:`\operatorname{tr}\Sigma_t` has
    :math:`p = -1` for :math:`t \gg d` (no exponential contraction: an
    exponential law would show as a slope that keeps steepening with the window).

    Args:
        values: a positive sequence ``(T,)``.
        t: token indices ``(T,)``; default ``1..T``.
        start: first index of the window (static).
        stop: one past the last index (static).

    Returns:
        ``LinearFit(slope=p, intercept=log C, r_squared)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> t = jnp.arange(1.0, 101.0)
        >>> round(float(kd.tail_exponent(3.0 / t).slope), 4)
        -1.0
    """
    values = jnp.asarray(values)
    t = _time_axis(values, t)
    return _line(jnp.log(t[start:stop]), jnp.log(values[start:stop]))


def inverse_t_ratio(
    traces: Float[Array, " T"],
    dim: int,
    noise_var: float,
    input_second_moment: float = 1.0,
    t: Float[Array, " T"] | None = None,
) -> Float[Array, " T"]:
    r"""The 1/t tail test: :math:`t\operatorname{tr}\Sigma_t / (d\,r / \mathbb E[x^2])`.

    It tends to 1 in the :math:`Q = 0` tail.

    With i.i.d. inputs of covariance :math:`s I` (:math:`s = \mathbb E[x_i^2]`),
    :math:`\Sigma_t^{-1} = \Sigma_0^{-1} + X^\top X / r \approx t s I / r`, so
    :math:`t\operatorname{tr}\Sigma_t \to d r / s`. For Gaussian inputs the exact
    mean is :math:`\mathbb E\,t\operatorname{tr}(X^\top X/r)^{-1} = d r t /
    (s(t - d - 1))` (inverse Wishart), so the ratio approaches 1 from above
    like :math:`1 + (d+1)/t` (less the prior's pull).

    Args:
        traces: :math:`\operatorname{tr}\Sigma_t`, ``(T,)``.
        dim: :math:`d`.
        noise_var: :math:`r`.
        input_second_moment: :math:`s = \mathbb E[x_i^2]`.
        t: token indices; default ``1..T``.

    Returns:
        The ratio, shape ``(T,)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> t = jnp.arange(1.0, 5.0)
        >>> kd.inverse_t_ratio(0.2 / t, dim=2, noise_var=0.1).round(4).tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    traces = jnp.asarray(traces)
    t = _time_axis(traces, t)
    return t * traces * input_second_moment / (dim * noise_var)


def riccati_distance(cov_a: Any, cov_b: Any) -> Float[Array, "*batch"]:
    r"""Riemannian (affine-invariant) distance between covariances.

    :math:`\delta(A, B) = \big(\sum_i \log^2 \lambda_i(A^{-1}B)\big)^{1/2}`.

    The metric in which the Riccati map is a strict contraction under
    observability and controllability (Bougerol 1993): run one filter from two
    initial covariances and :math:`\delta(\Sigma_t, \Sigma'_t)` decays
    geometrically when :math:`Q \succ 0`; fit its rate with
    :func:`fit_exponential_rate`. With :math:`Q = 0` the two information
    matrices keep a constant difference while both grow linearly, so the
    distance decays only like :math:`1/t`.

    Args:
        cov_a: beliefs or covariances ``(..., state, state)``, positive definite.
        cov_b: the same shape.

    Returns:
        Shape ``(...)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> a, b = jnp.eye(2), jnp.diag(jnp.array([jnp.e, 1.0]))
        >>> round(float(kd.riccati_distance(a, b)), 4)
        1.0
    """
    a = _cov(cov_a, "cov_a", "riccati_distance")
    b = _cov(cov_b, "cov_b", "riccati_distance")
    if a.shape != b.shape:
        raise ValueError(
            f"riccati_distance: cov_a and cov_b must have the same shape, got "
            f"{a.shape} and {b.shape}"
        )

    def one(a, b):
        chol = jnp.linalg.cholesky(symmetrize(a))
        w = solve_triangular(chol, b, lower=True)
        m = solve_triangular(chol, mT(w), lower=True)
        lam = jnp.linalg.eigvalsh(symmetrize(m))
        return jnp.sqrt(jnp.sum(jnp.log(lam) ** 2))

    if a.ndim == 2:
        return one(a, b)
    return _per_matrix(one, a, b)


# ---------------------------------------------------------------------- calibration


class Calibration(NamedTuple):
    r"""Mean squared error over its predicted value, with its standard error.

    Attributes:
        ratio: :math:`\widehat\rho = \overline{e^2} / \overline{\operatorname{tr}
            \Sigma}`; 1 for a calibrated filter, above 1 for an over-confident
            one.
        stderr: its standard error (delta method over the tasks).
    """

    ratio: Float[Array, "*batch"]
    stderr: Float[Array, "*batch"]


def mse_calibration(
    sq_errors: Float[Array, " tasks *batch"], traces: Float[Array, " *tasks *batch"]
) -> Calibration:
    r"""Calibration of the posterior covariance against the realised errors.

    For a correctly specified linear-Gaussian model,
    :math:`\mathbb E\,|\theta^* - m_t|^2 = \mathbb E\operatorname{tr}\Sigma_t`
    (the posterior covariance is the conditional error covariance). Over
    :math:`n` independent tasks the estimate is :math:`\widehat\rho =
    \sum_i e_i / \sum_i c_i` with :math:`e_i = |\theta_i^* - m_{t,i}|^2` and
    :math:`c_i = \operatorname{tr}\Sigma_{t,i}`, and its standard error by the
    delta method is

    .. math::

        \operatorname{se}(\widehat\rho) = \frac{\operatorname{sd}(e_i -
        \widehat\rho\, c_i)}{\sqrt n\;\bar c}

    (sample standard deviation, ``ddof = 1``).

    Args:
        sq_errors: :math:`e_i`, one row per task, ``(tasks, ...)`` (e.g.
            ``(tasks, T)`` for every token).
        traces: :math:`c_i`, the same shape, or without the task axis when the
            covariance does not depend on the task.

    Returns:
        ``Calibration(ratio, stderr)``, each of shape ``(...)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> cal = kd.mse_calibration(jnp.array([0.5, 1.5, 1.0, 1.0]), jnp.array(1.0))
        >>> float(cal.ratio), round(float(cal.stderr), 4)
        (1.0, 0.2041)
    """
    e = jnp.asarray(sq_errors)
    c = jnp.broadcast_to(jnp.asarray(traces, e.dtype), e.shape)
    n = e.shape[0]
    if n < 2:
        raise ValueError(
            f"mse_calibration: need at least 2 tasks (rows of sq_errors), got {n}"
        )
    cbar = jnp.mean(c, axis=0)
    ratio = jnp.mean(e, axis=0) / cbar
    resid = e - ratio[None] * c
    stderr = jnp.std(resid, axis=0, ddof=1) / (jnp.sqrt(jnp.asarray(n, e.dtype)) * cbar)
    return Calibration(ratio=ratio, stderr=stderr)


# ------------------------------------------------------------ collapse vs the mean


def time_to_eps(
    values: Float[Array, " T *batch"], initial: Float[Array, "*batch"], eps: float
) -> Int[Array, "*batch"]:
    r"""First token :math:`t` with :math:`v_t \le \varepsilon\, v_0`.

    Args:
        values: :math:`v_t` for :math:`t = 1..T`, shape ``(T, ...)``.
        initial: :math:`v_0`, shape ``(...)``.
        eps: the relative level.

    Returns:
        :math:`t \in 1..T`, or :math:`T + 1` where the level is never reached;
        ``int32`` of shape ``(...)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> int(kd.time_to_eps(jnp.array([0.8, 0.4, 0.05]), 1.0, 0.5))
        2
    """
    values = jnp.asarray(values)
    initial = jnp.broadcast_to(jnp.asarray(initial, values.dtype), values.shape[1:])
    below = values <= eps * initial[None]
    first = jnp.argmax(below, axis=0).astype(jnp.int32) + 1
    return jnp.where(jnp.any(below, axis=0), first, values.shape[0] + 1)


def expected_mean_error(
    beliefs: Any, prior: Gaussian, theta_star: Float[Array, " state"]
) -> Float[Array, "T state"]:
    r"""The mean's expected error given the inputs (linear model, :math:`Q = 0`).

    :math:`\mathbb E[m_t - \theta^* \mid X, \theta^*] =
    \Sigma_t\Sigma_0^{-1}(m_0 - \theta^*)`.

    The mean error's expectation over the observation noise, given the inputs
    and the task. The identity: :math:`m_t = \Sigma_t(\Sigma_0^{-1} m_0 +
    X^\top y / r)` and :math:`\mathbb E[y] = X\theta^*` give :math:`m_t -
    \theta^* = \Sigma_t\Sigma_0^{-1}(m_0 - \theta^*)` exactly on noise-free data;
    the mean can only forget its prior error as fast as
    :math:`\Sigma_t\Sigma_0^{-1}` contracts.

    Args:
        beliefs: stacked filtered beliefs (or covariances ``(T, state, state)``).
        prior: the prior belief :math:`(m_0, \Sigma_0)`.
        theta_star: the true state ``(state,)``.

    Returns:
        Shape ``(T, state)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> prior = kj.Gaussian(mean=jnp.zeros(1), cov=jnp.eye(1))
        >>> covs = jnp.array([[[0.5]], [[0.25]]])
        >>> kj.diagnostics.expected_mean_error(covs, prior, jnp.ones(1)).tolist()
        [[-0.5], [-0.25]]
    """
    covs = _cov(beliefs, "beliefs", "expected_mean_error")
    u = jnp.linalg.solve(prior.cov, prior.mean - theta_star)
    return covs @ u


def mean_time_to_eps(
    beliefs: Any, prior: Gaussian, theta_star: Float[Array, " state"], eps: float
) -> Int[Array, ""]:
    r"""The mean's time to epsilon, :math:`t_\mu(\varepsilon)`.

    The first token with :math:`|m_t - \theta^*|^2 \le \varepsilon\,|m_0 -
    \theta^*|^2`; compare :math:`t_\Sigma(\varepsilon)` =
    ``time_to_eps(covariance_trace(beliefs), covariance_trace(prior), eps)``.

    Args:
        beliefs: stacked filtered beliefs, mean ``(T, state)``.
        prior: the prior belief.
        theta_star: the true state ``(state,)``.
        eps: the relative level.

    Returns:
        ``int32`` scalar in ``1..T + 1`` (``T + 1``: not reached).

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> prior = kj.Gaussian(mean=jnp.zeros(1), cov=jnp.eye(1))
        >>> b = kj.Gaussian(mean=jnp.array([[0.5], [0.9]]), cov=jnp.ones((2, 1, 1)))
        >>> int(kj.diagnostics.mean_time_to_eps(b, prior, jnp.ones(1), 0.1))
        2
    """
    target = jnp.broadcast_to(theta_star, beliefs.mean.shape)
    err = jnp.sum((beliefs.mean - target) ** 2, axis=-1)
    err0 = jnp.sum((prior.mean - theta_star) ** 2)
    return time_to_eps(err, err0, eps)


# --------------------------------------------------------------- informativeness


def greedy_token_order(
    H_candidates: Float[Array, "n obs state"],
    prior_cov: Float[Array, "state state"],
    R: Float[Array, "obs obs"],
    num_select: int | None = None,
) -> tuple[Int[Array, " k"], Float[Array, " k"]]:
    r"""Order candidate tokens greedily by the information each adds.

    Step :math:`k` picks, among the tokens not yet chosen, the one with the
    largest :func:`token_information` under the current covariance, then
    conditions the covariance on it (no observed values are needed). The
    log-determinant is submodular in the chosen set, so the greedy set's total
    information is within :math:`1 - 1/e` of the best set of that size
    (Nemhauser, Wolsey & Fisher 1978).

    Args:
        H_candidates: the candidates' observation matrices ``(n, obs, state)``.
        prior_cov: :math:`\Sigma_0`, ``(state, state)``.
        R: the noise covariance shared by the candidates, ``(obs, obs)``.
        num_select: how many to pick (static); default all ``n``.

    Returns:
        ``(order, gains)``: the chosen indices ``(k,)`` (``int32``) and the
        information each added when chosen ``(k,)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> H = jnp.array([[[1.0, 0.0]], [[0.0, 2.0]], [[0.0, 1.9]]])
        >>> order, gains = kd.greedy_token_order(H, jnp.eye(2), jnp.eye(1))
        >>> order.tolist()
        [1, 0, 2]
    """
    H_candidates = jnp.asarray(H_candidates)
    if H_candidates.ndim != 3:
        raise ValueError(
            "greedy_token_order: H_candidates must have shape (n, obs, state), got "
            f"{H_candidates.shape}"
        )
    n = H_candidates.shape[0]
    k = n if num_select is None else num_select
    if not 1 <= k <= n:
        raise ValueError(
            f"greedy_token_order: num_select must be in 1..{n}, got {num_select}"
        )
    dtype = H_candidates.dtype

    def body(carry, _):
        cov, taken = carry
        gains = jax.vmap(lambda h: token_information(cov, h, R))(H_candidates)
        gains = jnp.where(taken, -jnp.inf, gains)
        best = jnp.argmax(gains).astype(jnp.int32)
        cov = _condition_cov(cov, H_candidates[best], R)
        return (cov, taken.at[best].set(True)), (best, gains[best])

    init = (jnp.asarray(prior_cov, dtype), jnp.zeros((n,), bool))
    _, (order, gains) = lax.scan(body, init, None, length=k)
    return order, gains
