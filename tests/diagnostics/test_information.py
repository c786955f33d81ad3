"""kalmanjax.diagnostics.information: gains, duplicates, information matrices."""

import jax.numpy as jnp
import numpy as np

from kalmanjax import diagnostics as kd
from tests.reference import numpy_kalman as ref
from tests.reference import ridge

from .helpers import run_regression, sample_regression


def test_information_gains_sum_to_logdet_difference(x64, rng):
    # Q = 0: sum_t dI_t = 1/2 log det Sigma_0 - 1/2 log det Sigma_T (chain rule)
    X, _, y = sample_regression(rng, 30, 5, 0.2)
    prior_cov = np.diag(rng.uniform(0.5, 2.0, size=5))
    out, prior = run_regression(X, y, 0.2, prior_cov)
    _, covs = ridge.posterior_path(X, y, 0.2, prior_cov)
    expected = 0.5 * (np.linalg.slogdet(prior_cov)[1] - np.linalg.slogdet(covs)[1])
    np.testing.assert_allclose(kd.cumulative_information(out.infos), expected, 1e-10)
    np.testing.assert_allclose(
        kd.information_from_covariances(prior, out.states), expected, rtol=1e-10
    )


def test_information_with_process_noise_differs_from_logdet(x64, rng):
    # with Q > 0 the covariance re-inflates between tokens: the identity must not hold
    X, _, y = sample_regression(rng, 30, 3, 0.2)
    out, prior = run_regression(X, y, 0.2, np.eye(3), q=0.05)
    cum = kd.cumulative_information(out.infos)[-1]
    from_cov = kd.information_from_covariances(prior, out.states)[-1]
    assert cum > from_cov + 0.5


def test_token_information_and_duplicates_match_reference(x64, rng):
    d = 3
    P = np.cov(rng.normal(size=(d, 10)))
    H = rng.normal(size=(1, d))
    r = 0.3
    copies = 5
    got = kd.duplicated_token_information(
        jnp.asarray(P), jnp.asarray(H), r * jnp.eye(1), copies
    )
    # the NumPy reference filter run on the token repeated: its per-step gains
    out = ref.kalman_filter(
        np.zeros(d),
        P,
        np.eye(d),
        np.zeros((d, d)),
        H,
        r * np.eye(1),
        rng.normal(size=(copies, 1)),
    )
    np.testing.assert_allclose(got, out["information_gains"], rtol=1e-10)
    # closed form: copy k adds 1/2 log((r + k v) / (r + (k - 1) v)), v = H P H^T
    v = float((H @ P @ H.T)[0, 0])
    k = np.arange(1, copies + 1)
    np.testing.assert_allclose(
        got, 0.5 * np.log((r + k * v) / (r + (k - 1) * v)), 1e-10
    )
    assert np.all(got[1:] <= 0.5 * np.log(2.0) + 1e-12)
    single = kd.token_information(jnp.asarray(P), jnp.asarray(H), r * jnp.eye(1))
    np.testing.assert_allclose(single, out["information_gains"][0], rtol=1e-10)
