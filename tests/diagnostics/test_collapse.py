"""kalmanjax.diagnostics.collapse: trace, log-determinant and eigenvalues."""

import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from kalmanjax import diagnostics as kd
from tests.reference import ridge

from .helpers import run_regression, sample_regression


@pytest.mark.parametrize("form", ["dense", "sqrt"])
def test_trace_logdet_eigenvalues_match_numpy(x64, rng, form, variant):
    X, _, y = sample_regression(rng, 12, 4, 0.1)
    out, _ = run_regression(X, y, 0.1, np.eye(4), form=form)
    _, covs = ridge.posterior_path(X, y, 0.1, np.eye(4))
    tr = variant(kd.covariance_trace)(out.states)
    ld = variant(kd.covariance_logdet)(out.states)
    ev = variant(kd.covariance_eigenvalues)(out.states)
    np.testing.assert_allclose(tr, np.trace(covs, axis1=1, axis2=2), rtol=1e-10)
    np.testing.assert_allclose(ld, np.linalg.slogdet(covs)[1], rtol=1e-10)
    np.testing.assert_allclose(ev, np.linalg.eigvalsh(covs), rtol=1e-8, atol=1e-14)


def test_collapse_functions_keep_float32(rng):
    covs = jnp.asarray(np.stack([np.eye(3) * (k + 1) for k in range(5)]), jnp.float32)
    b = kj.Gaussian(mean=jnp.zeros((5, 3), jnp.float32), cov=covs)
    for f in (kd.covariance_trace, kd.covariance_logdet, kd.covariance_eigenvalues):
        assert f(b).dtype == jnp.float32
        assert f(kj.to_sqrt(kj.Gaussian(b.mean[0], b.cov[0]))).dtype == jnp.float32
