"""float32 over a long stream with a badly conditioned covariance.

Two tracked objects with near-noise-free position readings (constant-velocity model,
dt = 1e-3, R = 1e-10): the filtered covariance has condition number ~7e6 and the
covariance-form update P - K S K^T loses positive definiteness in float32 (it returns
NaN here). The square-root and Joseph forms must stay accurate and PSD.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from tests.reference import numpy_kalman as ref

T = 100_000


def _tracking_model():
    dt, q, r, damping = 1e-3, 1.0, 1e-10, 50.0
    F1 = np.array([[1 - damping * dt, dt], [0.0, 1 - damping * dt]])
    Q1 = q * np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]])
    F, Q = np.kron(np.eye(2), F1), np.kron(np.eye(2), Q1)
    H = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    R = r * np.eye(2)
    P0 = np.diag([1.0, 100.0, 1.0, 100.0])
    return np.zeros(4), P0, F, Q, H, R


@pytest.fixture(scope="module")
def stream():
    m0, P0, F, Q, H, R = _tracking_model()
    _, y = ref.simulate(np.random.default_rng(0), m0, P0, F, Q, H, R, T)
    # the float64 reference sees exactly the float32 inputs, so that the comparison
    # measures the filter's arithmetic, not the rounding of the data
    as32 = lambda a: np.asarray(a, np.float32).astype(np.float64)
    arrays = [as32(a) for a in (m0, P0, F, Q, H, R, y)]
    expect = ref.kalman_filter(*arrays)
    return arrays, expect


@pytest.mark.parametrize("form", ["sqrt", "joseph", None])  # None: the default
def test_float32_long_stream_is_accurate_and_psd(stream, form):
    (m0, P0, F, Q, H, R, y), expect = stream
    assert np.linalg.cond(expect["filtered_covs"][-1]) > 1e6  # badly conditioned
    c = lambda a: jnp.asarray(a, jnp.float32)
    filt = kj.kalman_filter(
        kj.LinearDynamics(F=c(F), Q=c(Q)),
        kj.LinearObservation(H=c(H), R=c(R)),
        **({} if form is None else {"form": form}),
    )
    prior = kj.Gaussian(mean=c(m0), cov=c(P0))
    out = jax.jit(lambda ys: kj.run(filt, prior, ys))(c(y))
    lml = jax.jit(lambda ys: kj.log_marginal_likelihood(filt, prior, ys))(c(y))
    assert lml.dtype == jnp.float32
    np.testing.assert_allclose(lml, expect["log_marginal_likelihood"], rtol=1e-5)
    cov = np.asarray(out.states.cov, np.float64)
    assert np.all(np.isfinite(cov))
    np.testing.assert_array_equal(cov, np.swapaxes(cov, 1, 2))  # exactly symmetric
    assert np.linalg.eigvalsh(cov).min() > 0.0
    # the smallest variances (~1e-10) are tracked to float32 accuracy
    np.testing.assert_allclose(
        np.diagonal(cov, axis1=1, axis2=2)[-1000:],
        np.diagonal(expect["filtered_covs"], axis1=1, axis2=2)[-1000:],
        rtol=1e-3,
    )
