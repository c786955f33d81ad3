"""Shared by the diagnostics tests: a Bayesian linear regression and its filter."""

import jax.numpy as jnp
import numpy as np

import kalmanjax as kj


def sample_regression(rng, T, d, r, tau2=1.0):
    X = rng.normal(size=(T, d))
    theta = np.sqrt(tau2) * rng.normal(size=d)
    y = X @ theta + np.sqrt(r) * rng.normal(size=T)
    return X, theta, y


def run_regression(X, y, r, prior_cov, prior_mean=None, form="dense", q=0.0):
    d = X.shape[1]
    dt = jnp.asarray(X).dtype
    dyn = kj.LinearDynamics(F=jnp.eye(d, dtype=dt), Q=q * jnp.eye(d, dtype=dt))
    R = jnp.asarray(r * np.eye(1), dt)
    filt = kj.kalman_filter(
        dyn, lambda u: kj.LinearObservation(H=u["x"][None, :], R=R), form=form
    )
    m0 = jnp.zeros(d, dt) if prior_mean is None else jnp.asarray(prior_mean, dt)
    prior = kj.Gaussian(mean=m0, cov=jnp.asarray(prior_cov, dt))
    xs = {"obs": jnp.asarray(y, dt)[:, None], "x": jnp.asarray(X, dt)}
    return kj.run(filt, prior, xs), prior
