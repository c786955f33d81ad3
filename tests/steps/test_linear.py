"""Single predict/update steps against the NumPy float64 textbook filter."""

import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from tests._helpers import FORM_CASES, reference_filter, tol
from tests.reference import numpy_kalman as ref


def _belief(mean, cov, form, dtype):
    g = kj.Gaussian(mean=jnp.asarray(mean, dtype), cov=jnp.asarray(cov, dtype))
    return kj.to_sqrt(g) if form == "sqrt" else g


@pytest.mark.parametrize("form,fast", FORM_CASES)
@pytest.mark.parametrize("d,m", [(1, 1), (3, 2), (6, 4), (10, 3)])
def test_one_step_matches_reference(dtype, form, fast, d, m):
    rng = np.random.default_rng(d * 10 + m)
    model = ref.random_model(rng, d, m)
    y = rng.normal(size=(1, m))
    expect = reference_filter(model, y)
    c = lambda a: jnp.asarray(a, dtype)
    belief = _belief(model["m0"], model["P0"], form, dtype)
    dyn = kj.LinearDynamics(F=c(model["F"]), Q=c(model["Q"]), b=c(model["b"]))
    obs = kj.LinearObservation(H=c(model["H"]), R=c(model["R"]), d=c(model["d"]))
    predicted = kj.predict(belief, dyn, fast=fast)
    post, info = kj.update(predicted, c(y[0]), obs, joseph=form == "joseph", fast=fast)
    t = tol(dtype, "step")
    assert post.mean.dtype == dtype and post.cov.dtype == dtype
    np.testing.assert_allclose(predicted.mean, expect["predicted_means"][0], **t)
    np.testing.assert_allclose(predicted.cov, expect["predicted_covs"][0], **t)
    np.testing.assert_allclose(post.mean, expect["filtered_means"][0], **t)
    np.testing.assert_allclose(post.cov, expect["filtered_covs"][0], **t)
    np.testing.assert_allclose(info.log_likelihood, expect["log_likelihoods"][0], **t)
    np.testing.assert_allclose(
        info.information_gain, expect["information_gains"][0], **t
    )
    np.testing.assert_allclose(info.innovation, expect["innovations"][0], **t)
    np.testing.assert_allclose(info.innovation_cov, expect["innovation_covs"][0], **t)


@pytest.mark.parametrize("form,fast", FORM_CASES)
def test_missing_dimensions_equal_dropping_them(x64, form, fast):
    rng = np.random.default_rng(3)
    model = ref.random_model(rng, 4, 3)
    y = rng.normal(size=(1, 3))
    y[0, 1] = np.nan
    expect = ref.kalman_filter(
        model["m0"], model["P0"], model["F"], model["Q"], model["H"], model["R"], y
    )
    belief = _belief(
        expect["predicted_means"][0], expect["predicted_covs"][0], form, jnp.float64
    )
    obs = kj.LinearObservation(H=jnp.asarray(model["H"]), R=jnp.asarray(model["R"]))
    post, info = kj.update(
        belief, jnp.asarray(y[0]), obs, joseph=form == "joseph", fast=fast
    )
    t = tol(jnp.float64, "step")
    np.testing.assert_allclose(post.mean, expect["filtered_means"][0], **t)
    np.testing.assert_allclose(post.cov, expect["filtered_covs"][0], **t)
    np.testing.assert_allclose(info.log_likelihood, expect["log_likelihoods"][0], **t)
    np.testing.assert_allclose(
        info.information_gain, expect["information_gains"][0], **t
    )
    assert info.innovation[1] == 0.0


@pytest.mark.parametrize("form,fast", FORM_CASES)
def test_fully_missing_observation_leaves_belief_unchanged(x64, form, fast):
    rng = np.random.default_rng(4)
    model = ref.random_model(rng, 3, 2)
    belief = _belief(model["m0"], model["P0"], form, jnp.float64)
    obs = kj.LinearObservation(H=jnp.asarray(model["H"]), R=jnp.asarray(model["R"]))
    post, info = kj.update(
        belief, jnp.full((2,), jnp.nan), obs, joseph=form == "joseph", fast=fast
    )
    np.testing.assert_allclose(post.mean, model["m0"], rtol=1e-12)
    np.testing.assert_allclose(post.cov, model["P0"], rtol=1e-12, atol=1e-14)
    assert float(info.log_likelihood) == 0.0
    assert float(info.information_gain) == 0.0


def test_singular_process_noise_in_sqrt_form(x64):
    # Q = 0 (the in-context regression case) and a rank-1 Q both have no Cholesky
    # factor; the square-root predict must still give F P F^T + Q.
    rng = np.random.default_rng(5)
    model = ref.random_model(rng, 3, 1)
    v = rng.normal(size=(3, 1))
    for Q in (np.zeros((3, 3)), v @ v.T):
        for fast in (False, True):
            belief = kj.to_sqrt(
                kj.Gaussian(jnp.asarray(model["m0"]), jnp.asarray(model["P0"]))
            )
            dyn = kj.LinearDynamics(F=jnp.asarray(model["F"]), Q=jnp.asarray(Q))
            out = kj.predict(belief, dyn, fast=fast)
            expect = model["F"] @ model["P0"] @ model["F"].T + Q
            np.testing.assert_allclose(out.cov, expect, rtol=1e-10, atol=1e-12)
            assert np.all(np.isfinite(np.asarray(out.chol)))
