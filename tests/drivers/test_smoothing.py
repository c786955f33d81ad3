"""RTS smoother (covariance and square-root forms) against independent references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from tests._helpers import (
    FORM_CASES,
    assert_psd,
    build,
    reference_filter,
    simulate,
    time_varying_models,
    tol,
)
from tests.reference import joint_gaussian as joint
from tests.reference import numpy_kalman as ref


def _ref_smoother(model, y):
    f = reference_filter(model, y)
    return ref.rts_smoother(
        f["filtered_means"], f["filtered_covs"], model["F"], model["Q"], model["b"]
    )


@pytest.mark.parametrize("form,fast", FORM_CASES)
@pytest.mark.parametrize("missing", [False, True])
def test_smoother_matches_reference(dtype, variant, form, fast, missing):
    rng = np.random.default_rng(21)
    model = ref.random_model(rng, 4, 2)
    y = simulate(rng, model, 30)
    if missing:
        y[rng.random(y.shape) < 0.3] = np.nan
        y[-1] = np.nan
    means, covs = _ref_smoother(model, y)
    _, prior, dyn, obs = build(model, dtype, form, fast)
    out = variant(
        lambda ys: kj.kalman_smoother(dyn, obs, prior, ys, form=form, fast=fast)
    )(jnp.asarray(y, dtype))
    t = tol(dtype, "seq")
    assert out.smoothed.mean.dtype == dtype
    np.testing.assert_allclose(out.smoothed.mean, means, **t)
    np.testing.assert_allclose(out.smoothed.cov, covs, **t)
    assert_psd(out.smoothed.cov, 1e-5 if dtype == jnp.float32 else 1e-12)
    assert isinstance(out.smoothed, kj.SqrtGaussian) == (form == "sqrt")


@pytest.mark.parametrize("form", ["dense", "sqrt"])
def test_smoother_against_dense_joint_gaussian(x64, form):
    rng = np.random.default_rng(22)
    model = ref.random_model(rng, 2, 1)
    y = simulate(rng, model, 7)
    y[4] = np.nan
    _, prior, dyn, obs = build(model, jnp.float64, form)
    out = kj.kalman_smoother(dyn, obs, prior, jnp.asarray(y), form=form)
    args = [model[k] for k in ("m0", "P0", "F", "Q", "H", "R")]
    for t in range(1, 8):
        mean, cov = joint.smoothed_marginal(*args, y, t, model["b"], model["d"])
        np.testing.assert_allclose(
            out.smoothed.mean[t - 1], mean, rtol=1e-10, atol=1e-12
        )
        np.testing.assert_allclose(out.smoothed.cov[t - 1], cov, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("form", ["dense", "sqrt"])
def test_time_varying_smoother(x64, form):
    rng = np.random.default_rng(23)
    T = 12
    model = ref.random_model(rng, 3, 2, T=T, time_varying=True)
    y = rng.normal(size=(T, 2))
    means, covs = _ref_smoother(model, y)
    dynamics, observation, leaves, prior = time_varying_models(model, jnp.float64)
    xs = {"obs": jnp.asarray(y), **leaves}
    out = jax.jit(
        lambda xs: kj.kalman_smoother(dynamics, observation, prior, xs, form=form)
    )(xs)
    t = tol(jnp.float64, "seq")
    np.testing.assert_allclose(out.smoothed.mean, means, **t)
    np.testing.assert_allclose(out.smoothed.cov, covs, **t)


def test_smoother_needs_xs_for_time_varying_dynamics(x64):
    filtered = kj.Gaussian(mean=jnp.zeros((3, 2)), cov=jnp.tile(jnp.eye(2), (3, 1, 1)))
    with pytest.raises(ValueError, match="pass xs"):
        kj.rts_smoother(lambda u: None, filtered)


# ------------------------------------------------- the extended RTS smoother


def _f(x, u):
    return jnp.stack([x[0] + 0.3 * jnp.sin(x[1]), 0.9 * x[1] + 0.1 * x[0] ** 2])


def _jac(m):
    return np.array([[1.0, 0.3 * np.cos(m[1])], [0.2 * m[0], 0.9]])


@pytest.mark.parametrize("sqrt", [False, True])
@pytest.mark.parametrize("parallel", [False, True])
def test_extended_rts_is_the_backward_recursion_at_the_filtered_means(
    sqrt, parallel, x64
):
    rng = np.random.default_rng(6)
    Q, R = np.array([[0.2, 0.05], [0.05, 0.1]]), np.array([[0.3]])
    dyn = kj.NonlinearDynamics(fn=_f, Q=jnp.asarray(Q))
    obs = kj.LinearObservation(H=jnp.array([[1.0, 0.0]]), R=jnp.asarray(R))
    prior = kj.Gaussian(jnp.array([0.5, -0.3]), 0.5 * jnp.eye(2))
    ys = jnp.asarray(rng.normal(size=(8, 1)))
    filt = kj.extended_kalman_filter(dyn, obs, form="sqrt" if sqrt else "joseph")
    states = kj.run(filt, kj.to_sqrt(prior) if sqrt else prior, ys).states

    def dense_cov(belief):
        if sqrt:
            return np.einsum("tij,tkj->tik", belief.chol, belief.chol)
        return np.asarray(belief.cov)

    smoothed = kj.rts_smoother(dyn, states, parallel=parallel)
    got_mean, got_cov = np.asarray(smoothed.mean), dense_cov(smoothed)
    m, P = np.asarray(states.mean), dense_cov(states)
    ms, Ps = m[-1], P[-1]
    for t in range(len(m) - 2, -1, -1):  # NumPy float64, hand-written Jacobian
        J = _jac(m[t])
        pred = np.asarray(_f(jnp.asarray(m[t]), None))
        P_pred = J @ P[t] @ J.T + Q
        G = P[t] @ J.T @ np.linalg.inv(P_pred)
        ms, Ps = m[t] + G @ (ms - pred), P[t] + G @ (Ps - P_pred) @ G.T
        np.testing.assert_allclose(got_mean[t], ms, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got_cov[t], Ps, rtol=1e-9, atol=1e-12)


def test_extended_rts_on_a_linear_model_is_the_rts_smoother(x64):
    F = jnp.array([[0.9, 0.2], [-0.1, 0.8]])
    b = jnp.array([0.3, -0.1])
    linear = kj.LinearDynamics(F=F, Q=0.1 * jnp.eye(2), b=b)
    as_fn = kj.NonlinearDynamics(fn=lambda x, u: F @ x + b, Q=0.1 * jnp.eye(2))
    obs = kj.LinearObservation(H=jnp.array([[1.0, 0.5]]), R=jnp.eye(1))
    prior = kj.Gaussian(jnp.zeros(2), jnp.eye(2))
    ys = jnp.sin(jnp.arange(10.0))[:, None]
    states = kj.run(kj.kalman_filter(linear, obs), prior, ys).states
    ref = kj.rts_smoother(linear, states)
    got = kj.rts_smoother(as_fn, states)
    np.testing.assert_allclose(got.mean, ref.mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.cov, ref.cov, rtol=1e-12, atol=1e-14)
    # and FFBS on the linearised model samples the extended smoother's marginals
    keys = jax.random.split(jax.random.key(0), 4000)
    draws = jax.vmap(lambda k: kj.sample_posterior(k, as_fn, states))(keys)
    se = jnp.sqrt(jnp.diagonal(ref.cov, axis1=1, axis2=2) / 4000)
    assert bool(jnp.all(jnp.abs(draws.mean(0) - ref.mean) < 5 * se))


@pytest.mark.parametrize("form", ["joseph", "sqrt"])
def test_lag_one_covariances_against_dense_joint_gaussian(x64, form):
    rng = np.random.default_rng(24)
    model = ref.random_model(rng, 3, 2)
    T = 6
    y = simulate(rng, model, T)
    y[2] = np.nan
    y[4, 1] = np.nan
    _, prior, dyn, obs = build(model, jnp.float64, form)
    out = kj.kalman_smoother(dyn, obs, prior, jnp.asarray(y), form=form)
    cross = kj.lag_one_covariances(dyn, out.filtered, out.smoothed)
    args = [model[k] for k in ("m0", "P0", "F", "Q", "H", "R")]
    mean, cov, index = joint.joint_moments(*args, T, model["b"], model["d"])
    rows, _ = joint._observed_indices(y, index, T)
    post = cov - cov[:, rows] @ np.linalg.solve(cov[np.ix_(rows, rows)], cov[rows])
    assert cross.shape == (T - 1, 3, 3)
    for k in range(T - 1):  # states[k] is x_{k+1}
        want = post[index["x"][k + 2], index["x"][k + 1]]
        np.testing.assert_allclose(cross[k], want, rtol=1e-9, atol=1e-12)
    # the extended smoother's on the same model, written as a nonlinear one
    nonlinear = kj.NonlinearDynamics(fn=lambda x, u: dyn.F @ x + dyn.b, Q=dyn.Q)
    np.testing.assert_allclose(
        kj.lag_one_covariances(nonlinear, out.filtered, out.smoothed), cross, rtol=1e-10
    )
    one = jax.tree_util.tree_map(lambda a: a[:1], out.filtered)
    assert kj.lag_one_covariances(dyn, one, one).shape == (0, 3, 3)
    with pytest.raises(ValueError, match="smoothed.mean must have the shape"):
        kj.lag_one_covariances(dyn, out.filtered, one)
