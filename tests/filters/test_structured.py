"""The structured-covariance filters: diagonal and low-rank (LoFi) beliefs.

References: the NumPy float64 Kalman filter (tests/reference/numpy_kalman.py)
and EKF with hand-written Jacobians (tests/reference/numpy_ekf.py); where the
truncation drops information, the KL divergence to the dense posterior of that
reference; gradients against central finite differences.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from tests._helpers import assert_psd
from tests.reference import numpy_categorical as cat_ref
from tests.reference import numpy_ekf
from tests.reference import numpy_kalman as ref


def _elementwise_model(rng, k, p):
    """Elementwise decay and drift, a dense H, missing entries in y."""
    f = rng.uniform(0.8, 1.0, size=k)
    q = rng.uniform(0.0, 0.05, size=k)
    H = rng.normal(size=(p, k)) / np.sqrt(k)
    A = rng.normal(size=(p, p))
    R = 0.1 * np.eye(p) + 0.02 * A @ A.T
    return f, q, H, R


def _simulate(rng, f, q, H, R, T, var0):
    k = f.shape[0]
    x = rng.normal(size=k) * np.sqrt(var0)
    ys = []
    for _ in range(T):
        x = f * x + rng.normal(size=k) * np.sqrt(q)
        ys.append(H @ x + rng.multivariate_normal(np.zeros(len(R)), R))
    ys = np.asarray(ys)
    ys[3, 0] = np.nan  # a missing entry
    ys[5] = np.nan  # a missing step
    return ys


def _kl(mean_q, cov_q, mean_p, cov_p):
    """KL(N(mean_q, cov_q) || N(mean_p, cov_p)) in NumPy float64."""
    k = len(mean_q)
    inv_p = np.linalg.inv(cov_p)
    diff = mean_p - mean_q
    return 0.5 * (
        np.trace(inv_p @ cov_q)
        + diff @ inv_p @ diff
        - k
        + np.linalg.slogdet(cov_p)[1]
        - np.linalg.slogdet(cov_q)[1]
    )


def _run(filt, prior, ys):
    return jax.jit(lambda ys: kj.run(filt, prior, ys))(jnp.asarray(ys))


@pytest.mark.parametrize("rank", [12, 20])
def test_low_rank_without_truncation_is_the_dense_filter(rank, x64):
    """rank >= state: nothing is dropped; equal to the NumPy Kalman filter."""
    rng = np.random.default_rng(0)
    k, p, T = 12, 2, 10
    f, q, H, R = _elementwise_model(rng, k, p)
    var0 = rng.uniform(0.5, 2.0, size=k)
    ys = _simulate(rng, f, q, H, R, T, var0)
    expect = ref.kalman_filter(
        np.zeros(k), np.diag(var0), np.diag(f), np.diag(q), H, R, ys
    )
    filt = kj.low_rank_filter(
        kj.DiagonalDynamics(F=jnp.asarray(f), Q=jnp.asarray(q)),
        kj.LinearObservation(H=jnp.asarray(H), R=jnp.asarray(R)),
        rank=rank,
    )
    prior = kj.DiagonalGaussian(jnp.zeros(k), jnp.asarray(var0))
    out = _run(filt, prior, ys)
    np.testing.assert_allclose(
        out.states.mean, expect["filtered_means"], rtol=1e-10, atol=1e-10
    )
    np.testing.assert_allclose(
        out.states.cov, expect["filtered_covs"], rtol=1e-9, atol=1e-10
    )
    np.testing.assert_allclose(
        out.infos.log_likelihood, expect["log_likelihoods"], rtol=1e-10, atol=1e-10
    )


def test_low_rank_is_exact_while_the_information_fits_in_the_rank(x64):
    """A static state (F = 1, Q = 0) observed by p = 2 outputs for 3 steps has
    information of rank 6: rank 6 of 40 coordinates drops nothing."""
    rng = np.random.default_rng(1)
    k, p, T = 40, 2, 3
    H = [rng.normal(size=(p, k)) for _ in range(T)]
    R = 0.3 * np.eye(p)
    ys = rng.normal(size=(T, p))
    expect = ref.kalman_filter(
        np.zeros(k), np.eye(k), np.eye(k), np.zeros((k, k)), np.stack(H), R, ys
    )
    obs = lambda u: kj.LinearObservation(H=u["H"], R=jnp.asarray(R))
    filt = kj.low_rank_filter(
        kj.DiagonalDynamics(F=jnp.array(1.0), Q=jnp.array(0.0)), obs, rank=6
    )
    prior = kj.DiagonalGaussian(jnp.zeros(k), jnp.ones(k))
    xs = {"obs": jnp.asarray(ys), "H": jnp.asarray(np.stack(H))}
    out = jax.jit(lambda xs: kj.run(filt, prior, xs))(xs)
    np.testing.assert_allclose(out.states.mean, expect["filtered_means"], atol=1e-10)
    np.testing.assert_allclose(out.final.cov, expect["filtered_covs"][-1], atol=1e-10)


def test_low_rank_truncation_error_shrinks_with_the_rank(x64):
    """Where the truncation drops information, the KL divergence of the last
    posterior to the exact one (NumPy) is positive and shrinks as the rank grows;
    it is zero once the rank holds all the information."""
    rng = np.random.default_rng(2)
    k, p, T = 64, 1, 24
    R = 0.1 * np.eye(p)
    Hs = rng.normal(size=(T, p, k)) / np.sqrt(k)
    ys = rng.normal(size=(T, p))
    expect = ref.kalman_filter(
        np.zeros(k), np.eye(k), np.eye(k), np.zeros((k, k)), Hs, R, ys
    )
    xs = {"obs": jnp.asarray(ys), "H": jnp.asarray(Hs)}
    obs = lambda u: kj.LinearObservation(H=u["H"], R=jnp.asarray(R))
    prior = kj.DiagonalGaussian(jnp.zeros(k), jnp.ones(k))
    kls = []
    for rank in (2, 8, 16, 24):
        filt = kj.low_rank_filter(
            kj.DiagonalDynamics(F=jnp.array(1.0), Q=jnp.array(0.0)), obs, rank=rank
        )
        final = jax.jit(lambda xs, filt=filt: kj.run(filt, prior, xs).final)(xs)
        kls.append(
            _kl(
                np.asarray(final.mean),
                np.asarray(final.cov),
                expect["filtered_means"][-1],
                expect["filtered_covs"][-1],
            )
        )
    assert kls[0] > kls[1] > kls[2] > 0.0
    assert kls[3] < 1e-9  # rank T holds all T rank-one informations


def test_diagonal_filter_is_exact_when_the_covariance_stays_diagonal(x64):
    """Each output reads its own coordinate and R is diagonal: the dense
    posterior stays diagonal, so the diagonal filter is exact."""
    rng = np.random.default_rng(3)
    k, T = 6, 10
    f, q = rng.uniform(0.8, 1.0, size=k), rng.uniform(0.0, 0.05, size=k)
    H = np.eye(k)[[0, 2, 3]] * np.array([[1.5], [0.7], [2.0]])
    R = np.diag([0.2, 0.3, 0.1])
    var0 = rng.uniform(0.5, 2.0, size=k)
    ys = _simulate(rng, f, q, H, R, T, var0)
    expect = ref.kalman_filter(
        np.zeros(k), np.diag(var0), np.diag(f), np.diag(q), H, R, ys
    )
    filt = kj.diagonal_filter(
        kj.DiagonalDynamics(F=jnp.asarray(f), Q=jnp.asarray(q)),
        kj.LinearObservation(H=jnp.asarray(H), R=jnp.asarray(R)),
    )
    out = _run(filt, kj.DiagonalGaussian(jnp.zeros(k), jnp.asarray(var0)), ys)
    np.testing.assert_allclose(out.states.mean, expect["filtered_means"], atol=1e-12)
    np.testing.assert_allclose(out.states.cov, expect["filtered_covs"], atol=1e-12)
    np.testing.assert_allclose(
        out.infos.log_likelihood, expect["log_likelihoods"], atol=1e-10
    )


def test_diagonal_filter_propagates_the_diagonal_of_a_general_f(x64):
    """With a LinearDynamics the predict is diag(F diag(v) F^T + Q)."""
    rng = np.random.default_rng(4)
    k = 5
    F = rng.normal(size=(k, k)) / 2
    Q = np.diag(rng.uniform(0.0, 0.1, size=k)) + 0.01
    var = rng.uniform(0.5, 2.0, size=k)
    obs = kj.LinearObservation(H=jnp.zeros((1, k)), R=jnp.eye(1))  # no information
    filt = kj.diagonal_filter(kj.LinearDynamics(jnp.asarray(F), jnp.asarray(Q)), obs)
    belief, _ = filt.step(
        kj.DiagonalGaussian(jnp.ones(k), jnp.asarray(var)), jnp.zeros(1)
    )
    np.testing.assert_allclose(
        belief.var, np.diagonal(F @ np.diag(var) @ F.T + Q), rtol=1e-12
    )
    np.testing.assert_allclose(belief.mean, F @ np.ones(k), rtol=1e-12)


@pytest.mark.parametrize("which", ["diagonal", "low_rank"])
def test_nonlinear_observations_match_the_numpy_ekf(which, x64):
    """tanh(x . u) observed: the low-rank filter with rank >= state is the EKF; the
    diagonal filter is the EKF of a state whose covariance it keeps diagonal
    (checked on one coordinate observed per step, where the EKF stays diagonal)."""
    rng = np.random.default_rng(5)
    k, T = 4, 12
    if which == "low_rank":
        us = rng.normal(size=(T, k))
    else:  # one coordinate per step: the covariance stays diagonal
        us = np.eye(k)[rng.integers(0, k, size=T)] * rng.uniform(0.5, 2.0, size=(T, 1))
    ys = rng.normal(size=(T, 1)) * 0.5
    ys[4] = np.nan
    h = lambda x, u: np.tanh(u @ x)[None]
    H_jac = lambda x, u: ((1.0 - np.tanh(u @ x) ** 2) * u)[None]
    expect = numpy_ekf.ekf(
        np.full(k, 0.1),
        np.eye(k),
        lambda x, u: x,
        lambda x, u: np.eye(k),
        1e-3 * np.eye(k),
        h,
        H_jac,
        0.1 * np.eye(1),
        ys,
        list(us),
    )
    dyn = kj.DiagonalDynamics(F=jnp.array(1.0), Q=jnp.array(1e-3))
    obs = kj.NonlinearObservation(
        fn=lambda x, u: jnp.tanh(u["x"] @ x)[None], R=0.1 * jnp.eye(1)
    )
    filt = (
        kj.low_rank_filter(dyn, obs, rank=k)
        if which == "low_rank"
        else kj.diagonal_filter(dyn, obs)
    )
    prior = kj.DiagonalGaussian(jnp.full(k, 0.1), jnp.ones(k))
    xs = {"obs": jnp.asarray(ys), "x": jnp.asarray(us)}
    out = jax.jit(lambda xs: kj.run(filt, prior, xs))(xs)
    np.testing.assert_allclose(out.states.mean, expect["means"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(out.states.cov, expect["covs"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(
        out.infos.log_likelihood, expect["log_likelihoods"], atol=1e-10
    )


def _fd(fn, x, h=1e-6):
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        g[i] = (fn(up) - fn(down)) / (2 * h)
    return g


@pytest.mark.parametrize(
    "which,rank", [("diagonal", None), ("low_rank", 3), ("low_rank", 10)]
)
def test_gradients_match_finite_differences(which, rank, x64):
    """d log p(y) / d(H, q) through the step, the truncation included (rank 3 <
    the 8-dimensional information of 8 steps)."""
    rng = np.random.default_rng(6)
    k, p, T = 6, 1, 8
    f, q, H, R = _elementwise_model(rng, k, p)
    ys = _simulate(rng, f, q, H, R, T, np.ones(k))
    prior = kj.DiagonalGaussian(jnp.zeros(k), jnp.ones(k))

    @jax.jit
    def log_lik(H, q):
        dyn = kj.DiagonalDynamics(F=jnp.asarray(f), Q=q)
        obs = kj.LinearObservation(H=H, R=jnp.asarray(R))
        filt = (
            kj.diagonal_filter(dyn, obs)
            if rank is None
            else kj.low_rank_filter(dyn, obs, rank=rank)
        )
        return kj.log_marginal_likelihood(filt, prior, jnp.asarray(ys))

    gH, gq = jax.grad(log_lik, argnums=(0, 1))(jnp.asarray(H), jnp.asarray(q))
    np.testing.assert_allclose(
        gH,
        _fd(lambda a: float(log_lik(jnp.asarray(a), jnp.asarray(q))), H),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        gq,
        _fd(lambda a: float(log_lik(jnp.asarray(H), jnp.asarray(a))), q),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("which", ["diagonal", "low_rank"])
def test_float32_over_a_long_stream_stays_finite_and_psd(which):
    """1e5 steps of a slowly drifting 16-dimensional state in float32."""
    rng = np.random.default_rng(7)
    k, T = 16, 100_000
    us = jnp.asarray(rng.normal(size=(T, k)), jnp.float32)
    ys = jnp.asarray(rng.normal(size=(T, 1)), jnp.float32)
    dyn = kj.DiagonalDynamics(F=jnp.float32(0.999), Q=jnp.float32(1e-5))
    observation = lambda u: kj.LinearObservation(
        H=u["x"][None, :], R=jnp.full((1, 1), 0.5, jnp.float32)
    )
    filt = (
        kj.diagonal_filter(dyn, observation)
        if which == "diagonal"
        else kj.low_rank_filter(dyn, observation, rank=4)
    )
    prior = kj.DiagonalGaussian(jnp.zeros(k, jnp.float32), jnp.ones(k, jnp.float32))
    out = jax.jit(lambda xs: kj.run(filt, prior, xs, lean=True))({"obs": ys, "x": us})
    leaves = jax.tree_util.tree_leaves(out.final)
    assert all(np.all(np.isfinite(np.asarray(a))) for a in leaves)
    assert np.all(np.isfinite(np.asarray(out.infos.log_likelihood)))
    assert out.final.mean.dtype == jnp.float32
    if which == "diagonal":
        assert np.all(np.asarray(out.final.var) >= 0)
    else:
        assert np.all(np.asarray(out.final.precision_diag) > 0)
    assert_psd(out.final.cov[None], 1e-4)


def test_structured_filters_give_clear_errors():
    dyn = kj.DiagonalDynamics(F=jnp.array(1.0), Q=jnp.array(0.0))
    obs = kj.LinearObservation(H=jnp.ones((1, 3)), R=jnp.eye(1))
    with pytest.raises(
        ValueError, match="low_rank_filter: rank must be a positive int"
    ):
        kj.low_rank_filter(dyn, obs, rank=0)
    prior = kj.DiagonalGaussian(jnp.zeros(3), jnp.ones(3))
    general = kj.LinearDynamics(F=jnp.eye(3), Q=jnp.eye(3))
    filt = kj.low_rank_filter(general, obs, rank=2)
    with pytest.raises(TypeError, match="dynamics must be a DiagonalDynamics"):
        filt.step(filt.init(prior), jnp.ones(1))
    bad = kj.DiagonalDynamics(F=jnp.ones(2), Q=jnp.array(0.0))
    filt = kj.diagonal_filter(bad, obs)
    with pytest.raises(ValueError, match=r"dynamics.F must have shape \(\) or \(3,\)"):
        filt.step(filt.init(prior), jnp.ones(1))


def test_validate_checks_the_structured_forms():
    dyn = kj.DiagonalDynamics(F=jnp.array(1.0), Q=jnp.array([0.1, -0.1, 0.0]))
    with pytest.raises(ValueError, match=r"dynamics.Q must be non-negative .*\(1,\)"):
        kj.validate(dynamics=dyn)
    prior = kj.LowRankGaussian(
        jnp.zeros(3), jnp.array([1.0, 0.0, 1.0]), jnp.ones((3, 2))
    )
    with pytest.raises(ValueError, match="prior.precision_diag must be positive"):
        kj.validate(prior=prior)
    good = kj.DiagonalGaussian(jnp.zeros(3), jnp.ones(3))
    assert kj.validate(dynamics=dyn._replace(Q=jnp.array(0.1)), prior=good) is None


@pytest.mark.parametrize("which", ["diagonal", "low_rank"])
def test_negative_variances_are_nan_as_in_the_dense_forms(which, x64):
    """As a fixed non-PSD covariance is NaN in kalman_filter, a negative variance
    in Q or in the prior is NaN here (and a valid one is finite)."""
    obs = kj.LinearObservation(H=jnp.ones((1, 3)), R=jnp.eye(1))
    ys = jnp.ones((4, 1))

    def log_lik(q, var):
        dyn = kj.DiagonalDynamics(F=jnp.array(0.9), Q=q)
        filt = (
            kj.diagonal_filter(dyn, obs)
            if which == "diagonal"
            else kj.low_rank_filter(dyn, obs, rank=2)
        )
        prior = kj.DiagonalGaussian(jnp.zeros(3), var)
        return float(kj.log_marginal_likelihood(filt, prior, ys))

    good_q, good_var = jnp.array([0.1, 0.0, 0.2]), jnp.ones(3)
    assert np.isfinite(log_lik(good_q, good_var))
    assert np.isnan(log_lik(good_q.at[1].set(-0.1), good_var))
    assert np.isnan(log_lik(good_q, good_var.at[2].set(-1.0)))


# ------------------------------------------------------------ categorical tokens


def _categorical_case(rng, form, fisher):
    """One token on a k = 3 state with V = 7 nonlinear logits, from a prior of
    either structured form; returns the step, its prior and the NumPy problem."""
    prob = cat_ref.problem(rng)
    W, c = jnp.asarray(prob["W"]), jnp.asarray(prob["c"])
    obs = kj.CategoricalObservation(
        fn=lambda th, u: W @ th + 0.3 * jnp.tanh(W @ th) + c, jitter=1e-3
    )
    static = kj.DiagonalDynamics(F=jnp.array(1.0), Q=jnp.array(0.0))
    m = jnp.asarray(prob["m"])
    if form == "diagonal":
        var = rng.uniform(0.3, 1.5, size=3)
        prior = kj.DiagonalGaussian(m, jnp.asarray(var))
        filt = kj.diagonal_filter(static, obs, fisher=fisher)
        P = np.diag(var)
    else:  # a correlated prior: precision c I + W W^T with W of rank 3
        P = prob["P"]
        lam, vec = np.linalg.eigh(np.linalg.inv(P))
        shift = lam.min() / 2
        factor = vec * np.sqrt(lam - shift)
        prior = kj.LowRankGaussian(m, jnp.full(3, shift), jnp.asarray(factor))
        filt = kj.low_rank_filter(static, obs, rank=3, fisher=fisher)
    return filt, prior, prob, P


@pytest.mark.parametrize("form", ["diagonal", "low_rank"])
def test_exact_categorical_update_is_the_moment_matched_one(form, x64):
    """Against the dense V x V computation in NumPy (tests/steps): the low-rank
    belief of rank = state is that posterior; the diagonal one its diagonal."""
    rng = np.random.default_rng(8)
    filt, prior, prob, P = _categorical_case(rng, form, "exact")
    token = 2
    mean, cov, ll, gain, _ = cat_ref.dense_reference(
        prob["m"], P, token, prob["W"], prob["c"], 1e-3
    )
    post, info = jax.jit(filt.step)(prior, jnp.asarray(token))
    got_cov = np.asarray(post.cov)
    np.testing.assert_allclose(post.mean, mean, rtol=1e-9, atol=1e-10)
    expect_cov = cov if form == "low_rank" else np.diag(np.diagonal(cov))
    np.testing.assert_allclose(got_cov, expect_cov, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(info.log_likelihood, ll, rtol=1e-10)
    np.testing.assert_allclose(info.information_gain, gain, rtol=1e-9)


@pytest.mark.parametrize("form", ["diagonal", "low_rank"])
def test_observed_token_fisher_is_a_rank_one_update(form, x64):
    """fisher="observed": the information is s s^T with s = grad log p_y at the
    predicted mean (NumPy), the mean moves by (P^-1 + s s^T)^-1 s, and the
    log-likelihood is the plug-in log p_y; a token outside 0..V-1 changes nothing."""
    rng = np.random.default_rng(9)
    filt, prior, prob, P = _categorical_case(rng, form, "observed")
    token = 4
    m, W, c = prob["m"], prob["W"], prob["c"]
    z = cat_ref.logits(m, W, c)
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    s = cat_ref.dz(m, W).T @ (np.eye(len(p))[token] - p)
    post_cov = np.linalg.inv(np.linalg.inv(P) + np.outer(s, s))
    post, info = jax.jit(filt.step)(prior, jnp.asarray(token))
    np.testing.assert_allclose(post.mean, m + post_cov @ s, rtol=1e-9, atol=1e-10)
    expect_cov = post_cov if form == "low_rank" else np.diag(np.diagonal(post_cov))
    np.testing.assert_allclose(post.cov, expect_cov, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(info.log_likelihood, np.log(p[token]), rtol=1e-10)
    same, zero = jax.jit(filt.step)(prior, jnp.asarray(len(p) + 3))
    if form == "diagonal":  # the belief itself is kept
        for a, b in zip(jax.tree_util.tree_leaves(same), prior, strict=True):
            np.testing.assert_array_equal(a, b)
    else:  # no information is added: the factor may rotate, its product may not
        np.testing.assert_array_equal(same.mean, prior.mean)
        np.testing.assert_allclose(same.precision, prior.precision, rtol=1e-13)
    assert float(zero.log_likelihood) == 0.0


def test_observed_fisher_against_the_exact_update_on_a_token_stream(x64):
    """Measured, not assumed: on 200 tokens of a V = 7 model with k = 3, the
    observed-token Fisher's filtered means stay within a small distance of the
    exact update's (both low-rank with rank = state, so only the Fisher differs)."""
    rng = np.random.default_rng(10)
    prob = cat_ref.problem(rng)
    W, c = jnp.asarray(prob["W"]), jnp.asarray(prob["c"])
    obs = kj.CategoricalObservation(fn=lambda th, u: W @ th + c, jitter=1e-6)
    theta = rng.normal(size=3)
    z = prob["W"] @ theta + prob["c"]
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    tokens = jnp.asarray(rng.choice(len(p), size=200, p=p), jnp.int32)
    static = kj.DiagonalDynamics(F=jnp.array(1.0), Q=jnp.array(0.0))
    prior = kj.DiagonalGaussian(jnp.zeros(3), jnp.ones(3))
    finals = {}
    for fisher in ("exact", "observed"):
        filt = kj.low_rank_filter(static, obs, rank=3, fisher=fisher)
        finals[fisher] = jax.jit(lambda t, f=filt: kj.run(f, prior, t).final)(tokens)
    gap = np.linalg.norm(finals["exact"].mean - finals["observed"].mean)
    spread = np.sqrt(np.trace(np.asarray(finals["exact"].cov)))
    assert np.isfinite(gap)
    assert gap < spread  # within one posterior standard deviation (measured: below)
