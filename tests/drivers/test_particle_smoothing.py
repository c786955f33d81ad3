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
    """A time-varying model (F_t through the inputs): the draws' mean, variance and
    lag-one covariance at every step, within their Monte Carlo error."""
    rng = np.random.default_rng(0)
    T = 15
    angles = np.linspace(0.0, 4.0, T)
    Fs = np.array(
        [
            0.9 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            for a in angles
        ]
    )
    ys = numpy_kalman.simulate(rng, M0, P0, Fs, Q, H, R, T)[1]
    ys[4] = np.nan
    kf = numpy_kalman.kalman_filter(M0, P0, Fs, Q, H, R, ys)
    ms, Ps = numpy_kalman.rts_smoother(kf["filtered_means"], kf["filtered_covs"], Fs, Q)
    xs = {"obs": jnp.asarray(ys), "F": jnp.asarray(Fs)}

    def dynamics(u):
        return kj.LinearDynamics(u["F"], jnp.asarray(Q))

    obs = kj.LinearObservation(jnp.asarray(H), jnp.asarray(R))
    prior = kj.Gaussian(jnp.asarray(M0), jnp.asarray(P0))
    start = kj.sample_particles(jax.random.key(0), prior, 3000)
    states = kj.run(kj.particle_filter(dynamics, obs), start, xs).states
    draws = kj.backward_simulation(
        jax.random.key(1), dynamics, states, xs, num_samples=2000
    )
    assert draws.shape == (2000, T, 2)
    x = np.asarray(draws)
    sd = np.sqrt(np.diagonal(Ps, axis1=1, axis2=2))
    # the draws share 3000 filter particles: allow for that with a wider band
    assert np.all(np.abs(x.mean(axis=0) - ms) < 6 * sd / np.sqrt(2000))
    np.testing.assert_allclose(x.var(axis=0), sd**2, rtol=0.2)
    # the lag-one covariance too: the draws are trajectories, not marginals;
    # Cov(x_t, x_{t+1} | y) = G_t P^s_{t+1}, G_t from the dynamics of step t + 1
    lag = np.mean(
        (x[:, 1:, 0] - ms[None, 1:, 0]) * (x[:, :-1, 0] - ms[None, :-1, 0]), 0
    )
    exact = []
    for t in range(T - 1):
        P, Fn = kf["filtered_covs"][t], Fs[t + 1]
        G = np.linalg.solve(Fn @ P @ Fn.T + Q, Fn @ P).T
        exact.append((G @ Ps[t + 1])[0, 0])
    np.testing.assert_allclose(lag, exact, rtol=0.25, atol=0.02)
    # smoothing with the wrong step's dynamics (xs[t], not xs[t + 1]) is caught
    shifted = {"obs": xs["obs"], "F": jnp.concatenate([xs["F"][:1], xs["F"][:-1]])}
    wrong = np.asarray(
        kj.backward_simulation(
            jax.random.key(1), dynamics, states, shifted, num_samples=2000
        )
    )
    assert np.max(np.abs(wrong.mean(axis=0) - ms) / (sd / np.sqrt(2000))) > 6


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
