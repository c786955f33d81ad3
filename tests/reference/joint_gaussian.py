"""Dense joint-Gaussian oracle for linear-Gaussian state-space models.

The stacked vector ``u = (x_0, x_1, ..., x_T, y_1, ..., y_T)`` is written as an
affine function ``u = A z + c`` of the independent Gaussian vector
``z = (x_0, w_1, ..., w_T, v_1, ..., v_T)``, using explicit transition products
``x_t = Phi(t, 0) x_0 + sum_{s<=t} Phi(t, s) (w_s + b_s)`` with
``Phi(t, s) = F_t F_{t-1} ... F_{s+1}``. Its mean and covariance are then
``A mu_z + c`` and ``A Sigma_z A^T``; filtering, smoothing and the marginal
likelihood follow from plain Gaussian conditioning. This is independent of any
recursive filter and is meant for small ``T`` and dimensions only.

The model convention matches :mod:`tests.reference.numpy_kalman`: parameters are
constant arrays or stacked with a leading ``T`` axis whose index ``k`` (0-based)
holds step ``k + 1``; NaN entries of ``y`` are treated as unobserved.
"""

import numpy as np

_LOG_2PI = np.log(2.0 * np.pi)


def _param(a, k, base_ndim):
    """Returns the float64 parameter of 0-based step ``k`` (``None`` passes)."""
    if a is None:
        return None
    a = np.asarray(a, dtype=np.float64)
    return a[k] if a.ndim == base_ndim + 1 else a


def joint_moments(m0, P0, F, Q, H, R, T, b=None, d=None):
    """Builds the dense joint mean and covariance of states and observations.

    Args:
        m0: Prior mean of ``x_0``, shape ``(d,)``.
        P0: Prior covariance of ``x_0``, shape ``(d, d)``.
        F: Transition matrix, ``(d, d)`` or ``(T, d, d)``.
        Q: Process noise covariance, ``(d, d)`` or ``(T, d, d)``.
        H: Observation matrix, ``(m, d)`` or ``(T, m, d)``.
        R: Observation noise covariance, ``(m, m)`` or ``(T, m, m)``.
        T: Number of time steps.
        b: Optional transition offset, ``(d,)`` or ``(T, d)``.
        d: Optional observation offset, ``(m,)`` or ``(T, m)``.

    Returns:
        Tuple ``(mean, cov, index)`` where ``mean`` has shape ``(N,)`` and ``cov``
        ``(N, N)`` with ``N = (T + 1) * dx + T * m``, and ``index`` is a dict with
        ``index["x"][t]`` the slice of ``x_t`` for ``t = 0..T`` (length ``T + 1``)
        and ``index["y"][t - 1]`` the slice of ``y_t`` for ``t = 1..T`` (length
        ``T``).
    """
    m0 = np.asarray(m0, dtype=np.float64)
    P0 = np.asarray(P0, dtype=np.float64)
    dx = m0.shape[0]
    dy = _param(H, 0, 2).shape[0]

    # Independent noise vector z = (x_0, w_1..w_T, v_1..v_T).
    nz = dx + T * dx + T * dy
    mu_z = np.zeros(nz)
    mu_z[:dx] = m0
    sigma_z = np.zeros((nz, nz))
    sigma_z[:dx, :dx] = P0
    z_x0 = slice(0, dx)
    z_w = [slice(dx + (t - 1) * dx, dx + t * dx) for t in range(1, T + 1)]
    z_v = [
        slice(dx + T * dx + (t - 1) * dy, dx + T * dx + t * dy) for t in range(1, T + 1)
    ]
    for t in range(1, T + 1):
        sigma_z[z_w[t - 1], z_w[t - 1]] = _param(Q, t - 1, 2)
        sigma_z[z_v[t - 1], z_v[t - 1]] = _param(R, t - 1, 2)

    # Output vector u = (x_0..x_T, y_1..y_T).
    n = (T + 1) * dx + T * dy
    idx_x = [slice(t * dx, (t + 1) * dx) for t in range(T + 1)]
    idx_y = [
        slice((T + 1) * dx + (t - 1) * dy, (T + 1) * dx + t * dy)
        for t in range(1, T + 1)
    ]
    A = np.zeros((n, nz))
    c = np.zeros(n)

    def phi(t, s):
        """Transition product F_t ... F_{s+1} (identity when t == s)."""
        out = np.eye(dx)
        for j in range(s + 1, t + 1):
            out = _param(F, j - 1, 2) @ out
        return out

    for t in range(T + 1):
        A[idx_x[t], z_x0] = phi(t, 0)
        for s in range(1, t + 1):
            Pts = phi(t, s)
            A[idx_x[t], z_w[s - 1]] = Pts
            bs = _param(b, s - 1, 1)
            if bs is not None:
                c[idx_x[t]] += Pts @ bs
    for t in range(1, T + 1):
        Ht = _param(H, t - 1, 2)
        A[idx_y[t - 1]] = Ht @ A[idx_x[t]]
        A[idx_y[t - 1], z_v[t - 1]] += np.eye(dy)
        c[idx_y[t - 1]] = Ht @ c[idx_x[t]]
        dt = _param(d, t - 1, 1)
        if dt is not None:
            c[idx_y[t - 1]] += dt

    mean = A @ mu_z + c
    cov = A @ sigma_z @ A.T
    cov = 0.5 * (cov + cov.T)
    return mean, cov, {"x": idx_x, "y": idx_y}


def _observed_indices(y, index, upto):
    """Returns flat joint indices and values of observed ``y_1..y_upto``."""
    rows, vals = [], []
    for t in range(1, upto + 1):
        sl = index["y"][t - 1]
        yt = y[t - 1]
        obs = ~np.isnan(yt)
        rows.append(np.arange(sl.start, sl.stop)[obs])
        vals.append(yt[obs])
    if not rows:
        return np.zeros(0, dtype=int), np.zeros(0)
    return np.concatenate(rows), np.concatenate(vals)


def _condition(mean, cov, target, obs_rows, obs_vals):
    """Returns mean and covariance of ``u[target]`` given ``u[obs_rows]``."""
    tgt = np.arange(target.start, target.stop)
    mu_a = mean[tgt]
    S_aa = cov[np.ix_(tgt, tgt)]
    if obs_rows.size == 0:
        return mu_a, S_aa
    S_ab = cov[np.ix_(tgt, obs_rows)]
    S_bb = cov[np.ix_(obs_rows, obs_rows)]
    gain = np.linalg.solve(S_bb, S_ab.T).T
    post_mean = mu_a + gain @ (obs_vals - mean[obs_rows])
    post_cov = S_aa - gain @ S_ab.T
    return post_mean, 0.5 * (post_cov + post_cov.T)


def filtered_marginal(m0, P0, F, Q, H, R, y, t, b=None, d=None):
    """Returns mean and covariance of ``x_t`` given observed ``y_1..y_t``.

    Args:
        m0, P0, F, Q, H, R: Model, as in :func:`joint_moments`.
        y: Observations, ``(T, m)``; NaN entries are not conditioned on.
        t: Time index in ``0..T`` (1-based model time; ``t = 0`` is the prior).
        b, d: Optional offsets, as in :func:`joint_moments`.

    Returns:
        Tuple ``(mean (dx,), cov (dx, dx))``.
    """
    y = np.asarray(y, dtype=np.float64)
    mean, cov, index = joint_moments(m0, P0, F, Q, H, R, y.shape[0], b=b, d=d)
    rows, vals = _observed_indices(y, index, t)
    return _condition(mean, cov, index["x"][t], rows, vals)


def smoothed_marginal(m0, P0, F, Q, H, R, y, t, b=None, d=None):
    """Returns mean and covariance of ``x_t`` given all observed ``y_1..y_T``.

    Args:
        m0, P0, F, Q, H, R: Model, as in :func:`joint_moments`.
        y: Observations, ``(T, m)``; NaN entries are not conditioned on.
        t: Time index in ``0..T`` (1-based model time; ``t = 0`` is ``x_0``).
        b, d: Optional offsets, as in :func:`joint_moments`.

    Returns:
        Tuple ``(mean (dx,), cov (dx, dx))``.
    """
    y = np.asarray(y, dtype=np.float64)
    T = y.shape[0]
    mean, cov, index = joint_moments(m0, P0, F, Q, H, R, T, b=b, d=d)
    rows, vals = _observed_indices(y, index, T)
    return _condition(mean, cov, index["x"][t], rows, vals)


def log_marginal_likelihood(m0, P0, F, Q, H, R, y, b=None, d=None):
    """Returns ``log p(y_obs)`` as one multivariate-normal log-density.

    Args:
        m0, P0, F, Q, H, R: Model, as in :func:`joint_moments`.
        y: Observations, ``(T, m)``; NaN entries are dropped.
        b, d: Optional offsets, as in :func:`joint_moments`.

    Returns:
        The log marginal likelihood of all observed entries (0.0 if none).
    """
    y = np.asarray(y, dtype=np.float64)
    T = y.shape[0]
    mean, cov, index = joint_moments(m0, P0, F, Q, H, R, T, b=b, d=d)
    rows, vals = _observed_indices(y, index, T)
    if rows.size == 0:
        return 0.0
    S = cov[np.ix_(rows, rows)]
    r = vals - mean[rows]
    sign, logdet = np.linalg.slogdet(S)
    if sign <= 0:
        raise np.linalg.LinAlgError("observation covariance is not positive definite")
    maha = r @ np.linalg.solve(S, r)
    return float(-0.5 * (rows.size * _LOG_2PI + logdet + maha))


def diffuse_posterior(m0, P0, A0, F, Q, H, R, y, t):
    """The exact diffuse limit: ``x_0 = m0 + A0 beta + N(0, P0)``, flat ``beta``.

    Every joint mean is linear in ``beta`` (columns ``G = d mean / d beta``) and
    the joint covariance does not depend on it, so with ``O`` the observed entries
    of ``y_1..y_t`` and ``C = cov[O, O]``, ``beta | y_O ~ N(S^-1 s, S^-1)`` with
    ``S = G_O^T C^-1 G_O`` and ``s = G_O^T C^-1 (y_O - mean_O)``.

    Returns:
        ``None`` if ``y_1..y_t`` do not identify ``beta`` (``S`` singular), else
        ``(log_lik, mean, cov)``: the diffuse log-likelihood of ``y_1..y_t``,
        ``log N(y_O; mean_O, C) - 1/2 log det S + 1/2 s^T S^-1 s`` (the limit of
        ``log p_kappa + k/2 log kappa`` for ``P0 + kappa A0 A0^T``), and the
        moments of ``x_t | y_1..y_t``.
    """
    y = np.asarray(y, dtype=np.float64)
    T = y.shape[0]
    A0 = np.asarray(A0, np.float64)
    mean, cov, index = joint_moments(m0, P0, F, Q, H, R, T)
    G = np.stack(
        [
            joint_moments(m0 + A0[:, j], P0, F, Q, H, R, T)[0] - mean
            for j in range(A0.shape[1])
        ],
        axis=1,
    )
    rows, vals = _observed_indices(y, index, t)
    X = np.arange(index["x"][t].start, index["x"][t].stop)
    C = cov[np.ix_(rows, rows)]
    r = vals - mean[rows]
    Ci = np.linalg.inv(C)
    S = G[rows].T @ Ci @ G[rows]
    s = G[rows].T @ Ci @ r
    if np.linalg.matrix_rank(S) < S.shape[0]:
        return None  # beta is not identified by y_1..y_t
    sign, logdet_c = np.linalg.slogdet(C)
    _, logdet_s = np.linalg.slogdet(S)
    log_lik = (
        -0.5 * (rows.size * _LOG_2PI + logdet_c + r @ Ci @ r)
        - 0.5 * logdet_s
        + 0.5 * s @ np.linalg.solve(S, s)
    )
    gain = cov[np.ix_(X, rows)] @ Ci
    D = G[X] - gain @ G[rows]
    beta = np.linalg.solve(S, s)
    post_mean = mean[X] + gain @ r + D @ beta
    post_cov = (
        cov[np.ix_(X, X)] - gain @ cov[np.ix_(rows, X)] + D @ np.linalg.solve(S, D.T)
    )
    return float(log_lik), post_mean, 0.5 * (post_cov + post_cov.T)
