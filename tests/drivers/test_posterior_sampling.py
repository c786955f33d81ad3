"""Forward filtering, backward sampling against the dense joint Gaussian (NumPy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj

N_SAMPLES = 6000


def _joint_posterior(Fs, Q, H, R, m0, P0, ys):
    """NumPy float64: mean and covariance of x_{1:T} given the observed y's.

    The path is linear in the noise (x_0 - m_0, w_1..w_T), so x_{1:T} and
    y_{1:T} are jointly Gaussian; NaN observations are left out of the
    conditioning.
    """
    T, n = len(Fs), len(m0)

    def phi(t, k):  # F_t ... F_{k+1}: how noise k (0: x_0, k >= 1: w_k) reaches x_t
        out = np.eye(n)
        for s in range(k + 1, t + 1):
            out = Fs[s - 1] @ out
        return out

    M = np.zeros((T * n, (T + 1) * n))
    mean, m = [], m0
    for t in range(1, T + 1):
        m = Fs[t - 1] @ m
        mean.append(m)
        for k in range(t + 1):
            M[(t - 1) * n : t * n, k * n : (k + 1) * n] = phi(t, k)
    noise = np.zeros(((T + 1) * n, (T + 1) * n))
    noise[:n, :n] = P0
    for k in range(1, T + 1):
        noise[k * n : (k + 1) * n, k * n : (k + 1) * n] = Q
    Cx = M @ noise @ M.T
    Hb = np.kron(np.eye(T), H)
    Cy = Hb @ Cx @ Hb.T + np.kron(np.eye(T), R)
    keep = ~np.isnan(ys.reshape(-1))
    gain = np.linalg.solve(Cy[np.ix_(keep, keep)], (Cx @ Hb.T)[:, keep].T).T
    mu = np.concatenate(mean) + gain @ (
        ys.reshape(-1)[keep] - (Hb @ np.concatenate(mean))[keep]
    )
    return mu, Cx - gain @ (Hb @ Cx)[keep]


def _model(T=5, singular=False, missing=True):
    rng = np.random.default_rng(0)
    F = np.array([[0.9, 0.3], [-0.2, 0.7]])
    Q = np.diag([0.3, 0.0]) if singular else np.array([[0.3, 0.05], [0.05, 0.2]])
    H, R = np.array([[1.0, 0.5]]), np.array([[0.2]])
    m0, P0 = np.array([0.5, -0.5]), np.array([[1.0, 0.2], [0.2, 0.6]])
    ys = rng.normal(size=(T, 1))
    if missing:
        ys[2] = np.nan
    return F, Q, H, R, m0, P0, ys


def _filtered(F, Q, H, R, m0, P0, ys, sqrt):
    dyn = kj.LinearDynamics(F=jnp.asarray(F), Q=jnp.asarray(Q))
    obs = kj.LinearObservation(H=jnp.asarray(H), R=jnp.asarray(R))
    prior = kj.Gaussian(jnp.asarray(m0), jnp.asarray(P0))
    filt = kj.kalman_filter(dyn, obs, form="sqrt" if sqrt else "joseph")
    out = kj.run(filt, kj.to_sqrt(prior) if sqrt else prior, jnp.asarray(ys))
    return dyn, out.states


def _check_against(samples, mu, cov, sigmas=5.0):
    flat = samples.reshape(samples.shape[0], -1)
    n = flat.shape[0]
    var = np.diag(cov)
    assert np.all(np.abs(flat.mean(0) - mu) < sigmas * np.sqrt(var / n))
    centred = flat - flat.mean(0)
    emp = centred.T @ centred / (n - 1)
    se = np.sqrt((np.outer(var, var) + cov**2) / n)
    assert np.all(np.abs(emp - cov) <= sigmas * se + 1e-12)


@pytest.mark.parametrize("sqrt", [False, True])
@pytest.mark.parametrize("singular", [False, True])
def test_samples_have_the_joint_posterior_moments(sqrt, singular, x64):
    F, Q, H, R, m0, P0, ys = _model(singular=singular)
    dyn, states = _filtered(F, Q, H, R, m0, P0, ys, sqrt)
    keys = jax.random.split(jax.random.key(1), N_SAMPLES)
    draws = jax.vmap(lambda k: kj.sample_posterior(k, dyn, states))(keys)
    assert draws.shape == (N_SAMPLES, 5, 2) and draws.dtype == jnp.float64
    assert np.all(np.isfinite(draws))  # a singular Q needs no jitter
    # every cross-time covariance too, not only the smoother's marginals
    mu, cov = _joint_posterior([F] * 5, Q, H, R, m0, P0, ys)
    _check_against(np.asarray(draws), mu, cov)


@pytest.mark.parametrize("sqrt", [False, True])
def test_the_parallel_scan_draws_the_same_path(sqrt, x64):
    F, Q, H, R, m0, P0, ys = _model(T=9)
    dyn, states = _filtered(F, Q, H, R, m0, P0, ys, sqrt)
    key = jax.random.key(4)
    seq = kj.sample_posterior(key, dyn, states)
    par = kj.sample_posterior(key, dyn, states, parallel=True)
    np.testing.assert_allclose(par, seq, rtol=1e-10, atol=1e-12)


def test_time_varying_dynamics_are_read_from_the_inputs(x64):
    F, Q, H, R, m0, P0, ys = _model(missing=False)
    rng = np.random.default_rng(3)
    Fs = 0.6 * rng.normal(size=(5, 2, 2))
    dyn = lambda u: kj.LinearDynamics(F=u["F"], Q=jnp.asarray(Q))  # noqa: E731
    obs = kj.LinearObservation(H=jnp.asarray(H), R=jnp.asarray(R))
    xs = {"obs": jnp.asarray(ys), "F": jnp.asarray(Fs)}
    prior = kj.Gaussian(jnp.asarray(m0), jnp.asarray(P0))
    states = kj.run(kj.kalman_filter(dyn, obs), prior, xs).states
    keys = jax.random.split(jax.random.key(2), N_SAMPLES)
    draws = jax.vmap(lambda k: kj.sample_posterior(k, dyn, states, xs))(keys)
    _check_against(np.asarray(draws), *_joint_posterior(list(Fs), Q, H, R, m0, P0, ys))
    par = kj.sample_posterior(keys[0], dyn, states, xs, parallel=True)
    np.testing.assert_allclose(par, draws[0], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="pass xs"):
        kj.sample_posterior(keys[0], dyn, states)


def test_edge_lengths_and_dtype():
    F, Q, H, R, m0, P0, ys = _model(missing=False)
    dyn, states = _filtered(
        *(np.asarray(a, np.float32) for a in (F, Q, H, R, m0, P0, ys)), sqrt=False
    )
    x = kj.sample_posterior(jax.random.key(0), dyn, states)
    assert x.dtype == jnp.float32 and x.shape == (5, 2)
    one = jax.tree_util.tree_map(lambda a: a[:1], states)
    assert kj.sample_posterior(jax.random.key(0), dyn, one).shape == (1, 2)
    none = jax.tree_util.tree_map(lambda a: a[:0], states)
    assert kj.sample_posterior(jax.random.key(0), dyn, none).shape == (0, 2)
    with pytest.raises(ValueError, match=r"filtered.mean must have shape \(T, state\)"):
        kj.sample_posterior(
            jax.random.key(0), dyn, kj.Gaussian(states.mean[0], states.cov[0])
        )
