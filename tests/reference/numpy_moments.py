"""Textbook float64 conditional-moments Gaussian filter (Taylor) in plain NumPy.

Linear dynamics ``x_t = F x_{t-1} + w``, ``w ~ N(0, Q)``; an observation given
by ``E[y | x] = mu(x)`` and ``Cov[y | x] = Sigma(x)`` (Tronarp et al. 2018), with
the Jacobian ``J`` of ``mu`` supplied in closed form by the caller:
``yhat = mu(m)``, ``S = J P J^T + Sigma(m)``, ``K = P J^T S^{-1}``,
``m+ = m + K (y - yhat)``, ``P+ = P - K S K^T``. NaN entries of ``y`` are
dropped. Predict-then-update from ``x_0 ~ N(m0, P0)``. (The sigma-point version
is ``numpy_sigma_point.sigma_point_filter`` with a callable ``R``.)
"""

import numpy as np

_LOG_2PI = np.log(2.0 * np.pi)


def taylor_filter(F, Q, mu, jac, Sigma, m0, P0, ys):
    """Filtered means ``(T, n)``, covariances ``(T, n, n)``, log-likelihoods."""
    m, P = np.asarray(m0, float), np.asarray(P0, float)
    means, covs, lls = [], [], []
    for y in np.asarray(ys, float):
        m, P = F @ m, F @ P @ F.T + Q
        obs = ~np.isnan(y)
        J = jac(m)[obs]
        S = J @ P @ J.T + Sigma(m)[np.ix_(obs, obs)]
        K = np.linalg.solve(S, J @ P).T
        e = y[obs] - mu(m)[obs]
        m, P = m + K @ e, P - K @ S @ K.T
        _, logdet = np.linalg.slogdet(S)
        lls.append(-0.5 * (e @ np.linalg.solve(S, e) + logdet + obs.sum() * _LOG_2PI))
        means.append(m)
        covs.append(P)
    return np.array(means), np.array(covs), np.array(lls)
