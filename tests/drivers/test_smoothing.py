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
