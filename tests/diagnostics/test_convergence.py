"""kalmanjax.diagnostics.convergence: time to epsilon, the mean's expected error."""

import jax.numpy as jnp
import numpy as np

import kalmanjax as kj
from kalmanjax import diagnostics as kd
from tests.reference import ridge

from .helpers import run_regression


def test_time_to_eps_matches_a_loop(rng):
    v = rng.uniform(size=(20, 5)).cumsum(0)[::-1].copy()
    for eps in (0.9, 0.3, 0.01):
        got = np.asarray(
            kd.time_to_eps(
                jnp.asarray(v, jnp.float32), jnp.asarray(v[0] * 1.1, jnp.float32), eps
            )
        )
        for j in range(5):
            hits = [t + 1 for t in range(20) if v[t, j] <= eps * v[0, j] * 1.1]
            assert got[j] == (hits[0] if hits else 21)


def test_expected_mean_error_identity_is_exact_on_noise_free_data(x64, rng):
    # m_t is linear in y, so E over noise = the noise-free run, and antithetic
    # noise pairs average to it exactly
    d, T, r = 4, 15, 0.3
    X = rng.normal(size=(T, d))
    theta = rng.normal(size=d)
    m0 = rng.normal(size=d)
    prior_cov = np.diag(rng.uniform(0.5, 2.0, size=d))
    _, covs = ridge.posterior_path(X, X @ theta, r, prior_cov, m0)
    prior = kj.Gaussian(mean=jnp.asarray(m0), cov=jnp.asarray(prior_cov))
    bias = kd.expected_mean_error(jnp.asarray(covs), prior, jnp.asarray(theta))
    clean, _ = run_regression(X, X @ theta, r, prior_cov, m0)
    np.testing.assert_allclose(
        bias, np.asarray(clean.states.mean) - theta, rtol=1e-9, atol=1e-12
    )
    v = np.sqrt(r) * rng.normal(size=T)
    plus, _ = run_regression(X, X @ theta + v, r, prior_cov, m0)
    minus, _ = run_regression(X, X @ theta - v, r, prior_cov, m0)
    avg = 0.5 * np.asarray(plus.states.mean + minus.states.mean) - theta
    np.testing.assert_allclose(avg, bias, rtol=1e-9, atol=1e-12)
    t_mu = kd.mean_time_to_eps(clean.states, prior, jnp.asarray(theta), 0.1)
    err = np.sum(np.asarray(bias) ** 2, axis=1) / np.sum((m0 - theta) ** 2)
    hits = np.nonzero(err <= 0.1)[0]
    assert int(t_mu) == (hits[0] + 1 if len(hits) else T + 1)
