"""Non-Gaussian observations by conditional moments: NumPy textbook CMGFs (Taylor
and sigma points), dynamax's CMGF, the categorical update as one case, and the
exact log-densities against scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import kalmanjax as kj
from tests.reference import numpy_kalman, numpy_moments
from tests.reference import numpy_sigma_point as ref

F = np.array([[0.95, 0.1], [0.0, 0.9]])
Q = 0.05 * np.eye(2)
W = np.array([[1.0, 0.0], [0.7, 0.5], [0.0, -0.8]])
C = np.array([0.5, 0.2, 0.3])
M0, P0 = np.zeros(2), 0.5 * np.eye(2)
JITTER = 1e-6
RULES = {"unscented": kj.unscented(), "gauss_hermite": kj.gauss_hermite(3)}


def _counts(T=40, seed=0, missing=True):
    rng = np.random.default_rng(seed)
    x, ys = M0.copy(), []
    for _ in range(T):
        x = F @ x + rng.multivariate_normal(np.zeros(2), Q)
        ys.append(rng.poisson(np.exp(W @ x + C)).astype(float))
    ys = np.array(ys)
    if missing:
        ys[4, 1] = np.nan
        ys[9] = np.nan
    return ys


def _poisson_moments():
    def mu(x):
        return np.exp(W @ x + C)

    def jac(x):
        return mu(x)[:, None] * W

    def sigma(x):
        return np.diag(mu(x) + JITTER)

    return mu, jac, sigma


def _models(likelihood):
    dyn = kj.LinearDynamics(jnp.asarray(F), jnp.asarray(Q))
    prior = kj.Gaussian(jnp.asarray(M0), jnp.asarray(P0))
    return dyn, likelihood, prior


@pytest.mark.parametrize("form", ["dense", "joseph", "sqrt"])
def test_poisson_taylor_matches_the_numpy_cmgf(form, x64):
    ys = _counts()
    mu, jac, sigma = _poisson_moments()
    means, covs, lls = numpy_moments.taylor_filter(F, Q, mu, jac, sigma, M0, P0, ys)
    obs = kj.poisson_likelihood(lambda x, u: jnp.asarray(W) @ x + jnp.asarray(C))
    dyn, obs, prior = _models(obs)
    out = kj.run(kj.extended_kalman_filter(dyn, obs, form=form), prior, jnp.asarray(ys))
    dense = kj.to_dense(out.states)
    np.testing.assert_allclose(dense.mean, means, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(dense.cov, covs, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(out.infos.log_likelihood, lls, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("form", ["joseph", "sqrt"])
@pytest.mark.parametrize("name", sorted(RULES))
def test_poisson_sigma_points_match_the_numpy_filter(name, form, x64):
    """S = Cov(mu(x)) + E[Sigma(x)] under the predicted belief, by the rule."""
    ys = _counts()
    mu, _, sigma = _poisson_moments()
    (means, covs, lls), _ = ref.sigma_point_filter(
        lambda x: F @ x, Q, mu, sigma, M0, P0, ys, ref.points(name, 2)
    )
    obs = kj.poisson_likelihood(lambda x, u: jnp.asarray(W) @ x + jnp.asarray(C))
    dyn, obs, prior = _models(obs)
    filt = kj.sigma_point_kalman_filter(dyn, obs, rule=RULES[name], form=form)
    out = kj.run(filt, prior, jnp.asarray(ys))
    dense = kj.to_dense(out.states)
    np.testing.assert_allclose(dense.mean, means, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(dense.cov, covs, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(out.infos.log_likelihood, lls, rtol=1e-9, atol=1e-11)


def test_bernoulli_cubature_matches_the_numpy_filter(x64):
    rng = np.random.default_rng(4)
    ys = (rng.uniform(size=(30, 3)) < 0.4).astype(float)
    ys[3, 2] = np.nan

    def p(x):
        return 1.0 / (1.0 + np.exp(-(W @ x + C)))

    (means, covs, lls), _ = ref.sigma_point_filter(
        lambda x: F @ x,
        Q,
        p,
        lambda x: np.diag(p(x) * (1.0 - p(x)) + JITTER),
        M0,
        P0,
        ys,
        ref.points("cubature", 2),
    )
    obs = kj.bernoulli_likelihood(lambda x, u: jnp.asarray(W) @ x + jnp.asarray(C))
    dyn, obs, prior = _models(obs)
    filt = kj.sigma_point_kalman_filter(dyn, obs, rule=kj.cubature())
    out = kj.run(filt, prior, jnp.asarray(ys))
    np.testing.assert_allclose(out.states.mean, means, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(out.states.cov, covs, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(out.infos.log_likelihood, lls, rtol=1e-9, atol=1e-11)


def test_student_t_is_the_kalman_filter_with_the_inflated_noise(x64):
    H = np.array([[1.0, 0.5], [0.0, 1.0]])
    S, df = np.array([[0.3, 0.1], [0.1, 0.2]]), 5.0
    rng = np.random.default_rng(2)
    ys = rng.standard_t(df, size=(25, 2))
    ys[6, 0] = np.nan
    expected = numpy_kalman.kalman_filter(M0, P0, F, Q, H, df / (df - 2) * S, ys)
    obs = kj.student_t_likelihood(lambda x, u: jnp.asarray(H) @ x, jnp.asarray(S), df)
    dyn, obs, prior = _models(obs)
    for filt in (
        kj.extended_kalman_filter(dyn, obs),
        kj.sigma_point_kalman_filter(dyn, obs, rule=kj.cubature()),
    ):
        out = kj.run(filt, prior, jnp.asarray(ys))
        np.testing.assert_allclose(
            out.states.mean, expected["filtered_means"], rtol=1e-9, atol=1e-11
        )
        np.testing.assert_allclose(
            out.states.cov, expected["filtered_covs"], rtol=1e-9, atol=1e-11
        )
    with pytest.raises(ValueError, match="df must be > 2"):
        kj.student_t_likelihood(lambda x, u: x, jnp.asarray(S), 2.0)


@pytest.mark.parametrize("form", ["joseph", "sqrt"])
def test_the_categorical_update_is_one_case(form, x64):
    """One-hot observations under a Taylor expansion: CategoricalObservation."""
    rng = np.random.default_rng(5)
    V = 6
    Z = jnp.asarray(rng.normal(size=(V, 2)))
    tokens = rng.integers(0, V, size=20)
    logits = lambda x, u: Z @ x  # noqa: E731
    dyn = kj.LinearDynamics(jnp.asarray(F), jnp.asarray(Q))
    prior = kj.Gaussian(jnp.asarray(M0), jnp.asarray(P0))
    onehot = np.eye(V)[tokens]
    onehot[7] = np.nan  # missing: a negative token id on the fast path
    tokens[7] = -1
    fast = kj.run(
        kj.extended_kalman_filter(
            dyn, kj.CategoricalObservation(fn=logits, jitter=1e-4), form=form
        ),
        prior,
        jnp.asarray(tokens),
    )
    moments = kj.run(
        kj.extended_kalman_filter(
            dyn, kj.categorical_likelihood(logits, jitter=1e-4), form=form
        ),
        prior,
        jnp.asarray(onehot),
    )
    a, b = kj.to_dense(fast.states), kj.to_dense(moments.states)
    np.testing.assert_allclose(b.mean, a.mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(b.cov, a.cov, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(
        moments.infos.log_likelihood, fast.infos.log_likelihood, rtol=1e-8, atol=1e-10
    )


@pytest.mark.parametrize("integrals", ["EKFIntegrals", "GHKFIntegrals"])
def test_matches_dynamax_cmgf(integrals, x64):
    ggssm = pytest.importorskip("dynamax.generalized_gaussian_ssm")
    ys = _counts(missing=False)
    eta = lambda x: jnp.asarray(W) @ x + jnp.asarray(C)  # noqa: E731
    params = ggssm.ParamsGGSSM(
        initial_mean=jnp.asarray(M0),
        initial_covariance=jnp.asarray(P0),
        dynamics_function=lambda x: jnp.asarray(F) @ x,
        dynamics_covariance=jnp.asarray(Q),
        emission_mean_function=lambda x: jnp.exp(eta(x)),
        emission_cov_function=lambda x: jnp.diag(jnp.exp(eta(x)) + JITTER),
    )
    inf = getattr(ggssm, integrals)()
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        theirs = ggssm.conditional_moments_gaussian_filter(params, inf, jnp.asarray(ys))
    dyn, obs, prior = _models(kj.poisson_likelihood(lambda x, u: eta(x)))
    if integrals == "EKFIntegrals":
        filt = kj.extended_kalman_filter(dyn, obs)
    else:  # dynamax's default Gauss-Hermite order is 10
        filt = kj.sigma_point_kalman_filter(dyn, obs, rule=kj.gauss_hermite(inf.order))
    out = kj.run(filt, prior, jnp.asarray(ys), update_first=True)
    # dynamax's gain solves with 1e-9 added to the diagonal of S (psd_solve)
    np.testing.assert_allclose(out.states.mean, theirs.filtered_means, rtol=1e-7)
    np.testing.assert_allclose(
        out.states.cov, theirs.filtered_covariances, rtol=1e-7, atol=1e-10
    )
    np.testing.assert_allclose(
        out.infos.log_likelihood.sum(), theirs.marginal_loglik, rtol=1e-9
    )


def test_iterated_smoother_matches_the_numpy_posterior_linearisation(x64):
    ys = _counts(T=25)
    mu, _, sigma = _poisson_moments()
    ms, Ps = ref.iterated_posterior_linearization(
        lambda x: F @ x, Q, mu, sigma, M0, P0, ys, ref.points("cubature", 2), 3
    )
    obs = kj.poisson_likelihood(lambda x, u: jnp.asarray(W) @ x + jnp.asarray(C))
    dyn, obs, prior = _models(obs)
    out = kj.iterated_sigma_point_smoother(
        dyn, obs, prior, jnp.asarray(ys), rule=kj.cubature(), num_iters=3
    )
    np.testing.assert_allclose(out.smoothed.mean, ms[1:], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(out.smoothed.cov, Ps[1:], rtol=1e-8, atol=1e-11)
    with pytest.raises(ValueError, match="iterated_sigma_point_smoother"):
        kj.iterated_extended_smoother(dyn, obs, prior, jnp.asarray(ys), num_iters=1)


def test_log_probs_match_scipy(x64):
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=2))
    eta = np.asarray(W @ np.asarray(x) + C)
    fn = lambda x, u: jnp.asarray(W) @ x + jnp.asarray(C)  # noqa: E731
    counts = np.array([2.0, np.nan, 0.0])
    want = stats.poisson.logpmf(counts[[0, 2]], np.exp(eta[[0, 2]])).sum()
    got = kj.poisson_likelihood(fn).log_prob(jnp.asarray(counts), x, None)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    bits = np.array([1.0, 0.0, np.nan])
    p = 1.0 / (1.0 + np.exp(-eta))
    want = stats.bernoulli.logpmf(bits[:2], p[:2]).sum()
    got = kj.bernoulli_likelihood(fn).log_prob(jnp.asarray(bits), x, None)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    onehot = np.array([0.0, 1.0, 0.0])
    want = np.log(np.exp(eta)[1] / np.exp(eta).sum())
    got = kj.categorical_likelihood(fn).log_prob(jnp.asarray(onehot), x, None)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    missing = kj.categorical_likelihood(fn).log_prob(jnp.full(3, jnp.nan), x, None)
    assert float(missing) == 0.0
    S = np.array([[0.5, 0.1, 0.0], [0.1, 0.4, 0.05], [0.0, 0.05, 0.3]])
    y = np.array([0.3, np.nan, -1.2])
    want = stats.multivariate_t(eta[[0, 2]], S[np.ix_([0, 2], [0, 2])], df=4.0).logpdf(
        y[[0, 2]]
    )
    got = kj.student_t_likelihood(fn, jnp.asarray(S), 4.0).log_prob(
        jnp.asarray(y), x, None
    )
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_bad_moment_shapes_are_refused():
    obs = kj.ConditionalMomentObservation(
        mean=lambda x, u: jnp.exp(x), cov=lambda x, u: jnp.eye(3, dtype=x.dtype)
    )
    dyn = kj.LinearDynamics(jnp.eye(2), 0.1 * jnp.eye(2))
    prior = kj.Gaussian(jnp.zeros(2), jnp.eye(2))
    with pytest.raises(ValueError, match="observation.cov"):
        kj.run(kj.extended_kalman_filter(dyn, obs), prior, jnp.ones((3, 2)))
