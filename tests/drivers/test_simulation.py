"""Simulation and forecasting against NumPy float64 moment recursions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj

F = np.array([[0.9, 0.2], [-0.1, 0.8]])
Q = np.array([[0.3, 0.1], [0.1, 0.2]])
B = np.array([0.5, -0.2])
H = np.array([[1.0, -0.5]])
R = np.array([[0.4]])
D = np.array([1.5])
M0, P0 = np.array([1.0, -1.0]), np.array([[1.0, 0.3], [0.3, 0.5]])


def _moments(T):
    """NumPy float64: the means and covariances of x_1..x_T and y_1..y_T."""
    m, P, out = M0, P0, []
    for _ in range(T):
        m, P = F @ m + B, F @ P @ F.T + Q
        out.append((m, P, H @ m + D, H @ P @ H.T + R))
    return [np.array(a) for a in zip(*out, strict=True)]


def _linear():
    return (
        kj.Gaussian(jnp.asarray(M0), jnp.asarray(P0)),
        kj.LinearDynamics(F=jnp.asarray(F), Q=jnp.asarray(Q), b=jnp.asarray(B)),
        kj.LinearObservation(H=jnp.asarray(H), R=jnp.asarray(R), d=jnp.asarray(D)),
    )


def _assert_moments(samples, mean, cov, sigmas=5.0):
    """Sample mean and covariance within ``sigmas`` of their sampling error."""
    n = samples.shape[0]
    se_mean = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1) / n)
    assert np.all(np.abs(samples.mean(0) - mean) < sigmas * se_mean)
    centred = samples - samples.mean(0)
    emp = np.einsum("n...i,n...j->...ij", centred, centred) / (n - 1)
    var = np.diagonal(cov, axis1=-2, axis2=-1)
    se_cov = np.sqrt((var[..., :, None] * var[..., None, :] + cov**2) / n)
    assert np.all(np.abs(emp - cov) < sigmas * se_cov)


def test_simulated_paths_have_the_model_moments(x64):
    prior, dyn, obs = _linear()
    T, N = 4, 8000
    keys = jax.random.split(jax.random.key(0), N)
    sims = jax.vmap(lambda k: kj.simulate(k, prior, dyn, obs, num_steps=T))(keys)
    assert sims.states.shape == (N, T, 2) and sims.observations.shape == (N, T, 1)
    assert sims.states.dtype == jnp.float64
    _assert_moments(np.asarray(sims.initial), M0, P0)
    mx, Px, my, Py = _moments(T)
    _assert_moments(np.asarray(sims.states), mx, Px)
    _assert_moments(np.asarray(sims.observations), my, Py)
    # and jointly: x_t and y_t are correlated through H
    x, y = np.asarray(sims.states[:, -1]), np.asarray(sims.observations[:, -1, 0])
    cross = ((x - x.mean(0)) * (y - y.mean())[:, None]).mean(0)
    np.testing.assert_allclose(cross, Px[-1] @ H[0], atol=5 * np.sqrt(Py[-1, 0, 0] / N))


def test_no_noise_gives_the_deterministic_path_exactly(x64):
    # a singular prior (a point) and Q = 0: x_t = F^t m_0 + ..., to rounding
    prior = kj.SqrtGaussian(jnp.asarray(M0), jnp.zeros((2, 2)))
    dyn = kj.LinearDynamics(F=jnp.asarray(F), Q=jnp.zeros((2, 2)), b=jnp.asarray(B))
    obs = kj.LinearObservation(H=jnp.asarray(H), R=jnp.asarray(R))
    sim = kj.simulate(jax.random.key(3), prior, dyn, obs, num_steps=6)
    x = M0
    np.testing.assert_array_equal(sim.initial, M0)
    for t in range(6):
        x = F @ x + B
        np.testing.assert_allclose(sim.states[t], x, rtol=1e-13)


def test_time_varying_and_nonlinear_models_read_the_step_inputs(x64):
    # dynamics x_t = 0.5 sin(x_{t-1}) + u_t + w, observation y_t = a_t x_t^2 + v
    T, N, q, r = 5, 6000, 0.05, 0.1
    rng = np.random.default_rng(1)
    xs = {
        "u": jnp.asarray(rng.normal(size=(T, 1))),
        "a": jnp.asarray(rng.normal(size=T)),
    }
    dyn = kj.NonlinearDynamics(
        fn=lambda x, u: 0.5 * jnp.sin(x) + u["u"], Q=q * jnp.eye(1)
    )
    obs = lambda u: kj.NonlinearObservation(  # noqa: E731  (a per-step model)
        fn=lambda x, v: v["a"] * x**2, R=r * jnp.eye(1)
    )
    prior = kj.Gaussian(jnp.zeros(1), jnp.eye(1))
    keys = jax.random.split(jax.random.key(5), N)
    sims = jax.vmap(lambda k: kj.simulate(k, prior, dyn, obs, xs))(keys)
    x, y = np.asarray(sims.states[..., 0]), np.asarray(sims.observations[..., 0])
    prev = np.concatenate([np.asarray(sims.initial), x[:, :-1]], axis=1)
    w = x - (0.5 * np.sin(prev) + np.asarray(xs["u"])[None, :, 0])
    v = y - np.asarray(xs["a"])[None] * x**2
    for noise, var in ((w, q), (v, r)):
        _assert_moments(noise[..., None], np.zeros((T, 1)), var * np.ones((T, 1, 1)))


def test_masked_observations_are_missing_and_the_filter_skips_them(x64):
    prior, dyn, obs = _linear()
    mask = jnp.array([True, False, True, True, False])
    sim = kj.simulate(jax.random.key(2), prior, dyn, obs, num_steps=5, mask=mask)
    assert np.all(np.isnan(sim.observations[~np.asarray(mask)]))
    assert np.all(np.isfinite(sim.observations[np.asarray(mask)]))
    full = kj.simulate(jax.random.key(2), prior, dyn, obs, num_steps=5)
    np.testing.assert_array_equal(full.states, sim.states)  # the same draw
    out = kj.run(kj.kalman_filter(dyn, obs), prior, sim.observations)
    # a missing step is a pure prediction: it adds no information
    np.testing.assert_allclose(out.infos.information_gain[1], 0.0, atol=1e-12)
    two_d = kj.simulate(
        jax.random.key(2), prior, dyn, obs, num_steps=5, mask=mask[:, None]
    )
    np.testing.assert_array_equal(two_d.observations, sim.observations)


def test_simulate_is_seeded_and_keeps_the_dtype():
    prior, dyn, obs = (
        jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), m)
        for m in _linear()
    )
    a = kj.simulate(jax.random.key(7), prior, dyn, obs, num_steps=3)
    b = kj.simulate(jax.random.key(7), prior, dyn, obs, num_steps=3)
    c = kj.simulate(jax.random.key(8), prior, dyn, obs, num_steps=3)
    np.testing.assert_array_equal(a.observations, b.observations)
    assert not np.allclose(a.observations, c.observations)
    assert a.states.dtype == a.observations.dtype == jnp.float32


def test_simulate_names_what_is_wrong():
    prior, dyn, obs = _linear()
    with pytest.raises(ValueError, match="give xs .* or num_steps"):
        kj.simulate(jax.random.key(0), prior, dyn, obs)
    with pytest.raises(
        ValueError, match="num_steps = 4 but xs has a time axis of length 3"
    ):
        kj.simulate(jax.random.key(0), prior, dyn, obs, jnp.zeros((3, 1)), num_steps=4)
    with pytest.raises(ValueError, match=r"mask must have shape \(3,\) or \(3, 1\)"):
        kj.simulate(
            jax.random.key(0), prior, dyn, obs, num_steps=3, mask=jnp.ones(4, bool)
        )
    with pytest.raises(TypeError, match="dynamics must be a LinearDynamics"):
        kj.simulate(jax.random.key(0), prior, "F", obs, num_steps=3)


@pytest.mark.parametrize("sqrt", [False, True])
def test_forecast_is_the_moment_recursion(sqrt, x64):
    prior, dyn, obs = _linear()
    belief = kj.to_sqrt(prior) if sqrt else prior
    f = kj.forecast(belief, dyn, obs, num_steps=4)
    assert isinstance(f.states, kj.SqrtGaussian if sqrt else kj.Gaussian)
    mx, Px, my, Py = _moments(4)
    cov = (
        kj.to_dense(f.states).cov
        if not sqrt
        else np.einsum("kij,klj->kil", f.states.chol, f.states.chol)
    )
    np.testing.assert_allclose(f.states.mean, mx, rtol=1e-12)
    np.testing.assert_allclose(cov, Px, rtol=1e-12)
    np.testing.assert_allclose(f.observations.mean, my, rtol=1e-12)
    np.testing.assert_allclose(f.observations.cov, Py, rtol=1e-12)


def test_forecast_with_time_varying_inputs(x64):
    rng = np.random.default_rng(4)
    Fs = rng.normal(size=(3, 2, 2)) * 0.5
    dyn = lambda u: kj.LinearDynamics(F=u["F"], Q=jnp.asarray(Q))  # noqa: E731
    obs = kj.LinearObservation(H=jnp.asarray(H), R=jnp.asarray(R))
    f = kj.forecast(
        kj.Gaussian(jnp.asarray(M0), jnp.asarray(P0)), dyn, obs, {"F": jnp.asarray(Fs)}
    )
    m, P = M0, P0
    for t in range(3):
        m, P = Fs[t] @ m, Fs[t] @ P @ Fs[t].T + Q
        np.testing.assert_allclose(f.states.mean[t], m, rtol=1e-12)
        np.testing.assert_allclose(f.states.cov[t], P, rtol=1e-12)
        np.testing.assert_allclose(f.observations.cov[t], H @ P @ H.T + R, rtol=1e-12)


def test_forecast_linearises_nonlinear_models_at_the_predicted_mean(x64):
    def f(x, u):
        return jnp.array([x[0] + 0.1 * jnp.sin(x[1]), 0.9 * x[1]])

    def h(x, u):
        return jnp.array([x[0] ** 2 + x[1]])

    dyn = kj.NonlinearDynamics(fn=f, Q=jnp.asarray(Q))
    obs = kj.NonlinearObservation(fn=h, R=jnp.asarray(R))
    fc = kj.forecast(
        kj.Gaussian(jnp.asarray(M0), jnp.asarray(P0)), dyn, obs, num_steps=2
    )
    m, P = M0, P0
    for t in range(2):
        J = np.array([[1.0, 0.1 * np.cos(m[1])], [0.0, 0.9]])
        m, P = np.array([m[0] + 0.1 * np.sin(m[1]), 0.9 * m[1]]), J @ P @ J.T + Q
        Jh = np.array([[2 * m[0], 1.0]])
        np.testing.assert_allclose(fc.states.mean[t], m, rtol=1e-12)
        np.testing.assert_allclose(fc.states.cov[t], P, rtol=1e-12)
        np.testing.assert_allclose(
            fc.observations.mean[t], [m[0] ** 2 + m[1]], rtol=1e-12
        )
        np.testing.assert_allclose(
            fc.observations.cov[t], Jh @ P @ Jh.T + R, rtol=1e-12
        )


def test_simulate_checks_the_models_against_the_prior(x64):
    prior = kj.Gaussian(jnp.zeros(2, jnp.float32), jnp.eye(2, dtype=jnp.float32))
    obs = kj.LinearObservation(H=jnp.ones((1, 2), jnp.float32), R=jnp.eye(1))
    dyn64 = kj.LinearDynamics(F=jnp.eye(2), Q=jnp.eye(2))  # float64 in a float32 run
    with pytest.raises((TypeError, ValueError), match="dynamics.F"):
        kj.simulate(jax.random.key(0), prior, dyn64, obs, num_steps=2)
    dyn = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), dyn64)
    wide = kj.LinearObservation(
        H=jnp.ones((1, 3), jnp.float32), R=jnp.eye(1, dtype=jnp.float32)
    )
    with pytest.raises(ValueError, match=r"observation.H must have shape \(obs, 2\)"):
        kj.simulate(jax.random.key(0), prior, dyn, wide, num_steps=2)
