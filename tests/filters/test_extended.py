"""Extended and iterated Kalman filters against NumPy, scipy and the linear filter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import kalmanjax as kj
from tests._helpers import FORM_CASES, reference_filter, simulate, tol
from tests.reference import numpy_ekf
from tests.reference import numpy_kalman as ref

# ------------------------------------------------------------- a nonlinear model


def f_np(x, u):
    return np.array(
        [
            x[0] + 0.1 * np.sin(x[1]),
            0.9 * x[1] + 0.1 * x[2] ** 2,
            0.8 * x[2] + 0.05 * x[0] * x[1] + u,
        ]
    )


def F_np(x, u):
    return np.array(
        [
            [1.0, 0.1 * np.cos(x[1]), 0.0],
            [0.0, 0.9, 0.2 * x[2]],
            [0.05 * x[1], 0.05 * x[0], 0.8],
        ]
    )


def h_np(x, u):
    return np.array([np.sin(x[0]) + x[1], x[1] * x[2]])


def H_np(x, u):
    return np.array([[np.cos(x[0]), 1.0, 0.0], [0.0, x[2], x[1]]])


def f_jax(x, u):
    return jnp.stack(
        [
            x[0] + 0.1 * jnp.sin(x[1]),
            0.9 * x[1] + 0.1 * x[2] ** 2,
            0.8 * x[2] + 0.05 * x[0] * x[1] + u["u"],
        ]
    )


def h_jax(x, u):
    return jnp.stack([jnp.sin(x[0]) + x[1], x[1] * x[2]])


@pytest.fixture
def nonlinear_data():
    rng = np.random.default_rng(3)
    T = 40
    us = 0.1 * rng.standard_normal(T)
    Q, R = 0.01 * np.eye(3), 0.05 * np.eye(2)
    x = np.array([0.5, -0.3, 0.2])
    ys = []
    for t in range(T):
        x = f_np(x, us[t]) + rng.multivariate_normal(np.zeros(3), Q)
        ys.append(h_np(x, us[t]) + rng.multivariate_normal(np.zeros(2), R))
    ys = np.array(ys)
    ys[5] = np.nan  # a missing step
    return dict(m0=np.zeros(3), P0=np.eye(3), Q=Q, R=R, us=us, ys=ys)


def _jax_models(data, dtype):
    dyn = kj.NonlinearDynamics(fn=f_jax, Q=jnp.asarray(data["Q"], dtype))
    obs = kj.NonlinearObservation(fn=h_jax, R=jnp.asarray(data["R"], dtype))
    prior = kj.Gaussian(jnp.asarray(data["m0"], dtype), jnp.asarray(data["P0"], dtype))
    xs = {"obs": jnp.asarray(data["ys"], dtype), "u": jnp.asarray(data["us"], dtype)}
    return dyn, obs, prior, xs


@pytest.mark.parametrize("form", ["dense", "joseph", "sqrt"])
@pytest.mark.parametrize("method", ["jacfwd", "jacrev"])
def test_ekf_matches_numpy_reference(nonlinear_data, form, method, x64):
    d = nonlinear_data
    expected = numpy_ekf.ekf(
        d["m0"], d["P0"], f_np, F_np, d["Q"], h_np, H_np, d["R"], d["ys"], d["us"]
    )
    dyn, obs, prior, xs = _jax_models(d, jnp.float64)
    filt = kj.extended_kalman_filter(dyn, obs, form=form, method=method)
    out = jax.jit(lambda p, x: kj.run(filt, p, x))(prior, xs)
    np.testing.assert_allclose(
        out.states.mean, expected["means"], rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(out.states.cov, expected["covs"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        out.infos.log_likelihood, expected["log_likelihoods"], rtol=1e-10, atol=1e-12
    )


def test_float32_in_float32_out(nonlinear_data):
    dyn, obs, prior, xs = _jax_models(nonlinear_data, jnp.float32)
    out = kj.run(kj.extended_kalman_filter(dyn, obs, form="sqrt"), prior, xs)
    assert out.states.mean.dtype == jnp.float32
    assert out.infos.log_likelihood.dtype == jnp.float32
    assert np.all(np.isfinite(out.states.mean))


# ---------------------------------------------- on a linear model: the Kalman filter


@pytest.mark.parametrize(("form", "fast"), FORM_CASES)
@pytest.mark.parametrize("num_iter", [1, 3])
def test_ekf_on_linear_model_is_the_kalman_filter(form, fast, num_iter, dtype, rng):
    model = ref.random_model(rng, 3, 2)
    y = simulate(rng, model, 25)
    y[4, 0] = np.nan  # a partly missing step
    expected = reference_filter(model, y)
    m = {k: jnp.asarray(v, dtype) for k, v in model.items()}
    dyn = kj.NonlinearDynamics(fn=lambda x, u: m["F"] @ x + m["b"], Q=m["Q"])
    obs = kj.NonlinearObservation(fn=lambda x, u: m["H"] @ x + m["d"], R=m["R"])
    filt = kj.extended_kalman_filter(dyn, obs, form=form, fast=fast, num_iter=num_iter)
    prior = kj.Gaussian(m["m0"], m["P0"])
    out = kj.run(filt, prior, jnp.asarray(y, dtype))
    t = tol(dtype, "seq")
    np.testing.assert_allclose(out.states.mean, expected["filtered_means"], **t)
    np.testing.assert_allclose(out.states.cov, expected["filtered_covs"], **t)
    np.testing.assert_allclose(
        out.infos.log_likelihood, expected["log_likelihoods"], **t
    )
    np.testing.assert_allclose(
        out.infos.information_gain, expected["information_gains"], **t
    )


# ------------------------------------------------------------------- Jacobians


def test_jacfwd_jacrev_and_hand_jacobian_agree(x64):
    x = jnp.array([0.3, -1.2, 0.7])
    hand = H_np(np.asarray(x), None)
    for method in ("jacfwd", "jacrev"):
        value, jac = kj.linearize(h_jax, x, None, method=method)
        np.testing.assert_allclose(value, h_np(np.asarray(x), None), rtol=1e-15)
        np.testing.assert_allclose(jac, hand, rtol=1e-14, atol=1e-15)


# -------------------------------------------------------------- the iterated EKF


def test_iterated_ekf_is_the_gauss_newton_map_and_conditions_once(x64):
    rng = np.random.default_rng(7)
    m_prior = np.array([0.4, -0.2, 0.9])
    A = rng.standard_normal((3, 3))
    P_prior = A @ A.T / 3 + 0.5 * np.eye(3)
    # undamped Gauss-Newton converges here (it need not when h is strongly
    # nonlinear at the scale of the posterior: then the iterates can cycle)
    R = 0.1 * np.eye(2)
    y = np.array([0.9, -0.3])

    # MAP of 1/2|y - h(x)|^2_{R^-1} + 1/2|x - m|^2_{P^-1}, by scipy
    Lr_inv = np.linalg.inv(np.linalg.cholesky(R))
    Lp_inv = np.linalg.inv(np.linalg.cholesky(P_prior))

    def residuals(x):
        return np.concatenate([Lr_inv @ (y - h_np(x, None)), Lp_inv @ (x - m_prior)])

    def jacobian(x):
        return np.concatenate([-Lr_inv @ H_np(x, None), Lp_inv])

    def gradient(x):
        return -jacobian(x).T @ residuals(x)

    sol = scipy.optimize.least_squares(residuals, m_prior, jac=jacobian, method="lm")
    # least_squares stops at ~1e-8 here; polish by solving grad = 0
    x_map = scipy.optimize.root(gradient, sol.x, tol=1e-14).x
    assert np.linalg.norm(gradient(x_map)) < 1e-11
    H = H_np(x_map, None)
    # conditioning once at the MAP linearisation: (P^-1 + H^T R^-1 H)^-1
    cov_once = np.linalg.inv(np.linalg.inv(P_prior) + H.T @ np.linalg.solve(R, H))

    prior = kj.Gaussian(jnp.asarray(m_prior), jnp.asarray(P_prior))
    obs = kj.NonlinearObservation(fn=h_jax, R=jnp.asarray(R))
    for form in ("dense", "sqrt"):
        belief = prior if form == "dense" else kj.to_sqrt(prior)
        post, _ = kj.ekf_update(belief, jnp.asarray(y), obs, num_iter=80)
        np.testing.assert_allclose(post.mean, x_map, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(post.cov, cov_once, rtol=1e-9, atol=1e-10)
    # and one EKF step is not yet there (the problem is nonlinear enough)
    ekf_post, _ = kj.ekf_update(prior, jnp.asarray(y), obs, num_iter=1)
    assert np.linalg.norm(np.asarray(ekf_post.mean) - x_map) > 1e-3


# ------------------------------------------------------- gradients, vmap, jit


def test_gradient_of_log_likelihood_matches_finite_differences(nonlinear_data, x64):
    d = nonlinear_data

    def loglik(scale):
        dyn = kj.NonlinearDynamics(fn=f_jax, Q=scale * jnp.asarray(d["Q"]))
        obs = kj.NonlinearObservation(
            fn=lambda x, u: scale * h_jax(x, u), R=jnp.asarray(d["R"])
        )
        prior = kj.Gaussian(jnp.asarray(d["m0"]), jnp.asarray(d["P0"]))
        xs = {"obs": jnp.asarray(d["ys"]), "u": jnp.asarray(d["us"])}
        filt = kj.extended_kalman_filter(dyn, obs, num_iter=2)
        return kj.log_marginal_likelihood(filt, prior, xs)

    s0, eps = 1.1, 1e-6
    grad = jax.grad(loglik)(s0)
    fd = (loglik(s0 + eps) - loglik(s0 - eps)) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_vmap_over_sequences_equals_a_loop(nonlinear_data, x64):
    dyn, obs, prior, xs = _jax_models(nonlinear_data, jnp.float64)
    filt = kj.extended_kalman_filter(dyn, obs)
    batch = jax.tree_util.tree_map(lambda a: jnp.stack([a, a * 0.5, a[::-1]]), xs)
    batched = jax.vmap(lambda x: kj.run(filt, prior, x))(batch)
    for i, seq in enumerate(zip(batch["obs"], batch["u"], strict=True)):
        one = kj.run(filt, prior, {"obs": seq[0], "u": seq[1]})
        np.testing.assert_allclose(batched.states.mean[i], one.states.mean, rtol=1e-12)


# ------------------------------------------------------------------ bad input


def test_bad_input_is_a_clear_error(x64):
    prior = kj.Gaussian(jnp.zeros(3), jnp.eye(3))
    obs = kj.NonlinearObservation(fn=lambda x, u: x, R=jnp.eye(2))
    with pytest.raises(ValueError, match=r"observation.fn returned shape \(3,\)"):
        kj.ekf_update(prior, jnp.zeros(2), obs)
    static = kj.LinearDynamics(F=jnp.eye(3), Q=jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="method must be one of"):
        kj.extended_kalman_filter(static, obs, method="jvp")
    with pytest.raises(ValueError, match="num_iter must be an integer >= 1"):
        kj.extended_kalman_filter(static, obs, num_iter=0)
    dyn = kj.NonlinearDynamics(fn=lambda x, u: x[:2], Q=jnp.eye(3))
    with pytest.raises(ValueError, match=r"dynamics.fn returned shape \(2,\)"):
        kj.ekf_predict(prior, dyn)
    f32 = kj.NonlinearObservation(
        fn=lambda x, u: x[:2], R=jnp.eye(2, dtype=jnp.float32)
    )
    with pytest.raises(TypeError, match="observation.R has dtype float32"):
        kj.ekf_update(prior, jnp.zeros(2), f32)
