"""Backward simulation against the RTS smoother on a linear-Gaussian model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from tests.reference import numpy_kalman

F = np.array([[0.9, 0.1], [0.0, 0.8]])
Q = 0.2 * np.eye(2)
H = np.array([[1.0, 0.5]])
R = np.array([[0.5]])
M0, P0 = np.zeros(2), np.eye(2)


def test_trajectories_match_the_rts_smoother(x64):
    """The draws' mean and variance at every step, within their Monte Carlo error."""
    rng = np.random.default_rng(0)
    ys = numpy_kalman.simulate(rng, M0, P0, F, Q, H, R, 15)[1]
    ys[4] = np.nan
    kf = numpy_kalman.kalman_filter(M0, P0, F, Q, H, R, ys)
    ms, Ps = numpy_kalman.rts_smoother(kf["filtered_means"], kf["filtered_covs"], F, Q)
    dyn = kj.LinearDynamics(jnp.asarray(F), jnp.asarray(Q))
    obs = kj.LinearObservation(jnp.asarray(H), jnp.asarray(R))
    prior = kj.Gaussian(jnp.asarray(M0), jnp.asarray(P0))
    start = kj.sample_particles(jax.random.key(0), prior, 3000)
    states = kj.run(kj.particle_filter(dyn, obs), start, jnp.asarray(ys)).states
    # xs given: the model as a function of the inputs takes the same path
    draws = kj.backward_simulation(
        jax.random.key(1), lambda u: dyn, states, jnp.asarray(ys), num_samples=2000
    )
    assert draws.shape == (2000, 15, 2)
    x = np.asarray(draws)
    sd = np.sqrt(np.diagonal(Ps, axis1=1, axis2=2))
    # the draws share 3000 filter particles: allow for that with a wider band
    assert np.all(np.abs(x.mean(axis=0) - ms) < 6 * sd / np.sqrt(2000))
    np.testing.assert_allclose(x.var(axis=0), sd**2, rtol=0.2)
    # the lag-one covariance too: the draws are trajectories, not marginals
    lag = np.mean(
        (x[:, 1:, 0] - ms[None, 1:, 0]) * (x[:, :-1, 0] - ms[None, :-1, 0]), 0
    )
    G = np.array(
        [
            np.linalg.solve(
                F @ kf["filtered_covs"][t] @ F.T + Q, F @ kf["filtered_covs"][t]
            ).T
            for t in range(14)
        ]
    )
    exact = np.array([(Ps[t + 1] @ G[t].T)[0, 0] for t in range(14)])
    np.testing.assert_allclose(lag, exact, rtol=0.25, atol=0.02)


def test_bad_arguments_are_refused():
    dyn = kj.LinearDynamics(jnp.eye(1), jnp.eye(1))
    prior = kj.Gaussian(jnp.zeros(1), jnp.eye(1))
    start = kj.sample_particles(jax.random.key(0), prior, 10)
    with pytest.raises(ValueError, match="stacked over time"):
        kj.backward_simulation(jax.random.key(0), dyn, start)
    obs = kj.LinearObservation(jnp.eye(1), jnp.eye(1))
    states = kj.run(kj.particle_filter(dyn, obs), start, jnp.ones((4, 1))).states
    with pytest.raises(ValueError, match="pass xs"):
        kj.backward_simulation(jax.random.key(0), lambda u: dyn, states)
