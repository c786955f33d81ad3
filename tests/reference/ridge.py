"""Closed-form Bayesian linear (ridge) regression oracle.

Model: ``w ~ N(m0, Sigma0)`` in ``R^d`` and ``y_t = x_t . w + e_t`` with
``e_t ~ N(0, r)``. This is the Kalman filter with ``F = I``, ``Q = 0``,
``H_t = x_t^T`` (shape ``(T, 1, d)``), ``R = r`` and prior ``(m0, Sigma0)``; the
posterior after ``t`` observations equals the filtered state at time ``t``.
"""

import numpy as np


def _prior(Sigma0, m0, dim):
    """Returns float64 ``(Sigma0 (d, d), m0 (d,))``; scalar Sigma0 means tau^2 I."""
    Sigma0 = np.asarray(Sigma0, dtype=np.float64)
    if Sigma0.ndim == 0:
        Sigma0 = Sigma0 * np.eye(dim)
    m0 = np.zeros(dim) if m0 is None else np.asarray(m0, dtype=np.float64)
    return Sigma0, m0


def posterior(X, y, r, Sigma0, m0=None):
    """Returns the Gaussian posterior over ``w`` by the batch formulas.

    ``Sigma_post = (Sigma0^-1 + X^T X / r)^-1`` and
    ``mean = Sigma_post (Sigma0^-1 m0 + X^T y / r)``.

    Args:
        X: Inputs, shape ``(T, d)`` (``T`` may be 0).
        y: Targets, shape ``(T,)``.
        r: Observation noise variance (scalar).
        Sigma0: Prior covariance ``(d, d)``, or a scalar ``tau^2`` for
            ``tau^2 I``.
        m0: Optional prior mean ``(d,)``; zero if ``None``.

    Returns:
        Tuple ``(mean (d,), cov (d, d))``.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    dim = X.shape[1]
    Sigma0, m0 = _prior(Sigma0, m0, dim)
    prior_prec = np.linalg.inv(Sigma0)
    prec = prior_prec + X.T @ X / r
    cov = np.linalg.inv(prec)
    cov = 0.5 * (cov + cov.T)
    mean = cov @ (prior_prec @ m0 + X.T @ y / r)
    return mean, cov


def ridge_mean(X, y, lam):
    """Returns the ridge estimate ``(X^T X + lam I)^-1 X^T y``.

    Equals the posterior mean for ``m0 = 0``, ``Sigma0 = tau^2 I`` and
    ``lam = r / tau^2``.

    Args:
        X: Inputs, shape ``(T, d)``.
        y: Targets, shape ``(T,)``.
        lam: Ridge penalty (scalar, > 0).

    Returns:
        The ridge weights, shape ``(d,)``.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ y)


def posterior_path(X, y, r, Sigma0, m0=None):
    """Returns the posterior after each prefix ``t = 1..T``, each in batch form.

    Args:
        X: Inputs, shape ``(T, d)``.
        y: Targets, shape ``(T,)``.
        r: Observation noise variance (scalar).
        Sigma0: Prior covariance ``(d, d)`` or scalar ``tau^2``.
        m0: Optional prior mean ``(d,)``; zero if ``None``.

    Returns:
        Tuple ``(means (T, d), covs (T, d, d))``; row ``t - 1`` is the posterior
        given the first ``t`` observations.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    results = [posterior(X[:t], y[:t], r, Sigma0, m0) for t in range(1, X.shape[0] + 1)]
    return np.stack([m for m, _ in results]), np.stack([c for _, c in results])
