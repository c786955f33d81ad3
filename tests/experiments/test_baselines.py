"""The experiments' baselines and model comparisons against NumPy / SciPy references:
online fine-tuning (SGD, SGD 1/t, Polyak, Adam), the refits, the marginal-likelihood
fit of the learned filter, the held-out law comparison."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kalmanjax.experiments import _baselines, contraction, finetune
from tests.reference import ridge

pytest.importorskip("optax")


def _lms_problem(seed=5, d=3, T=9):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(T, d))
    y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=T)
    return X, y


def _numpy_online(X, y, name, lr, horizon):
    """The recursions written out: gradient g = -(y - x.w) x of 1/2 (y - x.w)^2."""
    w, avg, m, v, out = np.zeros(X.shape[1]), np.zeros(X.shape[1]), 0.0, 0.0, []
    for t, (xt, yt) in enumerate(zip(X, y, strict=True)):
        g = -(yt - xt @ w) * xt
        if name == "adam":
            b1, b2, eps = 0.9, 0.999, 1e-8
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g**2
            step = (m / (1 - b1 ** (t + 1))) / (np.sqrt(v / (1 - b2 ** (t + 1))) + eps)
            w = w - lr * step
        else:
            rate = lr / (1 + t / horizon) if name == "sgd_1/t" else lr
            w = w - rate * g
        avg = avg + (w - avg) / (t + 1)
        out.append(avg.copy() if name == "polyak" else w.copy())
    return np.array(out)


@pytest.mark.parametrize("name", _baselines.ONLINE)
def test_online_fit_is_the_numpy_recursion(name, x64):
    X, y = _lms_problem()
    lr, horizon = (0.05, 1.0) if name == "adam" else (0.2, 3.0)

    def loss(w, u):
        return 0.5 * (u["y"] - u["x"] @ w) ** 2

    got = _baselines.online_fit(
        loss,
        jnp.zeros(3),
        {"x": jnp.asarray(X), "y": jnp.asarray(y)},
        name,
        lr,
        horizon,
    )
    np.testing.assert_allclose(got, _numpy_online(X, y, name, lr, horizon), rtol=1e-9)
    assert got.dtype == jnp.float64


def test_online_fit_rejects_an_unknown_optimiser():
    with pytest.raises(ValueError, match="name must be one of"):
        _baselines.online_fit(
            lambda w, u: w.sum(), jnp.zeros(2), jnp.zeros((3, 1)), "sgdm", 0.1
        )


def test_choose_and_first_below():
    assert _baselines.choose([(3.0, 1.0), (2.0, 5.0), (2.0, 4.0)]) == (2, False)
    assert _baselines.choose([3.0, 1.0, 2.0]) == (1, True)
    assert _baselines.first_below(np.array([5.0, 2.0, 1.0, 0.5]), 1.0) == 3.0
    assert _baselines.first_below(np.array([5.0, 2.0]), 1.0) == float("inf")


def test_bootstrap_se_of_a_mean_is_the_standard_error():
    values = np.random.default_rng(0).normal(size=400)
    se = _baselines.bootstrap_se(lambda i: values[i].mean(), 400, 2000, 1)
    assert abs(se / (values.std(ddof=1) / 20.0) - 1) < 0.1


def test_refits_are_least_squares_and_ridge():
    rng = np.random.default_rng(2)
    n, T, d = 2, 7, 3
    x, theta = rng.normal(size=(n, T, d)), rng.normal(size=(n, d))
    y = np.einsum("ntd,nd->nt", x, theta) + 0.1 * rng.normal(size=(n, T))
    lams = np.array([0.01, 1.0])
    got = finetune._refit_errors(x, y, theta, lams)
    for i in range(n):
        for t in range(1, T + 1):
            w = np.linalg.lstsq(x[i, :t], y[i, :t], rcond=None)[0]  # minimum norm
            want = np.sum((w - theta[i]) ** 2)
            np.testing.assert_allclose(got["least_squares"][i, t - 1], want, rtol=1e-8)
            for k, lam in enumerate(lams):
                w = ridge.ridge_mean(x[i, :t], y[i, :t], lam)
                want = np.sum((w - theta[i]) ** 2)
                np.testing.assert_allclose(got["ridge"][k, i, t - 1], want, rtol=1e-9)


def test_learned_noise_and_prior_maximise_the_marginal_likelihood(x64):
    # y ~ N(0, tau^2 X X^T + r I) per task; SciPy maximises the closed form
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(3)
    n, T, d = 6, 20, 2
    x = rng.normal(size=(n, T, d))
    y = np.einsum("ntd,nd->nt", x, 0.7 * rng.normal(size=(n, d)))
    y = y + np.sqrt(0.3) * rng.normal(size=(n, T))

    def nll(log_v):
        r, tau2 = np.exp(log_v)
        total = 0.0
        for xi, yi in zip(x, y, strict=True):
            cov = tau2 * xi @ xi.T + r * np.eye(T)
            _, logdet = np.linalg.slogdet(cov)
            total += 0.5 * (
                logdet + yi @ np.linalg.solve(cov, yi) + T * np.log(2 * np.pi)
            )
        return total / (n * T)

    want = np.exp(
        scipy_optimize.minimize(
            nll,
            np.zeros(2),
            method="Nelder-Mead",
            options=dict(xatol=1e-8, fatol=1e-12),
        ).x
    )
    got = finetune.learn_noise_and_prior(jnp.asarray(x), jnp.asarray(y), steps=1500)
    np.testing.assert_allclose(got, want, rtol=2e-3)


def test_heldout_error_picks_the_law_that_generated_the_curve():
    t = np.arange(1.0, 41.0)
    fit, test = slice(0, 20), slice(20, 40)
    exponential, power = 3.0 * np.exp(-0.2 * t), 5.0 / t
    err = contraction.heldout_error
    assert err(exponential, t, fit, test, "exponential") < 1e-10
    assert err(power, t, fit, test, "power law") < 1e-10
    # the wrong law extrapolates badly: log-space errors of order one
    assert err(exponential, t, fit, test, "power law") > 1.0
    assert err(power, t, fit, test, "exponential") > 1.0


def test_importance_posterior_of_a_linear_gaussian_model_is_the_closed_form(x64):
    # y = X theta + noise with theta ~ N(0, s^2 I): the posterior is Gaussian and
    # known; sampling from a deliberately wrong proposal must still recover it
    rng = np.random.default_rng(8)
    k, T, r, s2 = 3, 6, 0.5, 2.0
    X = rng.normal(size=(T, k))
    y = X @ rng.normal(size=k) + np.sqrt(r) * rng.normal(size=T)
    mean, cov = ridge.posterior(X, y, r, s2)

    def log_lik(draws):
        return -0.5 * np.sum((y[None] - draws @ X.T) ** 2, axis=1) / r

    m_is, C_is, ess = _baselines.importance_posterior(
        log_lik, mean + 0.3, 0.5 * cov, s2, jax.random.key(0), 200_000
    )
    sd = np.sqrt(np.diag(cov))
    assert ess > 10_000
    np.testing.assert_allclose(m_is, mean, atol=0.02 * sd.max())
    np.testing.assert_allclose(C_is, cov, atol=0.03 * np.max(np.abs(cov)))


def test_blown_up_errors_are_inf_and_a_mean_over_them_does_not_overflow():
    import warnings

    import jax.numpy as jnp

    from kalmanjax.experiments import finetune

    theta = jnp.zeros((3, 2), jnp.float32)
    estimates = jnp.array(
        [[[1.0, 0.0]], [[1e16, 1e16]], [[jnp.nan, 0.0]]], jnp.float32
    )  # (task, token, d): fine, past BLOWN_UP (but finite in float32), NaN
    err = np.asarray(finetune._squared_errors(estimates, theta))
    assert err.dtype == np.float32
    assert err[0, 0] == 1.0 and np.isinf(err[1, 0]) and np.isinf(err[2, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old overflow was a RuntimeWarning
        assert np.isinf(err.mean(0)).all()
