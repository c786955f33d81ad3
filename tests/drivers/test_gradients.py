"""Gradients of the log marginal likelihood: finite differences in float64, and
finite gradients under missing data with jit and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import kalmanjax as kj
from tests._helpers import reference_filter, simulate
from tests.reference import numpy_kalman as ref


def _params(model):
    keys = ("m0", "P0", "F", "Q", "H", "R", "b", "d")
    return {k: jnp.asarray(model[k]) for k in keys}


def _lml(params, y, form):
    sym = lambda a: 0.5 * (a + a.T)  # keep the perturbed covariances symmetric
    dyn = kj.LinearDynamics(F=params["F"], Q=sym(params["Q"]), b=params["b"])
    obs = kj.LinearObservation(H=params["H"], R=sym(params["R"]), d=params["d"])
    prior = kj.Gaussian(mean=params["m0"], cov=sym(params["P0"]))
    return kj.log_marginal_likelihood(kj.kalman_filter(dyn, obs, form=form), prior, y)


@pytest.mark.parametrize("form", ["dense", "joseph", "sqrt"])
@pytest.mark.parametrize("missing", [False, True])
def test_numerical_gradients_of_log_likelihood(x64, form, missing):
    rng = np.random.default_rng(31)
    model = ref.random_model(rng, 3, 2)
    y = simulate(rng, model, 6)
    if missing:
        y[1, 0] = np.nan
        y[3] = np.nan
    y = jnp.asarray(y)
    flat, unravel = ravel_pytree(_params(model))
    f = jax.jit(lambda v: _lml(unravel(v), y, form))
    grad = np.asarray(jax.grad(lambda v: _lml(unravel(v), y, form))(flat))
    # central differences, coordinate by coordinate (error O(h^2) ~ 1e-10)
    h = 1e-5
    basis = np.eye(flat.size)
    numeric = np.array([(f(flat + h * e) - f(flat - h * e)) / (2 * h) for e in basis])
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("form", ["dense", "sqrt"])
def test_gradients_finite_with_missing_data_under_jit_and_vmap(form):
    rng = np.random.default_rng(32)
    model = ref.random_model(rng, 4, 3)
    params = {k: v.astype(jnp.float32) for k, v in _params(model).items()}
    ys = rng.normal(size=(5, 20, 3)).astype(np.float32)
    ys[rng.random(ys.shape) < 0.4] = np.nan
    ys[:, 7] = np.nan
    grad = jax.jit(jax.vmap(jax.grad(_lml), in_axes=(None, 0, None)), static_argnums=2)(
        params, jnp.asarray(ys), form
    )
    for name, g in grad.items():
        assert np.all(np.isfinite(np.asarray(g))), name
    # and they equal the gradient of the model with those dimensions dropped
    # (checked through the log-likelihood value at the reference)
    lml = jax.jit(jax.vmap(_lml, in_axes=(None, 0, None)), static_argnums=2)(
        params, jnp.asarray(ys), form
    )
    for y, value in zip(ys, lml, strict=True):
        expect = reference_filter(model, y.astype(np.float64))[
            "log_marginal_likelihood"
        ]
        np.testing.assert_allclose(value, expect, rtol=1e-4)


@pytest.mark.parametrize("form", ["dense", "sqrt"])
def test_numerical_gradients_through_the_smoother(x64, form):
    rng = np.random.default_rng(33)
    model = ref.random_model(rng, 2, 1)
    y = simulate(rng, model, 5)
    y = jnp.asarray(y)
    w_mean, w_cov = (
        jnp.asarray(rng.normal(size=(5, 2))),
        jnp.asarray(rng.normal(size=(5, 2, 2))),
    )

    def loss(params):
        sym = lambda a: 0.5 * (a + a.T)
        dyn = kj.LinearDynamics(F=params["F"], Q=sym(params["Q"]), b=params["b"])
        obs = kj.LinearObservation(H=params["H"], R=sym(params["R"]), d=params["d"])
        prior = kj.Gaussian(mean=params["m0"], cov=sym(params["P0"]))
        out = kj.kalman_smoother(dyn, obs, prior, y, form=form).smoothed
        return jnp.sum(out.mean * w_mean) + jnp.sum(out.cov * w_cov)

    flat, unravel = ravel_pytree(_params(model))
    f = jax.jit(lambda v: loss(unravel(v)))
    grad = np.asarray(jax.grad(lambda v: loss(unravel(v)))(flat))
    h = 1e-5
    numeric = np.array(
        [(f(flat + h * e) - f(flat - h * e)) / (2 * h) for e in np.eye(flat.size)]
    )
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)
