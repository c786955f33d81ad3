"""Filters over sequences against independent references.

References: the NumPy float64 textbook filter, a dense joint Gaussian over
(x_0..T, y_1..T) (pins down the time convention and the log-likelihood) and the
closed-form Bayesian ridge posterior (in-context linear regression).
"""

import chex
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
from tests.reference import ridge


def _with_missing(rng, y, frac=0.3):
    y = y.copy()
    y[rng.random(y.shape) < frac] = np.nan
    y[len(y) // 2] = np.nan  # one fully missing step
    return y


@pytest.mark.parametrize("form,fast", FORM_CASES)
@pytest.mark.parametrize("missing", [False, True])
def test_filter_matches_reference(dtype, variant, form, fast, missing):
    rng = np.random.default_rng(11)
    model = ref.random_model(rng, 4, 2)
    y = simulate(rng, model, 40)
    if missing:
        y = _with_missing(rng, y)
    expect = reference_filter(model, y)
    filt, prior, _, _ = build(model, dtype, form, fast)
    out = variant(lambda ys: kj.run(filt, prior, ys))(jnp.asarray(y, dtype))
    t = tol(dtype, "seq")
    assert out.states.mean.dtype == dtype
    np.testing.assert_allclose(out.states.mean, expect["filtered_means"], **t)
    np.testing.assert_allclose(out.states.cov, expect["filtered_covs"], **t)
    np.testing.assert_allclose(out.infos.log_likelihood, expect["log_likelihoods"], **t)
    np.testing.assert_allclose(
        out.infos.information_gain, expect["information_gains"], **t
    )
    np.testing.assert_allclose(
        np.sum(out.infos.log_likelihood), expect["log_marginal_likelihood"], **t
    )
    assert_psd(out.states.cov, 1e-5 if dtype == jnp.float32 else 1e-12)


@pytest.mark.parametrize(
    "form,fast", [("dense", None), ("sqrt", None), ("joseph", False)]
)
def test_convention_against_dense_joint_gaussian(x64, form, fast):
    # prior over x_0 before the first transition; step t predicts then updates.
    rng = np.random.default_rng(12)
    model = ref.random_model(rng, 3, 2)
    y = simulate(rng, model, 6)
    y[2, 0] = np.nan
    filt, prior, dyn, _ = build(model, jnp.float64, form, fast)
    out = kj.run(filt, prior, jnp.asarray(y))
    args = [model[k] for k in ("m0", "P0", "F", "Q", "H", "R")]
    for t in range(1, 7):
        mean, cov = joint.filtered_marginal(*args, y, t, model["b"], model["d"])
        np.testing.assert_allclose(out.states.mean[t - 1], mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out.states.cov[t - 1], cov, rtol=1e-10, atol=1e-12)
    lml = joint.log_marginal_likelihood(*args, y, model["b"], model["d"])
    np.testing.assert_allclose(
        kj.log_marginal_likelihood(filt, prior, jnp.asarray(y)), lml, rtol=1e-10
    )


@pytest.mark.parametrize("form", ["dense", "sqrt"])
def test_time_varying_model_through_xs(x64, form):
    rng = np.random.default_rng(13)
    T = 25
    model = ref.random_model(rng, 3, 2, T=T, time_varying=True)
    y = rng.normal(size=(T, 2))
    y[3, 1] = np.nan
    expect = reference_filter(model, y)
    dynamics, observation, leaves, prior = time_varying_models(model, jnp.float64)
    filt = kj.kalman_filter(dynamics, observation, form=form)
    out = jax.jit(lambda xs: kj.run(filt, prior, xs))({"obs": jnp.asarray(y), **leaves})
    t = tol(jnp.float64, "seq")
    np.testing.assert_allclose(out.states.mean, expect["filtered_means"], **t)
    np.testing.assert_allclose(out.states.cov, expect["filtered_covs"], **t)
    np.testing.assert_allclose(out.infos.log_likelihood, expect["log_likelihoods"], **t)


@pytest.mark.parametrize("form", ["dense", "joseph", "sqrt"])
def test_in_context_regression_equals_bayesian_ridge(x64, form):
    # A = I, Q = 0, H_t = x_t^T: the filter is recursive least squares, whose mean
    # is the ridge solution with lambda = r / tau^2 after every prefix.
    rng = np.random.default_rng(14)
    d, T, r, tau2 = 5, 30, 0.25, 2.0
    X = rng.normal(size=(T, d))
    w = rng.normal(size=d) * np.sqrt(tau2)
    y = X @ w + np.sqrt(r) * rng.normal(size=T)
    dyn = kj.LinearDynamics(F=jnp.eye(d), Q=jnp.zeros((d, d)))
    filt = kj.kalman_filter(
        dyn,
        lambda u: kj.LinearObservation(H=u["x"][None, :], R=r * jnp.eye(1)),
        form=form,
    )
    prior = kj.Gaussian(mean=jnp.zeros(d), cov=tau2 * jnp.eye(d))
    out = kj.run(filt, prior, {"obs": jnp.asarray(y)[:, None], "x": jnp.asarray(X)})
    means, covs = ridge.posterior_path(X, y, r, tau2 * np.eye(d))
    np.testing.assert_allclose(out.states.mean, means, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(out.states.cov, covs, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(
        out.final.mean, ridge.ridge_mean(X, y, r / tau2), rtol=1e-9
    )
    # With Q = 0 the information gains sum to 1/2 log det Sigma_0 - 1/2 log det Sigma_T
    total = 0.5 * (d * np.log(tau2) - np.linalg.slogdet(covs[-1])[1])
    np.testing.assert_allclose(np.sum(out.infos.information_gain), total, rtol=1e-10)


def test_run_equals_python_loop_over_step(x64):
    rng = np.random.default_rng(15)
    model = ref.random_model(rng, 3, 2)
    y = jnp.asarray(rng.normal(size=(8, 2)))
    filt, prior, _, _ = build(model, jnp.float64, "sqrt")
    out = kj.run(filt, prior, y)
    state = filt.init(prior)
    for t in range(8):
        state, info = filt.step(state, y[t])
        np.testing.assert_allclose(
            out.states.chol[t], state.chol, rtol=1e-12, atol=1e-14
        )
        np.testing.assert_allclose(
            out.infos.log_likelihood[t], info.log_likelihood, rtol=1e-12
        )


def test_lean_mode_keeps_final_belief_and_scalars(x64):
    rng = np.random.default_rng(16)
    model = ref.random_model(rng, 3, 2)
    y = jnp.asarray(rng.normal(size=(20, 2)))
    filt, prior, _, _ = build(model, jnp.float64)
    full = kj.run(filt, prior, y)
    lean = kj.run(filt, prior, y, lean=True)
    assert lean.states is None
    assert lean.infos.innovation is None and lean.infos.innovation_cov is None
    np.testing.assert_allclose(lean.final.cov, full.states.cov[-1], rtol=1e-12)
    np.testing.assert_allclose(
        lean.infos.log_likelihood, full.infos.log_likelihood, rtol=1e-12
    )
    # lean mode stores nothing of size state x state per step
    shapes = jax.eval_shape(lambda ys: kj.run(filt, prior, ys, lean=True), y)
    sizes = [np.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes.infos)]
    assert max(sizes) == 20


@pytest.mark.parametrize("form", ["dense", "sqrt"])
def test_vmap_equals_loop_and_no_retrace(x64, form):
    rng = np.random.default_rng(17)
    model = ref.random_model(rng, 3, 2)
    ys = jnp.asarray(rng.normal(size=(4, 10, 2)))
    ys = ys.at[1, 3, 0].set(jnp.nan)
    filt, prior, _, _ = build(model, jnp.float64, form)

    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def lml(y):
        return kj.log_marginal_likelihood(filt, prior, y)

    looped = [lml(y) for y in ys]  # new data, same shapes: traced once
    batched = jax.jit(jax.vmap(lambda y: kj.log_marginal_likelihood(filt, prior, y)))(
        ys
    )
    np.testing.assert_allclose(batched, looped, rtol=1e-12)
    for b, y in zip(batched, ys, strict=True):
        np.testing.assert_allclose(
            b,
            reference_filter(model, np.asarray(y))["log_marginal_likelihood"],
            rtol=1e-10,
        )


def test_empty_sequence(x64):
    rng = np.random.default_rng(18)
    filt, prior, _, _ = build(ref.random_model(rng, 2, 1), jnp.float64)
    out = kj.run(filt, prior, jnp.zeros((0, 1)))
    assert out.states.mean.shape == (0, 2)
    assert float(kj.log_marginal_likelihood(filt, prior, jnp.zeros((0, 1)))) == 0.0


@pytest.mark.parametrize("form,fast", FORM_CASES)
def test_missing_false_matches_reference_and_propagates_nan(x64, form, fast):
    rng = np.random.default_rng(19)
    model = ref.random_model(rng, 3, 2)
    y = simulate(rng, model, 20)
    expect = reference_filter(model, y)
    m = {k: (None if v is None else jnp.asarray(v)) for k, v in model.items()}
    filt = kj.kalman_filter(
        kj.LinearDynamics(m["F"], m["Q"], m["b"]),
        kj.LinearObservation(m["H"], m["R"], m["d"]),
        form=form,
        fast=fast,
        missing=False,
    )
    prior = kj.Gaussian(m["m0"], m["P0"])
    out = jax.jit(lambda ys: kj.run(filt, prior, ys))(jnp.asarray(y))
    t = tol(jnp.float64, "seq")
    np.testing.assert_allclose(out.states.mean, expect["filtered_means"], **t)
    np.testing.assert_allclose(out.states.cov, expect["filtered_covs"], **t)
    np.testing.assert_allclose(out.infos.log_likelihood, expect["log_likelihoods"], **t)
    y[5, 0] = np.nan  # documented: with missing=False a NaN propagates
    out = kj.run(filt, prior, jnp.asarray(y))
    assert np.all(np.isnan(np.asarray(out.states.mean[5:])))
    assert np.all(np.isfinite(np.asarray(out.states.mean[:5])))


def _update_first_reference(model, T):
    """The update-first model as a predict-first one whose step 1 only observes."""
    n = model["F"].shape[0]
    F = np.stack([np.eye(n)] + [model["F"]] * (T - 1))
    Q = np.stack([np.zeros((n, n))] + [model["Q"]] * (T - 1))
    b = np.stack([np.zeros(n)] + [model["b"]] * (T - 1))
    return [model["m0"], model["P0"], F, Q, model["H"], model["R"]], b


@pytest.mark.parametrize("form", ["dense", "joseph", "sqrt"])
@pytest.mark.parametrize("parallel", [False, True])
def test_update_first_against_dense_joint_gaussian(x64, form, parallel):
    # y_0 observes x_0 (pykalman, filterpy, dynamax): states[t] = p(x_t | y_0..y_t)
    rng = np.random.default_rng(13)
    model = ref.random_model(rng, 3, 2)
    y = simulate(rng, model, 6)
    y[0, 1] = y[3, 0] = np.nan
    filt, prior, dyn, obs = build(model, jnp.float64, form)
    out = kj.run(filt, prior, jnp.asarray(y), update_first=True, parallel=parallel)
    sm = kj.kalman_smoother(
        dyn, obs, prior, jnp.asarray(y), form=form, update_first=True, parallel=parallel
    )
    args, b = _update_first_reference(model, 6)
    close = dict(rtol=1e-10, atol=1e-12)
    for t in range(1, 7):
        mean, cov = joint.filtered_marginal(*args, y, t, b, model["d"])
        np.testing.assert_allclose(out.states.mean[t - 1], mean, **close)
        np.testing.assert_allclose(out.states.cov[t - 1], cov, **close)
        mean, cov = joint.smoothed_marginal(*args, y, t, b, model["d"])
        np.testing.assert_allclose(sm.smoothed.mean[t - 1], mean, **close)
        np.testing.assert_allclose(sm.smoothed.cov[t - 1], cov, **close)
    lml = joint.log_marginal_likelihood(*args, y, b, model["d"])
    np.testing.assert_allclose(jnp.sum(out.infos.log_likelihood), lml, rtol=1e-10)
    np.testing.assert_allclose(sm.log_marginal_likelihood, lml, rtol=1e-10)
    got = kj.log_marginal_likelihood(filt, prior, jnp.asarray(y), update_first=True)
    np.testing.assert_allclose(got, lml, rtol=1e-10)


def test_update_first_in_the_other_filters(x64):
    # the EKF and the structured filters condition the prior alone the same way (on
    # a model with independent coordinates, where those are exact)
    n = 3
    rng = np.random.default_rng(14)
    model = ref.random_model(rng, n, n)
    model["F"], model["Q"] = np.diag([0.9, 0.5, -0.7]), np.diag([0.1, 0.2, 0.3])
    model["H"], model["R"] = np.diag([1.0, -0.5, 2.0]), np.diag([0.3, 0.2, 0.1])
    model["P0"] = np.diag([1.0, 2.0, 0.5])
    y = simulate(rng, model, 5)
    y[0, 0] = np.nan
    filt, prior, dyn, obs = build(model, jnp.float64, "joseph")
    want = kj.run(filt, prior, jnp.asarray(y), update_first=True)
    ekf = kj.extended_kalman_filter(dyn, obs)
    diag = kj.diagonal_filter(
        kj.DiagonalDynamics(F=dyn.F.diagonal(), Q=dyn.Q.diagonal(), b=dyn.b), obs
    )
    low_rank = kj.low_rank_filter(
        kj.DiagonalDynamics(F=dyn.F.diagonal(), Q=dyn.Q.diagonal(), b=dyn.b),
        obs,
        rank=n,
    )
    for other in (ekf, diag, low_rank):
        got = kj.run(other, prior, jnp.asarray(y), update_first=True)
        np.testing.assert_allclose(got.states.mean, want.states.mean, rtol=1e-10)
        np.testing.assert_allclose(
            got.infos.log_likelihood, want.infos.log_likelihood, rtol=1e-10
        )
    lean = kj.run(filt, prior, jnp.asarray(y), update_first=True, lean=True)
    assert lean.states is None and lean.infos.innovation is None
    np.testing.assert_allclose(lean.infos.log_likelihood, want.infos.log_likelihood)
    np.testing.assert_allclose(lean.final.mean, want.states.mean[-1])
    empty = kj.run(filt, prior, jnp.zeros((0, n)), update_first=True)
    assert empty.states.mean.shape == (0, n)
    bare = kj.Filter(init=filt.init, step=filt.step)
    with pytest.raises(ValueError, match="no update-only step"):
        kj.run(bare, prior, jnp.asarray(y), update_first=True)
