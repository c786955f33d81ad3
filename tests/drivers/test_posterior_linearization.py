"""The iterated posterior linearisation smoother against a NumPy IPLS, the RTS
smoother on linear models, and itself in parallel."""

import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from tests._helpers import assert_psd
from tests.filters.test_sigma_point import _pendulum, _pendulum_data
from tests.reference import numpy_kalman
from tests.reference import numpy_sigma_point as ref

RULES = {"unscented": kj.unscented(), "gauss_hermite": kj.gauss_hermite(3)}
M0, P0 = np.array([1.0, 0.0]), np.diag([0.5, 0.5])


def _nonlinear(dtype=jnp.float64):
    f, h, Q, R = _pendulum()
    dyn = kj.NonlinearDynamics(fn=f, Q=jnp.asarray(Q, dtype))
    obs = kj.NonlinearObservation(fn=h, R=jnp.asarray(R, dtype))
    prior = kj.Gaussian(jnp.asarray(M0, dtype), jnp.asarray(P0, dtype))
    return dyn, obs, prior


@pytest.mark.parametrize("form", ["joseph", "sqrt"])
@pytest.mark.parametrize("name", sorted(RULES))
def test_matches_the_numpy_posterior_linearisation_smoother(name, form, x64):
    """The pendulum with missing readings, three iterations after the UKS / GHKS."""
    f, h, Q, R = _pendulum()
    ys = _pendulum_data(T=40)

    def numpy_ipls(num_iters):
        return ref.iterated_posterior_linearization(
            lambda x: np.asarray(f(jnp.asarray(x))),
            Q,
            lambda x: np.asarray(h(jnp.asarray(x))),
            R,
            M0,
            P0,
            ys,
            ref.points(name, 2),
            num_iters=num_iters,
        )

    ms, Ps = numpy_ipls(3)
    dyn, obs, prior = _nonlinear()
    out = kj.iterated_sigma_point_smoother(
        dyn, obs, prior, jnp.asarray(ys), rule=RULES[name], num_iters=3, form=form
    )
    np.testing.assert_allclose(out.smoothed.mean, ms[1:], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(out.initial.mean, ms[0], rtol=1e-9, atol=1e-10)
    smoothed = kj.to_dense(out.smoothed)
    np.testing.assert_allclose(smoothed.cov, Ps[1:], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(kj.to_dense(out.initial).cov, Ps[0], atol=1e-10)
    # the iterations moved the means: the test sees more than the UKS / GHKS
    uks = numpy_ipls(0)[0]
    assert np.max(np.abs(uks - ms)) > 1e-4
    assert out.changes.shape == (3,)
    if form == "sqrt":
        assert isinstance(out.smoothed, kj.SqrtGaussian)


def test_on_a_linear_model_it_is_the_rts_smoother(x64):
    """Affine f and h given as functions: every SLR is exact, Omega = 0."""
    rng = np.random.default_rng(3)
    F = np.array([[0.9, 0.2], [-0.1, 0.8]])
    H = rng.normal(size=(2, 2))
    Q, R = 0.1 * np.eye(2), 0.3 * np.eye(2)
    ys = rng.normal(size=(30, 2))
    ys[5] = np.nan
    ys[9, 1] = np.nan
    filt = numpy_kalman.kalman_filter(M0, P0, F, Q, H, R, ys)
    ms, Ps = numpy_kalman.rts_smoother(
        filt["filtered_means"], filt["filtered_covs"], F, Q
    )
    dyn = kj.NonlinearDynamics(fn=lambda x, u: jnp.asarray(F) @ x, Q=jnp.asarray(Q))
    obs = kj.NonlinearObservation(fn=lambda x, u: jnp.asarray(H) @ x, R=jnp.asarray(R))
    prior = kj.Gaussian(jnp.asarray(M0), jnp.asarray(P0))
    out = kj.iterated_sigma_point_smoother(
        dyn, obs, prior, jnp.asarray(ys), num_iters=2
    )
    np.testing.assert_allclose(out.smoothed.mean, ms, atol=1e-10)
    np.testing.assert_allclose(out.smoothed.cov, Ps, atol=1e-10)
    np.testing.assert_allclose(out.filtered.mean, filt["filtered_means"], atol=1e-10)
    np.testing.assert_allclose(
        out.linearized.F, np.broadcast_to(F, (30, 2, 2)), atol=1e-12
    )
    # the LinearDynamics and LinearObservation pass through untouched
    exact = kj.iterated_sigma_point_smoother(
        kj.LinearDynamics(jnp.asarray(F), jnp.asarray(Q)),
        kj.LinearObservation(jnp.asarray(H), jnp.asarray(R)),
        prior,
        jnp.asarray(ys),
        num_iters=1,
    )
    np.testing.assert_allclose(exact.smoothed.mean, ms, atol=1e-10)


def test_parallel_equals_sequential(x64):
    dyn, obs, prior = _nonlinear()
    ys = jnp.asarray(_pendulum_data(T=40))
    seq = kj.iterated_sigma_point_smoother(dyn, obs, prior, ys, num_iters=3)
    par = kj.iterated_sigma_point_smoother(
        dyn, obs, prior, ys, num_iters=3, parallel=True
    )
    np.testing.assert_allclose(par.smoothed.mean, seq.smoothed.mean, atol=1e-9)
    np.testing.assert_allclose(par.smoothed.cov, seq.smoothed.cov, atol=1e-9)
    np.testing.assert_allclose(par.filtered.mean, seq.filtered.mean, atol=1e-9)
    np.testing.assert_allclose(par.changes, seq.changes, atol=1e-9)


def test_reaches_its_fixed_point(x64):
    """A contraction on the pendulum: the change falls ~10x per iteration."""
    dyn, obs, prior = _nonlinear()
    ys = jnp.asarray(_pendulum_data(T=40))
    out = kj.iterated_sigma_point_smoother(dyn, obs, prior, ys, num_iters=12)
    changes = np.asarray(out.changes)
    assert changes[0] > 1e-2
    assert changes[-1] < 1e-12
    assert np.all(np.diff(np.log(changes)) < 0)


def test_float32_stays_psd():
    dyn, obs, prior = _nonlinear(jnp.float32)
    ys = jnp.asarray(_pendulum_data(T=300), jnp.float32)
    for form in ("joseph", "sqrt"):
        out = kj.iterated_sigma_point_smoother(
            dyn, obs, prior, ys, num_iters=3, form=form
        )
        assert out.smoothed.mean.dtype == jnp.float32
        assert np.all(np.isfinite(out.smoothed.mean))
        assert_psd(kj.to_dense(out.smoothed).cov, 1e-5)


def test_bad_arguments_are_refused():
    dyn, obs, prior = _nonlinear(jnp.float32)
    ys = jnp.ones((5, 2), jnp.float32)
    # a type-checking import hook (the tests') refuses it first, as a TypeError
    with pytest.raises((ValueError, TypeError), match="rule"):
        kj.iterated_sigma_point_smoother(dyn, obs, prior, ys, rule="unscented")
    with pytest.raises(ValueError, match="num_iters must be an integer >= 1"):
        kj.iterated_sigma_point_smoother(dyn, obs, prior, ys, num_iters=0)
    with pytest.raises(ValueError, match="observation.fn"):
        kj.iterated_sigma_point_smoother(dyn, obs, prior, jnp.ones((5, 3), jnp.float32))
