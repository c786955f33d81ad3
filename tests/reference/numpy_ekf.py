"""A NumPy float64 extended Kalman filter with hand-written Jacobians.

No JAX here: the reference for ``kalmanjax.extended_kalman_filter``.
"""

import math

import numpy as np

_LOG_2PI = math.log(2.0 * math.pi)


def ekf(m0, P0, f, F_jac, Q, h, H_jac, R, ys, us=None):
    """Filter ``ys`` (T, m) with the EKF; NaN rows are skipped (missing).

    ``f(x, u)``, ``F_jac(x, u)``, ``h(x, u)``, ``H_jac(x, u)`` are NumPy functions.
    Returns dict(means (T, d), covs (T, d, d), log_likelihoods (T,)).
    """
    m, P = np.asarray(m0, float), np.asarray(P0, float)
    T = len(ys)
    us = [None] * T if us is None else us
    means, covs, lls = [], [], []
    for y, u in zip(ys, us, strict=True):
        F = F_jac(m, u)
        m = f(m, u)
        P = F @ P @ F.T + Q
        ll = 0.0
        if not np.all(np.isnan(y)):
            H = H_jac(m, u)
            e = y - h(m, u)
            S = H @ P @ H.T + R
            K = np.linalg.solve(S, H @ P).T
            m = m + K @ e
            A = np.eye(len(m)) - K @ H
            P = A @ P @ A.T + K @ R @ K.T
            ll = -0.5 * (
                len(y) * _LOG_2PI + np.linalg.slogdet(S)[1] + e @ np.linalg.solve(S, e)
            )
        means.append(m)
        covs.append(0.5 * (P + P.T))
        lls.append(ll)
    return dict(
        means=np.array(means), covs=np.array(covs), log_likelihoods=np.array(lls)
    )
