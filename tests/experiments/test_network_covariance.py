"""network_covariance: the data come from the adapted network, the linear control's
filter is the closed-form posterior, and the run gives the figure and verdicts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kalmanjax.experiments import _transformer as T
from kalmanjax.experiments import network_covariance as nc
from tests.reference import ridge

pytest.importorskip("optax")


@pytest.fixture(scope="module")
def network():
    model, config = T.load()
    return model, config


def test_prompts_come_from_the_adapted_network(network):
    # y_i - f_theta(x, y)_i is the observation noise: mean 0, variance r
    model, config = network
    predict = nc._predictor(model, "block1", 0)
    theta = 3.0 * jax.random.normal(jax.random.key(1), (nc.K,))
    thetas = jnp.broadcast_to(theta, (4, 32, nc.K))
    x, y = nc._generate(predict, config, thetas, jax.random.key(2))
    assert x.shape == (4, 32, config.num_pairs, config.dim)
    pred = jax.vmap(jax.vmap(lambda a, b: predict(theta, a, b)))(x, y)
    resid = np.asarray(y - pred, np.float64).ravel()  # 2560 draws of N(0, r)
    se_var = config.noise_var * np.sqrt(2 / resid.size)
    assert abs(resid.mean()) < 4 * np.sqrt(config.noise_var / resid.size)
    assert abs(resid.var() - config.noise_var) < 4 * se_var


def test_linear_control_filter_is_the_closed_form_posterior(network):
    # on the head adapter the predictions are b + J theta with J independent of
    # theta: the EKF over prompts is Bayesian linear regression on the stacked J
    model, config = network
    predict = nc._predictor(model, "head.proj", 0)
    s2, P = 0.2, 3
    thetas = jnp.sqrt(s2) * jax.random.normal(jax.random.key(3), (1, 1, nc.K))
    x, y = nc._generate(predict, config, jnp.repeat(thetas, P, 1), jax.random.key(4))
    means, covs = nc._filter_streams(predict, config, 1, s2, 0.0, x, y)
    zero = jnp.zeros(nc.K)
    J = np.concatenate(
        [np.asarray(jax.jacfwd(predict)(zero, x[0, p], y[0, p])) for p in range(P)]
    )
    b = np.concatenate([np.asarray(predict(zero, x[0, p], y[0, p])) for p in range(P)])
    target = np.asarray(y[0], np.float64).ravel() - b
    mean, cov = ridge.posterior(J, target, config.noise_var, s2)
    np.testing.assert_allclose(means[0, -1], mean, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(covs[0, -1], cov, rtol=2e-3, atol=2e-5)


def test_ratio_with_se_and_band_verdict():
    rng = np.random.default_rng(0)
    trace = rng.uniform(1.0, 2.0, 4000)
    err = trace * rng.exponential(1.0, 4000)
    ratio, se = nc._ratio_with_se(err, trace)
    assert ratio == pytest.approx(err.mean() / trace.mean())
    boot = [
        (lambda i: err[i].mean() / trace[i].mean())(rng.integers(0, 4000, 4000))
        for _ in range(400)
    ]
    assert se == pytest.approx(np.std(boot), rel=0.15)
    assert nc._band_verdict(1.0, 0.05) == "holds"
    assert nc._band_verdict(2.0, 0.1).startswith("fails (overconfident")
    assert nc._band_verdict(0.5, 0.1).startswith("fails (underconfident")
    assert nc._band_verdict(1.2, 0.1).startswith("inconclusive")


def test_combine_verdicts():
    assert nc._combine({"a": "holds", "b": "holds"}) == "holds"
    assert (
        nc._combine({"a": "holds", "b": "fails (x)"})
        == "holds only for a (b: fails (x))"
    )
    assert nc._combine({"a": "fails (x)", "b": "inconclusive (y)"}).startswith(
        "a: fails"
    )
