"""Sigma-point filters and smoothers: the Kalman filter on linear models, a NumPy
textbook implementation on nonlinear ones, dynamax's UKF, posterior linearisation's
fixed point, float32 over long streams."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from kalmanjax.core.linalg import GENERAL
from kalmanjax.steps.nonlinear import nonlinear_update
from tests._helpers import assert_psd
from tests.reference import numpy_sigma_point as ref

RULES = {
    "unscented": kj.unscented(),
    "cubature": kj.cubature(),
    "gauss_hermite": kj.gauss_hermite(3),
}
FORMS = ("dense", "joseph", "sqrt")


def _linear(dtype=jnp.float64, seed=0, T=25):
    rng = np.random.default_rng(seed)
    n, m = 3, 2
    F = 0.5 * rng.normal(size=(n, n))
    Q = 0.3 * np.eye(n) + 0.1 * np.ones((n, n))
    H = rng.normal(size=(m, n))
    R = 0.5 * np.eye(m)
    ys = rng.normal(size=(T, m))
    ys[3, 0] = np.nan
    ys[7] = np.nan
    arrays = [jnp.asarray(a, dtype) for a in (F, Q, H, R, ys)]
    prior = kj.Gaussian(jnp.zeros(n, dtype), jnp.eye(n, dtype=dtype))
    return (*arrays, prior)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", sorted(RULES))
def test_on_a_linear_model_every_rule_is_the_kalman_filter(name, form, x64):
    """Affine f and h, given as functions: the sigma points see only their values."""
    F, Q, H, R, ys, prior = _linear()
    kf = kj.run(
        kj.kalman_filter(kj.LinearDynamics(F, Q), kj.LinearObservation(H, R)), prior, ys
    )
    dyn = kj.NonlinearDynamics(fn=lambda x, u: F @ x, Q=Q)
    obs = kj.NonlinearObservation(fn=lambda x, u: H @ x, R=R)
    for num_iter in (1, 3):  # posterior linearisation changes nothing here
        filt = kj.sigma_point_kalman_filter(
            dyn, obs, rule=RULES[name], form=form, num_iter=num_iter
        )
        out = kj.run(filt, prior, ys)
        np.testing.assert_allclose(out.states.mean, kf.states.mean, atol=1e-10)
        np.testing.assert_allclose(out.states.cov, kf.states.cov, atol=1e-10)
        np.testing.assert_allclose(
            out.infos.log_likelihood, kf.infos.log_likelihood, atol=1e-10
        )
    ref_smoothed = kj.rts_smoother(kj.LinearDynamics(F, Q), kf.states)
    for parallel in (False, True):
        smoothed = kj.rts_smoother(
            dyn, out.states, method=RULES[name], parallel=parallel
        )
        np.testing.assert_allclose(smoothed.mean, ref_smoothed.mean, atol=1e-10)
        np.testing.assert_allclose(smoothed.cov, ref_smoothed.cov, atol=1e-10)


def _pendulum(dtype=jnp.float64):
    """The pendulum of Sarkka (2013, ex. 5.1) with a sine sensor and a range reading."""
    dt, g = 0.05, 9.81
    q = 0.3

    def f(x, u=None):
        return jnp.stack([x[0] + dt * x[1], x[1] - g * dt * jnp.sin(x[0])])

    def h(x, u=None):
        return jnp.stack([jnp.sin(x[0]), 0.5 * x[1] ** 2])

    Q = q * np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]])
    R = np.diag([0.1, 0.2])
    return f, h, Q, R


def _pendulum_data(T=60, seed=1):
    f, h, Q, R = _pendulum()
    rng = np.random.default_rng(seed)
    x = np.array([1.2, 0.0])
    ys = []
    for _ in range(T):
        x = np.asarray(f(jnp.asarray(x))) + rng.multivariate_normal(np.zeros(2), Q)
        ys.append(
            np.asarray(h(jnp.asarray(x))) + rng.multivariate_normal(np.zeros(2), R)
        )
    ys = np.array(ys)
    ys[10, 1] = np.nan
    ys[20] = np.nan
    return ys


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", sorted(RULES))
def test_matches_the_numpy_textbook_filter_and_smoother(name, form, x64):
    f, h, Q, R = _pendulum()
    ys = _pendulum_data()
    m0, P0 = np.array([1.0, 0.0]), np.diag([0.5, 0.5])
    (means, covs, lls), _ = ref.sigma_point_filter(
        lambda x: np.asarray(f(jnp.asarray(x))),
        Q,
        lambda x: np.asarray(h(jnp.asarray(x))),
        R,
        m0,
        P0,
        ys,
        ref.points(name, 2),
    )
    dyn = kj.NonlinearDynamics(fn=f, Q=jnp.asarray(Q))
    obs = kj.NonlinearObservation(fn=h, R=jnp.asarray(R))
    filt = kj.sigma_point_kalman_filter(dyn, obs, rule=RULES[name], form=form)
    prior = kj.Gaussian(jnp.asarray(m0), jnp.asarray(P0))
    out = kj.run(filt, prior, jnp.asarray(ys))
    np.testing.assert_allclose(out.states.mean, means, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(out.states.cov, covs, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(out.infos.log_likelihood, lls, rtol=1e-9, atol=1e-10)
    ms, Ps = ref.sigma_point_smoother(
        means, covs, lambda x: np.asarray(f(jnp.asarray(x))), Q, ref.points(name, 2)
    )
    smoothed = kj.rts_smoother(dyn, out.states, method=RULES[name])
    np.testing.assert_allclose(smoothed.mean, ms, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(smoothed.cov, Ps, rtol=1e-9, atol=1e-10)
    if form == "sqrt":
        assert isinstance(smoothed, kj.SqrtGaussian)


def test_matches_dynamax_unscented_filter_and_smoother(x64):
    """dynamax's UKF (update-first, its default alpha, beta, kappa)."""
    ukf = pytest.importorskip("dynamax.nonlinear_gaussian_ssm")
    f, h, Q, R = _pendulum()
    ys = _pendulum_data()[:40]
    ys = ys[~np.isnan(ys).any(1)]  # dynamax has no missing data
    m0, P0 = np.array([1.0, 0.0]), np.diag([0.5, 0.5])
    params = ukf.ParamsNLGSSM(
        initial_mean=jnp.asarray(m0),
        initial_covariance=jnp.asarray(P0),
        dynamics_function=f,
        dynamics_covariance=jnp.asarray(Q),
        emission_function=h,
        emission_covariance=jnp.asarray(R),
    )
    hyper = ukf.UKFHyperParams()
    # dynamax broadcasts ranks and mixes dtypes, which the tests' config rejects
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        theirs = ukf.unscented_kalman_smoother(params, jnp.asarray(ys), hyper)
    dyn = kj.NonlinearDynamics(fn=f, Q=jnp.asarray(Q))
    obs = kj.NonlinearObservation(fn=h, R=jnp.asarray(R))
    rule = kj.unscented(*(float(v) for v in (hyper.alpha, hyper.beta, hyper.kappa)))
    filt = kj.sigma_point_kalman_filter(dyn, obs, rule=rule)
    prior = kj.Gaussian(jnp.asarray(m0), jnp.asarray(P0))
    out = kj.run(filt, prior, jnp.asarray(ys), update_first=True)
    np.testing.assert_allclose(out.states.mean, theirs.filtered_means, atol=1e-9)
    np.testing.assert_allclose(out.states.cov, theirs.filtered_covariances, atol=1e-9)
    np.testing.assert_allclose(
        out.infos.log_likelihood.sum(), theirs.marginal_loglik, rtol=1e-9
    )  # measured 5e-10: dynamax sums tfp's log-densities of its own S
    smoothed = kj.rts_smoother(dyn, out.states, method=rule)
    # dynamax's smoother gain solves with 1e-9 added to the diagonal (psd_solve's
    # diagonal_boost): measured 1.8e-6 relative on the means and 7e-9 absolute
    # on covariances of size 0.1, against 1e-9 for the NumPy textbook smoother
    np.testing.assert_allclose(smoothed.mean, theirs.smoothed_means, rtol=1e-5)
    np.testing.assert_allclose(
        smoothed.cov, theirs.smoothed_covariances, rtol=1e-5, atol=5e-8
    )


def test_posterior_linearisation_reaches_its_fixed_point(x64):
    r"""The IPLF's update is the posterior that its own SLR reproduces.

    After enough iterations, conditioning the predicted belief with the SLR of
    h *under the returned posterior* (NumPy quadrature, a textbook linear
    update) gives that posterior back; one iteration (the plain filter) does not.
    """
    h = lambda x, u=None: jnp.stack([x[0] ** 3 / 3.0 + x[1], jnp.sin(x[1])])  # noqa: E731
    R = np.diag([0.05, 0.02])
    predicted = kj.Gaussian(jnp.array([0.8, -0.3]), jnp.array([[0.6, 0.2], [0.2, 0.5]]))
    y = jnp.array([1.1, 0.2])
    obs = kj.NonlinearObservation(fn=h, R=jnp.asarray(R))
    rule = kj.gauss_hermite(8)
    xi, w, _ = ref.points("gauss_hermite", 2, order=8)

    def slr_update(about):
        m, P = np.asarray(about.mean), np.asarray(about.cov)
        X = m[None] + xi @ np.linalg.cholesky(P).T
        Y = np.array([np.asarray(h(jnp.asarray(x))) for x in X])
        ybar = w @ Y
        Psi = ((X - m) * w[:, None]).T @ (Y - ybar)
        A = np.linalg.solve(P, Psi).T
        omega = ((Y - ybar) * w[:, None]).T @ (Y - ybar) - A @ P @ A.T
        mp, Pp = np.asarray(predicted.mean), np.asarray(predicted.cov)
        S = A @ Pp @ A.T + R + omega
        K = Pp @ A.T @ np.linalg.inv(S)
        mean = mp + K @ (np.asarray(y) - ybar - A @ (mp - m))
        return mean, Pp - K @ S @ K.T

    gaps = []
    for num_iter in (1, 30):
        post, _ = nonlinear_update(
            predicted,
            y,
            obs,
            None,
            GENERAL,
            False,
            True,
            rule,
            num_iter,
            "test",
        )
        mean, cov = slr_update(post)
        gaps.append(np.max(np.abs(mean - np.asarray(post.mean))))
        if num_iter > 1:
            np.testing.assert_allclose(post.mean, mean, atol=1e-9)
            np.testing.assert_allclose(post.cov, cov, atol=1e-9)
    assert gaps[0] > 1e-3, gaps  # the plain update is not a fixed point


def test_float32_long_stream_stays_symmetric_psd():
    f, h, Q, R = _pendulum()
    rng = np.random.default_rng(3)
    ys = jnp.asarray(rng.normal(size=(3000, 2)) * 0.3, jnp.float32)
    dyn = kj.NonlinearDynamics(fn=f, Q=jnp.asarray(Q, jnp.float32))
    obs = kj.NonlinearObservation(fn=h, R=jnp.asarray(R, jnp.float32))
    prior = kj.Gaussian(jnp.ones(2, jnp.float32), jnp.eye(2, dtype=jnp.float32))
    for form in FORMS:
        filt = kj.sigma_point_kalman_filter(dyn, obs, rule=kj.cubature(), form=form)
        out = jax.jit(lambda p, y, filt=filt: kj.run(filt, p, y))(prior, ys)
        assert out.states.mean.dtype == jnp.float32
        cov = np.asarray(out.states.cov)
        assert np.all(np.isfinite(cov)) and np.all(
            np.isfinite(out.infos.log_likelihood)
        )
        assert_psd(cov, 1e-5)


def test_gradient_of_the_likelihood_matches_finite_differences(x64):
    f, h, Q, R = _pendulum()
    ys = jnp.asarray(_pendulum_data(T=30))
    prior = kj.Gaussian(jnp.array([1.0, 0.0]), jnp.diag(jnp.array([0.5, 0.5])))

    def loglik(log_scale, form):
        dyn = kj.NonlinearDynamics(fn=f, Q=jnp.exp(log_scale[0]) * jnp.asarray(Q))
        obs = kj.NonlinearObservation(fn=h, R=jnp.exp(log_scale[1]) * jnp.asarray(R))
        filt = kj.sigma_point_kalman_filter(dyn, obs, rule=kj.unscented(), form=form)
        return kj.log_marginal_likelihood(filt, prior, ys)

    at = jnp.array([0.2, -0.1])
    eps = 1e-6
    fd = [
        (loglik(at + eps * e, "dense") - loglik(at - eps * e, "dense")) / (2 * eps)
        for e in jnp.eye(2)
    ]
    for form in FORMS:
        np.testing.assert_allclose(jax.grad(loglik)(at, form), fd, rtol=1e-6)


def test_bad_arguments_raise():
    f, h, Q, R = _pendulum()
    dyn = kj.NonlinearDynamics(fn=f, Q=jnp.asarray(Q, jnp.float32))
    obs = kj.NonlinearObservation(fn=h, R=jnp.asarray(R, jnp.float32))
    # a ValueError naming the rules; under the tests' jaxtyping hook the
    # annotation's TypeError, naming the parameter, comes first
    with pytest.raises((ValueError, TypeError), match="rule"):
        kj.sigma_point_kalman_filter(dyn, obs, rule="unscented")
    with pytest.raises(ValueError, match="form must be one of"):
        kj.sigma_point_kalman_filter(dyn, obs, form="info")
    tokens = kj.CategoricalObservation(fn=lambda x, u: jnp.stack([x[0], -x[0]]))
    filt = kj.sigma_point_kalman_filter(dyn, lambda u: tokens)
    prior = kj.Gaussian(jnp.zeros(2, jnp.float32), jnp.eye(2, dtype=jnp.float32))
    with pytest.raises(ValueError, match="Taylor expansion only"):
        kj.run(filt, prior, jnp.zeros((3,), jnp.int32))
