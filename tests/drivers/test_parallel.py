"""The temporally parallel filter and smoother equal the sequential ones.

The sequential path is itself checked against the NumPy float64 reference in
test_filtering.py / test_smoothing.py; here the parallel path is compared with
both, over random time-varying models, missing data, large initial means and
T from 1 to 10,000.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from tests._helpers import assert_psd, reference_filter, time_varying_models
from tests.reference import numpy_kalman as ref

CASES = [("dense", None), ("dense", False), ("sqrt", None), ("sqrt", False)]


def _problem(seed, d, m, T, time_varying, missing, mean_scale=1.0):
    rng = np.random.default_rng(seed)
    model = ref.random_model(rng, d, m, T=T, time_varying=time_varying)
    model["m0"] = model["m0"] * 0 + mean_scale * rng.normal(size=d)
    y = rng.normal(size=(T, m)) + (mean_scale if mean_scale > 1 else 0.0)
    if missing:
        y[rng.random(y.shape) < 0.25] = np.nan
        y[T // 2] = np.nan
    return model, y


def _filters(model, y, form, fast, dtype):
    if model["F"].ndim == 3:  # time-varying: models read their arrays from xs
        dynamics, observation, leaves, prior = time_varying_models(model, dtype)
    else:
        c = {
            k: (None if v is None else jnp.asarray(v, dtype)) for k, v in model.items()
        }
        dynamics = kj.LinearDynamics(c["F"], c["Q"], c["b"])
        observation = kj.LinearObservation(c["H"], c["R"], c["d"])
        prior, leaves = kj.Gaussian(c["m0"], c["P0"]), {}
    xs = {"obs": jnp.asarray(y, dtype), **leaves}
    filt = kj.kalman_filter(dynamics, observation, form=form, fast=fast)
    return filt, prior, xs, dynamics


PROBLEMS = {
    "T1": (3, 2, 1, False, False, 1.0),
    "T2_time_varying_missing": (3, 2, 2, True, True, 1.0),
    "T37_time_varying_missing": (4, 2, 37, True, True, 1.0),
    "T64_large_initial_mean": (3, 1, 64, False, True, 1e3),  # dynamax #423
    "T50_d10_time_varying_missing": (10, 3, 50, True, True, 1.0),
}
# every (form, fast) on one problem; the default kernels on the others
MATRIX = [("T37_time_varying_missing", form, fast) for form, fast in CASES] + [
    (name, form, None)
    for name in PROBLEMS
    if name != "T37_time_varying_missing"
    for form in ("dense", "sqrt")
]


@pytest.mark.parametrize("problem,form,fast", MATRIX)
def test_parallel_equals_sequential(x64, problem, form, fast):
    d, m, T, time_varying, missing, mean_scale = PROBLEMS[problem]
    model, y = _problem(d * T + m, d, m, T, time_varying, missing, mean_scale)
    filt, prior, xs, dynamics = _filters(model, y, form, fast, jnp.float64)
    seq = jax.jit(lambda xs: kj.run(filt, prior, xs))(xs)
    par = jax.jit(lambda xs: kj.run(filt, prior, xs, parallel=True))(xs)
    expect = reference_filter(model, y)
    lml = np.sum(par.infos.log_likelihood)
    np.testing.assert_allclose(lml, np.sum(seq.infos.log_likelihood), rtol=1e-9)
    np.testing.assert_allclose(lml, expect["log_marginal_likelihood"], rtol=1e-9)
    scale = 1.0 + np.abs(expect["filtered_means"]).max()
    np.testing.assert_allclose(
        par.states.mean, seq.states.mean, rtol=1e-10, atol=1e-10 * scale
    )
    np.testing.assert_allclose(par.states.cov, seq.states.cov, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        par.states.mean, expect["filtered_means"], rtol=1e-9, atol=1e-10 * scale
    )
    assert isinstance(par.states, type(seq.states))
    # smoother
    s_seq = kj.rts_smoother(dynamics, seq.states, xs)
    s_par = jax.jit(lambda f, xs: kj.rts_smoother(dynamics, f, xs, parallel=True))(
        par.states, xs
    )
    np.testing.assert_allclose(s_par.mean, s_seq.mean, rtol=1e-10, atol=1e-10 * scale)
    np.testing.assert_allclose(s_par.cov, s_seq.cov, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("form", ["dense", "sqrt"])
def test_parallel_long_sequence(form):
    # T = 10,000 with missing data: float64 equals the sequential filter, float32
    # stays within 1e-4 (relative) of the float64 reference.
    model, y = _problem(7, 2, 1, 10_000, False, True)  # small d: compile stays short
    expect = reference_filter(model, y)
    with jax.enable_x64(True):
        filt, prior, xs, _ = _filters(model, y, form, None, jnp.float64)
        seq = jax.jit(lambda xs: kj.run(filt, prior, xs, lean=True))(xs)
        par = jax.jit(lambda xs: kj.run(filt, prior, xs, parallel=True))(xs)
        lml = np.sum(par.infos.log_likelihood)
        np.testing.assert_allclose(lml, np.sum(seq.infos.log_likelihood), rtol=1e-9)
        np.testing.assert_allclose(lml, expect["log_marginal_likelihood"], rtol=1e-9)
        np.testing.assert_allclose(
            par.final.mean, seq.final.mean, rtol=1e-10, atol=1e-10
        )
        np.testing.assert_allclose(par.final.cov, seq.final.cov, rtol=1e-10, atol=1e-12)
    filt, prior, xs, _ = _filters(model, y, form, None, jnp.float32)
    par = jax.jit(lambda xs: kj.run(filt, prior, xs, parallel=True))(xs)
    assert par.states.mean.dtype == jnp.float32
    np.testing.assert_allclose(
        np.sum(np.asarray(par.infos.log_likelihood, np.float64)),
        expect["log_marginal_likelihood"],
        rtol=1e-4,
    )
    assert_psd(par.states.cov[::100], 1e-5)


@pytest.mark.parametrize("form", ["dense", "sqrt"])
def test_parallel_gradients_equal_sequential(x64, form):
    model, y = _problem(9, 3, 2, 20, False, True)
    y = jnp.asarray(y)
    c = {k: jnp.asarray(v) for k, v in model.items() if v is not None}

    def lml(p, parallel):
        dyn = kj.LinearDynamics(p["F"], 0.5 * (p["Q"] + p["Q"].T), p["b"])
        obs = kj.LinearObservation(p["H"], 0.5 * (p["R"] + p["R"].T), p["d"])
        filt = kj.kalman_filter(dyn, obs, form=form)
        prior = kj.Gaussian(p["m0"], 0.5 * (p["P0"] + p["P0"].T))
        return jnp.sum(kj.run(filt, prior, y, parallel=parallel).infos.log_likelihood)

    g_seq = jax.grad(lml)(c, False)
    g_par = jax.jit(jax.grad(lml), static_argnums=1)(c, True)
    for k in g_seq:
        np.testing.assert_allclose(g_par[k], g_seq[k], rtol=1e-8, atol=1e-10, err_msg=k)


def test_parallel_under_vmap_and_lean(x64):
    model, y = _problem(10, 3, 2, 30, False, False)
    filt, prior, _, _ = _filters(model, y, "dense", None, jnp.float64)
    ys = jnp.stack([jnp.asarray(y), jnp.asarray(y) * 0.5])
    lean = jax.vmap(lambda y: kj.run(filt, prior, y, parallel=True, lean=True))(ys)
    assert lean.states is None and lean.infos.innovation is None
    seq = jax.vmap(lambda y: kj.log_marginal_likelihood(filt, prior, y))(ys)
    par = jax.vmap(lambda y: kj.log_marginal_likelihood(filt, prior, y, parallel=True))(
        ys
    )
    np.testing.assert_allclose(par, seq, rtol=1e-10)
    np.testing.assert_allclose(lean.infos.log_likelihood.sum(1), seq, rtol=1e-10)


def test_filter_without_parallel_form_is_a_clear_error():
    filt = kj.Filter(init=lambda p: p, step=lambda s, u: (s, None))
    with pytest.raises(ValueError, match="no parallel form"):
        kj.run(filt, None, jnp.zeros((3, 1)), parallel=True)


def test_both_scans_through_every_parallel_driver(x64):
    # parallel="tree" is lax.associative_scan, True / "blocked" the blocked scan:
    # each equals the sequential path (filter, smoother, posterior sample)
    dyn = kj.LinearDynamics(F=0.9 * jnp.eye(2), Q=0.1 * jnp.eye(2))
    obs = kj.LinearObservation(H=jnp.array([[1.0, 0.5]]), R=jnp.eye(1))
    prior = kj.Gaussian(jnp.ones(2), jnp.eye(2))
    ys = jnp.sin(jnp.arange(23.0))[:, None].at[5:8].set(jnp.nan)
    filt = kj.kalman_filter(dyn, obs)
    seq = kj.run(filt, prior, ys)
    smooth = kj.rts_smoother(dyn, seq.states)
    key = jax.random.key(0)
    draw = kj.sample_posterior(key, dyn, seq.states)
    for parallel in (True, "blocked", "tree"):
        out = kj.run(filt, prior, ys, parallel=parallel)
        np.testing.assert_allclose(out.states.mean, seq.states.mean, atol=1e-10)
        np.testing.assert_allclose(
            out.infos.log_likelihood, seq.infos.log_likelihood, atol=1e-10
        )
        sm = kj.rts_smoother(dyn, seq.states, parallel=parallel)
        np.testing.assert_allclose(sm.cov, smooth.cov, atol=1e-10)
        got = kj.sample_posterior(key, dyn, seq.states, parallel=parallel)
        np.testing.assert_allclose(got, draw, atol=1e-9)
    with pytest.raises((ValueError, TypeError), match="fast"):
        kj.run(filt, prior, ys, parallel="fast")  # type: ignore[arg-type]
