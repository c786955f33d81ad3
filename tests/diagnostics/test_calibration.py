"""kalmanjax.diagnostics.calibration: the MSE-over-trace ratio and its stderr."""

import jax
import jax.numpy as jnp
import numpy as np

from kalmanjax import diagnostics as kd
from tests.reference import ridge

from .helpers import run_regression


def test_calibration_of_a_correct_model_is_one_within_its_stderr(x64):
    # one input sequence, many tasks: theta* - m_t ~ N(0, Sigma_t) exactly, so
    # |e|^2 has mean tr Sigma and variance 2 tr Sigma^2 (Gaussian quadratic form)
    rng = np.random.default_rng(1)
    n, T, d, r = 4000, 10, 3, 0.5
    X = rng.normal(size=(T, d))
    theta = rng.normal(size=(n, d))
    y = theta @ X.T + np.sqrt(r) * rng.normal(size=(n, T))
    _, covs = ridge.posterior_path(X, y[0], r, np.eye(d))
    means = np.stack([ridge.posterior(X, yi, r, np.eye(d))[0] for yi in y])
    sq = np.sum((means - theta) ** 2, axis=1)
    cal = kd.mse_calibration(jnp.asarray(sq), jnp.asarray(np.trace(covs[-1])))
    se_closed = np.sqrt(2 * np.trace(covs[-1] @ covs[-1]) / n) / np.trace(covs[-1])
    np.testing.assert_allclose(cal.stderr, se_closed, rtol=0.1)
    assert abs(float(cal.ratio) - 1.0) < 4 * float(cal.stderr)


def test_calibration_detects_an_overconfident_model(x64):
    # the filter assumes r / 4: its ratio must match the closed-form misspecified
    # error  tr(Sigma X^T X Sigma) r_true / r_model^2 + tr(Sigma Sigma0^-2 Sigma)
    rng = np.random.default_rng(2)
    n, T, d, r_true = 3000, 8, 3, 0.8
    r_model = r_true / 4
    X = rng.normal(size=(T, d))
    theta = rng.normal(size=(n, d))
    y = theta @ X.T + np.sqrt(r_true) * rng.normal(size=(n, T))
    out, _ = jax.vmap(lambda yi: run_regression(X, yi, r_model, np.eye(d)))(
        jnp.asarray(y)
    )
    sq = np.sum((np.asarray(out.final.mean) - theta) ** 2, axis=1)
    S = np.asarray(out.final.cov)[0]
    cal = kd.mse_calibration(jnp.asarray(sq), jnp.asarray(np.trace(S)))
    expected = (
        r_true / r_model**2 * np.trace(S @ X.T @ X @ S) + np.trace(S @ S)
    ) / np.trace(S)
    assert abs(float(cal.ratio) - expected) < 4 * float(cal.stderr)
    assert float(cal.ratio) > 1 + 10 * float(cal.stderr)


def test_calibration_broadcasts_per_task_traces():
    e = jnp.array([[1.0, 2.0], [3.0, 2.0], [2.0, 5.0]])
    c = jnp.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]])
    cal = kd.mse_calibration(e, c)
    ratio = e.sum(0) / c.sum(0)
    se = np.std(np.asarray(e) - np.asarray(ratio) * np.asarray(c), axis=0, ddof=1) / (
        np.sqrt(3) * np.asarray(c).mean(0)
    )
    np.testing.assert_allclose(cal.ratio, ratio, rtol=1e-6)
    np.testing.assert_allclose(cal.stderr, se, rtol=1e-5)
