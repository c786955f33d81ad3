"""kalmanjax.diagnostics.observability: Gramians and the covariance bounds."""

import jax.numpy as jnp
import numpy as np

from kalmanjax import diagnostics as kd
from tests.reference import numpy_kalman as ref
from tests.reference import ridge

from .helpers import sample_regression


def _loewner_max(a, b):
    """Largest eigenvalue of a - b (<= 0 means a <= b), per leading index."""
    return np.linalg.eigvalsh(0.5 * (a - b + np.swapaxes(a - b, -1, -2)))[..., -1]


def test_gramian_matches_numpy_window_sums(x64, rng):
    T, d, m = 9, 3, 2
    H = rng.normal(size=(T, m, d))
    A = rng.normal(size=(T, m, m))
    R = A @ np.swapaxes(A, 1, 2) + np.eye(m)
    J = np.einsum("tmi,tmn,tnj->tij", H, np.linalg.inv(R), H)
    for window in (None, 1, 4, T + 3):
        G = kd.observability_gramian(jnp.asarray(H), jnp.asarray(R), window)
        for t in range(T):
            lo = 0 if window is None else max(0, t - window + 1)
            np.testing.assert_allclose(
                G[t], J[lo : t + 1].sum(0), rtol=1e-10, atol=1e-12
            )


def test_gramian_bound_is_the_q0_posterior_and_bounds_it_windowed(x64, rng):
    X, _, y = sample_regression(rng, 25, 4, 0.3)
    prior_cov = np.diag(rng.uniform(0.5, 2.0, size=4))
    _, covs = ridge.posterior_path(X, y, 0.3, prior_cov)
    H = jnp.asarray(X)[:, None, :]
    G = kd.observability_gramian(H, 0.3 * jnp.eye(1, dtype=H.dtype))
    bound = kd.gramian_covariance_bound(jnp.asarray(prior_cov), G)
    np.testing.assert_allclose(bound, covs, rtol=1e-9, atol=1e-12)  # equality, Q = 0
    Gw = kd.observability_gramian(H, 0.3 * jnp.eye(1, dtype=H.dtype), window=6)
    bound_w = np.asarray(kd.gramian_covariance_bound(jnp.asarray(prior_cov), Gw))
    assert np.all(_loewner_max(covs, bound_w) <= 1e-12)
    assert np.max(_loewner_max(bound_w, covs)[6:]) > 1e-3  # a bound, not an equality


def test_windowed_bound_brackets_the_filter_with_process_noise(x64, rng):
    T, d, r, window = 40, 3, 0.2, 5
    Q = 0.02 * np.eye(d) + 0.01 * np.ones((d, d))
    X = rng.normal(size=(T, d))
    prior_cov = 4.0 * np.eye(d)
    out = ref.kalman_filter(
        np.zeros(d),
        prior_cov,
        np.eye(d),
        Q,
        X[:, None, :],
        r * np.eye(1),
        rng.normal(size=(T, 1)),
    )
    P = out["filtered_covs"]
    H = jnp.asarray(X)[:, None, :]
    R = r * jnp.eye(1, dtype=H.dtype)
    upper = np.asarray(kd.windowed_covariance_bound(H, R, jnp.asarray(Q), window))
    lower = np.asarray(
        kd.gramian_covariance_bound(
            jnp.asarray(prior_cov), kd.observability_gramian(H, R)
        )
    )
    full = slice(window - 1, None)  # windows with N tokens (G_{t,N} > 0 from t = d)
    assert np.all(_loewner_max(P[full], upper[full]) <= 1e-10)
    assert np.all(_loewner_max(lower, P) <= 1e-10)
    # process noise makes the filter strictly worse than the Q = 0 posterior
    assert np.min(_loewner_max(P, lower)[5:]) > 1e-3


def test_windowed_bound_is_the_window_estimators_error_covariance(x64, rng):
    # independent construction: the estimator's error as a linear map of (v, w)
    T, d, r, window = 7, 2, 0.4, 4
    Q = np.array([[0.05, 0.01], [0.01, 0.03]])
    X = rng.normal(size=(T, d))
    got = np.asarray(
        kd.windowed_covariance_bound(
            jnp.asarray(X)[:, None, :], r * jnp.eye(1), jnp.asarray(Q), window
        )
    )
    t = T  # 1-based time of the estimate; window tokens s = t - N + 1 .. t
    s_idx = np.arange(t - window + 1, t + 1)
    Hs = X[s_idx - 1]
    G = Hs.T @ Hs / r
    # error = G^-1 sum_s H_s^T/r (v_s - H_s sum_{k=s+1}^t w_k)
    Mv = np.linalg.solve(G, Hs.T / r)  # (d, N) acting on v
    ks = np.arange(t - window + 2, t + 1)
    Mw = np.zeros((d, d * len(ks)))
    for a, k in enumerate(ks):
        for s, h in zip(s_idx, Hs, strict=True):
            if s + 1 <= k:
                Mw[:, a * d : (a + 1) * d] -= np.linalg.solve(G, np.outer(h, h) / r)
    cov = Mv @ (r * np.eye(window)) @ Mv.T + Mw @ np.kron(np.eye(len(ks)), Q) @ Mw.T
    np.testing.assert_allclose(got[t - 1], cov, rtol=1e-10)
