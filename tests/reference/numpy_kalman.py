"""Textbook float64 Kalman filter, RTS smoother and simulator in plain NumPy.

Model (time convention): the prior ``x_0 ~ N(m0, P0)`` is the belief *before* the
first transition. For ``t = 1..T``::

    x_t = F_t x_{t-1} + b_t + w_t,   w_t ~ N(0, Q_t)
    y_t = H_t x_t + d_t + v_t,       v_t ~ N(0, R_t)

Each step is predict-then-update. Model arrays are either constant (``F`` of shape
``(d, d)``) or time-varying with a leading ``T`` axis (``F`` of shape
``(T, d, d)``); stacked index ``k`` (0-based) holds the parameters of step
``k + 1``. Offsets ``b`` and ``d`` may be ``None`` (zero). NaN entries of ``y``
are missing: those dimensions are dropped from the update.

This module is an oracle for tests and deliberately favours clarity over speed.
"""

import numpy as np

_LOG_2PI = np.log(2.0 * np.pi)


def at_step(a, k, base_ndim):
    """Returns the parameter of 0-based step ``k`` (or ``None``).

    Args:
        a: ``None``, a constant array with ``base_ndim`` dimensions, or a stacked
            array with one extra leading time axis.
        k: 0-based step index (step ``k + 1`` of the model).
        base_ndim: Number of dimensions of the constant (per-step) array.

    Returns:
        The float64 per-step array, or ``None`` if ``a`` is ``None``.
    """
    if a is None:
        return None
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == base_ndim + 1:
        return a[k]
    if a.ndim == base_ndim:
        return a
    raise ValueError(f"expected {base_ndim} or {base_ndim + 1} dims, got {a.ndim}")


def step_params(F, Q, H, R, b, d, k):
    """Returns ``(F, Q, H, R, b, d)`` of 0-based step ``k`` with zero offsets."""
    Fk = at_step(F, k, 2)
    Hk = at_step(H, k, 2)
    bk = at_step(b, k, 1)
    dk = at_step(d, k, 1)
    if bk is None:
        bk = np.zeros(Fk.shape[0])
    if dk is None:
        dk = np.zeros(Hk.shape[0])
    return Fk, at_step(Q, k, 2), Hk, at_step(R, k, 2), bk, dk


def _sym(a):
    return 0.5 * (a + a.T)


def _logdet(a):
    sign, val = np.linalg.slogdet(a)
    if sign <= 0:
        raise np.linalg.LinAlgError("matrix is not positive definite")
    return val


def kalman_filter(m0, P0, F, Q, H, R, y, b=None, d=None):
    """Runs the textbook Kalman filter (Joseph-form covariance update).

    Args:
        m0: Prior mean of ``x_0``, shape ``(d,)``.
        P0: Prior covariance of ``x_0``, shape ``(d, d)``.
        F: Transition matrix, ``(d, d)`` or ``(T, d, d)``.
        Q: Process noise covariance, ``(d, d)`` or ``(T, d, d)``.
        H: Observation matrix, ``(m, d)`` or ``(T, m, d)``.
        R: Observation noise covariance, ``(m, m)`` or ``(T, m, m)``.
        y: Observations, ``(T, m)``; NaN marks a missing dimension.
        b: Optional transition offset, ``(d,)`` or ``(T, d)``.
        d: Optional observation offset, ``(m,)`` or ``(T, m)``.

    Returns:
        Dict with keys ``filtered_means`` ``(T, d)``, ``filtered_covs``
        ``(T, d, d)``, ``predicted_means`` ``(T, d)``, ``predicted_covs``
        ``(T, d, d)``, ``log_likelihoods`` ``(T,)`` (log N(y_t | H m^-_t + d_t,
        S_t) over observed dims, 0 if none observed), ``innovations`` ``(T, m)``
        (NaN at missing dims), ``innovation_covs`` ``(T, m, m)`` (full
        ``S_t = H P^-_t H^T + R``), ``information_gains`` ``(T,)``
        (``0.5 logdet S_o - 0.5 logdet R_o`` over observed dims, 0 if none) and
        ``log_marginal_likelihood`` (float, sum of ``log_likelihoods``).
    """
    m = np.asarray(m0, dtype=np.float64)
    P = np.asarray(P0, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    T, obs_dim = y.shape
    dim = m.shape[0]
    out = {
        "filtered_means": np.zeros((T, dim)),
        "filtered_covs": np.zeros((T, dim, dim)),
        "predicted_means": np.zeros((T, dim)),
        "predicted_covs": np.zeros((T, dim, dim)),
        "log_likelihoods": np.zeros(T),
        "innovations": np.full((T, obs_dim), np.nan),
        "innovation_covs": np.zeros((T, obs_dim, obs_dim)),
        "information_gains": np.zeros(T),
    }
    eye = np.eye(dim)
    for k in range(T):
        Fk, Qk, Hk, Rk, bk, dk = step_params(F, Q, H, R, b, d, k)
        # Predict.
        m = Fk @ m + bk
        P = _sym(Fk @ P @ Fk.T + Qk)
        out["predicted_means"][k] = m
        out["predicted_covs"][k] = P
        # Innovation over all dims (NaN propagates to missing dims).
        e = y[k] - (Hk @ m + dk)
        S = _sym(Hk @ P @ Hk.T + Rk)
        out["innovations"][k] = e
        out["innovation_covs"][k] = S
        obs = ~np.isnan(y[k])
        n_obs = int(obs.sum())
        if n_obs > 0:
            Ho, Ro, eo = Hk[obs], Rk[np.ix_(obs, obs)], e[obs]
            So = S[np.ix_(obs, obs)]
            K = np.linalg.solve(So, Ho @ P).T  # P H^T S^{-1}; S symmetric.
            m = m + K @ eo
            A = eye - K @ Ho
            P = _sym(A @ P @ A.T + K @ Ro @ K.T)
            logdet_S = _logdet(So)
            maha = eo @ np.linalg.solve(So, eo)
            out["log_likelihoods"][k] = -0.5 * (n_obs * _LOG_2PI + logdet_S + maha)
            out["information_gains"][k] = 0.5 * logdet_S - 0.5 * _logdet(Ro)
        out["filtered_means"][k] = m
        out["filtered_covs"][k] = P
    out["log_marginal_likelihood"] = float(out["log_likelihoods"].sum())
    return out


def rts_smoother(filtered_means, filtered_covs, F, Q, b=None):
    """Runs the textbook Rauch-Tung-Striebel smoother.

    The smoothing step at time ``t`` uses the transition of step ``t + 1``, i.e.
    stacked index ``k + 1`` for the 0-based row ``k`` of ``filtered_means``. The
    transition of step 1 (stacked index 0) is therefore never used.

    Args:
        filtered_means: Filtered means for ``t = 1..T``, shape ``(T, d)``.
        filtered_covs: Filtered covariances, shape ``(T, d, d)``.
        F: Transition matrix, ``(d, d)`` or ``(T, d, d)``.
        Q: Process noise covariance, ``(d, d)`` or ``(T, d, d)``.
        b: Optional transition offset, ``(d,)`` or ``(T, d)``.

    Returns:
        Tuple ``(smoothed_means (T, d), smoothed_covs (T, d, d))`` for
        ``t = 1..T``.
    """
    mf = np.asarray(filtered_means, dtype=np.float64)
    Pf = np.asarray(filtered_covs, dtype=np.float64)
    T = mf.shape[0]
    ms = mf.copy()
    Ps = Pf.copy()
    for k in range(T - 2, -1, -1):
        Fn = at_step(F, k + 1, 2)
        Qn = at_step(Q, k + 1, 2)
        bn = at_step(b, k + 1, 1)
        if bn is None:
            bn = np.zeros(mf.shape[1])
        mp = Fn @ mf[k] + bn
        Pp = _sym(Fn @ Pf[k] @ Fn.T + Qn)
        G = np.linalg.solve(Pp, Fn @ Pf[k]).T  # P_t F^T (P^-_{t+1})^{-1}
        ms[k] = mf[k] + G @ (ms[k + 1] - mp)
        Ps[k] = _sym(Pf[k] + G @ (Ps[k + 1] - Pp) @ G.T)
    return ms, Ps


def _sample(rng, mean, cov):
    """Draws one sample from N(mean, cov) via an eigen square root (PSD-safe)."""
    w, V = np.linalg.eigh(_sym(cov))
    root = V * np.sqrt(np.clip(w, 0.0, None))
    return mean + root @ rng.standard_normal(mean.shape[0])


def simulate(rng, m0, P0, F, Q, H, R, T, b=None, d=None):
    """Simulates states and observations from the model.

    Args:
        rng: A ``np.random.Generator``.
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
        Tuple ``(xs (T, d), ys (T, m))`` for ``t = 1..T`` (``x_0`` excluded).
    """
    x = _sample(rng, np.asarray(m0, dtype=np.float64), np.asarray(P0, np.float64))
    xs, ys = [], []
    for k in range(T):
        Fk, Qk, Hk, Rk, bk, dk = step_params(F, Q, H, R, b, d, k)
        x = _sample(rng, Fk @ x + bk, Qk)
        ys.append(_sample(rng, Hk @ x + dk, Rk))
        xs.append(x)
    return np.stack(xs), np.stack(ys)


def _random_spd(rng, n):
    A = rng.standard_normal((n, n))
    return A @ A.T / n + 0.1 * np.eye(n)


def _random_transition(rng, n, radius=0.9):
    A = rng.standard_normal((n, n))
    rho = np.max(np.abs(np.linalg.eigvals(A)))
    return A * (radius / rho)


def random_model(rng, d, m, T=None, time_varying=False, dtype=np.float64):
    """Draws a random, well-conditioned linear-Gaussian state-space model.

    Args:
        rng: A ``np.random.Generator``.
        d: State dimension.
        m: Observation dimension.
        T: Number of steps; required if ``time_varying``.
        time_varying: If True, ``F, Q, H, R, b, d`` get a leading ``T`` axis.
        dtype: Output dtype.

    Returns:
        Dict with keys ``m0 (d,)``, ``P0 (d, d)``, ``F``, ``Q``, ``H``, ``R``,
        ``b``, ``d`` (shapes as in :func:`kalman_filter`). ``F`` has spectral
        radius 0.9 and ``P0, Q, R`` are ``A A^T / n + 0.1 I``.
    """
    if time_varying and T is None:
        raise ValueError("time_varying=True requires T")

    def draw(fn):
        if time_varying:
            return np.stack([fn() for _ in range(T)])
        return fn()

    model = {
        "m0": rng.standard_normal(d),
        "P0": _random_spd(rng, d),
        "F": draw(lambda: _random_transition(rng, d)),
        "Q": draw(lambda: _random_spd(rng, d)),
        "H": draw(lambda: rng.standard_normal((m, d)) / np.sqrt(d)),
        "R": draw(lambda: _random_spd(rng, m)),
        "b": draw(lambda: 0.1 * rng.standard_normal(d)),
        "d": draw(lambda: 0.1 * rng.standard_normal(m)),
    }
    return {k: np.asarray(v, dtype=dtype) for k, v in model.items()}
