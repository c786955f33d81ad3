"""Fitting by the marginal likelihood with optax: against scipy, the dense joint."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

import kalmanjax as kj
from kalmanjax import constraints as C
from tests.reference import joint_gaussian, numpy_kalman

optax = pytest.importorskip("optax")

_FIT = jax.jit(
    kj.fit_marginal_likelihood,
    static_argnames=(
        "build",
        "optimizer",
        "num_steps",
        "batch",
        "update_first",
        "parallel",
    ),
)


def _build_2d(p):
    """F free, Q and R full covariances, H = I and the prior fixed."""
    dtype = p["F"].dtype
    dyn = kj.LinearDynamics(F=p["F"], Q=p["Q"])
    obs = kj.LinearObservation(H=jnp.eye(2, dtype=dtype), R=p["R"])
    prior = kj.Gaussian(jnp.zeros(2, dtype), jnp.eye(2, dtype=dtype))
    return kj.kalman_filter(dyn, obs), prior


_PSD = {"Q": C.psd(), "R": C.psd()}


def _numpy_negative_log_likelihood(theta, ys):
    """scipy's objective: F, and Q, R through Cholesky factors with log diagonals."""

    def chol(v):
        return np.array([[np.exp(v[0]), 0.0], [v[1], np.exp(v[2])]])

    F = theta[:4].reshape(2, 2)
    Lq, Lr = chol(theta[4:7]), chol(theta[7:10])
    out = numpy_kalman.kalman_filter(
        np.zeros(2), np.eye(2), F, Lq @ Lq.T, np.eye(2), Lr @ Lr.T, ys
    )
    return -out["log_marginal_likelihood"]


def test_lbfgs_reaches_scipys_maximum_likelihood(x64):
    """optax.lbfgs through psd() reparametrisations finds scipy BFGS's maximiser."""
    rng = np.random.default_rng(5)
    F = np.array([[0.8, 0.3], [-0.2, 0.6]])
    Q, R = np.array([[0.5, 0.1], [0.1, 0.3]]), np.array([[0.2, 0.05], [0.05, 0.4]])
    _, ys = numpy_kalman.simulate(rng, np.zeros(2), np.eye(2), F, Q, np.eye(2), R, 400)
    start = {"F": 0.5 * jnp.eye(2), "Q": jnp.eye(2), "R": 0.5 * jnp.eye(2)}
    fit = _FIT(
        _build_2d,
        start,
        jnp.asarray(ys),
        optax.lbfgs(),
        constraints=_PSD,
        num_steps=150,
    )
    res = optimize.minimize(
        _numpy_negative_log_likelihood,
        np.array([0.5, 0, 0, 0.5, 0, 0, 0, np.log(0.7), 0, np.log(0.7)]),
        args=(ys,),
        method="BFGS",
        options={"gtol": 1e-8, "maxiter": 3000},
    )
    th = res.x
    Lq = np.array([[np.exp(th[4]), 0], [th[5], np.exp(th[6])]])
    Lr = np.array([[np.exp(th[7]), 0], [th[8], np.exp(th[9])]])
    num = ys.size
    # the loss is per observed number; at the end it is the NumPy filter's too
    ours = _numpy_negative_log_likelihood(
        np.concatenate(
            [
                np.asarray(fit.params["F"]).ravel(),
                _log_chol(fit.params["Q"]),
                _log_chol(fit.params["R"]),
            ]
        ),
        ys,
    )
    np.testing.assert_allclose(float(fit.loss) * num, ours, rtol=1e-10)
    assert ours <= res.fun + 1e-7
    np.testing.assert_allclose(fit.params["F"], th[:4].reshape(2, 2), atol=1e-5)
    np.testing.assert_allclose(fit.params["Q"], Lq @ Lq.T, atol=1e-5)
    np.testing.assert_allclose(fit.params["R"], Lr @ Lr.T, atol=1e-5)
    np.testing.assert_allclose(
        fit.losses[0] * num, _numpy_nll_at(start, ys), rtol=1e-10
    )


def _log_chol(P):
    L = np.linalg.cholesky(np.asarray(P))
    return np.array([np.log(L[0, 0]), L[1, 0], np.log(L[1, 1])])


def _numpy_nll_at(params, ys):
    out = numpy_kalman.kalman_filter(
        np.zeros(2),
        np.eye(2),
        np.asarray(params["F"]),
        np.asarray(params["Q"]),
        np.eye(2),
        np.asarray(params["R"]),
        ys,
    )
    return -out["log_marginal_likelihood"]


def _build_level(p):
    """A local-level model with a drift coefficient: AR(1) plus noise."""
    dtype = p["phi"].dtype
    dyn = kj.LinearDynamics(F=p["phi"][None, None], Q=p["q"][None, None])
    obs = kj.LinearObservation(H=jnp.eye(1, dtype=dtype), R=p["r"][None, None])
    prior = kj.Gaussian(jnp.zeros(1, dtype), jnp.eye(1, dtype=dtype))
    return kj.kalman_filter(dyn, obs), prior


_LEVEL = {"phi": C.bounded(-1.0, 1.0), "q": C.positive(), "r": C.positive()}


def _level_data(num_seq, T, seed=0, missing=0.25):
    rng = np.random.default_rng(seed)
    ys = np.empty((num_seq, T, 1))
    for i in range(num_seq):
        _, y = numpy_kalman.simulate(
            rng,
            np.zeros(1),
            np.eye(1),
            0.9 * np.eye(1),
            0.3 * np.eye(1),
            np.eye(1),
            0.5 * np.eye(1),
            T,
        )
        ys[i] = y
    ys[rng.uniform(size=ys.shape) < missing] = np.nan
    return ys


def _dense_nll(p, ys):
    """-sum over sequences of the dense joint Gaussian's log p(y_obs)."""
    phi, q, r = (float(p[k]) for k in ("phi", "q", "r"))
    return -sum(
        joint_gaussian.log_marginal_likelihood(
            np.zeros(1),
            np.eye(1),
            phi * np.eye(1),
            q * np.eye(1),
            np.eye(1),
            r * np.eye(1),
            y,
        )
        for y in ys
    )


def test_batch_with_missing_data_against_the_dense_joint_gaussian(x64):
    """The per-observed-number loss of a batch with gaps, and L-BFGS's maximiser."""
    ys = _level_data(num_seq=3, T=40)
    num = int(np.sum(~np.isnan(ys)))
    start = {"phi": jnp.array(0.2), "q": jnp.array(1.0), "r": jnp.array(1.0)}
    fit = _FIT(
        _build_level,
        start,
        jnp.asarray(ys),
        optax.lbfgs(),
        constraints=_LEVEL,
        num_steps=60,
        batch=True,
    )
    np.testing.assert_allclose(fit.losses[0] * num, _dense_nll(start, ys), rtol=1e-12)
    np.testing.assert_allclose(fit.loss * num, _dense_nll(fit.params, ys), rtol=1e-12)
    # scipy on the dense likelihood, in the same coordinates
    to_u = lambda p: np.asarray(jax.tree.leaves(C.unconstrain(_LEVEL, p)))  # noqa: E731
    keys = sorted(start)

    def objective(u):
        p = C.constrain(_LEVEL, dict(zip(keys, jnp.asarray(u), strict=True)))
        return _dense_nll(p, ys)

    res = optimize.minimize(
        objective,
        to_u(start),
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000},
    )
    assert float(fit.loss) * num <= res.fun + 1e-8
    best = C.constrain(_LEVEL, dict(zip(keys, jnp.asarray(res.x), strict=True)))
    for k in keys:
        np.testing.assert_allclose(fit.params[k], best[k], atol=1e-4)
    assert -1.0 < float(fit.params["phi"]) < 1.0


def test_parallel_and_update_first_paths(x64):
    """parallel=True gives the sequential losses; update_first the dense joint's."""
    ys = jnp.asarray(_level_data(num_seq=1, T=30)[0])
    start = {"phi": jnp.array(0.5), "q": jnp.array(0.5), "r": jnp.array(2.0)}
    kwargs = dict(constraints=_LEVEL, num_steps=20)
    seq = _FIT(_build_level, start, ys, optax.adam(0.1), **kwargs)
    par = _FIT(_build_level, start, ys, optax.adam(0.1), parallel=True, **kwargs)
    np.testing.assert_allclose(par.losses, seq.losses, rtol=1e-10)
    first = _FIT(_build_level, start, ys, optax.adam(0.1), update_first=True, **kwargs)
    # update-first: x_0 ~ prior is observed by y_0; as the standard convention
    # with a first step that is the identity with no noise
    num = int(jnp.sum(~jnp.isnan(ys)))
    phi, q, r = 0.5, 0.5, 2.0
    T = ys.shape[0]
    F = np.stack([np.eye(1)] + [phi * np.eye(1)] * (T - 1))
    Q = np.stack([np.zeros((1, 1))] + [q * np.eye(1)] * (T - 1))
    dense = joint_gaussian.log_marginal_likelihood(
        np.zeros(1), np.eye(1), F, Q, np.eye(1), r * np.eye(1), np.asarray(ys)
    )
    np.testing.assert_allclose(first.losses[0] * num, -dense, rtol=1e-12)


def test_float32_fit_keeps_its_dtype():
    ys = jnp.asarray(_level_data(num_seq=1, T=200, seed=3)[0], jnp.float32)
    start = {
        "phi": jnp.array(0.0, jnp.float32),
        "q": jnp.array(1.0, jnp.float32),
        "r": jnp.array(1.0, jnp.float32),
    }
    fit = _FIT(
        _build_level, start, ys, optax.adam(0.05), constraints=_LEVEL, num_steps=200
    )
    assert fit.losses.dtype == jnp.float32 and fit.loss.dtype == jnp.float32
    assert all(v.dtype == jnp.float32 for v in fit.params.values())
    assert bool(jnp.all(jnp.isfinite(fit.losses)))
    assert float(fit.loss) < float(fit.losses[0]) - 0.01
    assert float(fit.params["q"]) > 0 and float(fit.params["r"]) > 0


def test_bad_arguments_raise(x64):
    ys = jnp.asarray(_level_data(num_seq=1, T=10)[0])
    start = {"phi": jnp.array(0.5), "q": jnp.array(0.5), "r": jnp.array(2.0)}
    fit = kj.fit_marginal_likelihood
    with pytest.raises(ValueError, match=r"constraints name keys.*\['s'\]"):
        fit(_build_level, start, ys, optax.adam(0.1), constraints={"s": C.positive()})
    with pytest.raises(ValueError, match=r"params\['q'\] is infeasible"):
        fit(
            _build_level,
            start | {"q": jnp.array(0.0)},
            ys,
            optax.adam(0.1),
            constraints=_LEVEL,
        )
    with pytest.raises(ValueError, match=r"params\['phi'\] is infeasible"):
        fit(
            _build_level,
            start | {"phi": jnp.array(1.0)},
            ys,
            optax.adam(0.1),
            constraints=_LEVEL,
        )
    with pytest.raises(ValueError, match="no observed"):
        fit(_build_level, start, jnp.full_like(ys, jnp.nan), optax.adam(0.1))
