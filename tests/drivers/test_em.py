"""EM for linear-Gaussian models: against the dense joint Gaussian, scipy, dynamax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

import kalmanjax as kj
from tests.reference import joint_gaussian, numpy_kalman

_EM = jax.jit(
    kj.fit_em,
    static_argnames=("num_iters", "fixed", "update_first", "form", "missing"),
)


def _true_model():
    F = np.array([[0.9, 0.2], [-0.1, 0.8]])
    Q = np.array([[0.2, 0.05], [0.05, 0.1]])
    H = np.array([[1.0, 0.5], [0.3, 1.0], [1.0, -1.0]])
    R = np.array([[0.3, 0.1, 0.0], [0.1, 0.4, 0.05], [0.0, 0.05, 0.2]])
    return dict(
        m0=np.array([1.0, -1.0]),
        P0=np.array([[1.0, 0.3], [0.3, 0.5]]),
        F=F,
        Q=Q,
        H=H,
        R=R,
        b=np.array([0.1, -0.2]),
        d=np.array([0.0, 1.0, -0.5]),
    )


def _jax_model(p, dtype=jnp.float64):
    a = {k: jnp.asarray(v, dtype) for k, v in p.items()}
    return (
        kj.Gaussian(a["m0"], a["P0"]),
        kj.LinearDynamics(a["F"], a["Q"], b=a.get("b")),
        kj.LinearObservation(a["H"], a["R"], d=a.get("d")),
    )


def _data(num_seq, T, missing=0.2, seed=0, update_first=False, gap=True):
    rng = np.random.default_rng(seed)
    p = _true_model()
    ys = []
    for _ in range(num_seq):
        m0, P0 = p["m0"], p["P0"]
        if update_first:  # the prior is over the first observed state
            m0, P0 = np.linalg.solve(p["F"], m0 - p["b"]), 0.1 * np.eye(2)
        _, y = numpy_kalman.simulate(
            rng, m0, P0, p["F"], p["Q"], p["H"], p["R"], T, p["b"], p["d"]
        )
        ys.append(y)
    ys = np.stack(ys)
    ys[rng.uniform(size=ys.shape) < missing] = np.nan
    if gap:
        ys[:, 3] = np.nan  # one whole step missing in every sequence
    return ys


def _initial_guess():
    p = _true_model()
    return dict(
        m0=np.zeros(2),
        P0=np.eye(2),
        F=0.5 * np.eye(2),
        Q=np.eye(2),
        H=p["H"] + 0.3,
        R=np.eye(3),
        b=np.zeros(2),
        d=np.zeros(3),
    )


def _reference_em_step(p, ys, update_first):
    """One EM iteration by conditioning the dense joint Gaussian (NumPy float64).

    Everything random, the states and the missing observations alike, gets its
    posterior moments from one Gaussian conditioning of u = (x_0..x_T, y_1..y_T);
    the M-step is least squares on [x; 1] with the residual covariance at the
    optimum, written apart from the library's algebra.
    """
    n = p["F"].shape[0]
    T = ys.shape[1]
    Fs, Qs, bs = [p["F"]] * T, [p["Q"]] * T, [p["b"]] * T
    if update_first:  # x_1 = x_0 exactly: the first step only observes
        Fs[0], Qs[0], bs[0] = np.eye(n), np.zeros((n, n)), np.zeros(n)
    sums = {k: 0.0 for k in ("x0", "x0x0", "dyn_xx", "dyn_yx", "dyn_yy", "em_xx")}
    sums.update(em_yx=0.0, em_yy=0.0, ll=0.0)
    for y in ys:
        mean, cov, index = joint_gaussian.joint_moments(
            p["m0"], p["P0"], np.stack(Fs), np.stack(Qs), p["H"], p["R"], T,
            b=np.stack(bs), d=p["d"],
        )  # fmt: skip
        rows, vals = joint_gaussian._observed_indices(y, index, T)
        gain = np.linalg.solve(cov[np.ix_(rows, rows)], cov[rows]).T
        mu = mean + gain @ (vals - mean[rows])
        S = cov - gain @ cov[rows]
        sums["ll"] += joint_gaussian.log_marginal_likelihood(
            p["m0"], p["P0"], np.stack(Fs), np.stack(Qs), p["H"], p["R"], y,
            b=np.stack(bs), d=p["d"],
        )  # fmt: skip

        xs = [np.arange(s.start, s.stop) for s in index["x"]]
        xs = xs[1:] if update_first else xs
        one = len(mu)  # the index of a constant 1 appended to u
        mu, S = np.append(mu, 1.0), np.pad(S, ((0, 1), (0, 1)))

        def second(a, b, S=S, mu=mu):  # E[u_a u_b^T]
            return S[np.ix_(a, b)] + np.outer(mu[a], mu[b])

        sums["x0"] += mu[xs[0]]
        sums["x0x0"] += second(xs[0], xs[0])
        for a, b in zip(xs[:-1], xs[1:], strict=True):
            sums["dyn_xx"] += second(np.append(a, one), np.append(a, one))
            sums["dyn_yx"] += second(b, np.append(a, one))
            sums["dyn_yy"] += second(b, b)
        for t, a in enumerate(xs[-T:]):
            yt = np.arange(index["y"][t].start, index["y"][t].stop)
            sums["em_xx"] += second(np.append(a, one), np.append(a, one))
            sums["em_yx"] += second(yt, np.append(a, one))
            sums["em_yy"] += second(yt, yt)
    B = ys.shape[0]
    Fb = np.linalg.solve(sums["dyn_xx"], sums["dyn_yx"].T).T
    Hd = np.linalg.solve(sums["em_xx"], sums["em_yx"].T).T
    num_trans = B * (T - 1 if update_first else T)
    m0 = sums["x0"] / B
    return {
        "m0": m0,
        "P0": sums["x0x0"] / B - np.outer(m0, m0),
        "F": Fb[:, :n],
        "b": Fb[:, n],
        "Q": (sums["dyn_yy"] - Fb @ sums["dyn_yx"].T) / num_trans,
        "H": Hd[:, :n],
        "d": Hd[:, n],
        "R": (sums["em_yy"] - Hd @ sums["em_yx"].T) / (B * T),
    }, sums["ll"]


def _as_dict(fit):
    return {
        "m0": fit.prior.mean,
        "P0": fit.prior.cov,
        "F": fit.dynamics.F,
        "b": fit.dynamics.b,
        "Q": fit.dynamics.Q,
        "H": fit.observation.H,
        "d": fit.observation.d,
        "R": fit.observation.R,
    }


@pytest.mark.parametrize("update_first", [False, True])
@pytest.mark.parametrize("form", ["joseph", "sqrt"])
def test_one_iteration_matches_the_dense_joint_gaussian(update_first, form, x64):
    ys = _data(num_seq=2, T=7, update_first=update_first)
    guess = _initial_guess()
    ref, ref_ll = _reference_em_step(guess, ys, update_first)
    fit = _EM(
        *_jax_model(guess),
        jnp.asarray(ys),
        num_iters=1,
        update_first=update_first,
        form=form,
    )
    np.testing.assert_allclose(fit.log_likelihoods[0], ref_ll, rtol=1e-10)
    got = _as_dict(fit)
    for name, want in ref.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-8, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("update_first", [False, True])
def test_the_log_likelihood_never_decreases(update_first, dtype):
    ys = _data(num_seq=3, T=60, missing=0.3, update_first=update_first)
    fit = _EM(
        *_jax_model(_initial_guess(), dtype),
        jnp.asarray(ys, dtype),
        num_iters=40,
        update_first=update_first,
    )
    ll = np.asarray(fit.log_likelihoods, np.float64)
    assert fit.log_likelihoods.dtype == dtype and fit.dynamics.Q.dtype == dtype
    assert np.all(np.isfinite(ll)) and ll[-1] > ll[0] + 100.0
    slack = 1e-8 if dtype == jnp.float64 else 1e-3
    assert np.min(np.diff(ll)) >= -slack * np.abs(ll).max()
    for cov in (fit.dynamics.Q, fit.observation.R, fit.prior.cov):
        np.testing.assert_allclose(cov, cov.T, rtol=1e-6)
        assert np.linalg.eigvalsh(np.asarray(cov, np.float64)).min() > 0


def _numpy_log_likelihood(theta, ys, prior):
    """The model with H = I, offsets none: theta = (F, chol Q, chol R)."""
    F = theta[:4].reshape(2, 2)

    def chol(v):
        return np.array([[np.exp(v[0]), 0.0], [v[1], np.exp(v[2])]])

    Lq, Lr = chol(theta[4:7]), chol(theta[7:10])
    out = numpy_kalman.kalman_filter(
        prior[0], prior[1], F, Lq @ Lq.T, np.eye(2), Lr @ Lr.T, ys
    )
    return out["log_marginal_likelihood"]


def test_the_fixed_point_is_the_maximum_likelihood(x64):
    """EM run long agrees with scipy's maximiser of the NumPy filter's likelihood."""
    rng = np.random.default_rng(5)
    F = np.array([[0.8, 0.3], [-0.2, 0.6]])
    Q, R = np.array([[0.5, 0.1], [0.1, 0.3]]), np.array([[0.2, 0.05], [0.05, 0.4]])
    prior = (np.zeros(2), np.eye(2))
    _, ys = numpy_kalman.simulate(rng, *prior, F, Q, np.eye(2), R, 400)
    fit = _EM(
        kj.Gaussian(jnp.zeros(2), jnp.eye(2)),
        kj.LinearDynamics(0.5 * jnp.eye(2), jnp.eye(2)),
        kj.LinearObservation(jnp.eye(2), 0.5 * jnp.eye(2)),
        jnp.asarray(ys),
        num_iters=3000,
        fixed=("prior_mean", "prior_cov", "H"),
    )
    res = optimize.minimize(
        lambda th: -_numpy_log_likelihood(th, ys, prior),
        np.array([0.5, 0, 0, 0.5, 0, 0, 0, np.log(0.7), 0, np.log(0.7)]),
        method="BFGS",
        options={"gtol": 1e-7, "maxiter": 2000},
    )
    th = res.x
    Lq = np.array([[np.exp(th[4]), 0], [th[5], np.exp(th[6])]])
    Lr = np.array([[np.exp(th[7]), 0], [th[8], np.exp(th[9])]])
    em_ll = _numpy_log_likelihood_at(fit, ys, prior)
    assert em_ll >= -res.fun - 1e-6  # EM reached the maximum scipy found
    np.testing.assert_allclose(fit.dynamics.F, th[:4].reshape(2, 2), atol=2e-3)
    np.testing.assert_allclose(fit.dynamics.Q, Lq @ Lq.T, atol=2e-3)
    np.testing.assert_allclose(fit.observation.R, Lr @ Lr.T, atol=2e-3)
    np.testing.assert_array_equal(fit.observation.H, np.eye(2))  # held fixed


def _numpy_log_likelihood_at(fit, ys, prior):
    out = numpy_kalman.kalman_filter(
        prior[0],
        prior[1],
        np.asarray(fit.dynamics.F),
        np.asarray(fit.dynamics.Q),
        np.eye(2),
        np.asarray(fit.observation.R),
        ys,
    )
    return out["log_marginal_likelihood"]


def test_matches_dynamax_fit_em(x64):
    """dynamax's LinearGaussianSSM.fit_em (update-first, both offsets) step by step."""
    lgssm = pytest.importorskip("dynamax.linear_gaussian_ssm")
    ys = _data(num_seq=1, T=80, missing=0.0, update_first=True, gap=False)[0]
    g = _initial_guess()
    with jax.numpy_dtype_promotion("standard"):
        model = lgssm.LinearGaussianSSM(2, 3)
        params, props = model.initialize(
            jax.random.key(0),
            initial_mean=jnp.asarray(g["m0"]),
            initial_covariance=jnp.asarray(g["P0"]),
            dynamics_weights=jnp.asarray(g["F"]),
            dynamics_bias=jnp.asarray(g["b"]),
            dynamics_covariance=jnp.asarray(g["Q"]),
            emission_weights=jnp.asarray(g["H"]),
            emission_bias=jnp.asarray(g["d"]),
            emission_covariance=jnp.asarray(g["R"]),
        )
        theirs, their_lls = model.fit_em(
            params, props, jnp.asarray(ys), num_iters=15, verbose=False
        )
    fit = _EM(*_jax_model(g), jnp.asarray(ys), num_iters=15, update_first=True)
    np.testing.assert_allclose(fit.log_likelihoods, their_lls, rtol=1e-9)
    np.testing.assert_allclose(fit.dynamics.F, theirs.dynamics.weights, rtol=1e-7)
    np.testing.assert_allclose(fit.dynamics.Q, theirs.dynamics.cov, rtol=1e-7)
    np.testing.assert_allclose(fit.observation.H, theirs.emissions.weights, rtol=1e-7)
    np.testing.assert_allclose(fit.observation.R, theirs.emissions.cov, rtol=1e-7)
    np.testing.assert_allclose(fit.observation.d, theirs.emissions.bias, atol=1e-9)
    np.testing.assert_allclose(fit.prior.mean, theirs.initial.mean, rtol=1e-7)
    # complete data: skipping the imputation changes nothing
    lean = _EM(
        *_jax_model(g), jnp.asarray(ys), num_iters=15, update_first=True, missing=False
    )
    np.testing.assert_allclose(lean.log_likelihoods, their_lls, rtol=1e-9)
    np.testing.assert_allclose(lean.dynamics.F, theirs.dynamics.weights, rtol=1e-7)
    np.testing.assert_allclose(lean.observation.R, theirs.emissions.cov, rtol=1e-7)


def test_fixed_parameters_and_absent_offsets_stay(x64):
    ys = _data(num_seq=1, T=30)
    prior, dyn, obs = _jax_model(_initial_guess())
    dyn, obs = dyn._replace(b=None), obs._replace(d=None)
    fit = _EM(prior, dyn, obs, jnp.asarray(ys), num_iters=3, fixed=("Q", "H"))
    assert fit.dynamics.b is None and fit.observation.d is None
    np.testing.assert_array_equal(fit.dynamics.Q, dyn.Q)
    np.testing.assert_array_equal(fit.observation.H, obs.H)
    assert not np.allclose(fit.dynamics.F, dyn.F)


def test_bad_arguments_raise(x64):
    prior, dyn, obs = _jax_model(_initial_guess())
    with pytest.raises(ValueError, match="unknown names in fixed"):
        kj.fit_em(prior, dyn, obs, jnp.zeros((5, 3)), fixed=("A",))
    with pytest.raises(ValueError, match=r"observations must be \(T, 3\)"):
        kj.fit_em(prior, dyn, obs, jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"observations must be \(T, 3\)"):
        kj.fit_em(prior, dyn, obs, jnp.zeros((5, 3), jnp.float32))
