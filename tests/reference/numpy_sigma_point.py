"""Textbook float64 sigma-point filter and RTS smoother in plain NumPy.

The unscented / cubature / Gauss-Hermite Kalman filter as Sarkka (2013, alg. 5.14
and 9.3) writes it: sigma points from a Cholesky factor, the predicted mean and
covariance as weighted sums, the cross-covariance and gain ``K = C S^{-1}``; no
statistical linear regression, no square roots of the library's. The points are
built here from their definitions (Gauss-Hermite from NumPy's physicists'
``hermgauss``), not from the library's rules.

Time convention as ``numpy_kalman``: ``x_0 ~ N(m0, P0)``, then for ``t = 1..T``
predict with ``f`` and update with ``h``; NaN entries of ``y`` are dropped.
"""

import itertools

import numpy as np

_LOG_2PI = np.log(2.0 * np.pi)
#: dynamax's (and the library's) default unscented alpha
_ALPHA = np.sqrt(3.0)


def points(kind, n, alpha=_ALPHA, beta=2.0, kappa=1.0, order=3):
    """``(xi, wm, wc)``: unit sigma points ``(K, n)`` and their weights."""
    if kind == "unscented":
        lam = alpha**2 * (n + kappa) - n
        c = np.sqrt(n + lam)
        xi = [np.zeros(n)] + [c * e for e in np.eye(n)] + [-c * e for e in np.eye(n)]
        wm = [lam / (n + lam)] + [1.0 / (2 * (n + lam))] * (2 * n)
        wc = [wm[0] + 1.0 - alpha**2 + beta] + wm[1:]
        return np.array(xi), np.array(wm), np.array(wc)
    if kind == "cubature":
        xi = [np.sqrt(n) * e for e in np.eye(n)] + [-np.sqrt(n) * e for e in np.eye(n)]
        w = np.full(2 * n, 1.0 / (2 * n))
        return np.array(xi), w, w
    # physicists' nodes for exp(-t^2): x = sqrt(2) t, weights / sqrt(pi)
    t, w1 = np.polynomial.hermite.hermgauss(order)
    xi, w = [], []
    for idx in itertools.product(range(order), repeat=n):
        xi.append(np.sqrt(2.0) * t[list(idx)])
        w.append(np.prod(w1[list(idx)]) / np.pi ** (n / 2))
    w = np.array(w)
    return np.array(xi), w, w


def _moments(fn, m, P, rule):
    xi, wm, wc = rule
    X = m[None] + xi @ np.linalg.cholesky(P).T
    Y = np.array([fn(x) for x in X])
    mean = wm @ Y
    dY = Y - mean
    cov = (dY * wc[:, None]).T @ dY
    cross = ((X - m) * wc[:, None]).T @ dY
    return mean, cov, cross


def _noise(R, m, P, rule):
    """``R``, or for a conditional covariance ``R(x)`` its mean over the points."""
    if not callable(R):
        return R
    xi, wm, _ = rule
    X = m[None] + xi @ np.linalg.cholesky(P).T
    return np.tensordot(wm, np.array([R(x) for x in X]), 1)


def sigma_point_filter(f, Q, h, R, m0, P0, ys, rule):
    """Filtered means ``(T, n)``, covariances ``(T, n, n)``, log-likelihoods ``(T,)``.

    ``R`` is a matrix, or a function ``x -> Cov[y | x]`` (a conditional-moments
    observation with mean ``h``: ``E[R(x)]`` is added to ``S``).

    Also returns what the smoother needs: the predicted means and covariances
    and the cross-covariances ``Cov(x_{t-1}, x_t | y_{1:t-1})``.
    """
    m, P = np.asarray(m0, float), np.asarray(P0, float)
    Q = np.asarray(Q, float)
    R = R if callable(R) else np.asarray(R, float)
    means, covs, lls, preds, pcovs, crosses = [], [], [], [], [], []
    for y in np.asarray(ys, float):
        mp, Pp, D = _moments(f, m, P, rule)
        Pp = Pp + Q
        preds.append(mp)
        pcovs.append(Pp)
        crosses.append(D)
        obs = ~np.isnan(y)
        if obs.any():
            yhat, S, C = _moments(lambda x, obs=obs: h(x)[obs], mp, Pp, rule)
            S = S + _noise(R, mp, Pp, rule)[np.ix_(obs, obs)]
            K = np.linalg.solve(S, C.T).T
            e = y[obs] - yhat
            m = mp + K @ e
            P = Pp - K @ S @ K.T
            _, logdet = np.linalg.slogdet(S)
            lls.append(
                -0.5 * (e @ np.linalg.solve(S, e) + logdet + obs.sum() * _LOG_2PI)
            )
        else:
            m, P = mp, Pp
            lls.append(0.0)
        means.append(m)
        covs.append(P)
    out = (np.array(means), np.array(covs), np.array(lls))
    return out, (np.array(preds), np.array(pcovs), np.array(crosses))


def sigma_point_smoother(means, covs, f, Q, rule):
    """The sigma-point RTS smoother (Sarkka 2013, alg. 9.3) over filtered moments."""
    T = means.shape[0]
    ms, Ps = means.copy(), covs.copy()
    for t in range(T - 2, -1, -1):
        mp, Pp, D = _moments(f, means[t], covs[t], rule)
        Pp = Pp + np.asarray(Q, float)
        G = np.linalg.solve(Pp, D.T).T
        ms[t] = means[t] + G @ (ms[t + 1] - mp)
        Ps[t] = covs[t] + G @ (Ps[t + 1] - Pp) @ G.T
    return ms, Ps


def slr(fn, m, P, rule):
    """The statistical linear regression ``(mean, A, Omega)`` of ``fn``, N(m, P)."""
    mean, S, C = _moments(fn, m, P, rule)
    A = np.linalg.solve(P, C).T  # Cov(g, x) P^{-1}
    return mean, A, S - A @ P @ A.T


def iterated_posterior_linearization(f, Q, h, R, m0, P0, ys, rule, num_iters):
    """The IPLS (Garcia-Fernandez et al. 2017) over ``x_0..x_T``.

    ``R`` as for :func:`sigma_point_filter` (a matrix or ``x -> Cov[y | x]``).

    Iteration 0 is :func:`sigma_point_filter` and :func:`sigma_point_smoother`;
    each further iteration takes the SLR of ``f`` under the smoothed
    ``x_{t-1}`` and of ``h`` under the smoothed ``x_t``, and runs the textbook
    Kalman filter and RTS smoother of ``numpy_kalman`` on that affine model.

    Returns:
        ``(means (T + 1, n), covs (T + 1, n, n))``, row 0 being ``x_0``.
    """
    from . import numpy_kalman

    m0, P0 = np.asarray(m0, float), np.asarray(P0, float)
    Q = np.asarray(Q, float)
    (means, covs, _), _ = sigma_point_filter(f, Q, h, R, m0, P0, ys, rule)
    ms, Ps = sigma_point_smoother(
        np.concatenate([m0[None], means]), np.concatenate([P0[None], covs]), f, Q, rule
    )
    for _ in range(num_iters):
        F, Qs, b, H, Rs, d = [], [], [], [], [], []
        for t in range(1, len(ys) + 1):
            fm, A, omega = slr(f, ms[t - 1], Ps[t - 1], rule)
            F.append(A)
            Qs.append(Q + omega)
            b.append(fm - A @ ms[t - 1])
            hm, B, omega = slr(h, ms[t], Ps[t], rule)
            H.append(B)
            Rs.append(_noise(R, ms[t], Ps[t], rule) + omega)
            d.append(hm - B @ ms[t])
        F, Qs, b = np.array(F), np.array(Qs), np.array(b)
        out = numpy_kalman.kalman_filter(
            m0, P0, F, Qs, np.array(H), np.array(Rs), ys, b, np.array(d)
        )
        # row k of [x_0, x_1..x_T] is smoothed with step k + 1 = stacked index k
        pad = [np.concatenate([a[:1], a]) for a in (F, Qs, b)]
        ms, Ps = numpy_kalman.rts_smoother(
            np.concatenate([m0[None], out["filtered_means"]]),
            np.concatenate([P0[None], out["filtered_covs"]]),
            *pad,
        )
    return ms, Ps
