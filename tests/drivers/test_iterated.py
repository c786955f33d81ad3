"""The iterated extended smoother against scipy's MAP and the RTS smoother."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

import kalmanjax as kj
from tests._helpers import build, simulate
from tests.reference import joint_gaussian as joint
from tests.reference import numpy_kalman as ref

Q = np.array([[0.05, 0.01], [0.01, 0.08]])
R = np.array([[0.1, 0.02], [0.02, 0.2]])
M0, P0 = np.array([0.5, -0.3]), np.array([[1.0, 0.2], [0.2, 0.8]])


def _f(x, xp=jnp):
    return 0.9 * x + 0.4 * xp.sin(x[::-1])


def _h(x, xp=jnp):
    return xp.stack([x[0] + 0.3 * x[1] ** 2, 2.0 * xp.arctan(x[1])])


def _model(dtype=jnp.float64):
    dyn = kj.NonlinearDynamics(fn=lambda x, u: _f(x), Q=jnp.asarray(Q, dtype))
    obs = kj.NonlinearObservation(fn=lambda x, u: _h(x), R=jnp.asarray(R, dtype))
    prior = kj.Gaussian(jnp.asarray(M0, dtype), jnp.asarray(P0, dtype))
    return dyn, obs, prior


def _data(T=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(M0, P0)
    ys = []
    for _ in range(T):
        x = _f(x, np) + rng.multivariate_normal(np.zeros(2), Q)
        ys.append(_h(x, np) + rng.multivariate_normal(np.zeros(2), R))
    ys = np.array(ys)
    ys[T // 4] = np.nan
    ys[T // 2, 1] = np.nan
    return ys


def _whitened_residuals(flat, ys):
    """r(x_0..x_T) with ||r||^2 / 2 the negative log-posterior (NumPy float64)."""

    def white(e, cov):
        return np.linalg.solve(np.linalg.cholesky(cov), e)

    x = flat.reshape(-1, 2)
    out = [white(x[0] - M0, P0)]
    for t in range(1, len(x)):
        out.append(white(x[t] - _f(x[t - 1], np), Q))
        o = ~np.isnan(ys[t - 1])
        out.append(white((ys[t - 1] - _h(x[t], np))[o], R[np.ix_(o, o)]))
    return np.concatenate(out)


def _numpy_cost(flat, ys):
    return 0.5 * np.sum(_whitened_residuals(flat, ys) ** 2)


@pytest.mark.parametrize(
    "form,parallel", [("joseph", False), ("sqrt", False), ("joseph", True)]
)
def test_converges_to_the_map_found_by_scipy(parallel, form, x64):
    ys = _data()
    dyn, obs, prior = _model()
    out = kj.iterated_extended_smoother(
        dyn, obs, prior, jnp.asarray(ys), num_iters=60, parallel=parallel, form=form
    )  # Gauss-Newton converges linearly when the residuals are not small
    start = np.concatenate([M0[None], np.zeros((20, 2))]).ravel()
    res = optimize.least_squares(
        _whitened_residuals, start, args=(ys,), xtol=1e-15, ftol=1e-15, gtol=1e-15
    )
    want = res.x.reshape(-1, 2)
    got = np.concatenate([out.initial.mean[None], out.smoothed.mean])
    np.testing.assert_allclose(got, want, atol=1e-7)
    np.testing.assert_allclose(out.costs[-1], res.cost, rtol=1e-10)
    np.testing.assert_allclose(out.costs[-1], _numpy_cost(got.ravel(), ys), rtol=1e-10)
    assert np.all(np.diff(np.asarray(out.costs)) <= 1e-9)
    assert isinstance(out.smoothed, kj.SqrtGaussian) == (form == "sqrt")


def test_parallel_equals_sequential(x64):
    ys = jnp.asarray(_data(T=33, seed=1))
    dyn, obs, prior = _model()
    seq = kj.iterated_extended_smoother(dyn, obs, prior, ys, num_iters=6, form="sqrt")
    par = kj.iterated_extended_smoother(
        dyn, obs, prior, ys, num_iters=6, form="sqrt", parallel=True
    )
    np.testing.assert_allclose(
        par.smoothed.mean, seq.smoothed.mean, rtol=1e-9, atol=1e-11
    )
    np.testing.assert_allclose(
        par.smoothed.cov, seq.smoothed.cov, rtol=1e-8, atol=1e-11
    )
    np.testing.assert_allclose(par.costs, seq.costs, rtol=1e-10)


def test_on_a_linear_model_one_iteration_is_the_rts_smoother(x64):
    rng = np.random.default_rng(7)
    model = ref.random_model(rng, 3, 2)
    T = 6
    y = simulate(rng, model, T)
    y[2, 0] = np.nan
    _, prior, dyn, obs = build(model, jnp.float64)
    out = kj.iterated_extended_smoother(dyn, obs, prior, jnp.asarray(y), num_iters=1)
    args = [model[k] for k in ("m0", "P0", "F", "Q", "H", "R")]
    close = dict(rtol=1e-9, atol=1e-11)
    for t in range(T + 1):
        mean, cov = joint.smoothed_marginal(*args, y, t, model["b"], model["d"])
        got_mean = out.initial.mean if t == 0 else out.smoothed.mean[t - 1]
        got_cov = out.initial.cov if t == 0 else out.smoothed.cov[t - 1]
        np.testing.assert_allclose(got_mean, mean, **close)
        np.testing.assert_allclose(got_cov, cov, **close)
    again = kj.iterated_extended_smoother(dyn, obs, prior, jnp.asarray(y), num_iters=3)
    np.testing.assert_allclose(again.costs[1:], out.costs[1], rtol=1e-12)


def _hard_problem():
    """A cubic sensor with a vague prior: the plain Gauss-Newton step overshoots."""
    dyn = kj.NonlinearDynamics(fn=lambda x, u: x, Q=0.01 * jnp.eye(1))
    obs = kj.NonlinearObservation(fn=lambda x, u: x**3, R=0.01 * jnp.eye(1))
    truth = kj.Gaussian(jnp.array([1.2]), 0.01 * jnp.eye(1))
    ys = kj.simulate(jax.random.key(3), truth, dyn, obs, num_steps=30).observations
    return dyn, obs, kj.Gaussian(jnp.array([0.1]), 4.0 * jnp.eye(1)), ys


def test_the_line_search_never_increases_the_cost(x64):
    dyn, obs, prior, ys = _hard_problem()
    plain = kj.iterated_extended_smoother(
        dyn, obs, prior, ys, num_iters=30, line_search=False
    )
    damped = kj.iterated_extended_smoother(dyn, obs, prior, ys, num_iters=30)
    assert plain.costs[1] > 1e3 * plain.costs[0]  # the undamped step overshoots
    assert np.all(np.diff(np.asarray(damped.costs)) <= 0.0)
    # both reach the same minimum; the damped one in fewer iterations
    np.testing.assert_allclose(damped.costs[-1], plain.costs[-1], rtol=1e-9)
    near = lambda c: int(np.argmax(np.asarray(c) < 1.001 * float(c[-1])))  # noqa: E731
    assert near(damped.costs) < near(plain.costs)


def test_the_linearisation_samples_the_laplace_posterior(x64):
    ys = jnp.asarray(_data(T=8, seed=2))
    dyn, obs, prior = _model()
    out = kj.iterated_extended_smoother(dyn, obs, prior, ys, num_iters=40)
    keys = jax.random.split(jax.random.key(0), 4000)
    draws = jax.vmap(
        lambda k: kj.sample_posterior(k, lambda u: u, out.filtered, out.linearized)
    )(keys)
    se = np.sqrt(np.asarray(out.smoothed.cov).diagonal(axis1=1, axis2=2) / 4000)
    assert np.all(np.abs(draws.mean(0) - out.smoothed.mean) < 5 * se)
    np.testing.assert_allclose(
        np.var(np.asarray(draws), axis=0),
        np.asarray(out.smoothed.cov).diagonal(axis1=1, axis2=2),
        rtol=0.15,
    )


def test_float32_init_and_errors():
    ys = jnp.asarray(_data(), jnp.float32)
    dyn, obs, prior = _model(jnp.float32)
    out = kj.iterated_extended_smoother(dyn, obs, prior, ys, num_iters=40)
    assert out.smoothed.mean.dtype == jnp.float32 and out.costs.dtype == jnp.float32
    assert np.all(np.isfinite(out.smoothed.cov))
    ekf = kj.run(kj.extended_kalman_filter(dyn, obs), prior, ys).states
    eks = kj.rts_smoother(dyn, ekf)
    warm = kj.iterated_extended_smoother(
        dyn, obs, prior, ys, num_iters=40, init=eks.mean
    )
    # both reach the float64 MAP as far as float32 can tell: the cost to float32
    # resolution, the path to ~sqrt(eps) in its flattest directions (the last
    # steps, which only their own readings pin down)
    with jax.enable_x64(True):
        ref = kj.iterated_extended_smoother(
            *_model(jnp.float64), jnp.asarray(_data()), num_iters=40
        )
        map_path, map_cost = np.asarray(ref.smoothed.mean), float(ref.costs[-1])
    for fit in (out, warm):
        np.testing.assert_allclose(float(fit.costs[-1]), map_cost, rtol=1e-5)
        np.testing.assert_allclose(fit.smoothed.mean, map_path, atol=5e-3)
    with pytest.raises(ValueError, match=r"init must be \(T, state\)"):
        kj.iterated_extended_smoother(dyn, obs, prior, ys, init=eks.mean[1:])
